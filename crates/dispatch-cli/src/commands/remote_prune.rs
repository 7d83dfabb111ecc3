//! `dispatch prune` against a server: the same `--filter`s (checked here
//! first, for the same one-line errors), the same confirmation (asked
//! after a dry run says how many runs would go; `-f` skips it) and the
//! same output, through `POST /v1/runs/prune`.

use dispatch_core::RunId;
use dispatch_runtime::prune::PruneReport;
use serde_json::{Value, json};

use crate::cli::PruneArgs;
use crate::commands::prune::{all_filters, confirm, parse_filters, report, say_kept};
use crate::commands::remote::Remote;
use crate::error::{CliError, CliResult};

impl Remote {
    pub(super) fn prune(&self, args: &PruneArgs) -> CliResult {
        let flags = all_filters(args)?;
        parse_filters(&flags, args.dead_letters)?;
        let mut body = json!({
            "filters": filters(&flags),
            "dead_letters": args.dead_letters,
            "dry_run": !args.force,
        });
        if !args.force {
            let would = self.json("POST", "/v1/runs/prune", Some(&body))?;
            say_kept(count(&would["kept"]));
            let n = would["removed"].as_array().map_or(0, Vec::len);
            if n > 0 && !confirm(n)? {
                eprintln!("nothing removed");
                return Ok(0);
            }
            body["dry_run"] = json!(false);
        }
        let done = self.json("POST", "/v1/runs/prune", Some(&body))?;
        if args.force {
            say_kept(count(&done["kept"]));
        }
        let removed = done["removed"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str()?.parse::<RunId>().ok())
                    .collect()
            })
            .ok_or_else(|| CliError::input("the server's prune answer has no `removed` list"))?;
        let done = PruneReport {
            removed,
            reclaimed_bytes: done["reclaimed_bytes"].as_u64().unwrap_or(0),
        };
        report(args.format, &done)
    }
}

fn count(v: &Value) -> usize {
    v.as_u64().unwrap_or(0) as usize
}

/// `--filter KEY=VALUE` flags as the API's `{status: [..], until: [..], parcel: [..]}`
/// (already checked by [`parse_filters`]).
fn filters(flags: &[String]) -> Value {
    let mut by_key = json!({"status": [], "until": [], "parcel": []});
    for flag in flags {
        if let Some((key, value)) = flag.split_once('=')
            && let Some(list) = by_key[key.trim()].as_array_mut()
        {
            list.push(json!(value));
        }
    }
    by_key
}
