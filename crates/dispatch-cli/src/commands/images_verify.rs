//! `dispatch images --verify`: every parcel re-hashed in full against its
//! manifest (the check before each run only compares sizes and mtimes).

use dispatch_core::parcel;
use dispatch_core::parcel_seal::verify_fully;
use serde_json::json;

use crate::cli::Format;
use crate::ctx::Ctx;
use crate::error::CliResult;
use crate::output::{print_columns, print_json};

/// Prints each parcel as `ok` or `modified` (with what differs); exit 1
/// when any is modified.
pub(super) fn verify(ctx: &Ctx, format: Format) -> CliResult {
    let parcels = parcel::list(&ctx.layout.parcels());
    let checked: Vec<_> = parcels.iter().map(|p| (p, verify_fully(p))).collect();
    let bad = checked
        .iter()
        .filter(|(_, problems)| !problems.is_empty())
        .count();
    if format == Format::Json {
        let v: Vec<_> = checked
            .iter()
            .map(|(p, problems)| {
                json!({
                    "name": p.manifest.name,
                    "digest": p.digest,
                    "status": if problems.is_empty() { "ok" } else { "modified" },
                    "problems": problems,
                })
            })
            .collect();
        print_json(&json!(v));
    } else {
        let rows: Vec<Vec<String>> = checked
            .iter()
            .map(|(p, problems)| {
                let what: Vec<String> = problems
                    .iter()
                    .map(|pr| format!("{} {}", pr.path, pr.kind))
                    .collect();
                vec![
                    p.manifest.name.clone(),
                    p.short_digest().to_string(),
                    if problems.is_empty() {
                        "ok"
                    } else {
                        "modified"
                    }
                    .to_string(),
                    match what.is_empty() {
                        true => "-".to_string(),
                        false => what.join(", "),
                    },
                ]
            })
            .collect();
        print_columns(&["NAME", "DIGEST", "STATUS", "PROBLEMS"], &rows);
    }
    if bad > 0 {
        eprintln!(
            "error: {bad} parcel(s) changed on disk (hint: build each again from its directory with `dispatch build <dir>`, which replaces it)"
        );
        return Ok(1);
    }
    Ok(0)
}
