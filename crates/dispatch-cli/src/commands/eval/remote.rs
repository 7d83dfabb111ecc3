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

use std::time::Duration;

use dispatch_store::Run;

use super::cases::Case;
use super::execute::{Plan, Trail};
use super::pool::{self, Backend};
use super::{EvalArgs, Prepared, announce, conclude, keep, prepare, print_report, report};
use crate::commands::remote::{Remote, body, parse_run};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

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
        super::say::err(&format!(
            "warning: the server built {} as {digest}, not {} as here; the cases run on the server's build",
            prep.parcel.manifest.name, prep.parcel.digest
        ));
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
    let cluster = Cluster {
        remote,
        digest: &digest,
    };
    let finished = match pool::run_all(&cluster, &plan, &prep.cases).await {
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
        super::say::err(&format!(
            "warning: the server did not keep the eval report: {e}"
        ));
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
    let mut request = dispatch_api::CreateRun {
        parcel: digest.to_string(),
        payload: Some(opening.payload),
        start: Some(false),
        labels: opening.labels,
        ..Default::default()
    };
    if prep.parcel.manifest.concurrency.is_some() {
        // Its payload has no CONCURRENCY KEY path: a key of its own.
        request.concurrency_key = Some(format!("eval-run-{}", dispatch_core::RunId::new()));
    }
    parse_run(remote.json("POST", "/v1/runs", Some(&body(&request)?))?)
}

/// A cluster: each case's run created with `POST /v1/runs` (no labels: on
/// a cluster they are what a worker must offer to claim a run; the report
/// names every run instead), read and cancelled over HTTP.
struct Cluster<'a> {
    remote: &'a Remote,
    digest: &'a str,
}

impl Backend for Cluster<'_> {
    const POLL: Duration = Duration::from_millis(25);

    async fn start(&self, plan: &Plan<'_>, case: &Case) -> CliResult<Run> {
        let request = dispatch_api::CreateRun {
            parcel: self.digest.to_string(),
            payload: Some(case.payload.clone()),
            parent_id: plan.group.as_ref().map(|g| g.to_string()),
            ..Default::default()
        };
        parse_run(
            self.remote
                .json("POST", "/v1/runs", Some(&body(&request)?))?,
        )
    }

    async fn refresh(&self, run: &Run) -> CliResult<Run> {
        self.remote.get_run(run.id.as_str())
    }

    async fn trail(&self, run: &Run) -> CliResult<Trail> {
        trail(self.remote, run)
    }

    /// The eval's run ended: `dispatch stop --host` cancelled it.
    async fn group_stopped(&self, plan: &Plan<'_>) -> CliResult<bool> {
        Ok(match &plan.group {
            Some(group) => self.remote.get_run(group.as_str())?.state.is_terminal(),
            None => false,
        })
    }

    async fn stop_live(&self, live: &[&Run]) {
        for run in live {
            // A run that ended meanwhile answers 409: nothing to do.
            let _ = self
                .remote
                .json("POST", &format!("/v1/runs/{}/cancel", run.id), None);
        }
    }
}

/// The run's `tool_call` and `message` events, paged from the server.
fn trail(remote: &Remote, run: &Run) -> CliResult<Trail> {
    let mut out = Trail::default();
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
