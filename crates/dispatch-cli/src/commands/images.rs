use dispatch_core::now_ms;
use dispatch_core::parcel;
use dispatch_core::time::human_ago;
use serde_json::json;

use crate::cli::Format;
use crate::ctx::Ctx;
use crate::error::CliResult;
use crate::output::{print_columns, print_json};

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Re-hash every file of every parcel and say whether each is intact
    /// (`ok`) or `modified`; exits 1 when one is modified.
    #[arg(long)]
    pub verify: bool,
}

pub fn images(ctx: &Ctx, args: &ImagesArgs) -> CliResult {
    if args.verify {
        return super::images_verify::verify(ctx, args.format);
    }
    let parcels = parcel::list(&ctx.layout.parcels());
    let now = now_ms();
    if args.format == Format::Json {
        let v: Vec<_> = parcels
            .iter()
            .map(|p| {
                json!({
                    "name": p.manifest.name,
                    "version": p.manifest.version,
                    "digest": p.digest,
                    "created_at": p.created_at,
                    "courier": p.manifest.courier,
                    "entrypoint": p.manifest.entrypoint,
                    "files": p.manifest.files.len(),
                    "size": p.manifest.files.iter().map(|f| f.size).sum::<u64>(),
                    "labels": p.manifest.labels,
                })
            })
            .collect();
        print_json(&json!(v));
        return Ok(0);
    }
    let mut rows = Vec::with_capacity(parcels.len());
    for p in &parcels {
        let size: u64 = p.manifest.files.iter().map(|f| f.size).sum();
        rows.push(vec![
            p.manifest.name.clone(),
            p.manifest.version.clone().unwrap_or_else(|| "-".into()),
            p.short_digest().to_string(),
            human_ago(p.created_at, now),
            p.manifest.files.len().to_string(),
            format!("{size}B"),
        ]);
    }
    print_columns(
        &["NAME", "VERSION", "DIGEST", "CREATED", "FILES", "SIZE"],
        &rows,
    );
    Ok(0)
}
