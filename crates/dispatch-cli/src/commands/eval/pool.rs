//! The one loop that runs an eval's cases, wherever they run: every repeat
//! of every case as a run, at most `jobs` at once, each checked when it
//! ends; a stop of the eval's run (or Ctrl-C) stops the live cases and
//! reports the rest `not_run`. Where the runs are made and read is a
//! [`Backend`]: the local store ([`super::execute::Local`]) or a cluster
//! over HTTP ([`super::remote::Cluster`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dispatch_store::Run;

use super::cases::Case;
use super::execute::{Outcome, Plan, Trail, outcome, progress};
use crate::error::CliResult;

/// How often the eval's run is read for a stop.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// Status of a case the eval was stopped before it ran.
pub const NOT_RUN: &str = "not_run";

/// Where an eval's case runs are made, read and stopped.
pub(super) trait Backend {
    /// How long to wait between two looks at the live runs.
    const POLL: Duration;
    /// Creates and starts the run of one case.
    async fn start(&self, plan: &Plan<'_>, case: &Case) -> CliResult<Run>;
    /// The run as it stands now.
    async fn refresh(&self, run: &Run) -> CliResult<Run>;
    /// The run's `tool_call` and `message` events.
    async fn trail(&self, run: &Run) -> CliResult<Trail>;
    /// Whether the eval's run asks the eval to stop.
    async fn group_stopped(&self, plan: &Plan<'_>) -> CliResult<bool>;
    /// Stops the live case runs.
    async fn stop_live(&self, live: &[&Run]);
}

/// Every outcome, in case order, and why the eval stopped early (if it did).
pub struct Finished {
    pub results: Vec<Outcome>,
    pub stopped: Option<String>,
}

/// Runs every repeat of every case; returns the outcomes in case order.
pub(super) async fn run_all<B: Backend>(
    backend: &B,
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
            stopped = if interrupted.load(Ordering::SeqCst) {
                Some("interrupted (Ctrl-C)".to_string())
            } else if backend.group_stopped(plan).await? {
                Some("the eval's run was stopped".to_string())
            } else {
                None
            };
            if let Some(why) = &stopped {
                super::say::err(&format!(
                    "eval stopping: {why}; stopping {} live case run(s)",
                    live.len()
                ));
                for (i, r) in todo.drain(..) {
                    done.push((i, r, not_run(&cases[i], r, why)));
                }
                let runs: Vec<&Run> = live.iter().map(|(_, _, run)| run).collect();
                backend.stop_live(&runs).await;
            }
        }
        while live.len() < plan.jobs.max(1) {
            let Some((i, r)) = todo.pop_front() else {
                break;
            };
            let run = backend.start(plan, &cases[i]).await?;
            live.push((i, r, run));
        }
        let mut still = Vec::with_capacity(live.len());
        for (i, r, run) in live {
            let run = backend.refresh(&run).await?;
            if !run.state.is_terminal() {
                still.push((i, r, run));
                continue;
            }
            let expect = &cases[i].expect;
            let trail = if expect.tools.is_some() || expect.messages.is_some() {
                backend.trail(&run).await?
            } else {
                Trail::default()
            };
            let outcome = outcome(plan, &cases[i], r, &run, trail).await;
            progress(done.len() + 1, total, &outcome);
            done.push((i, r, outcome));
        }
        live = still;
        if !live.is_empty() {
            tokio::time::sleep(B::POLL).await;
        }
    }
    done.sort_by_key(|(i, r, _)| (*i, *r));
    Ok(Finished {
        results: done.into_iter().map(|(_, _, o)| o).collect(),
        stopped,
    })
}

/// Set on Ctrl-C: the eval stops its cases instead of leaving them running.
fn watch_interrupt() -> Arc<AtomicBool> {
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
fn not_run(case: &Case, repeat: u32, why: &str) -> Outcome {
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
