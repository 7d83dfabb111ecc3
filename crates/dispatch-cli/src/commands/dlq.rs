//! `dispatch dlq ls` and `dispatch dlq replay`.

use dispatch_api::DeadLetter;
use dispatch_core::now_ms;
use dispatch_core::time::human_ago;
use dispatch_runtime::launch::LaunchRequest;
use dispatch_runtime::submit::SubmitOptions;
use dispatch_store::{ReliabilityStore, RunStore};
use serde_json::Value;

use crate::cli::Format;
use crate::commands::run::{start_run, submit_run};
use crate::ctx::{Ctx, find_run};
use crate::error::{CliError, CliResult};
use crate::output::{print_columns, print_json};
use crate::reliability_args::DlqCommand;

pub async fn dlq(ctx: &Ctx, cmd: &DlqCommand) -> CliResult {
    match cmd {
        DlqCommand::Ls(args) => {
            let project = crate::reliability_args::listed_project(&args.project)?;
            ls(ctx, args.format, project).await
        }
        DlqCommand::Replay(args) => replay(ctx, &args.run, args.payload.as_deref()).await,
    }
}

async fn ls(ctx: &Ctx, format: Format, project: Option<&str>) -> CliResult {
    let Some(store) = ctx.existing_store()? else {
        return print_dead_letters(format, Vec::new());
    };
    let mut docs = Vec::new();
    for letter in store.list_dead_letters().await? {
        let run = store.get_run(&letter.run_id).await?;
        if project.is_some_and(|p| p != run.project) {
            continue;
        }
        docs.push(dispatch_server::api::wire_runs::dead_letter(letter, &run));
    }
    print_dead_letters(format, docs)
}

/// Prints dead letters (each with its run's parcel, operation, input and
/// status) as `dispatch dlq ls` does.
pub(crate) fn print_dead_letters(format: Format, docs: Vec<DeadLetter>) -> CliResult {
    if format == Format::Json {
        print_json(&docs);
        return Ok(0);
    }
    let now = now_ms();
    // Runs dead-lettered together may share their first 12 digits.
    let ids: Vec<&str> = docs.iter().map(|d| d.run_id.as_str()).collect();
    let shown = dispatch_core::id::abbreviate(&ids);
    let rows: Vec<Vec<String>> = docs
        .iter()
        .zip(shown)
        .map(|(d, short)| {
            vec![
                short.to_string(),
                d.parcel_name.clone(),
                d.status.as_str().to_string(),
                d.attempts.to_string(),
                human_ago(d.at, now),
                d.replayed_by
                    .as_deref()
                    .map_or_else(|| "-".into(), |r| r.chars().take(12).collect()),
                d.reason.clone(),
            ]
        })
        .collect();
    print_columns(
        &[
            "RUN ID",
            "PARCEL",
            "STATUS",
            "ATTEMPTS",
            "DEAD-LETTERED",
            "REPLAYED BY",
            "REASON",
        ],
        &rows,
    );
    Ok(0)
}

async fn replay(ctx: &Ctx, arg: &str, payload: Option<&str>) -> CliResult {
    let store = ctx.store()?;
    let old = find_run(&store, &ctx.layout, arg).await?;
    if store.dead_letter(&old.id).await?.is_none() {
        return Err(CliError::input(format!(
            "run {} is not in the dead-letter queue (hint: `dispatch dlq ls`; `dispatch replay` reruns any run)",
            old.id
        )));
    }
    let payload = match replay_payload(payload)? {
        Some(value) => value,
        None => old.payload.clone(),
    };
    let req = LaunchRequest {
        source: old.parcel_digest.clone(),
        operation: Some(old.operation),
        payload,
        parent_id: old.parent_id.clone(),
        origin_id: Some(old.id.clone()),
        project: old.project.clone(),
    };
    let opts = SubmitOptions {
        policy: store.run_extras(&old.id).await?.policy,
        force: true,
        trigger: Some(dispatch_core::Trigger::Replay),
        ..SubmitOptions::default()
    };
    let (run, _) = submit_run(ctx, &store, &req, &opts).await?;
    store.mark_replayed(&old.id, &run.id).await?;
    start_run(ctx, &store, &run).await?;
    println!("{}", run.id);
    Ok(0)
}

/// The `--payload` of `dlq replay`, parsed.
pub(crate) fn replay_payload(payload: Option<&str>) -> CliResult<Option<Value>> {
    payload
        .map(|text| {
            serde_json::from_str(text).map_err(|e| {
                CliError::input(format!(
                    "--payload is not valid JSON ({e}) (hint: quote the whole payload, e.g. --payload '{{\"name\":\"ada\"}}')"
                ))
            })
        })
        .transpose()
}
