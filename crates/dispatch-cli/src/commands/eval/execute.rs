//! Runs the cases: each repeat of each case is a real run, created and
//! started the way `dispatch run --detach` does it (the parcel's brief,
//! policy and helper), labeled `eval` and `eval=<id>`, a child of the eval's
//! run (see [`dispatch_runtime::group`]), at most `jobs` at once.
//!
//! `dispatch stop <eval run>` or Ctrl-C stops the eval: its live cases are
//! stopped, the ones not started are reported `not run`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dispatch_core::parcel::Parcel;
use dispatch_runtime::launch::LaunchRequest;
use dispatch_runtime::reconcile::reconcile;
use dispatch_runtime::submit::{self, SubmitOptions};
use dispatch_store::sqlite::SqliteStore;
use dispatch_store::{Created, EventStore, QueueOptions, QueueStore, Run, RunStore};
use serde_json::Value;

use super::cases::Case;
use super::check::{Observed, failures};
use super::grade::{self, Verdict};
use crate::ctx::Ctx;
use crate::error::CliResult;

const POLL: Duration = Duration::from_millis(10);
/// How often the eval's run is read for a stop request.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// The grace period a stopped eval gives its live cases.
const CASE_GRACE: Duration = Duration::from_secs(5);
/// Status of a case the eval was stopped before it ran.
pub const NOT_RUN: &str = "not_run";

/// One finished run of one case.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub case: String,
    /// Which repeat, from 1.
    pub repeat: u32,
    pub run_id: String,
    pub passed: bool,
    /// Every failed expectation; the first is the one shown.
    pub failures: Vec<String>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub tokens: u64,
    pub cost_usd: f64,
    pub duration_ms: u64,
    /// `expect.judge`: what the judge said (its tokens and cost are its
    /// own, not the run's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<Verdict>,
}

/// What the runs need besides the cases.
pub struct Plan<'a> {
    pub eval_id: &'a str,
    pub parcel: &'a Parcel,
    pub jobs: usize,
    pub repeat: u32,
    /// The options every run is dispatched with (policy overrides).
    pub options: SubmitOptions,
    /// The eval's run: the parent of every case's run.
    pub group: Option<dispatch_core::RunId>,
}

/// Every outcome, in case order, and why the eval stopped early (if it did).
pub struct Finished {
    pub results: Vec<Outcome>,
    pub stopped: Option<String>,
}

/// Set on Ctrl-C: the eval stops its cases instead of leaving them running.
pub(super) fn watch_interrupt() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            set.store(true, Ordering::SeqCst);
        }
    });
    flag
}

/// The outcome of a case the eval was stopped before it ran.
pub(super) fn not_run(case: &Case, repeat: u32, why: &str) -> Outcome {
    Outcome {
        case: case.name.clone(),
        repeat,
        run_id: String::new(),
        passed: false,
        failures: vec![format!("not run: {why}")],
        status: NOT_RUN.to_string(),
        exit_code: None,
        input_tokens: 0,
        output_tokens: 0,
        tokens: 0,
        cost_usd: 0.0,
        duration_ms: 0,
        judge: None,
    }
}

/// Runs every repeat of every case; returns the outcomes in case order.
pub async fn run_all(
    ctx: &Ctx,
    store: &SqliteStore,
    plan: &Plan<'_>,
    cases: &[Case],
) -> CliResult<Finished> {
    let mut todo: VecDeque<(usize, u32)> = (1..=plan.repeat)
        .flat_map(|r| (0..cases.len()).map(move |i| (i, r)))
        .collect();
    let total = todo.len();
    let mut live: Vec<(usize, u32, Run)> = Vec::new();
    let mut done: Vec<(usize, u32, Outcome)> = Vec::new();
    let interrupted = watch_interrupt();
    let mut checked = Instant::now();
    let mut stopped = None;
    while !todo.is_empty() || !live.is_empty() {
        if stopped.is_none() && checked.elapsed() >= STOP_CHECK {
            checked = Instant::now();
            stopped = stop_reason(store, plan, &interrupted).await?;
            if let Some(why) = &stopped {
                eprintln!(
                    "eval stopping: {why}; stopping {} live case run(s)",
                    live.len()
                );
                for (i, r) in todo.drain(..) {
                    done.push((i, r, not_run(&cases[i], r, why)));
                }
                stop_live(ctx, store, &live).await;
            }
        }
        while live.len() < plan.jobs.max(1) {
            let Some((i, r)) = todo.pop_front() else {
                break;
            };
            let run = start(ctx, store, plan, &cases[i]).await?;
            live.push((i, r, run));
        }
        let mut still = Vec::with_capacity(live.len());
        for (i, r, run) in live {
            let run = reconcile(store, &ctx.layout, store.get_run(&run.id).await?).await?;
            if !run.state.is_terminal() {
                still.push((i, r, run));
                continue;
            }
            let outcome = judge(store, plan, &cases[i], r, &run).await?;
            progress(done.len() + 1, total, &outcome);
            done.push((i, r, outcome));
        }
        live = still;
        if !live.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    }
    done.sort_by_key(|(i, r, _)| (*i, *r));
    Ok(Finished {
        results: done.into_iter().map(|(_, _, o)| o).collect(),
        stopped,
    })
}

/// Why the eval must stop now, if it must: a stop request on its run, or
/// Ctrl-C.
async fn stop_reason(
    store: &SqliteStore,
    plan: &Plan<'_>,
    interrupted: &AtomicBool,
) -> CliResult<Option<String>> {
    if interrupted.load(Ordering::SeqCst) {
        return Ok(Some("interrupted (Ctrl-C)".to_string()));
    }
    if let Some(group) = &plan.group
        && store.get_run(group).await?.stop_requested_at.is_some()
    {
        return Ok(Some("the eval's run was stopped".to_string()));
    }
    Ok(None)
}

/// Stops every live case's run at once (each with [`CASE_GRACE`]).
async fn stop_live(ctx: &Ctx, store: &SqliteStore, live: &[(usize, u32, Run)]) {
    let stops = live.iter().map(|(_, _, run)| {
        dispatch_runtime::stop::stop(store, &ctx.layout, &run.id, CASE_GRACE, false)
    });
    for (result, (_, _, run)) in futures_util::future::join_all(stops)
        .await
        .into_iter()
        .zip(live)
    {
        if let Err(e) = result
            && !matches!(e, dispatch_runtime::RuntimeError::AlreadyFinished { .. })
        {
            eprintln!("warning: could not stop case run {}: {e}", run.id);
        }
    }
}

/// Creates the case's run (labeled) and spawns its helper.
async fn start(ctx: &Ctx, store: &SqliteStore, plan: &Plan<'_>, case: &Case) -> CliResult<Run> {
    let req = LaunchRequest {
        source: plan.parcel.digest.clone(),
        operation: None,
        payload: case.payload.clone(),
        parent_id: plan.group.clone(),
        origin_id: None,
    };
    let (mut new, extras, _) = submit::prepare(&ctx.layout, &req, &plan.options)?.into_parts();
    new.trigger = dispatch_core::Trigger::Eval;
    let queue = QueueOptions {
        labels: vec!["eval".to_string(), format!("eval={}", plan.eval_id)],
        ..QueueOptions::default()
    };
    let run = match store.enqueue_with(&new, &extras, &queue, false).await? {
        Created::New(run) | Created::Existing(run) => run,
    };
    crate::commands::run::start_run(ctx, store, &run).await?;
    Ok(run)
}

/// Checks a finished run against its case.
async fn judge(
    store: &SqliteStore,
    plan: &Plan<'_>,
    case: &Case,
    repeat: u32,
    run: &Run,
) -> CliResult<Outcome> {
    let trail = if case.expect.tools.is_some() || case.expect.messages.is_some() {
        trail(store, run).await?
    } else {
        Trail::default()
    };
    Ok(outcome(plan, case, repeat, run, trail).await)
}

/// What a run's events say it did, for the checks that read them.
#[derive(Default)]
pub(super) struct Trail {
    /// Each `tool_call` event's tool name and arguments, in order.
    pub tool_calls: Vec<(String, Value)>,
    /// A workflow's messages (its `message` events): sender, receiver, kind.
    pub messages: Vec<(String, String, String)>,
}

impl Trail {
    /// Adds what one stored event (as JSON: `type`, `data`) says.
    pub(super) fn add(&mut self, kind: &str, d: &Value) {
        match kind {
            "tool_call" => {
                let name = d["name"].as_str().unwrap_or_default().to_string();
                let input = d.get("input").cloned().unwrap_or(Value::Null);
                self.tool_calls.push((name, input));
            }
            // The coordinator's record of a message names its sender.
            "message" if d.get("from").is_some() => {
                let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
                self.messages.push((s("from"), s("to"), s("kind")));
            }
            _ => {}
        }
    }
}

/// The outcome of a finished run of `case`, given its tool calls (each
/// tool's name and arguments; read only when the case checks tools).
pub(super) async fn outcome(
    plan: &Plan<'_>,
    case: &Case,
    repeat: u32,
    run: &Run,
    trail: Trail,
) -> Outcome {
    let st = &run.state;
    let end = st.ended_at().unwrap_or(run.updated_at);
    let duration_ms = (end - st.started_at().unwrap_or(run.created_at)).max(0) as u64;
    let u = run.usage;
    let observed = Observed {
        status: run.status().to_string(),
        exit_code: st.exit_code(),
        output: run.output.as_ref(),
        tool_calls: trail.tool_calls,
        messages: trail.messages,
        tokens: u.total_tokens(),
        cost_usd: u.cost_usd,
        duration_ms,
        reason: st.reason().map(str::to_string),
    };
    let mut failures = failures(&case.expect, &observed);
    // A replay that missed its cassette says so first, in full.
    if let Some(r) = st
        .reason()
        .filter(|r| r.contains("replay: request") || r.contains("replay: tool call"))
    {
        failures.insert(0, r.to_string());
    }
    let verdict = match &case.expect.judge {
        None => None,
        Some(spec) => {
            let agent = plan.parcel.manifest.agent.as_ref();
            let v = match grade::model_for(spec, agent) {
                Ok(model) => {
                    grade::grade(
                        spec,
                        &model,
                        agent,
                        &case.payload,
                        run.output.as_ref(),
                        &observed.status,
                    )
                    .await
                }
                Err(e) => Verdict {
                    passed: Some(false),
                    reason: e,
                    model: String::new(),
                    input_tokens: 0,
                    output_tokens: 0,
                    cost_usd: None,
                },
            };
            if v.passed == Some(false) {
                let why = if v.reason.starts_with("judge") {
                    v.reason.clone()
                } else {
                    format!("judge: {}", v.reason)
                };
                failures.push(why);
            }
            Some(v)
        }
    };
    Outcome {
        case: case.name.clone(),
        repeat,
        run_id: run.id.to_string(),
        passed: failures.is_empty(),
        failures,
        status: observed.status,
        exit_code: observed.exit_code,
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        tokens: u.total_tokens(),
        cost_usd: u.cost_usd,
        duration_ms,
        judge: verdict,
    }
}

/// The run's `tool_call` and `message` events.
async fn trail(store: &SqliteStore, run: &Run) -> CliResult<Trail> {
    let mut out = Trail::default();
    let mut after = 0;
    loop {
        let page = store.list_events(&run.id, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            out.add(&e.event.kind, &e.event.data);
        }
    }
    Ok(out)
}

/// One line on stderr per finished run.
pub(super) fn progress(n: usize, total: usize, o: &Outcome) {
    let verdict = if o.passed {
        "pass".to_string()
    } else {
        format!("FAIL {}", o.failures.first().map_or("", String::as_str))
    };
    let rep = if o.repeat > 1 {
        format!(" #{}", o.repeat)
    } else {
        String::new()
    };
    let unjudged = match &o.judge {
        Some(v) if v.passed.is_none() => format!(" ({})", v.reason),
        _ => String::new(),
    };
    eprintln!(
        "[{n}/{total}] {}{rep}: {verdict}{unjudged} (run {})",
        o.case, o.run_id
    );
}
