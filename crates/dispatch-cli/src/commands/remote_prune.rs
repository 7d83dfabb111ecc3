//! `dispatch prune` against a server: the same `--filter`s (checked here
//! first, for the same one-line errors), the same confirmation (asked
//! after a dry run says how many runs would go; `-f` skips it) and the
//! same output, through `POST /v1/runs/prune` (its body and answer are the
//! `dispatch-api` types).

use dispatch_api::{PruneAnswer, PruneBody, PruneFilters};
use dispatch_core::RunId;
use dispatch_runtime::prune::PruneReport;

use crate::cli::PruneArgs;
use crate::commands::prune::{all_filters, confirm, parse_filters, report, say_kept};
use crate::commands::remote::Remote;
use crate::error::{CliError, CliResult};

impl Remote {
    pub(super) fn prune(&self, args: &PruneArgs) -> CliResult {
        let flags = all_filters(args)?;
        parse_filters(&flags, args.dead_letters)?;
        let mut request = PruneBody {
            filters: filters(&flags),
            dead_letters: args.dead_letters,
            dry_run: !args.force,
        };
        if !args.force {
            let would = self.prune_once(&request)?;
            say_kept(count(would.kept));
            let n = would.removed.len();
            if n > 0 && !confirm(n)? {
                eprintln!("nothing removed");
                return Ok(0);
            }
            request.dry_run = false;
        }
        let done = self.prune_once(&request)?;
        if args.force {
            say_kept(count(done.kept));
        }
        let removed = done
            .removed
            .iter()
            .map(|id| {
                id.parse::<RunId>().map_err(|_| {
                    CliError::input(format!(
                        "the server's prune answer names `{id}`, not a run id"
                    ))
                })
            })
            .collect::<CliResult<Vec<RunId>>>()?;
        let done = PruneReport {
            removed,
            reclaimed_bytes: done.reclaimed_bytes,
        };
        report(args.format, &done)
    }

    fn prune_once(&self, request: &PruneBody) -> CliResult<PruneAnswer> {
        let body = serde_json::to_value(request)
            .map_err(|e| CliError::input(format!("the prune request: {e}")))?;
        self.typed("POST", "/v1/runs/prune", Some(&body))
    }
}

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `--filter KEY=VALUE` flags as the API's filters (already checked by
/// [`parse_filters`]).
fn filters(flags: &[String]) -> PruneFilters {
    let mut filters = PruneFilters::default();
    for flag in flags {
        if let Some((key, value)) = flag.split_once('=') {
            let list = match key.trim() {
                "status" => &mut filters.status,
                "until" => &mut filters.until,
                "parcel" => &mut filters.parcel,
                _ => continue,
            };
            list.push(value.to_string());
        }
    }
    filters
}
