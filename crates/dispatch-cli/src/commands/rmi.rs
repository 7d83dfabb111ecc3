//! `dispatch rmi REF...`: remove parcels (by name, the newest of it, or a
//! digest prefix), as `podman rmi` removes images. A parcel that a run
//! which has not ended uses is kept (the error names the runs); finished
//! runs keep their records. `dispatch rmi --prune` removes every parcel a
//! newer one of its name superseded and no run uses (as `podman image
//! prune` removes dangling images). The compiled WASM components (under
//! `cache/wasm/`) no remaining parcel uses go too. Through `--host`, from
//! the cluster.

use dispatch_core::Status;
use dispatch_runtime::launch::resolve_built;
use dispatch_store::{RunFilter, RunStore};

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult, EXIT_DISPATCH};

#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    /// Parcel names (the newest of each) or digest prefixes (4+ hex digits).
    #[arg(required_unless_present = "prune", value_name = "PARCEL")]
    pub parcels: Vec<String>,
    /// Remove every parcel that a newer parcel of the same name superseded
    /// and that no run uses (the newest of each name always stays).
    #[arg(long, conflicts_with = "parcels")]
    pub prune: bool,
}

pub async fn rmi(ctx: &Ctx, args: &RmiArgs) -> CliResult {
    if args.prune {
        for digest in prune(ctx).await? {
            println!("{digest}");
        }
        prune_compiled(ctx);
        return Ok(0);
    }
    let mut failed = false;
    for reference in &args.parcels {
        match remove(ctx, reference).await {
            Ok(digest) => println!("{digest}"),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    prune_compiled(ctx);
    Ok(if failed { EXIT_DISPATCH } else { 0 })
}

/// The compiled WASM components no remaining parcel needs go with them.
fn prune_compiled(ctx: &Ctx) {
    let pruned = dispatch_runtime::prune_wasm_cache(&ctx.layout);
    if pruned.files > 0 {
        eprintln!(
            "removed {} compiled WASM component(s), {} bytes, that no remaining parcel uses",
            pruned.files, pruned.bytes
        );
    }
}

async fn remove(ctx: &Ctx, reference: &str) -> CliResult<String> {
    let parcel = resolve_built(&ctx.layout, reference)?;
    if let Some(store) = ctx.existing_store()? {
        let filter = RunFilter {
            statuses: Status::ALL
                .into_iter()
                .filter(|s| !s.is_terminal())
                .collect(),
            parcel: Some(parcel.digest.clone()),
            limit: Some(5),
            summary: true,
            ..RunFilter::default()
        };
        let users = store.list_runs(&filter).await?;
        if !users.is_empty() {
            let ids: Vec<String> = users.iter().map(|r| r.id.to_string()).collect();
            return Err(CliError::input(format!(
                "parcel {} ({}) is used by runs that have not ended: {} (hint: stop them first)",
                parcel.manifest.name,
                parcel.short_digest(),
                ids.join(", ")
            )));
        }
    }
    dispatch_core::parcel_seal::remove_tree(&parcel.dir)
        .map_err(|e| CliError::input(format!("cannot remove {}: {e}", parcel.dir.display())))?;
    Ok(parcel.digest)
}

/// Removes the superseded parcels no run uses; their digests.
async fn prune(ctx: &Ctx) -> CliResult<Vec<String>> {
    let store = ctx.existing_store()?;
    let mut seen = std::collections::HashSet::new();
    let mut removed = Vec::new();
    // Newest first: the first of each name is the one that stays.
    for parcel in dispatch_core::parcel::list(&ctx.layout.parcels()) {
        if seen.insert(parcel.manifest.name.clone()) {
            continue;
        }
        if let Some(store) = &store {
            let filter = RunFilter {
                parcel: Some(parcel.digest.clone()),
                limit: Some(1),
                summary: true,
                ..RunFilter::default()
            };
            if !store.list_runs(&filter).await?.is_empty() {
                continue;
            }
        }
        if dispatch_core::parcel_seal::remove_tree(&parcel.dir).is_ok() {
            removed.push(parcel.digest);
        }
    }
    Ok(removed)
}

/// `reference` as one URL path segment: names and digests are plain.
pub(super) fn url_safe(reference: &str) -> CliResult<&str> {
    let plain = !reference.is_empty()
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    match plain {
        true => Ok(reference),
        false => Err(CliError::input(format!(
            "`{reference}` is not a parcel name or digest (hint: `dispatch images --host` lists them)"
        ))),
    }
}
