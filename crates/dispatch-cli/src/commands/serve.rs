//! `dispatch serve`: a long-lived service run.

use std::time::Duration;

use dispatch_core::Status;
use dispatch_runtime::launch::fail_unstarted;
use dispatch_runtime::launch::spawn_helper;
use dispatch_runtime::service::launch::{create_service, wait_up};
use dispatch_runtime::service::{Overlap, ServeOptions};
use dispatch_store::Run;
use dispatch_store::sqlite::SqliteStore;
use serde_json::Value;

use crate::cli::{OverlapArg, ServeArgs};
use crate::commands::logs::follow_log;
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

/// How long `serve --detach` and `restart` wait for the service to come up.
pub const UP_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(ctx: &Ctx, args: &ServeArgs) -> CliResult {
    if args.name.is_some() {
        return Err(CliError::input(
            "--name names a service in the cluster (hint: set DISPATCH_HOST or --host; a local service is known by its run id)",
        ));
    }
    let opts = options(args)?;
    let store = ctx.store()?;
    let run = create_service(&store, &ctx.layout, &args.source, &opts).await?;
    start_service(ctx, &store, &run).await?;
    let up = wait_up(&store, &ctx.layout, &run.id, UP_TIMEOUT).await?;
    check_up(&up)?;
    println!("{}", run.id);
    if args.detach {
        return Ok(0);
    }
    let follow = follow_log(&store, &ctx.layout, &run.id, None);
    tokio::pin!(follow);
    let ended = tokio::select! {
        r = &mut follow => r?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stopping service {} (running wakes get 10s to finish)…", run.id);
            dispatch_runtime::stop::stop(&store, &ctx.layout, &run.id, Duration::from_secs(10), false).await?;
            follow.await?
        }
    };
    Ok(if ended.status() == Status::Stopped {
        0
    } else {
        1
    })
}

/// Spawns the service helper; a service whose helper cannot start is failed at once.
pub async fn start_service(ctx: &Ctx, store: &SqliteStore, run: &Run) -> CliResult<()> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::input(format!("cannot find the dispatch binary: {e}")))?;
    if let Err(e) = spawn_helper(&ctx.layout, &exe, &run.id) {
        fail_unstarted(store, run, e.to_string()).await?;
        return Err(e.into());
    }
    Ok(())
}

/// A service that ended while starting (its listener could not bind, …) is an error.
pub fn check_up(run: &Run) -> CliResult<()> {
    if run.state.is_terminal() {
        let reason = run.state.reason().unwrap_or("no reason recorded");
        return Err(CliError::input(format!(
            "service {} {} while starting: {reason} (hint: `dispatch logs {}`)",
            run.id,
            run.status(),
            run.id.short()
        )));
    }
    Ok(())
}

fn options(args: &ServeArgs) -> CliResult<ServeOptions> {
    if let Some(p) = &args.project {
        dispatch_core::project::check_project(p)
            .map_err(|e| CliError::input(format!("--project: {e}")))?;
    }
    let payload = match &args.payload {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            CliError::input(format!(
                "--payload is not valid JSON ({e}) (hint: --payload '{{\"check\":\"disk\"}}')"
            ))
        })?,
        None => Value::Object(Default::default()),
    };
    Ok(ServeOptions {
        schedules: args.schedule.clone(),
        interval_ms: args.interval_ms,
        overlap: match args.overlap {
            OverlapArg::Queue => Overlap::Queue,
            OverlapArg::Skip => Overlap::Skip,
            OverlapArg::Concurrent => Overlap::Concurrent,
        },
        max_concurrent: args.max_concurrent,
        max_pending: args.max_pending,
        payload,
        listen: args.listen.clone(),
        listen_path: args.listen_path.clone(),
        listen_methods: args.listen_method.clone(),
        listen_shared_secret: args.listen_shared_secret.clone(),
        listen_max_body_bytes: args.listen_max_body_bytes,
        listen_max_header_bytes: args.listen_max_header_bytes,
        public: args.public,
        a2a: args.a2a,
        a2a_url: args.a2a_url.clone(),
        a2a_session_ttl_ms: session_ttl_ms(args)?,
        project: args.project.clone(),
    })
}

/// `--session-ttl` in milliseconds.
pub fn session_ttl_ms(args: &ServeArgs) -> CliResult<Option<u64>> {
    args.session_ttl
        .as_deref()
        .map(|t| {
            dispatch_core::time::parse_age(t)
                .map(|ms| ms.max(0) as u64)
                .map_err(|e| CliError::input(format!("--session-ttl: {e}")))
        })
        .transpose()
}
