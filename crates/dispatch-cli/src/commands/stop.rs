use crate::cli::StopArgs;
use crate::ctx::{Ctx, resolve_id};
use crate::error::CliResult;

/// `dispatch stop`: prints each stopped run's id.
pub async fn stop(ctx: &Ctx, args: &StopArgs) -> CliResult {
    let store = ctx.store()?;
    for arg in &args.ids.ids {
        let id = resolve_id(&store, arg).await?;
        let grace = args.grace();
        dispatch_runtime::stop::stop(&store, &ctx.layout, &id, grace, args.force).await?;
        println!("{id}");
    }
    Ok(0)
}
