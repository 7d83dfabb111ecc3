//! Dispatching a run from the foreground CLI: resolve or build the parcel,
//! write the brief, create the run record, spawn the detached helper.

use std::path::Path;
use std::process::{Command, Stdio};

use dispatch_core::brief::Brief;
use dispatch_core::parcel::{self, Parcel};
use dispatch_core::{Operation, RunId, now_ms};
use dispatch_store::{NewRun, Run, Store};
use serde_json::Value;

use crate::error::{RuntimeError, RuntimeResult, io};
use crate::layout::{Layout, ROOT_ENV};

/// What to run.
#[derive(Clone, Debug)]
pub struct LaunchRequest {
    /// A directory holding an Agentfile, an Agentfile, or a built parcel's
    /// name or digest (prefix).
    pub source: String,
    /// The operation; the parcel's ENTRYPOINT when `None`.
    pub operation: Option<Operation>,
    pub payload: Value,
    pub parent_id: Option<RunId>,
    /// The run this one restarts or replays.
    pub origin_id: Option<RunId>,
    /// The project the run belongs to (checked by the caller).
    pub project: String,
}

impl LaunchRequest {
    /// The record of a new run of `parcel` for this request, with a fresh id.
    pub fn new_run(&self, parcel: &Parcel, operation: Operation, brief_sha256: String) -> NewRun {
        NewRun {
            id: RunId::new(),
            parcel_digest: parcel.digest.clone(),
            parcel_name: parcel.manifest.name.clone(),
            operation,
            parent_id: self.parent_id.clone(),
            origin_id: self.origin_id.clone(),
            payload: self.payload.clone(),
            brief_sha256,
            created_at: now_ms(),
            claimed_by: None,
            created: false,
            // A run linked to an earlier one restarts it, unless the
            // caller says otherwise (a replay, a handoff).
            trigger: match self.origin_id {
                Some(_) => dispatch_core::Trigger::Restart,
                None => dispatch_core::Trigger::Manual,
            },
            handoff_key: None,
            project: self.project.clone(),
        }
    }
}

/// Resolves `source` to a parcel: builds it when it is a path, else looks up
/// a built parcel by digest prefix or name (the newest of that name).
pub fn resolve_parcel(layout: &Layout, source: &str) -> RuntimeResult<Parcel> {
    let path = Path::new(source);
    if path.exists() {
        return Ok(parcel::build(path, &layout.parcels())?);
    }
    resolve_built(layout, source)
}

/// Looks up a built parcel by digest (prefix) or name (the newest of that
/// name), never building one: what a handoff names.
pub fn resolve_built(layout: &Layout, source: &str) -> RuntimeResult<Parcel> {
    let path = Path::new(source);
    let exact = layout.parcels().join(source);
    if source.len() == 64 && exact.is_dir() {
        return Ok(parcel::load(&exact)?);
    }
    let looks_like_path = source.contains('/') || source.starts_with('.');
    let all = parcel::list(&layout.parcels());
    if let Some(p) = all.iter().find(|p| p.manifest.name == source) {
        return Ok(p.clone());
    }
    let by_digest: Vec<&Parcel> = if source.len() >= 4 && !looks_like_path {
        all.iter()
            .filter(|p| p.digest.starts_with(source))
            .collect()
    } else {
        Vec::new()
    };
    match by_digest.as_slice() {
        [one] => Ok((*one).clone()),
        [] if looks_like_path => Err(parcel::ParcelError::NoSuchPath(path.to_path_buf()).into()),
        [] => Err(RuntimeError::UnknownParcel(source.to_string())),
        many => Err(RuntimeError::AmbiguousParcel {
            reference: source.to_string(),
            count: many.len(),
        }),
    }
}

/// Writes the brief content-addressed (once) and returns its digest.
pub fn write_brief(layout: &Layout, brief: &Brief) -> RuntimeResult<String> {
    let (bytes, sha) = brief.encode();
    let path = layout.brief(&sha);
    if !path.exists() {
        let dir = layout.briefs();
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let tmp = dir.join(format!(".{sha}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("renaming", &path))?;
    }
    Ok(sha)
}

/// Checks that every declared secret has a value in the environment.
///
/// A native agent's model keys are checked with its models instead (they
/// are not needed when `LLM_BASE_URL` points the run elsewhere).
pub fn check_secrets(parcel: &Parcel) -> RuntimeResult<()> {
    let model_keys: Vec<&String> = parcel
        .manifest
        .agent
        .iter()
        .flat_map(|a| a.models.iter().filter_map(|m| m.key.as_ref()))
        .collect();
    match parcel
        .manifest
        .secrets
        .iter()
        .filter(|name| !model_keys.contains(name))
        .find(|name| std::env::var_os(name).is_none_or(|v| v.is_empty()))
    {
        Some(missing) => Err(RuntimeError::MissingSecret(missing.clone())),
        None => Ok(()),
    }
}

/// Creates the run record (queued) for `req`. Does not start it.
pub async fn create<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    req: &LaunchRequest,
) -> RuntimeResult<(Run, Parcel)> {
    let parcel = resolve_parcel(layout, &req.source)?;
    check_secrets(&parcel)?;
    let operation = req.operation.unwrap_or(parcel.manifest.entrypoint);
    let brief = Brief::assemble(&parcel, operation, req.payload.clone());
    let brief_sha256 = write_brief(layout, &brief)?;
    let run = store
        .create_run(&req.new_run(&parcel, operation, brief_sha256))
        .await?;
    Ok((run, parcel))
}

/// [`create`], the run bound to session `name` of its parcel
/// (`<parcel>/<name>`, as `--session` binds it): its conversation goes on
/// from the session's last turn. `SessionBusy` when a live run holds it.
pub async fn create_in_session<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    req: &LaunchRequest,
    name: &str,
) -> RuntimeResult<(Run, Parcel)> {
    crate::submit::check_session_name(name)?;
    let parcel = resolve_parcel(layout, &req.source)?;
    check_secrets(&parcel)?;
    let operation = req.operation.unwrap_or(parcel.manifest.entrypoint);
    let brief = Brief::assemble(&parcel, operation, req.payload.clone());
    let brief_sha256 = write_brief(layout, &brief)?;
    let extras = dispatch_store::RunExtras {
        session: Some(format!("{}/{name}", parcel.manifest.name)),
        ..Default::default()
    };
    let created = store
        .create_run_with(
            &req.new_run(&parcel, operation, brief_sha256),
            &extras,
            false,
        )
        .await?;
    Ok((created.run().clone(), parcel))
}

/// Spawns `exe internal run-record <id>` detached, with its own output going
/// to the run's log (the helper moves itself into a new session at once, see
/// [`crate::os::detach_session`]). Returns at once.
pub fn spawn_helper(layout: &Layout, exe: &Path, id: &RunId) -> RuntimeResult<u32> {
    let runs = layout.runs();
    std::fs::create_dir_all(&runs).map_err(io("creating", &runs))?;
    let log_path = layout.log(id);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io("opening", &log_path))?;
    let log2 = log.try_clone().map_err(io("opening", &log_path))?;
    let mut cmd = Command::new(exe);
    cmd.args(["internal", "run-record", id.as_str()])
        .env(ROOT_ENV, layout.root())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let child = cmd
        .spawn()
        .map_err(|e| RuntimeError::Spawn(exe.to_path_buf(), e))?;
    Ok(child.id())
}

/// Puts a created run (`dispatch create`) into the queue; a run already
/// queued is answered as it is.
pub async fn start_created<S: Store + ?Sized>(store: &S, run: &Run) -> RuntimeResult<Run> {
    let mut run = run.clone();
    if run.status() != dispatch_core::Status::Created {
        return Ok(run);
    }
    let t = dispatch_core::Transition::Start { at: now_ms() };
    match crate::record::advance(store, &mut run, &t, None).await {
        Ok(()) | Err(crate::record::AdvanceError::Illegal(_)) => Ok(run),
        Err(crate::record::AdvanceError::Store(e)) => Err(e.into()),
    }
}

/// Records that a created run could not be started (its helper failed to spawn).
pub async fn fail_unstarted<S: Store + ?Sized>(
    store: &S,
    run: &Run,
    reason: String,
) -> RuntimeResult<()> {
    let mut run = run.clone();
    let t = dispatch_core::Transition::Fail {
        reason,
        exit_code: None,
        at: now_ms(),
    };
    match crate::record::advance(store, &mut run, &t, None).await {
        Ok(()) | Err(crate::record::AdvanceError::Illegal(_)) => Ok(()),
        Err(crate::record::AdvanceError::Store(e)) => Err(e.into()),
    }
}
