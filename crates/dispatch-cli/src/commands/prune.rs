//! `dispatch prune`: removes finished runs and the files only they needed.

use std::io::{BufRead, IsTerminal, Write};

use dispatch_core::Status;
use dispatch_core::time::{TIME_FORMS, now_ms, parse_time};
use dispatch_runtime::prune::{PruneFilter, PruneReport, candidates, prune_runs};

use crate::cli::{Format, PruneArgs};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::print_json;

/// Removes the finished runs the filters select, after asking (unless
/// `-f`); prints their ids on stdout, the count and space on stderr.
pub async fn prune(ctx: &Ctx, args: &PruneArgs) -> CliResult {
    let filter = parse_filters(&all_filters(args)?, args.dead_letters)?;
    let Some(store) = ctx.existing_store()? else {
        return report(args.format, &PruneReport::default());
    };
    let found = candidates(&store, &ctx.layout, &filter).await?;
    say_kept(found.kept);
    let runs = found.runs;
    if !runs.is_empty() && !args.force && !confirm(runs.len())? {
        eprintln!("nothing removed");
        return Ok(0);
    }
    let done = prune_runs(&store, &ctx.layout, &runs).await?;
    report(args.format, &done)
}

/// `--filter`s with `--older-than` and `--status` added as the filters they stand for.
pub fn all_filters(args: &PruneArgs) -> CliResult<Vec<String>> {
    let mut filters = args.filter.clone();
    if let Some(age) = &args.older_than {
        dispatch_core::time::parse_age(age)
            .map_err(|e| CliError::input(format!("--older-than: {e}")))?;
        filters.push(format!("until={}", age.trim()));
    }
    for status in &args.status {
        if status.trim().is_empty() {
            return Err(CliError::input(
                "--status needs a finished status (hint: --status succeeded,failed)",
            ));
        }
        filters.push(format!("status={}", status.trim()));
    }
    Ok(filters)
}

/// Says how many runs the filters selected were kept, if any.
pub(crate) fn say_kept(kept: usize) {
    if kept > 0 {
        eprintln!(
            "kept {kept} run{} with a dead letter or a pending approval (hint: --dead-letters removes them too)",
            plural(kept)
        );
    }
}

/// `--filter KEY=VALUE` flags as one filter.
pub fn parse_filters(flags: &[String], dead_letters: bool) -> CliResult<PruneFilter> {
    let mut filter = PruneFilter {
        dead_letters,
        ..PruneFilter::default()
    };
    let now = now_ms();
    for flag in flags {
        let Some((key, value)) = flag.split_once('=') else {
            return Err(CliError::input(format!(
                "--filter `{flag}` is not KEY=VALUE (hint: status=failed, until=24h or parcel=NAME)"
            )));
        };
        match key.trim() {
            "status" => {
                let status: Status = value.parse().map_err(CliError::input)?;
                if !status.is_terminal() {
                    return Err(CliError::input(format!(
                        "--filter status={value}: prune removes finished runs only (hint: succeeded, failed, timed_out, cancelled or stopped)"
                    )));
                }
                filter.statuses.push(status);
            }
            "until" => {
                let at = parse_time(value, now)
                    .map_err(|e| CliError::input(format!("--filter until: {e}")))?;
                // Several: each must hold, so the earliest wins.
                filter.until = Some(filter.until.map_or(at, |u| u.min(at)));
            }
            "parcel" if !value.is_empty() => filter.parcels.push(value.to_string()),
            "parcel" => return Err(CliError::input("--filter parcel= needs a parcel name")),
            other => {
                return Err(CliError::input(format!(
                    "unknown --filter key `{other}` (expected status, until or parcel; until takes {TIME_FORMS})"
                )));
            }
        }
    }
    Ok(filter)
}

/// Asks on the terminal, as `docker container prune` does. Refuses when
/// stdin is not a terminal, so that a script never hangs on the question.
pub(crate) fn confirm(count: usize) -> CliResult<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::input(format!(
            "prune would remove {count} finished run{} and stdin is not a terminal to confirm (hint: pass -f)",
            plural(count)
        )));
    }
    eprint!(
        "WARNING! This will remove {count} finished run{} with their logs, artifacts and briefs.\nAre you sure you want to continue? [y/N] ",
        plural(count)
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::input(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

pub(crate) fn report(format: Format, done: &PruneReport) -> CliResult {
    match format {
        Format::Json => print_json(&serde_json::json!({
            "removed": done.removed,
            "reclaimed_bytes": done.reclaimed_bytes,
        })),
        Format::Table => {
            let ids: String = done.removed.iter().map(|id| format!("{id}\n")).collect();
            print!("{ids}");
            eprintln!(
                "removed {} run{}, reclaimed {}",
                done.removed.len(),
                plural(done.removed.len()),
                human_bytes(done.reclaimed_bytes)
            );
        }
    }
    Ok(0)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `512B`, `1.5kB`, `2.3MB`, as Docker prints reclaimed space.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}
