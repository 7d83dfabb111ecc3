//! Group runs: a run that starts no program of its own and groups the runs
//! it is the parent of, held by the process that opened it (`dispatch eval`:
//! the eval's run, whose children are the cases' runs).
//!
//! The holder is recorded as the run's helper and its "agent" is pid 0 (no
//! process group, never signalled), as for a workflow's coordinator. So the
//! daemonless rules apply unchanged: `dispatch stop` records a stop request,
//! which the holder sees and obeys (it stops the children and ends the run
//! `cancelled`); a holder that dies is found by the next reader, which ends
//! the run `failed` (a group run never retries: it has nothing to re-run).

use dispatch_core::EventKind;
use dispatch_core::brief::Brief;
use dispatch_core::event::Usage;
use dispatch_core::parcel::Parcel;
use dispatch_core::policy::{PolicyOverrides, RunPolicy};
use dispatch_core::{NewEvent, Operation, ProcRef, Transition, Trigger, now_ms};
use dispatch_store::{Created, QueueOptions, QueueStore, Run, RunExtras, Store};
use serde_json::Value;

use crate::error::RuntimeResult;
use crate::launch::{LaunchRequest, write_brief};
use crate::layout::Layout;
use crate::record::{AdvanceError, advance};

/// The label of an eval's own run (its cases carry `eval=<its id>`): how
/// `restart`, `replay` and the server's `POST /v1/evals` know one.
pub const EVAL_RUN_LABEL: &str = "eval-run";

/// What a group run is opened with.
pub struct Opening<'a> {
    /// The parcel the group is about (an eval: the agent under test).
    pub parcel: &'a Parcel,
    /// What the group is, kept as its payload (shown by `inspect-run`).
    pub payload: Value,
    pub trigger: Trigger,
    pub labels: Vec<String>,
}

/// Creates the group run, held by this process and `running`.
pub async fn open<S: Store + QueueStore + ?Sized>(
    store: &S,
    layout: &Layout,
    opening: Opening<'_>,
) -> RuntimeResult<Run> {
    let parcel = opening.parcel;
    let brief = Brief::assemble(parcel, Operation::Job, opening.payload.clone());
    let sha = write_brief(layout, &brief)?;
    let req = LaunchRequest {
        source: parcel.digest.clone(),
        operation: Some(Operation::Job),
        payload: opening.payload,
        parent_id: None,
        origin_id: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    };
    let mut new = req.new_run(parcel, Operation::Job, sha);
    new.trigger = opening.trigger;
    new.claimed_by = Some(crate::os::this_process());
    // Nothing to re-run: a holder that dies ends the group `failed`.
    let no_retries = PolicyOverrides {
        retries: Some(0),
        ..PolicyOverrides::default()
    };
    let policy = RunPolicy::resolve(&parcel.manifest, &no_retries);
    let extras = RunExtras {
        policy: Some(serde_json::to_value(policy).expect("a policy is plain data")),
        ..RunExtras::default()
    };
    let queue = QueueOptions {
        labels: opening.labels,
        ..QueueOptions::default()
    };
    let mut run = match store.enqueue_with(&new, &extras, &queue, false).await? {
        Created::New(run) | Created::Existing(run) => run,
    };
    let started = Transition::AgentStarted {
        agent: ProcRef {
            pid: 0,
            start_ticks: 0,
        },
        at: now_ms(),
    };
    match advance(store, &mut run, &started, None).await {
        // Illegal only when something ended it already; the holder sees that.
        Ok(()) | Err(AdvanceError::Illegal(_)) => Ok(run),
        Err(AdvanceError::Store(e)) => Err(e.into()),
    }
}

/// Whether someone asked to stop the group (`dispatch stop <id>`).
pub async fn stop_requested<S: Store + ?Sized>(store: &S, run: &Run) -> RuntimeResult<bool> {
    Ok(store.get_run(&run.id).await?.stop_requested_at.is_some())
}

/// Ends the group: `succeeded` when `ok`, else `failed` with `reason`
/// (`cancelled` with it when `stopped`); `output` kept as its output and
/// `used` (its children's usage together) as its usage.
pub async fn close<S: Store + ?Sized>(
    store: &S,
    run: &mut Run,
    end: End,
    output: Option<Value>,
    used: Usage,
) -> RuntimeResult<()> {
    if used.total_tokens() > 0 || used.cost_usd > 0.0 {
        let data = serde_json::json!({
            "model": "group members",
            "input_tokens": used.input_tokens,
            "output_tokens": used.output_tokens,
            "cost_usd": used.cost_usd,
            "rollup": true,
        });
        let event = NewEvent::new(EventKind::Usage, run.attempt, now_ms(), data);
        store.append_events(&run.id, &[event]).await?;
        *run = store.get_run(&run.id).await?;
    }
    let at = now_ms();
    let t = match end {
        End::Passed => Transition::Exited { code: 0, at },
        End::Failed(reason) => Transition::Fail {
            reason,
            exit_code: Some(1),
            at,
        },
        End::Stopped(reason) => Transition::Cancel {
            reason,
            exit_code: None,
            at,
        },
    };
    match advance(store, run, &t, output).await {
        Ok(()) => Ok(()),
        // Ended by someone else already (a reader that took us for dead).
        Err(AdvanceError::Illegal(_)) => Ok(()),
        Err(AdvanceError::Store(e)) => Err(e.into()),
    }
}

/// How a group run ends.
#[derive(Debug, PartialEq)]
pub enum End {
    Passed,
    Failed(String),
    Stopped(String),
}

/// How an eval's run ends, and its output, read off the eval's report (what
/// `dispatch eval --format json` prints): one reading for the local eval
/// and for the server that ends a cluster eval's run.
pub fn eval_end(report: &Value) -> (End, Value) {
    let s = &report["summary"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let output = serde_json::json!({"eval": report["eval"], "summary": s});
    let failing: Vec<&str> = s["failing_cases"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let end = match report["stopped"].as_str() {
        Some(why) => End::Stopped(format!(
            "{why}; {} of {} case run(s) passed",
            n("passed"),
            n("runs")
        )),
        None if s["ok"].as_bool() == Some(true) => End::Passed,
        None if !failing.is_empty() => End::Failed(format!(
            "{} of {} case run(s) failed: {}",
            n("failed"),
            n("runs"),
            failing.join(", ")
        )),
        None => {
            let regressed: Vec<&str> = report["baseline"]["regressed"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            End::Failed(format!(
                "{} case(s) regressed against the baseline {}: {}",
                regressed.len(),
                report["baseline"]["baseline"].as_str().unwrap_or_default(),
                regressed.join(", ")
            ))
        }
    };
    (end, output)
}

/// The eval's cases' usage together (from its report's results).
pub fn eval_usage(report: &Value) -> Usage {
    let mut u = Usage::default();
    for r in report["results"].as_array().into_iter().flatten() {
        u.input_tokens += r["input_tokens"].as_u64().unwrap_or(0);
        u.output_tokens += r["output_tokens"].as_u64().unwrap_or(0);
        u.cost_usd += r["cost_usd"].as_f64().unwrap_or(0.0);
    }
    u
}
