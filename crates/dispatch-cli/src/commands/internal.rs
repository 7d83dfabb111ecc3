use dispatch_core::RunId;
use dispatch_runtime::helper::run_record;

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

/// `dispatch internal run-record <id>`: the detached helper.
pub async fn run_record_cmd(ctx: &Ctx, id: &str) -> CliResult {
    dispatch_runtime::os::detach_session();
    let id: RunId = id
        .parse()
        .map_err(|e: dispatch_core::id::InvalidId| CliError::input(e.to_string()))?;
    let store = ctx.store()?;
    Ok(run_record(&store, &ctx.layout, &id).await?)
}
