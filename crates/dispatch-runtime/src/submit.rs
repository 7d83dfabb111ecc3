//! Dispatching with the reliability options: dependency probes, the
//! effective policy, deduplication and sessions, all checked before (or
//! atomically with) creating the run.

use dispatch_core::Operation;
use dispatch_core::brief::Brief;
use dispatch_core::parcel::{Courier, Parcel};
use dispatch_core::policy::{PolicyOverrides, RunPolicy};
use dispatch_store::{Created, NewRun, RunExtras, Store, StoreError};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{RuntimeError, RuntimeResult};
use crate::launch::{LaunchRequest, check_secrets, resolve_parcel, write_brief};
use crate::layout::Layout;
use crate::probe;
use crate::reconcile::reconcile;

/// The reliability side of a dispatch.
#[derive(Clone, Debug, Default)]
pub struct SubmitOptions {
    pub overrides: PolicyOverrides,
    /// An explicit idempotency key.
    pub idempotency_key: Option<String>,
    /// Derive the key from parcel digest + operation + payload.
    pub dedup: bool,
    /// Create a new run even when the key matches one.
    pub force: bool,
    /// Bind the named session of the parcel.
    pub session: Option<String>,
    /// Reuse this exact brief (a replay) instead of assembling one.
    pub brief_sha256: Option<String>,
    /// Create the run already claimed by this helper process (see
    /// [`dispatch_store::NewRun::claimed_by`]).
    pub helper: Option<dispatch_core::ProcRef>,
    /// Use this stored policy as it is (a replay) instead of resolving one.
    pub policy: Option<serde_json::Value>,
    /// `dispatch create`: the run stays `created` until it is started.
    pub created: bool,
    /// Keep the run's workspace after it ends (`--keep-workspace`).
    pub keep_workspace: bool,
    /// What starts the run, when not what the request implies (`manual`,
    /// or `restart` for a request linked to an origin).
    pub trigger: Option<dispatch_core::Trigger>,
    /// `--concurrency-key`, `--concurrency-max`, `--concurrency-strategy`.
    pub concurrency: crate::concurrency::ConcurrencyOverrides,
    /// `--model`, `--base-url`, `--provider`, `--reasoning-effort` (a native agent's).
    pub model: ModelChoice,
}

/// The model a native run calls, chosen at dispatch (`dispatch run --model
/// --base-url --provider --reasoning-effort`; the same fields of `POST /v1/runs`): each given
/// wins over the dispatching process's `LLM_MODEL` / `LLM_BASE_URL`, and
/// the result is written into the brief (`context.llm`; never a key).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelChoice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `low`, `medium` or `high`: over the Agentfile's REASONING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
}

impl ModelChoice {
    /// What goes into a brief's `context.llm`: this choice over `env`'s
    /// `LLM_*`; `None` when nothing is chosen. An error names the bad value.
    pub fn context(&self, env: impl Fn(&str) -> Option<String>) -> RuntimeResult<Option<Value>> {
        let over = dispatch_agent::Override::layered(
            env,
            self.model.as_deref(),
            self.base_url.as_deref(),
            self.provider.as_deref(),
            self.reasoning_effort.as_deref(),
        )
        .map_err(RuntimeError::Agent)?;
        Ok(over.map(|o| serde_json::to_value(o).expect("plain data")))
    }
}

/// Resolves the parcel, probes its dependencies and creates the run (or finds
/// the one it duplicates). Returns the parcel and the extras it was
/// dispatched with too.
pub async fn submit<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    req: &LaunchRequest,
    opts: &SubmitOptions,
) -> RuntimeResult<(Created, Parcel, RunExtras)> {
    create(store, layout, prepare(layout, req, opts)?).await
}

/// A dispatch checked and made ready without the database: its parcel
/// resolved (built from a path), secrets, session name and dependencies
/// checked, brief written and policy resolved. [`create`] stores it.
pub struct Submission {
    new: NewRun,
    extras: RunExtras,
    parcel: Parcel,
    force: bool,
}

impl Submission {
    /// The resolved parcel.
    pub fn parcel(&self) -> &Parcel {
        &self.parcel
    }

    /// The run to create and its extras, for a caller that stores them its
    /// own way (`dispatch eval` enqueues them with its labels).
    pub fn into_parts(self) -> (NewRun, RunExtras, Parcel) {
        (self.new, self.extras, self.parcel)
    }
}

/// The first half of [`submit`]: everything that needs no database (so
/// that `dispatch run` does it while the database opens).
pub fn prepare(
    layout: &Layout,
    req: &LaunchRequest,
    opts: &SubmitOptions,
) -> RuntimeResult<Submission> {
    prepare_for(layout, resolve_parcel(layout, &req.source)?, req, opts)
}

/// [`prepare`] for a parcel the caller resolved already (a coordinator
/// loads each member's parcel once; parcels are immutable).
pub fn prepare_for(
    layout: &Layout,
    parcel: Parcel,
    req: &LaunchRequest,
    opts: &SubmitOptions,
) -> RuntimeResult<Submission> {
    check_secrets(&parcel)?;
    crate::limits::machine::check_fits(&parcel.manifest.resources)
        .map_err(RuntimeError::Resources)?;
    if let Some(name) = &opts.session {
        check_session_name(name)?;
    }
    probe::probe_all(&parcel.manifest.requires)?;
    let operation = req.operation.unwrap_or(parcel.manifest.entrypoint);
    // The policy decides before anything is written; what it changes of
    // the run applies as if the caller had asked for it.
    let trigger = opts.trigger.unwrap_or(match req.origin_id {
        Some(_) => dispatch_core::Trigger::Restart,
        None => dispatch_core::Trigger::Manual,
    });
    let passed = crate::policy_gate::gate_local(
        layout,
        &req.project,
        &parcel,
        operation,
        trigger,
        &req.payload,
    )?;
    let modified;
    let opts = match passed.as_ref().and_then(|p| p.modify.as_ref()) {
        Some(m) => {
            modified = crate::policy_gate::apply(opts, &parcel.manifest, m);
            &modified
        }
        None => opts,
    };
    let mut brief = Brief::assemble(&parcel, operation, req.payload.clone());
    if parcel.manifest.courier == Courier::Agent {
        native_checks(&parcel, &mut brief, opts)?;
    }
    let brief_sha256 = match &opts.brief_sha256 {
        Some(sha) => sha.clone(),
        None => write_brief(layout, &brief)?,
    };
    let policy = match &opts.policy {
        Some(p) => p.clone(),
        None => serde_json::to_value(RunPolicy::resolve(&parcel.manifest, &opts.overrides))
            .expect("a policy is plain data"),
    };
    let idempotency_key = opts.idempotency_key.clone().or_else(|| {
        opts.dedup
            .then(|| default_key(&parcel.digest, operation.as_str(), &req.payload))
    });
    let concurrency =
        crate::concurrency::resolve(&parcel.manifest, &req.payload, &[], &opts.concurrency)?;
    let extras = RunExtras {
        idempotency_key,
        session: opts
            .session
            .as_ref()
            .map(|s| format!("{}/{s}", parcel.manifest.name)),
        policy: Some(policy),
        keep_workspace: opts.keep_workspace,
        concurrency,
        traceparent: None,
        // The policy's decision is written with the run, in its transaction.
        events: passed
            .as_ref()
            .map(|p| crate::policy_gate::decision_event(&p.event))
            .into_iter()
            .collect(),
        // Sent to a person by the policy: created in review, never claimed.
        review: match passed.as_ref().and_then(|p| p.review.clone()) {
            Some(reason) => Some(dispatch_store::Review {
                reason,
                timeout_ms: crate::review::local_timeout()?,
            }),
            None => None,
        },
    };
    let mut new = req.new_run(&parcel, operation, brief_sha256);
    // A service's helper claims it its own way.
    new.claimed_by = opts.helper.filter(|_| operation != Operation::Service);
    new.created = opts.created;
    if let Some(trigger) = opts.trigger {
        new.trigger = trigger;
    }
    Ok(Submission {
        new,
        extras,
        parcel,
        force: opts.force,
    })
}

/// The second half of [`submit`]: creates the prepared run, or finds the
/// one it duplicates.
pub async fn create<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    sub: Submission,
) -> RuntimeResult<(Created, Parcel, RunExtras)> {
    let Submission {
        new,
        extras,
        parcel,
        force,
    } = sub;

    // A run holding the session or key may have lost its helper: reconcile
    // it, and try once more if that ended it.
    for _ in 0..2 {
        let holder = match store.create_run_with(&new, &extras, !force).await {
            Ok(Created::Existing(run)) => run,
            Ok(created) => return Ok((created, parcel, extras)),
            Err(StoreError::SessionBusy { run, .. }) => store.get_run(&run).await?,
            Err(e) => return Err(e.into()),
        };
        let before = holder.status();
        let holder = reconcile(store, layout, holder).await?;
        if holder.status() == before {
            break;
        }
    }
    let created = store.create_run_with(&new, &extras, !force).await?;
    Ok((created, parcel, extras))
}

/// A native agent: the environment's model overrides go into the brief, and
/// the models it will call must have their keys here, and prices under
/// `LIMIT COST`, before anything runs.
fn native_checks(parcel: &Parcel, brief: &mut Brief, opts: &SubmitOptions) -> RuntimeResult<()> {
    if let Some(problem) = crate::native::client_problem() {
        return Err(RuntimeError::Agent(problem.to_string()));
    }
    let env = |k: &str| std::env::var(k).ok();
    if let Some(llm) = opts.model.context(env)? {
        brief.context["llm"] = llm;
    }
    let policy = match &opts.policy {
        Some(p) => serde_json::from_value(p.clone()).unwrap_or_default(),
        None => RunPolicy::resolve(&parcel.manifest, &opts.overrides),
    };
    crate::helper::native::loop_config(parcel, &brief.context, &policy, env)
        .map(drop)
        .map_err(RuntimeError::Agent)
}

/// What [`prepare`] checks of a native agent that needs no key (a server
/// dispatching for workers that hold the keys): `LIMIT COST` needs a price
/// for every model.
pub fn check_native_without_keys(parcel: &Parcel, policy: &RunPolicy) -> RuntimeResult<()> {
    if parcel.manifest.courier != Courier::Agent {
        return Ok(());
    }
    // Any key is there; no `LLM_*` redirection is (that is the workers').
    let any_key =
        |k: &str| (!matches!(k, "LLM_BASE_URL" | "LLM_MODEL")).then(|| String::from("unused"));
    crate::helper::native::loop_config(parcel, &serde_json::Value::Null, policy, any_key)
        .map(drop)
        .map_err(RuntimeError::Agent)
}

/// The default idempotency key: SHA-256 of parcel digest, operation and the
/// payload's canonical JSON.
pub fn default_key(digest: &str, operation: &str, payload: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(digest.as_bytes());
    h.update(b"\n");
    h.update(operation.as_bytes());
    h.update(b"\n");
    h.update(serde_json::to_vec(payload).expect("a payload is JSON data"));
    hex::encode(h.finalize())
}

/// Refuses a session name that is empty, hidden or not a plain file name.
pub fn check_session_name(name: &str) -> RuntimeResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::BadSession(name.to_string()))
    }
}

/// `state/<parcel>/sessions/<name>.json`: the bound session's state file.
pub fn session_file(layout: &Layout, session: &str) -> Option<std::path::PathBuf> {
    let (parcel, name) = session.split_once('/')?;
    Some(
        layout
            .state_dir(parcel)
            .join("sessions")
            .join(format!("{name}.json")),
    )
}
