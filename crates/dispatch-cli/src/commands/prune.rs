use crate::cli::PruneArgs;
use crate::ctx::Ctx;
use crate::error::CliResult;

/// `dispatch prune`: removes every finished run; prints their ids.
pub async fn prune(ctx: &Ctx, _args: &PruneArgs) -> CliResult {
    let Some(store) = ctx.existing_store()? else {
        eprintln!("removed 0 runs");
        return Ok(0);
    };
    let removed = dispatch_runtime::remove::prune(&store, &ctx.layout).await?;
    let ids: String = removed.iter().map(|id| format!("{id}\n")).collect();
    print!("{ids}");
    eprintln!(
        "removed {} run{}",
        removed.len(),
        if removed.len() == 1 { "" } else { "s" }
    );
    Ok(0)
}
