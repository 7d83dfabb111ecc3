//! `dispatch ps`: list runs.

use dispatch_core::{Operation, Status, now_ms};
use dispatch_runtime::reconcile::reconcile_all;
use dispatch_store::{RunFilter, RunStore};

use crate::cli::{Format, PsArgs};
use crate::ctx::{Ctx, resolve_id};
use crate::error::{CliError, CliResult};
use crate::output::{
    RunView, cost_text, created_text, duration_text, print_columns, print_json, status_text,
};

const LIVE: [Status; 4] = [
    Status::Queued,
    Status::Starting,
    Status::Running,
    Status::Paused,
];

pub async fn ps(ctx: &Ctx, args: &PsArgs) -> CliResult {
    let mut parent = None;
    let mut filter = RunFilter {
        limit: args.last,
        ..RunFilter::default()
    };
    for f in &args.filter {
        let (key, value) = f.split_once('=').ok_or_else(|| {
            CliError::input(format!(
                "--filter {f}: expected KEY=VALUE (hint: --filter status=failed)"
            ))
        })?;
        match key {
            "status" => filter
                .statuses
                .push(value.parse().map_err(CliError::input)?),
            "parcel" => filter.parcel = Some(value.to_string()),
            "operation" => {
                filter.operation = Some(value.parse::<Operation>().map_err(CliError::input)?)
            }
            "parent" => parent = Some(value),
            other => {
                return Err(CliError::input(format!(
                    "--filter {f}: unknown key `{other}` (expected status, parcel, operation or parent)"
                )));
            }
        }
    }
    if let Some(p) = &args.parent {
        parent = Some(p.as_str());
    }
    let Some(store) = ctx.existing_store()? else {
        return print_runs(args, &[]);
    };
    if let Some(p) = parent {
        filter.parent_id = Some(resolve_id(&store, p).await?);
    }
    if filter.statuses.is_empty() && !args.all {
        filter.statuses = LIVE.to_vec();
    }
    let mut runs = store.list_runs(&filter).await?;
    reconcile_all(&store, &ctx.layout, &mut runs).await?;
    // Reconciliation may have ended some of the live runs we listed.
    if !args.all && args.filter.iter().all(|f| !f.starts_with("status=")) {
        runs.retain(|r| !r.state.is_terminal());
    }
    print_runs(args, &runs)
}

pub(crate) fn print_runs(args: &PsArgs, runs: &[dispatch_store::Run]) -> CliResult {
    let now = now_ms();
    if args.quiet {
        let ids: String = runs.iter().map(|r| format!("{}\n", r.id)).collect();
        print!("{ids}");
        return Ok(0);
    }
    if args.format == Format::Json {
        let views: Vec<RunView> = runs.iter().map(|r| RunView::new(r, now)).collect();
        print_json(&views);
        return Ok(0);
    }
    let header = [
        "RUN ID",
        "PARCEL",
        "OPERATION",
        "STATUS",
        "CREATED",
        "DURATION",
        "TOKENS",
        "COST",
    ];
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                if args.no_trunc {
                    r.id.to_string()
                } else {
                    r.id.short().to_string()
                },
                r.parcel_name.clone(),
                r.operation.to_string(),
                status_text(&r.state, now),
                created_text(r, now),
                duration_text(&r.state, now),
                r.usage.total_tokens().to_string(),
                cost_text(r.usage.cost_usd),
            ]
        })
        .collect();
    print_columns(&header, &rows);
    Ok(0)
}
