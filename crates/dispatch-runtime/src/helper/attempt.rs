//! The attempts of one run: start the agent, watch it, decide how the
//! attempt ended, and either finish the run or requeue it for another try
//! after a backoff. The same helper process owns every attempt.

use dispatch_core::event::Usage;
use dispatch_core::parcel::{Courier, Parcel};
use dispatch_core::{Operation, Status, Transition, now_ms};
use dispatch_store::{Run, Store};
use nix::sys::signal::Signal;
use serde_json::Value;

use super::retry::{self, AttemptFailure};
use super::watch::{Verdict, Watch};
use super::{LifecycleLog, agent, cancelled, collect, finish, load_parcel, prepare};
use crate::error::{RuntimeError, RuntimeResult};
use crate::layout::Layout;
use crate::os;
use crate::record::{AdvanceError, advance};
use crate::submit::session_file;

/// How one attempt ended.
enum End {
    /// The run ends now with `t`.
    Final(Transition, Option<Value>),
    /// The attempt failed in a way another attempt may fix.
    Retryable(Transition, AttemptFailure, Option<Value>),
}

/// Runs attempts of the claimed run until one ends it. Returns its exit status.
pub(super) async fn run_attempts<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    mut run: Run,
    log: &mut LifecycleLog,
    own_signals: bool,
) -> RuntimeResult<i32> {
    // Loaded once for every attempt of the run.
    let parcel = load_parcel(layout, &run);
    let extras = store.run_extras(&run.id).await.ok();
    let policy = retry::policy_of(extras.as_ref(), parcel.as_ref().ok().map(|p| &p.manifest));
    let session = extras.and_then(|e| e.session);
    loop {
        let max = policy.max_attempts();
        log.line(&format!("attempt {} of {max}", run.attempt));
        let ctx = Context {
            policy: &policy,
            session: session.as_deref(),
            own_signals,
            parcel: parcel.as_ref(),
        };
        let (end, checkpoint) = one_attempt(store, layout, &mut run, log, &ctx).await?;
        let (t, failure, output) = match end {
            End::Final(t, output) => (t, None, output),
            End::Retryable(t, failure, output) => (t, Some(failure), output),
        };
        // Attempts used so far, not counting lost-helper recoveries (read
        // only when another attempt is possible: it scans the event log).
        let used = match failure {
            Some(_) => run
                .attempt
                .saturating_sub(retry::lost_recoveries(store, &run.id).await),
            None => run.attempt,
        };
        let stop_requested = failure.is_some()
            && store
                .get_run(&run.id)
                .await
                .map(|r| r.stop_requested_at.is_some())
                .unwrap_or(false);
        let Some(failure) = failure.filter(|_| used < max && !stop_requested) else {
            let code = finish(store, layout, &mut run, log, t, output).await?;
            retry::dead_letter(store, &run, checkpoint).await;
            return Ok(code);
        };
        let wait = policy.backoff_ms(used, fastrand::f64());
        log.line(&retry::retry_line(&failure, run.attempt, max, wait));
        if !retry::requeue(store, &mut run, &failure, now_ms() + wait as i64, false).await? {
            return Ok(crate::run_exit_code(&store.get_run(&run.id).await?.state));
        }
        let Some(due) = retry::wait_until_due(store, &run.id).await? else {
            return Ok(crate::run_exit_code(&store.get_run(&run.id).await?.state));
        };
        run = due;
        let claim = Transition::Claim {
            helper: os::this_process(),
            at: now_ms(),
        };
        match advance(store, &mut run, &claim, None).await {
            Ok(()) => {}
            Err(AdvanceError::Illegal(_)) => return Ok(crate::run_exit_code(&run.state)),
            Err(AdvanceError::Store(e)) => return Err(e.into()),
        }
    }
}

/// Runs the current attempt of a claimed (`starting`) run to its end.
/// What every attempt of a run shares.
struct Context<'a> {
    policy: &'a dispatch_core::policy::RunPolicy,
    session: Option<&'a str>,
    own_signals: bool,
    parcel: Result<&'a Parcel, &'a String>,
}

async fn one_attempt<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &mut Run,
    log: &mut LifecycleLog,
    ctx: &Context<'_>,
) -> RuntimeResult<(End, Option<Value>)> {
    let Context {
        policy,
        session,
        own_signals,
        parcel,
    } = *ctx;
    if run.stop_requested_at.is_some() {
        return Ok((End::Final(cancelled(None), None), None));
    }
    let mut prepared = match prepare(layout, run, parcel) {
        Ok(p) => p,
        Err(reason) => {
            let t = Transition::Fail {
                reason,
                exit_code: None,
                at: now_ms(),
            };
            return Ok((End::Final(t, None), None));
        }
    };
    if prepared.courier == Courier::Noop {
        // The noop courier: the agent "starts" and succeeds at once; no
        // process (pid 0, which process-group signalling never touches).
        log.line(&format!(
            "run {} attempt {}: noop courier",
            run.id, run.attempt
        ));
        let agent = dispatch_core::ProcRef {
            pid: 0,
            start_ticks: 0,
        };
        let started = Transition::AgentStarted {
            agent,
            at: now_ms(),
        };
        match advance(store, run, &started, None).await {
            Ok(()) | Err(AdvanceError::Illegal(_)) => {}
            Err(AdvanceError::Store(e)) => return Err(e.into()),
        }
        let done = Transition::Exited {
            code: 0,
            at: now_ms(),
        };
        return Ok((End::Final(done, None), None));
    }
    let dir = layout.run_dir(&run.id);
    let spec = &mut prepared.spec;
    if run.attempt > 1 {
        // Each attempt has its own events file.
        spec.events = dir.join(format!("events.{}.jsonl", run.attempt));
        set_env(
            &mut spec.env,
            "DISPATCH_EVENTS",
            &spec.events.to_string_lossy(),
        );
    }
    let _ = std::fs::remove_file(&prepared.output_path); // an earlier attempt's result
    // Only a later attempt has an earlier attempt's checkpoint to resume from.
    let checkpoint = match run.attempt {
        1 => None,
        _ => retry::last_checkpoint(store, &run.id).await,
    };
    if let Some(checkpoint) = checkpoint {
        let path = dir.join("checkpoint.json");
        let bytes = serde_json::to_vec(&checkpoint).expect("a checkpoint is JSON data");
        if std::fs::write(&path, bytes).is_ok() {
            set_env(
                &mut spec.env,
                "DISPATCH_CHECKPOINT",
                &path.to_string_lossy(),
            );
            log.line(&format!("resuming from checkpoint {}", checkpoint["step"]));
        }
    }
    if let Some(file) = session.and_then(|s| session_file(layout, s)) {
        if let Some(parent) = file.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        set_env(
            &mut spec.env,
            "DISPATCH_SESSION_FILE",
            &file.to_string_lossy(),
        );
    }
    log.line(&format!(
        "run {} attempt {}: starting {} `{}`",
        run.id,
        run.attempt,
        run.operation,
        prepared.spec.command.join(" ")
    ));
    let child = match agent::spawn(&prepared.spec) {
        Ok(child) => child,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let reason = format!("could not start `{}`: {e}", prepared.spec.command.join(" "));
            let t = Transition::Fail {
                reason,
                exit_code: Some(code),
                at: now_ms(),
            };
            return Ok((End::Final(t, None), None));
        }
    };
    let agent_ref = os::proc_ref(child.id().unwrap_or(0));
    if let Err(e) = advance(
        store,
        run,
        &Transition::AgentStarted {
            agent: agent_ref,
            at: now_ms(),
        },
        None,
    )
    .await
    {
        os::signal_group(agent_ref.pid, Signal::SIGKILL);
        return Err(match e {
            AdvanceError::Store(e) => e.into(),
            AdvanceError::Illegal(e) => RuntimeError::Io {
                what: "recording the agent start of",
                path: layout.log(&run.id),
                source: std::io::Error::other(e.to_string()),
            },
        });
    }
    // A stop that arrived while we were starting found no process group yet.
    if store
        .get_run(&run.id)
        .await
        .map(|r| r.stop_requested_at.is_some())
        .unwrap_or(false)
    {
        os::signal_group(agent_ref.pid, Signal::SIGTERM);
    }
    let baseline: Usage = run.usage;
    let mut watch = Watch::new(
        run.id.clone(),
        run.attempt,
        policy.clone(),
        layout.clone(),
        baseline,
    );
    let outcome = agent::supervise(
        store,
        &run.id,
        &prepared.spec,
        child,
        &mut watch,
        own_signals,
    )
    .await;
    watch.expire_pending(store).await;

    let artifacts = collect::collect_artifacts(&prepared.artifacts_dir, &layout.artifacts());
    match artifacts {
        Ok(list) if !list.is_empty() => {
            if let Err(e) = store.add_artifacts(&run.id, &list).await {
                log.line(&format!("could not record artifacts: {e}"));
            }
        }
        Ok(_) => {}
        Err(e) => log.line(&format!("could not collect artifacts: {e}")),
    }
    let output = collect::read_output(&prepared.output_path, outcome.last_output);
    *run = store.get_run(&run.id).await?;
    let stop_requested = outcome.signalled || run.stop_requested_at.is_some();
    let at = now_ms();
    let code = outcome.exit_code;
    let failure = |reason: String, status: Status| AttemptFailure {
        reason,
        exit_code: Some(code),
        status,
    };
    let end = match watch.verdict.clone() {
        Some(Verdict::Budget(reason)) => End::Final(
            Transition::Fail {
                reason,
                exit_code: Some(code),
                at,
            },
            output,
        ),
        Some(Verdict::TimedOut(reason)) => End::Retryable(
            Transition::TimeOut {
                reason: reason.clone(),
                exit_code: Some(code),
                at,
            },
            failure(reason, Status::TimedOut),
            output,
        ),
        None if stop_requested && code != 0 => End::Final(cancelled(Some(code)), output),
        None if code == 0 => End::Final(Transition::Exited { code, at }, output),
        None => {
            let reason = outcome
                .error
                .clone()
                .unwrap_or_else(|| dispatch_core::state::exit_reason(code));
            let t = Transition::Fail {
                reason: reason.clone(),
                exit_code: Some(code),
                at,
            };
            let declared_final = outcome.error.is_some() && !outcome.error_retryable;
            if declared_final || run.operation == Operation::Service {
                End::Final(t, output)
            } else {
                End::Retryable(t, failure(reason, Status::Failed), output)
            }
        }
    };
    Ok((end, watch.checkpoint))
}

fn set_env(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.to_string()));
}
