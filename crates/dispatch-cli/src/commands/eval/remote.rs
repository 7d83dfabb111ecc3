//! `dispatch eval --host URL`: the cases run as runs on the cluster's
//! workers (the parcel uploaded as `dispatch run --host` does it), are
//! checked here as locally, and the report is kept by the server
//! (`POST /v1/evals`; `GET /v1/evals/{id}` shows it). `--baseline` reads
//! the earlier eval from the server: an eval id, else the newest eval of a
//! parcel digest. The runs carry no `eval` label there (a cluster's labels
//! are what a worker must offer to claim a run); the report names each run.
//!
//! The eval's run groups the cases as their parent: on a cluster it is a
//! `created` run (never queued, so no worker claims it), held by this
//! client; the server ends it when the report arrives (`succeeded`, or
//! `failed` with the failing cases), and `dispatch stop --host` of it
//! cancels it, which stops the eval. A client that dies leaves it
//! `created`; `dispatch rm` removes it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dispatch_store::Run;
use serde_json::json;

use super::execute::{self, Outcome, Plan};
use super::{EvalArgs, Prepared, announce, conclude, keep, prepare, print_report, report};
use crate::commands::remote::{Remote, parse_run};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

const POLL: Duration = Duration::from_millis(25);
/// How often the eval's run is read for a stop.
const STOP_CHECK: Duration = Duration::from_millis(250);

pub(in crate::commands) async fn eval(ctx: &Ctx, remote: &Remote, args: &EvalArgs) -> CliResult {
    if args.record.is_some() || args.replay.is_some() {
        return Err(CliError::input(
            "--record and --replay work only on the local state: the cluster's workers call the models (hint: drop --host to record or replay)",
        ));
    }
    let prep = prepare(ctx, args)?;
    let baseline = match &args.baseline {
        Some(id) => Some(baseline_of(remote, id)?),
        None => None,
    };
    let digest = remote.parcel_of(&args.source)?;
    let digest = if digest.is_empty() {
        prep.parcel.digest.clone()
    } else {
        digest
    };
    if digest != prep.parcel.digest {
        eprintln!(
            "warning: the server built {} as {digest}, not {} as here; the cases run on the server's build",
            prep.parcel.manifest.name, prep.parcel.digest
        );
    }
    let group = open_group(remote, &prep, args, &digest)?;
    let eval_id = group.id.to_string();
    announce(&eval_id, args, &prep, &format!(", on {}", remote.base()));
    let plan = Plan {
        eval_id: &eval_id,
        parcel: &prep.parcel,
        jobs: args.jobs,
        repeat: args.repeat,
        options: Default::default(),
        group: Some(group.id.clone()),
    };
    let finished = match run_all(remote, &plan, &prep, &digest).await {
        Ok(f) => f,
        Err(e) => {
            // Nobody will end the eval's run now: cancel it, saying why.
            let _ = remote.json("POST", &format!("/v1/runs/{eval_id}/cancel"), None);
            return Err(e);
        }
    };
    let mut report = conclude(eval_id, &prep, finished.results, baseline);
    report.stopped = finished.stopped;
    report.parcel = digest;
    keep(ctx, &report);
    let body = serde_json::to_value(&report)
        .map_err(|e| CliError::input(format!("cannot write the eval report: {e}")))?;
    if let Err(e) = remote.json("POST", "/v1/evals", Some(&body)) {
        eprintln!("warning: the server did not keep the eval report: {e}");
    }
    Ok(print_report(args, &report))
}

/// The earlier report `--baseline` names, from the server.
fn baseline_of(remote: &Remote, id: &str) -> CliResult<report::Report> {
    let by_id = remote.json("GET", &format!("/v1/evals/{id}"), None);
    let value = match by_id {
        Ok(v) => v,
        Err(by_id) => {
            let digest = id.strip_prefix("sha256:").unwrap_or(id);
            let hex = digest.len() >= 4 && digest.bytes().all(|b| b.is_ascii_hexdigit());
            match hex
                .then(|| remote.json("GET", &format!("/v1/evals/latest?parcel={digest}"), None))
            {
                Some(Ok(v)) => v,
                _ => {
                    return Err(CliError::input(format!(
                        "--baseline {id}: {by_id} (hint: give the eval id `dispatch eval --host` printed first, or the digest of a parcel evaluated on this server)"
                    )));
                }
            }
        }
    };
    serde_json::from_value(value).map_err(|e| {
        CliError::input(format!(
            "--baseline {id}: the server's report is not one this dispatch reads ({e})"
        ))
    })
}

/// Creates the eval's run on the server: `created`, so never claimed.
fn open_group(remote: &Remote, prep: &Prepared, args: &EvalArgs, digest: &str) -> CliResult<Run> {
    let opening = super::group_opening(prep, args);
    let mut request = json!({
        "parcel": digest,
        "payload": opening.payload,
        "start": false,
        "labels": opening.labels,
    });
    if prep.parcel.manifest.concurrency.is_some() {
        // Its payload has no CONCURRENCY KEY path: a key of its own.
        request["concurrency_key"] = json!(format!("eval-run-{}", dispatch_core::RunId::new()));
    }
    parse_run(remote.json("POST", "/v1/runs", Some(&request))?)
}

/// Why the eval must stop now, if it must: its run ended (cancelled by
/// `dispatch stop --host`), or Ctrl-C.
fn stop_reason(
    remote: &Remote,
    plan: &Plan<'_>,
    interrupted: &AtomicBool,
) -> CliResult<Option<String>> {
    if interrupted.load(Ordering::SeqCst) {
        return Ok(Some("interrupted (Ctrl-C)".to_string()));
    }
    if let Some(group) = &plan.group
        && remote.get_run(group.as_str())?.state.is_terminal()
    {
        return Ok(Some("the eval's run was stopped".to_string()));
    }
    Ok(None)
}

/// Every repeat of every case as a run on the cluster, at most `jobs` at once.
async fn run_all(
    remote: &Remote,
    plan: &Plan<'_>,
    prep: &Prepared,
    digest: &str,
) -> CliResult<execute::Finished> {
    let cases = &prep.cases;
    let mut todo: VecDeque<(usize, u32)> = (1..=plan.repeat)
        .flat_map(|r| (0..cases.len()).map(move |i| (i, r)))
        .collect();
    let total = todo.len();
    let mut live: Vec<(usize, u32, Run)> = Vec::new();
    let mut done: Vec<(usize, u32, Outcome)> = Vec::new();
    let interrupted = execute::watch_interrupt();
    let mut checked = Instant::now();
    let mut stopped = None;
    while !todo.is_empty() || !live.is_empty() {
        if stopped.is_none() && checked.elapsed() >= STOP_CHECK {
            checked = Instant::now();
            stopped = stop_reason(remote, plan, &interrupted)?;
            if let Some(why) = &stopped {
                eprintln!(
                    "eval stopping: {why}; stopping {} live case run(s)",
                    live.len()
                );
                for (i, r) in todo.drain(..) {
                    done.push((i, r, execute::not_run(&cases[i], r, why)));
                }
                for (_, _, run) in &live {
                    // A run that ended meanwhile answers 409: nothing to do.
                    let _ = remote.json("POST", &format!("/v1/runs/{}/cancel", run.id), None);
                }
            }
        }
        while live.len() < plan.jobs.max(1) {
            let Some((i, r)) = todo.pop_front() else {
                break;
            };
            // No labels: on a cluster they are what a worker must offer to
            // claim the run; the report names every run instead.
            let request = json!({
                "parcel": digest,
                "payload": cases[i].payload,
                "parent_id": plan.group.as_ref().map(|g| g.to_string()),
            });
            let run = parse_run(remote.json("POST", "/v1/runs", Some(&request))?)?;
            live.push((i, r, run));
        }
        let mut still = Vec::with_capacity(live.len());
        for (i, r, run) in live {
            let run = remote.get_run(run.id.as_str())?;
            if !run.state.is_terminal() {
                still.push((i, r, run));
                continue;
            }
            let expect = &cases[i].expect;
            let trail = if expect.tools.is_some() || expect.messages.is_some() {
                trail(remote, &run)?
            } else {
                execute::Trail::default()
            };
            let outcome = execute::outcome(plan, &cases[i], r, &run, trail).await;
            execute::progress(done.len() + 1, total, &outcome);
            done.push((i, r, outcome));
        }
        live = still;
        if !live.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    }
    done.sort_by_key(|(i, r, _)| (*i, *r));
    Ok(execute::Finished {
        results: done.into_iter().map(|(_, _, o)| o).collect(),
        stopped,
    })
}

/// The run's `tool_call` and `message` events, paged from the server.
fn trail(remote: &Remote, run: &Run) -> CliResult<execute::Trail> {
    let mut out = execute::Trail::default();
    let mut after = 0;
    loop {
        let page = remote.json(
            "GET",
            &format!("/v1/runs/{}/events?format=json&after={after}", run.id),
            None,
        )?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let Some(last) = events.last() else { break };
        after = last["seq"].as_i64().unwrap_or(i64::MAX);
        for e in &events {
            out.add(e["type"].as_str().unwrap_or_default(), &e["data"]);
        }
    }
    Ok(out)
}
