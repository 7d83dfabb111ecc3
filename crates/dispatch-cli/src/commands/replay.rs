//! `dispatch replay`: run again with the exact parcel digest, brief and
//! payload of an earlier run, as a new run linked to it (`origin_id`).

use dispatch_runtime::launch::LaunchRequest;
use dispatch_runtime::submit::SubmitOptions;
use dispatch_store::ReliabilityStore;

use crate::commands::run::{start_run, submit_run};
use crate::ctx::{Ctx, find_run};
use crate::error::{CliError, CliResult};
use crate::reliability_args::ReplayArgs;

pub async fn replay(ctx: &Ctx, args: &ReplayArgs) -> CliResult {
    let store = ctx.store()?;
    let old = find_run(&store, &ctx.layout, &args.run).await?;
    if !args.allow_side_effects {
        return Err(CliError::input(format!(
            "refusing to replay run {}: the agent runs again for real and may repeat its side effects (hint: add --allow-side-effects)",
            old.id.short()
        )));
    }
    if !ctx.layout.brief(&old.brief_sha256).is_file() {
        return Err(CliError::input(format!(
            "cannot replay run {}: its brief {} is gone",
            old.id.short(),
            old.brief_sha256
        )));
    }
    let req = LaunchRequest {
        source: old.parcel_digest.clone(),
        operation: Some(old.operation),
        payload: old.payload.clone(),
        parent_id: old.parent_id.clone(),
        origin_id: Some(old.id.clone()),
    };
    let opts = SubmitOptions {
        brief_sha256: Some(old.brief_sha256.clone()),
        policy: store.run_extras(&old.id).await?.policy,
        force: true,
        ..SubmitOptions::default()
    };
    let (run, _) = submit_run(ctx, &store, &req, &opts).await?;
    start_run(ctx, &store, &run).await?;
    eprintln!(
        "replaying run {} as {} (parcel {}, brief {})",
        old.id.short(),
        run.id.short(),
        &old.parcel_digest[..12.min(old.parcel_digest.len())],
        &old.brief_sha256[..12.min(old.brief_sha256.len())]
    );
    println!("{}", run.id);
    Ok(0)
}
