//! The helper: `dispatch internal run-record <id>`. It owns one run from
//! claim to terminal state: prepare the workspace, verify the brief, start the
//! courier, stream output and events, collect artifacts and output, write the
//! terminal snapshot, then the terminal state. The same helper runs every
//! attempt of the run (`attempt.rs`), each carried by the parcel's courier
//! ([`crate::courier`]), waiting out the backoff in between
//! (`retry.rs`), and enforces timeouts, budgets and approvals while the agent
//! runs (`watch.rs`). A cluster worker runs the runs it claims through the
//! same code ([`run_in_worker`]).

pub(crate) mod agent;
pub mod agent_env;
mod attempt;
pub(crate) mod collect;
pub mod native;
mod native_approval;
mod native_attempt;
pub(crate) mod native_billing;
mod native_quota;
mod native_rate;
mod native_tools;
pub(crate) mod resources;
pub(crate) mod retry;
pub(crate) mod session_file;
pub(crate) mod shared;
mod shell;
pub(crate) mod slot;
pub(crate) mod wasm;
mod wasm_serve;
mod wasm_session;
pub(crate) mod watch;

use dispatch_core::EventKind;
use std::io::Write;
use std::sync::Arc;

use dispatch_core::parcel::{self, Courier, Parcel};
use dispatch_core::time::human_duration;
use dispatch_core::{RunId, Status, Transition, brief, now_ms};
use dispatch_store::{Run, Store, StoreError};
use serde_json::Value;

use crate::error::{RuntimeResult, io};
use crate::layout::Layout;
use crate::record::{AdvanceError, advance_all};
use crate::run_exit_code;
use crate::snapshot::{self, FinalSnapshot};

use agent::AgentSpec;

/// Runs the queued run `id` to a terminal state. Returns the run's exit status.
pub async fn run_record<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    id: &RunId,
) -> RuntimeResult<i32> {
    run_record_with(store, layout, id, Known::default()).await
}

/// [`run_record`] with what the caller knows (a workflow member's helper:
/// how to signal its coordinator).
pub async fn run_record_with<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    id: &RunId,
    known: Known,
) -> RuntimeResult<i32> {
    // A run requeued with a backoff (by a lost-helper recovery) waits it out.
    let run = match retry::wait_until_due(store, id).await? {
        Some(run) => run,
        None => store.get_run(id).await?,
    };
    claim_and_run_with(store, layout, run, known).await
}

/// What [`run_record`] does once it has the run: claim it for this process
/// and run it. `dispatch run` hands its helper the run it just created, so
/// the helper starts without reading it back.
pub async fn claim_and_run<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: Run,
) -> RuntimeResult<i32> {
    claim_and_run_with(store, layout, run, Known::default()).await
}

async fn claim_and_run_with<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    mut run: Run,
    known: Known,
) -> RuntimeResult<i32> {
    match slot::claim(store, layout, run.clone()).await? {
        Ok(slot::Claim::Held(held)) => run = held,
        Ok(slot::Claim::Ended(ended)) => return Ok(run_exit_code(&ended.state)),
        Err(AdvanceError::Illegal(_)) => {
            return Err(StoreError::InvalidState {
                id: run.id.clone(),
                status: run.status(),
                hint: "another helper owns it or it has finished",
            }
            .into());
        }
        Err(AdvanceError::Store(e)) => return Err(e.into()),
    }
    run_claimed(store, layout, run, true, known).await
}

/// Runs a run that is already claimed (`starting`, held by this process) to a
/// terminal state: what [`run_record`] does after its claim. A cluster worker
/// calls it for each run it claimed, with a store that fences its writes.
///
/// With `own_signals`, a SIGTERM or SIGINT to this process stops the agent
/// (a helper owns its process); a worker that runs many runs passes `false`
/// and stops agents itself.
pub async fn run_claimed<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: Run,
    own_signals: bool,
    known: Known,
) -> RuntimeResult<i32> {
    let host = Host {
        own_signals,
        snapshot: true,
        leased: false,
    };
    let mut log = LifecycleLog::open(layout, &run.id);
    attempt::run_attempts(
        store,
        layout,
        Box::new(run),
        &mut log,
        host,
        Box::new(known),
    )
    .await
}

/// What the caller already has of a run (`dispatch run` just created it; a
/// worker loads each parcel once), so the helper need not read it again.
#[derive(Clone, Default)]
pub struct Known {
    /// The run's parcel (parcels are immutable).
    pub parcel: Option<Arc<Parcel>>,
    /// What the run was dispatched with beyond its record (never changes).
    pub extras: Option<dispatch_store::RunExtras>,
    /// How the run's handoffs start their runs; a local helper's
    /// ([`crate::handoff::LocalUpstream`]) when `None`.
    pub upstream: Option<Arc<dyn crate::handoff::Upstream>>,
    /// Where a workflow's coordinator puts the briefs of the member runs it
    /// creates, for workers on other machines (a cluster worker's store).
    pub briefs: Option<Arc<dyn crate::workflow::BriefSink>>,
    /// The worker coordinating a workflow, which runs the member runs it has
    /// room for itself (see [`crate::workflow::RunHere`]).
    pub here: Option<Arc<dyn crate::workflow::RunHere>>,
    /// The cluster's shared artifact store (`--artifacts URL`): artifacts
    /// are uploaded there and the parcel's state is synchronized through it
    /// (see [`crate::objects::state`]). `None`: this machine's disk only.
    pub shared: Option<Arc<crate::objects::Objects>>,
    /// A workflow member's helper tells its coordinator when the agent
    /// started and when the run ended (see [`crate::workflow::TurnSignal`]).
    pub turn: Option<Arc<crate::workflow::TurnSignal>>,
}

/// Whether a worker still holds the run it runs, as far as it can know on
/// its own clock: `false` from the moment its lease may have expired for
/// another worker (see `dispatch_server::self_fence`).
pub type Holding = Arc<dyn Fn() -> bool + Send + Sync>;

/// What a cluster worker gives the runs it holds, beyond the store.
pub struct InWorker {
    /// Starts the runs the run hands off to (queued for any worker).
    pub upstream: Arc<dyn crate::handoff::Upstream>,
    /// What a workflow's coordinator needs of the worker.
    pub members: crate::workflow::Members,
    /// The cluster's shared artifact store, if any.
    pub shared: Option<Arc<crate::objects::Objects>>,
    /// Whether the worker still holds the run: the run's log file may be
    /// shared with the worker that takes it over (one root, several
    /// workers), whose log shipper ships what the file gains, so a holder
    /// that may have lost its lease writes its lifecycle lines on its own
    /// stderr, never into the run's log.
    pub holding: Holding,
}

/// Runs the current attempt of a run a cluster worker claimed, like
/// [`run_claimed`], with the run's `parcel` when the worker already loaded
/// it (parcels are immutable: a worker loads each digest once). The worker
/// stops agents itself, and writes no terminal snapshot: a worker that dies
/// before the terminal state is written loses its lease, and the run goes
/// back to the queue. A retry goes back to the queue too (the lease ends),
/// for any worker to take when its backoff is over.
pub async fn run_in_worker<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: Box<Run>,
    parcel: Option<Arc<Parcel>>,
    worker: InWorker,
) -> RuntimeResult<i32> {
    let host = Host {
        own_signals: false,
        snapshot: false,
        leased: true,
    };
    let InWorker {
        upstream,
        members,
        shared,
        holding,
    } = worker;
    let mut log = LifecycleLog::open(layout, &run.id).held_while(holding);
    let known = Known {
        parcel,
        extras: None,
        upstream: Some(upstream),
        briefs: members.briefs,
        here: members.here,
        shared,
        turn: None,
    };
    attempt::run_attempts(store, layout, run, &mut log, host, Box::new(known)).await
}

/// What differs between a helper process and a worker holding a run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Host {
    /// A SIGTERM or SIGINT to this process stops the agent.
    own_signals: bool,
    /// Write `runs/<id>.final.json` before the terminal state, for readers
    /// to apply if this process dies in between.
    snapshot: bool,
    /// The run is held under a lease: a retry gives it back to the queue,
    /// where any worker takes it when it is due (a helper waits it out and
    /// claims it again itself).
    leased: bool,
}

/// Fails a claimed (`starting`) run held by a worker without starting its
/// agent, because its inputs could not be had: the worker could not fetch its parcel or brief, or
/// they failed verification. Like any failed run: a line in its log, the
/// terminal snapshot, the terminal state with `reason`, and a dead letter.
/// Returns the run's exit status.
pub async fn fail_claimed<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    mut run: Run,
    reason: String,
    holding: Holding,
) -> RuntimeResult<i32> {
    let mut log = LifecycleLog::open(layout, &run.id).held_while(holding);
    let t = Transition::Fail {
        reason,
        exit_code: None,
        at: now_ms(),
    };
    let host = Host {
        own_signals: false,
        snapshot: false,
        leased: true,
    };
    let code = finish(store, layout, &mut run, &mut log, host, &[t], &[], None).await?;
    retry::dead_letter(store, &run, None).await;
    Ok(code)
}

pub(crate) fn cancelled(exit_code: Option<i32>) -> Transition {
    Transition::Cancel {
        reason: "stopped by user".into(),
        exit_code,
        at: now_ms(),
    }
}

/// Writes the terminal snapshot (when the host keeps one), then the terminal
/// state: the last of `steps`, each applied to the state the one before left
/// (an agent start not saved yet comes first, `then` the events its agent
/// wrote), all saved at once.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn finish<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &mut Run,
    log: &mut LifecycleLog,
    host: Host,
    steps: &[Transition],
    then: &[dispatch_core::NewEvent],
    output: Option<Value>,
) -> RuntimeResult<i32> {
    let state = steps
        .iter()
        .try_fold(run.state.clone(), |state, t| state.apply(run.operation, t));
    let state = match state {
        Ok(s) => s,
        Err(_) => {
            // Someone else finished it; what the agent wrote is kept all the same.
            crate::record::append_events(store, &run.id, then).await;
            return Ok(run_exit_code(&run.state));
        }
    };
    if host.snapshot {
        let snap = FinalSnapshot {
            run_id: run.id.clone(),
            attempt: run.attempt,
            state: state.clone(),
            output: output.clone(),
            written_at: now_ms(),
        };
        if let Err(e) = snapshot::write(layout, &snap) {
            log.line(&format!("could not write the terminal snapshot: {e}"));
        }
    }
    let took = match (state.started_at(), state.ended_at()) {
        (Some(s), Some(e)) => format!(" in {}", human_duration(e - s)),
        _ => String::new(),
    };
    let how = match (state.status(), state.exit_code(), state.reason()) {
        (Status::Succeeded, _, _) => "succeeded (exit 0)".to_string(),
        (st, _, Some(reason)) => format!("{st}: {reason}"),
        (st, Some(code), None) => format!("{st} (exit {code})"),
        (st, None, None) => st.to_string(),
    };
    log.line(&format!("run {} {how}{took}", run.id));
    match advance_all(store, run, steps, then, output).await {
        Ok(()) | Err(AdvanceError::Illegal(_)) => Ok(run_exit_code(&run.state)),
        Err(AdvanceError::Store(e)) => Err(e.into()),
    }
}

pub(crate) struct Prepared {
    pub(crate) courier: Courier,
    pub(crate) spec: AgentSpec,
    pub(crate) artifacts_dir: std::path::PathBuf,
    pub(crate) output_path: std::path::PathBuf,
    /// The brief's `context`, for a native agent (`Null` for the others):
    /// not the brief's bytes, which hold the run's input once more while
    /// the attempt lasts (issue #38 item 2).
    pub(crate) brief_context: Value,
    /// The cluster's shared artifact store, when the worker has one.
    pub(crate) shared: Option<Arc<crate::objects::Objects>>,
    /// The sandbox of the run's processes (see [`crate::sandbox`]).
    pub(crate) sandbox: crate::sandbox::Plan,
    /// `NETWORK allow`: the proxy that is their only way out, serving
    /// while the attempt lasts (see [`crate::egress`]).
    pub(crate) egress: Option<crate::egress::Proxy>,
}

/// Loads the run's parcel; an error is the reason the run fails.
pub(crate) fn load_parcel(layout: &Layout, run: &Run) -> Result<Parcel, String> {
    parcel::load(&layout.parcels().join(&run.parcel_digest))
        .map_err(|e| format!("cannot load parcel {}: {e}", run.parcel_digest))
}

/// Verifies the brief and lays out the run directory for `parcel` (as
/// [`load_parcel`] returned it, once per run). An error is the reason the
/// run fails (not retryable).
pub(crate) fn prepare(
    layout: &Layout,
    run: &Run,
    parcel: &Parcel,
    traceparent: &str,
) -> Result<Prepared, String> {
    // Never run a parcel that changed on disk (cheap: sizes and mtimes).
    parcel::quick_check(parcel).map_err(|e| e.to_string())?;
    let brief_path = layout.brief(&run.brief_sha256);
    let bytes = std::fs::read(&brief_path)
        .map_err(|e| format!("cannot read brief {}: {e}", brief_path.display()))?;
    brief::verify(&bytes, &run.brief_sha256).map_err(|e| format!("refusing to start: {e}"))?;

    let dir = layout.run_dir(&run.id);
    let artifacts_dir = dir.join("artifacts");
    // Created by whoever writes the first decision: the agent only reads it.
    let approvals = dir.join("approvals");
    let state_dir = layout.state_dir(&parcel.manifest.name);
    for d in [&artifacts_dir, &state_dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let payload = serde_json::to_vec(&run.payload).expect("a payload is JSON data");
    let payload_path = dir.join("payload.json");
    std::fs::write(&payload_path, &payload)
        .map_err(|e| format!("cannot write {}: {e}", payload_path.display()))?;
    let events = dir.join("events.jsonl");
    let output_path = dir.join("output.json");
    let path_str = |p: &std::path::Path| p.to_string_lossy().into_owned();

    let m = &parcel.manifest;
    // The container courier is its own isolation; noop and workflow start
    // no process.
    let settings = crate::sandbox::Settings::from_env();
    let owner = match m.courier {
        Courier::Process | Courier::Agent => settings.owner(),
        _ => None,
    };
    let ws = match m.courier {
        Courier::Noop | Courier::Workflow => crate::workspace::paths(layout, &run.id),
        _ => crate::workspace::ensure_owned(layout, &run.id, parcel, owner)
            .map_err(|e| format!("cannot create the run's workspace: {e}"))?,
    };
    if let Some(owner) = owner {
        crate::sandbox::owner::give(&artifacts_dir, owner)
            .and_then(|_| crate::sandbox::owner::give_tree(&state_dir, owner))
            .map_err(|e| format!("cannot give the run's files to the sandbox's user: {e}"))?;
    }
    let mut sandbox = match m.courier {
        Courier::Process | Courier::Agent => crate::sandbox::Plan::prepare(
            settings,
            &crate::sandbox::RunPaths {
                run: &run.id.to_string(),
                run_dir: &dir,
                brief: &brief_path,
                parcel: &parcel.files_dir(),
                shared: vec![&state_dir],
                cwd: &ws.work,
            },
        )
        .contained(
            crate::contain::Tree::create(layout, &run.id),
            &run.id.to_string(),
        ),
        // The container's client lives and dies in the run's group too;
        // the container itself is the runtime's (removed by the keeper's
        // epilogue, see `container::spawn`).
        Courier::Image => crate::sandbox::Plan::off().contained(
            crate::contain::Tree::create(layout, &run.id),
            &run.id.to_string(),
        ),
        _ => crate::sandbox::Plan::off(),
    };
    // Never unfiltered: a run whose hosts cannot be enforced fails here.
    let egress = match m.egress.is_empty() {
        true => None,
        false => {
            let listener = sandbox.isolate_network()?;
            Some(crate::egress::Proxy::start(
                listener,
                &m.egress,
                run.attempt,
            )?)
        }
    };
    let protocol: Vec<(String, String)> = vec![
        ("DISPATCH_RUN_ID".into(), run.id.to_string()),
        ("DISPATCH_ATTEMPT".into(), run.attempt.to_string()),
        // The holder's fencing token: grows with every claim of the run, so
        // a system that keeps the highest it saw refuses a stale attempt.
        ("DISPATCH_FENCE".into(), run.fence.to_string()),
        ("TRACEPARENT".into(), traceparent.to_string()),
        ("DISPATCH_OPERATION".into(), run.operation.to_string()),
        ("DISPATCH_BRIEF".into(), path_str(&brief_path)),
        ("DISPATCH_BRIEF_SHA256".into(), run.brief_sha256.clone()),
        ("DISPATCH_PAYLOAD".into(), path_str(&payload_path)),
        ("DISPATCH_EVENTS".into(), path_str(&events)),
        ("DISPATCH_ARTIFACTS".into(), path_str(&artifacts_dir)),
        ("DISPATCH_OUTPUT".into(), path_str(&output_path)),
        ("DISPATCH_STATE_DIR".into(), path_str(&state_dir)),
        ("DISPATCH_APPROVALS".into(), path_str(&approvals)),
        ("DISPATCH_PARCEL_DIR".into(), path_str(&parcel.files_dir())),
        ("DISPATCH_WORKSPACE".into(), path_str(&ws.work)),
    ];
    // Never run without a declared secret: a worker that lacks one (the
    // server that accepted the run had it) fails the run at once, naming it.
    // A native agent's model keys are checked with its models.
    let model_keys: Vec<&String> = m
        .agent
        .iter()
        .flat_map(|a| a.models.iter().filter_map(|k| k.key.as_ref()))
        .collect();
    let missing: Vec<&str> = m
        .secrets
        .iter()
        .filter(|name| !model_keys.contains(name))
        .filter(|name| std::env::var_os(name).is_none_or(|v| v.is_empty()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "refusing to start: secret(s) {} not set where the run executes (process {}) (hint: export them in the environment of every worker that may claim this parcel's runs)",
            missing.join(", "),
            std::process::id()
        ));
    }
    let declared: Vec<(String, String)> = m
        .secrets
        .iter()
        .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let parent: Vec<(String, String)> = std::env::vars().collect();
    let mut env = agent_env::build(m, &ws, &parent, &declared, protocol);
    for (k, v) in egress.iter().flat_map(|p| p.env()) {
        crate::courier::set_env(&mut env, &k, &v);
    }
    let secrets = declared.into_iter().map(|(_, v)| v).collect();
    // A native agent reads the brief's context and has its input in its
    // conversation; a process reads its input on its stdin: each attempt
    // keeps only what it reads.
    let (brief_context, stdin) = match m.courier {
        Courier::Agent => (context_of(&bytes), Vec::new()),
        _ => (Value::Null, payload),
    };
    Ok(Prepared {
        courier: m.courier,
        spec: AgentSpec {
            command: m.command.clone(),
            cwd: ws.work,
            env,
            stdin,
            log: layout.log(&run.id),
            events,
            secrets,
            attempt: run.attempt,
        },
        artifacts_dir,
        output_path,
        brief_context,
        shared: None,
        sandbox,
        egress,
    })
}

/// The `context` of a brief's bytes (`Null` when they have none), read
/// without keeping the rest.
fn context_of(brief: &[u8]) -> Value {
    #[derive(serde::Deserialize)]
    struct Context {
        #[serde(default)]
        context: Value,
    }
    serde_json::from_slice::<Context>(brief)
        .map(|b| b.context)
        .unwrap_or(Value::Null)
}

/// The `sandbox` event of an attempt: which protections its processes got
/// (`None` when the sandbox is off and nothing was asked).
pub(crate) fn sandbox_event(
    plan: &crate::sandbox::Plan,
    attempt: u32,
) -> Option<dispatch_core::NewEvent> {
    let mut data = serde_json::to_value(&plan.applied).ok()?;
    data["line"] = Value::String(plan.applied.line());
    Some(dispatch_core::NewEvent::new(
        EventKind::Sandbox,
        attempt,
        now_ms(),
        data,
    ))
}

/// `[dispatch] …` lines in the run's log, with every secret of the run the
/// attempts have made known masked (see [`LifecycleLog::mask_also`]).
pub(crate) struct LifecycleLog {
    /// The run's log, opened for each line (a run holds no descriptor on
    /// it for these few lines: issue #38); `None` when it cannot be made.
    path: Option<std::path::PathBuf>,
    secrets: Vec<String>,
    /// The run, for lines said elsewhere.
    id: RunId,
    /// A worker's hold on the run: once it may be lost, lines go to this
    /// process's stderr instead (see [`InWorker::holding`]).
    holding: Option<Holding>,
}

impl LifecycleLog {
    fn open(layout: &Layout, id: &RunId) -> Self {
        let path = layout.log(id);
        let made = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("opening", &path))
            .is_ok();
        LifecycleLog {
            path: made.then_some(path),
            secrets: Vec::new(),
            id: id.clone(),
            holding: None,
        }
    }

    /// Lines go into the run's log only while `holding` says so.
    fn held_while(mut self, holding: Holding) -> Self {
        self.holding = Some(holding);
        self
    }

    pub(crate) fn line(&mut self, text: &str) {
        let text = agent::mask(text, &self.secrets);
        if self.holding.as_ref().is_some_and(|held| !held()) {
            tracing::warn!(
                "run {}: {text} (not in the run's log: this worker may no longer hold the run)",
                self.id
            );
            return;
        }
        if let Some(path) = &self.path
            && let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path)
        {
            let _ = f.write_all(format!("[dispatch] {text}\n").as_bytes());
        }
    }

    /// Masks `values` too, from now on: in these lines, and in what the
    /// run's attempts end with ([`LifecycleLog::secrets`]).
    pub(crate) fn mask_also(&mut self, values: &[String]) {
        for v in values.iter().filter(|v| !v.is_empty()) {
            if !self.secrets.contains(v) {
                self.secrets.push(v.clone());
            }
        }
    }

    /// The run's secret values known so far.
    pub(crate) fn secrets(&self) -> &[String] {
        &self.secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_worker_that_may_have_lost_the_run_writes_nothing_into_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.runs()).expect("runs dir");
        let id = RunId::new();
        let held = Arc::new(AtomicBool::new(true));
        let h = held.clone();
        let mut log =
            LifecycleLog::open(&layout, &id).held_while(Arc::new(move || h.load(Ordering::SeqCst)));
        log.line("while held");
        held.store(false, Ordering::SeqCst);
        log.line("after the lease may have expired");
        let text = std::fs::read_to_string(layout.log(&id)).expect("the log");
        assert_eq!(text, "[dispatch] while held\n");
    }
}
