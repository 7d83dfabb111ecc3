use dispatch_core::{Operation, RunId};
use dispatch_runtime::helper::run_record;
use dispatch_runtime::service::helper::run_service;
use dispatch_store::RunStore;
use dispatch_store::sqlite::SqliteStore;

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

/// `dispatch internal run-record <id>`: the detached helper.
pub async fn run_record_cmd(ctx: &Ctx, id: &str) -> CliResult {
    dispatch_runtime::os::detach_session();
    let id: RunId = id
        .parse()
        .map_err(|e: dispatch_core::id::InvalidId| CliError::input(e.to_string()))?;
    run_record_with(ctx, None, &id).await
}

/// The helper's work on run `id`, with the database already open or not.
pub async fn run_record_with(ctx: &Ctx, store: Option<SqliteStore>, id: &RunId) -> CliResult {
    let store = match store {
        Some(s) => s,
        None => ctx.store()?,
    };
    let id = id.clone();
    if store.get_run(&id).await?.operation == Operation::Service {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::input(format!("cannot find the dispatch binary: {e}")))?;
        return Ok(run_service(&store, &ctx.layout, &id, exe).await?);
    }
    Ok(run_record(&store, &ctx.layout, &id).await?)
}
