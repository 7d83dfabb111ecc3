use crate::cli::RmArgs;
use crate::ctx::{Ctx, resolve_id};
use crate::error::CliResult;

/// `dispatch rm [-f]`: prints each removed run's id.
pub async fn rm(ctx: &Ctx, args: &RmArgs) -> CliResult {
    let store = ctx.store()?;
    for arg in &args.ids.ids {
        let id = resolve_id(&store, arg).await?;
        dispatch_runtime::remove::remove(&store, &ctx.layout, &id, args.force).await?;
        println!("{id}");
    }
    Ok(0)
}
