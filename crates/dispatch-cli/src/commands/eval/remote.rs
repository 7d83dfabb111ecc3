//! `dispatch eval --host URL`: the cases run as runs on the cluster's
//! workers (the parcel uploaded as `dispatch run --host` does it), are
//! checked here as locally, and the report is kept by the server
//! (`POST /v1/evals`; `GET /v1/evals/{id}` shows it). `--baseline` reads
//! the earlier eval from the server: an eval id, else the newest eval of a
//! parcel digest. The runs carry no `eval` label there (a cluster's labels
//! are what a worker must offer to claim a run); the report names each run.

use std::collections::VecDeque;
use std::time::Duration;

use dispatch_store::Run;
use serde_json::json;

use super::execute::{self, Outcome, Plan};
use super::{EvalArgs, Prepared, announce, conclude, keep, prepare, print_report, report};
use crate::commands::remote::{Remote, parse_run};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

const POLL: Duration = Duration::from_millis(25);

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
    let eval_id = dispatch_core::RunId::new().to_string();
    announce(&eval_id, args, &prep, &format!(", on {}", remote.base()));
    let plan = Plan {
        eval_id: &eval_id,
        parcel: &prep.parcel,
        jobs: args.jobs,
        repeat: args.repeat,
        options: Default::default(),
    };
    let results = run_all(remote, &plan, &prep, &digest).await?;
    let mut report = conclude(eval_id, &prep, results, baseline);
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

/// Every repeat of every case as a run on the cluster, at most `jobs` at once.
async fn run_all(
    remote: &Remote,
    plan: &Plan<'_>,
    prep: &Prepared,
    digest: &str,
) -> CliResult<Vec<Outcome>> {
    let cases = &prep.cases;
    let mut todo: VecDeque<(usize, u32)> = (1..=plan.repeat)
        .flat_map(|r| (0..cases.len()).map(move |i| (i, r)))
        .collect();
    let total = todo.len();
    let mut live: Vec<(usize, u32, Run)> = Vec::new();
    let mut done: Vec<(usize, u32, Outcome)> = Vec::new();
    while !todo.is_empty() || !live.is_empty() {
        while live.len() < plan.jobs.max(1) {
            let Some((i, r)) = todo.pop_front() else {
                break;
            };
            // No labels: on a cluster they are what a worker must offer to
            // claim the run; the report names every run instead.
            let request = json!({"parcel": digest, "payload": cases[i].payload});
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
    Ok(done.into_iter().map(|(_, _, o)| o).collect())
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
