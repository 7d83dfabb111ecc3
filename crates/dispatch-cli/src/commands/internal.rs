use std::time::Duration;

use dispatch_core::{Operation, RunId};
use dispatch_runtime::helper::{Known, run_claimed, run_record, run_record_with};
use dispatch_runtime::service::helper::run_service;
use dispatch_runtime::workflow::TurnSignal;
use dispatch_store::sqlite::SqliteStore;
use dispatch_store::{Run, RunStore};
use std::os::fd::AsFd;
use std::sync::Arc;

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

/// How long a helper waits for a database another process holds locked:
/// its writes are the run's record (the result of finished work among
/// them), so it waits them out rather than die and leave the run to be
/// recovered, and executed again, by the next reader.
const HELPER_BUSY_TIMEOUT: Duration = Duration::from_secs(600);

/// The writes of a workflow member's helper that checkpoint nothing (a
/// process agent's turn makes a handful; a long native one checkpoints
/// after these as usual).
const MEMBER_DEFERRED_WRITES: u32 = 64;

/// `dispatch internal run-record <id>`: the detached helper.
pub async fn run_record_cmd(ctx: &Ctx, id: &str) -> CliResult {
    dispatch_runtime::os::detach_session();
    let id: RunId = id
        .parse()
        .map_err(|e: dispatch_core::id::InvalidId| CliError::input(e.to_string()))?;
    let store = ctx.store()?;
    store.set_busy_timeout(HELPER_BUSY_TIMEOUT)?;
    // The claim is on the path to the agent: no checkpoint there.
    store.defer_checkpoints(1);
    if store.get_run(&id).await?.operation == Operation::Service {
        return serve(ctx, &store, &id).await;
    }
    let work = run_record(&store, &ctx.layout, &id);
    Ok(crate::notify_local::beside(&ctx.layout, &store, work).await?)
}

/// `dispatch internal run-standby`: a helper started ahead of its run (see
/// `dispatch_runtime::workflow`): it opens the database, then reads the id
/// of the run to take from its stdin and is that run's helper, exactly as
/// `internal run-record <id>` would be. The end of its stdin before an id
/// (its coordinator is gone or needs it no more) ends it quietly.
pub async fn run_standby_cmd(ctx: &Ctx) -> CliResult {
    dispatch_runtime::os::detach_session();
    let store = ctx.store()?;
    store.set_busy_timeout(HELPER_BUSY_TIMEOUT)?;
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => return Ok(0),
        Ok(_) => {}
    }
    let id: RunId = line
        .trim()
        .parse()
        .map_err(|e: dispatch_core::id::InvalidId| CliError::input(e.to_string()))?;
    // Its stdout as its coordinator started it is how it signals it.
    let turn = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(|fd| Arc::new(TurnSignal::new(std::fs::File::from(fd))));
    // The run's log is the helper's stdout and stderr, as when spawned.
    let _ = std::fs::create_dir_all(ctx.layout.runs());
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ctx.layout.log(&id))
    {
        let _ = nix::unistd::dup2_stdout(&log);
        let _ = nix::unistd::dup2_stderr(&log);
    }
    // Its run's writes checkpoint nothing (a checkpoint's fsyncs would
    // delay the hop); it checkpoints once its coordinator knows it ended.
    store.defer_checkpoints(MEMBER_DEFERRED_WRITES);
    let run = store.get_run(&id).await?;
    if run.operation == Operation::Service {
        return serve(ctx, &store, &id).await;
    }
    let known = Known {
        turn,
        ..Known::default()
    };
    // Its coordinator created the run claimed by this process.
    let mine = run.state.status() == dispatch_core::Status::Starting
        && run.state.helper() == Some(dispatch_runtime::os::this_process());
    let work = async {
        match mine {
            true => run_claimed(&store, &ctx.layout, run, true, known).await,
            false => run_record_with(&store, &ctx.layout, &id, known).await,
        }
    };
    let r = crate::notify_local::beside(&ctx.layout, &store, work).await?;
    store.checkpoint_now();
    Ok(r)
}

/// The helper's work on `run`, which it just created for `dispatch run`
/// (see [`crate::prefork`]) claimed by itself, unless it is a service, with
/// what it knows of it. Its checkpoint deferred by the create, the first
/// write after the agent started catches up on the WAL.
pub async fn run_created(ctx: &Ctx, store: &SqliteStore, run: Run, known: Known) -> CliResult {
    store.set_busy_timeout(HELPER_BUSY_TIMEOUT)?;
    if run.operation == Operation::Service {
        return serve(ctx, store, &run.id).await;
    }
    let work = async {
        match run.status() {
            // Its concurrency key had no slot free: it waits queued for one.
            dispatch_core::Status::Queued => {
                dispatch_runtime::helper::claim_and_run(store, &ctx.layout, run).await
            }
            // Dropped at dispatch (`STRATEGY drop`).
            status if status.is_terminal() => Ok(dispatch_runtime::run_exit_code(&run.state)),
            _ => run_claimed(store, &ctx.layout, run, true, known).await,
        }
    };
    Ok(crate::notify_local::beside(&ctx.layout, store, work).await?)
}

async fn serve(ctx: &Ctx, store: &SqliteStore, id: &RunId) -> CliResult {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::input(format!("cannot find the dispatch binary: {e}")))?;
    // A second handle on the database, for the listener's tasks (`--a2a`).
    let shared: std::sync::Arc<dyn dispatch_store::Store> = std::sync::Arc::new(ctx.store()?);
    Ok(run_service(store, &ctx.layout, id, exe, Some(shared)).await?)
}
