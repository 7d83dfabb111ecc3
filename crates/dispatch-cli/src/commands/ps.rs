//! `dispatch ps`: list runs.

use dispatch_core::time::parse_time;
use dispatch_core::{Operation, Status, Ts, now_ms};
use dispatch_runtime::reconcile::reconcile_all;
use dispatch_store::{RunFilter, RunStore};

use crate::cli::{Format, PsArgs};
use crate::ctx::{Ctx, resolve_id};
use crate::error::{CliError, CliResult};
use crate::output::{
    RunView, cost_text, created_text, duration_text, print_columns, print_json, status_text,
};

pub(crate) const LIVE: [Status; 6] = [
    Status::Created,
    Status::Review,
    Status::Queued,
    Status::Starting,
    Status::Running,
    Status::Paused,
];

/// What `--filter` and `--parent` ask for, shared by the local and the
/// remote `ps`.
pub(crate) struct Filters<'a> {
    /// Statuses, parcel, operation, labels and creation times.
    pub filter: RunFilter,
    /// A run id or prefix, still to resolve.
    pub parent: Option<&'a str>,
}

/// Reads `--filter KEY=VALUE` (and `--parent`); `since=` and `until=` are
/// resolved against `now`.
pub(crate) fn filters(args: &PsArgs, now: Ts) -> CliResult<Filters<'_>> {
    let mut filter = RunFilter::default();
    let mut parent = None;
    for f in &args.filter {
        let (key, value) = f.split_once('=').ok_or_else(|| {
            CliError::input(format!(
                "--filter {f}: expected KEY=VALUE (hint: --filter status=failed)"
            ))
        })?;
        let time =
            || parse_time(value, now).map_err(|e| CliError::input(format!("--filter {f}: {e}")));
        match key {
            "status" => filter
                .statuses
                .push(value.parse().map_err(CliError::input)?),
            "parcel" => filter.parcel = Some(value.to_string()),
            "operation" => {
                filter.operation = Some(value.parse::<Operation>().map_err(CliError::input)?)
            }
            "parent" => parent = Some(value),
            "label" => filter.labels.push(value.to_string()),
            "trigger" => {
                filter.trigger = Some(
                    value
                        .parse::<dispatch_core::Trigger>()
                        .map_err(|e| CliError::input(format!("--filter {f}: {e}")))?,
                )
            }
            "since" => filter.created_after = Some(time()?),
            "until" => filter.created_before = Some(time()?),
            other => {
                return Err(CliError::input(format!(
                    "--filter {f}: unknown key `{other}` (expected status, parcel, operation, parent, label, trigger, since or until)"
                )));
            }
        }
    }
    if let Some(p) = &args.parent {
        parent = Some(p.as_str());
    }
    if let Some(p) = &args.project {
        dispatch_core::project::check_project(p)
            .map_err(|e| CliError::input(format!("--project: {e}")))?;
        filter.projects = vec![p.clone()];
    }
    Ok(Filters { filter, parent })
}

pub async fn ps(ctx: &Ctx, args: &PsArgs) -> CliResult {
    let Filters { mut filter, parent } = filters(args, now_ms())?;
    filter.limit = args.last;
    // A table (or the ids) shows no payload, output or labels.
    filter.summary = args.quiet || args.format == Format::Table;
    let Some(store) = ctx.existing_store()? else {
        return print_runs(args, &[], &Waiting::new());
    };
    if let Some(p) = parent {
        filter.parent_id = Some(resolve_id(&store, p).await?);
    }
    let chosen_statuses = !filter.statuses.is_empty();
    if !chosen_statuses && !args.all {
        filter.statuses = LIVE.to_vec();
    }
    let mut runs = store.list_runs(&filter).await?;
    reconcile_all(&store, &ctx.layout, &mut runs).await?;
    // Reconciliation may have ended some of the live runs we listed.
    if !args.all && !chosen_statuses {
        runs.retain(|r| !r.state.is_terminal());
    }
    // A queued run held back by its project's quota says so, as on a server.
    let waiting = dispatch_runtime::waiting::reasons(&store, &runs, now_ms()).await;
    print_runs(args, &runs, &waiting)
}

/// Why queued runs wait, by run id, as a server (or the local store) says.
pub(crate) type Waiting = std::collections::HashMap<dispatch_core::RunId, String>;

pub(crate) fn print_runs(
    args: &PsArgs,
    runs: &[dispatch_store::Run],
    waiting: &Waiting,
) -> CliResult {
    let now = now_ms();
    if args.quiet {
        let ids: String = runs.iter().map(|r| format!("{}\n", r.id)).collect();
        print!("{ids}");
        return Ok(0);
    }
    if args.format == Format::Json {
        let views: Vec<RunView> = runs
            .iter()
            .map(|r| RunView {
                waiting: waiting.get(&r.id).map(String::as_str),
                ..RunView::new(r, now)
            })
            .collect();
        print_json(&views);
        return Ok(0);
    }
    let mut header = vec![
        "RUN ID",
        "PARCEL",
        "OPERATION",
        "STATUS",
        "CREATED",
        "DURATION",
        "TOKENS",
        "COST",
    ];
    // Projects are shown once there is more than the default one.
    let projects = runs
        .iter()
        .any(|r| r.project != dispatch_core::project::DEFAULT_PROJECT);
    if projects {
        header.insert(1, "PROJECT");
    }
    // Runs of one millisecond share their first 12 digits: theirs show more.
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let shown = dispatch_core::id::abbreviate(&ids);
    let rows: Vec<Vec<String>> = runs
        .iter()
        .zip(shown)
        .map(|(r, short)| {
            let mut row = vec![
                if args.no_trunc {
                    r.id.to_string()
                } else {
                    short.to_string()
                },
                r.parcel_name.clone(),
                r.operation.to_string(),
                match waiting.get(&r.id) {
                    // A backoff's end is in the status already.
                    Some(why) if !why.starts_with("retry backoff") => {
                        format!("{}: {why}", status_text(&r.state, now))
                    }
                    _ => status_text(&r.state, now),
                },
                created_text(r, now),
                duration_text(&r.state, now),
                r.usage.total_tokens().to_string(),
                cost_text(r.usage.cost_usd),
            ];
            if projects {
                row.insert(1, r.project.clone());
            }
            row
        })
        .collect();
    print_columns(&header, &rows);
    Ok(0)
}
