//! `dispatch run` and `dispatch create`.

use std::sync::Arc;
use std::time::Duration;

use dispatch_core::time::human_duration;
use dispatch_core::{Operation, ProcRef};
use dispatch_runtime::helper::Known;
use dispatch_runtime::launch::{LaunchRequest, fail_unstarted, spawn_helper};
use dispatch_runtime::run_exit_code;
use dispatch_runtime::submit::{self, Submission, SubmitOptions, submit};
use dispatch_store::sqlite::SqliteStore;
use dispatch_store::{Created, Run};
use serde_json::Value;

use crate::cli::{CreateArgs, PayloadArgs, RunArgs};
use crate::commands::logs::follow_log;
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{cost_text, paint};

/// The operation and JSON payload the flags ask for.
pub fn parse_payload(args: &PayloadArgs) -> CliResult<(Option<Operation>, Value)> {
    let (op, flag, text) = if let Some(t) = &args.job {
        (Some(Operation::Job), "--job", t)
    } else if let Some(t) = &args.heartbeat {
        (Some(Operation::Heartbeat), "--heartbeat", t)
    } else if let Some(t) = &args.payload {
        (None, "--payload", t)
    } else {
        return Ok((None, Value::Object(Default::default())));
    };
    let value = serde_json::from_str(text).map_err(|e| {
        CliError::input(format!(
            "{flag} is not valid JSON ({e}) (hint: quote the whole payload, e.g. {flag} '{{\"name\":\"ada\"}}')"
        ))
    })?;
    Ok((op, value))
}

pub async fn create_cmd(ctx: &Ctx, args: &CreateArgs) -> CliResult {
    let (operation, payload) = parse_payload(&args.payload)?;
    crate::notify_local::check(&ctx.layout)?;
    let mut opts = args.reliability.local_options()?;
    opts.created = true; // `created` until `dispatch start`
    let store = ctx.store()?;
    let mut req = request(&args.source, operation, payload);
    req.project = args.reliability.project()?;
    let (run, _) = submit_run(ctx, &store, &req, &opts).await?;
    say_in_review(&run);
    println!("{}", run.id);
    Ok(0)
}

/// Creates the run with the reliability options. Returns the run and whether
/// it already existed (deduplicated), which is said on stderr.
pub async fn submit_run(
    ctx: &Ctx,
    store: &SqliteStore,
    req: &LaunchRequest,
    opts: &SubmitOptions,
) -> CliResult<(Run, bool)> {
    let (created, _, _) = submit(store, &ctx.layout, req, opts).await?;
    match created {
        Created::New(run) => Ok((run, false)),
        Created::Existing(run) => {
            say_deduplicated(&run);
            Ok((run, true))
        }
    }
}

/// Says on stderr that the policy sent `run` to review, if it did: it does
/// not start until someone approves it.
pub(crate) fn say_in_review(run: &Run) -> bool {
    let dispatch_core::RunState::Review { reason, .. } = &run.state else {
        return false;
    };
    eprintln!(
        "run {} waits in review: {reason} (hint: `dispatch approve {}` starts it, `dispatch deny {}` cancels it)",
        run.id,
        run.id.short(),
        run.id.short()
    );
    true
}

/// Says on stderr that `run` answers a dispatch with its idempotency key.
pub(crate) fn say_deduplicated(run: &Run) {
    eprintln!(
        "run {} with the same idempotency key is already {}; not dispatching again (hint: --force dispatches anyway)",
        run.id,
        run.status()
    );
}

fn request(source: &str, operation: Option<Operation>, payload: Value) -> LaunchRequest {
    LaunchRequest {
        source: source.to_string(),
        operation,
        payload,
        parent_id: None,
        origin_id: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    }
}

pub async fn run_cmd(ctx: &Ctx, args: &RunArgs) -> CliResult {
    if args.batch.is_some() {
        return Err(CliError::input(
            "--batch sends runs to a server: pass --host URL (or set DISPATCH_HOST); locally, run each payload with `dispatch run SOURCE --detach --job JSON`",
        ));
    }
    if args.print_prompt {
        return crate::commands::print_prompt::print_prompt(ctx, args).await;
    }
    if args.list_tools {
        return crate::commands::list_tools::list_tools(ctx, args).await;
    }
    // Usually the helper `run` forks does this (see `crate::prefork`);
    // here when it could not: create the run and spawn its helper.
    let (store, run, existing) = create_for_run(ctx, args).await?;
    if existing {
        say_deduplicated(&run);
    } else if !say_in_review(&run) {
        start_run(ctx, &store, &run).await?;
    }
    if args.detach {
        println!("{}", run.id);
        return Ok(0);
    }
    foreground(
        ctx,
        &store,
        &run,
        asks_inline(args.tool_approval.as_deref()),
    )
    .await
}

/// What `dispatch run` does before the run starts, when its forked helper
/// could not: check the input, open the database and create the run, or
/// find the one it duplicates (`true`).
async fn create_for_run(ctx: &Ctx, args: &RunArgs) -> CliResult<(SqliteStore, Run, bool)> {
    let checked = check_run(ctx, args, None)?;
    let (store, run, existing, _) = create_checked(ctx, ctx.store()?, checked).await?;
    Ok((store, run, existing))
}

/// The part of [`create_for_run`] that needs no database: the input
/// checked, the parcel resolved (built from a path) and the brief written.
pub fn check_run(ctx: &Ctx, args: &RunArgs, helper: Option<ProcRef>) -> CliResult<Submission> {
    let (operation, payload) = parse_payload(&args.payload)?;
    crate::notify_local::check(&ctx.layout)?;
    let mut opts = args.reliability.local_options()?;
    opts.helper = helper;
    let mut req = request(&args.source, operation, payload);
    req.project = args.reliability.project()?;
    Ok(submit::prepare(&ctx.layout, &req, &opts)?)
}

/// The rest of [`create_for_run`], on the open database.
pub async fn create_checked(
    ctx: &Ctx,
    store: SqliteStore,
    checked: Submission,
) -> CliResult<(SqliteStore, Run, bool, Known)> {
    // Creating the run is on the path to its agent: no checkpoint there.
    // A native agent's start is saved while its first call goes out: no
    // checkpoint on that write either (the first round's write catches up).
    let native = checked.parcel().manifest.courier == dispatch_core::parcel::Courier::Agent;
    store.defer_checkpoints(if native { 2 } else { 1 });
    let (created, parcel, extras) = submit::create(&store, &ctx.layout, checked).await?;
    let (run, existing) = match created {
        Created::New(run) => (run, false),
        Created::Existing(run) => (run, true),
    };
    let known = Known {
        parcel: Some(Arc::new(parcel)),
        extras: Some(extras),
        upstream: None,
        briefs: None,
        here: None,
        shared: None,
        turn: None,
    };
    Ok((store, run, existing, known))
}

/// Spawns the helper for a created run; a run whose helper cannot start is
/// failed at once.
pub async fn start_run(ctx: &Ctx, store: &SqliteStore, run: &Run) -> CliResult<()> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::input(format!("cannot find the dispatch binary: {e}")))?;
    if let Err(e) = spawn_helper(&ctx.layout, &exe, &run.id) {
        fail_unstarted(store, run, e.to_string()).await?;
        return Err(e.into());
    }
    Ok(())
}

/// `dispatch run` in the foreground, once its forked helper created `run`.
pub async fn follow_created(ctx: &Ctx, run: &Run, ask: bool) -> CliResult {
    foreground(ctx, &ctx.store()?, run, ask).await
}

/// Whether a foreground run asks for tool approvals on this terminal:
/// `--tool-approval ask`, or by default when stdin and stderr are one.
pub fn asks_inline(flag: Option<&str>) -> bool {
    use std::io::IsTerminal;
    match flag {
        Some("ask") => true,
        Some(_) => false,
        None => std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
    }
}

/// Streams the log until the run ends, prints a summary, returns its exit code.
/// Ctrl-C stops the run (SIGTERM, 10 s grace, SIGKILL).
async fn foreground(ctx: &Ctx, store: &SqliteStore, run: &Run, ask: bool) -> CliResult {
    eprintln!("run {}", run.id);
    let follow = follow_log(store, &ctx.layout, &run.id, None);
    tokio::pin!(follow);
    let asking = crate::commands::ask_approval::ask_inline(store, &ctx.layout, &run.id);
    tokio::pin!(asking);
    let announcing = crate::commands::ask_approval::announce_pauses(store, &run.id, ask);
    tokio::pin!(announcing);
    let finished = tokio::select! {
        r = &mut follow => r?,
        () = &mut asking, if ask => follow.await?,
        () = &mut announcing => follow.await?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stopping run {} (SIGTERM, then SIGKILL after 10s)…", run.id);
            dispatch_runtime::stop::stop(store, &ctx.layout, &run.id, Duration::from_secs(10), false).await?;
            follow.await?
        }
    };
    print_summary(&finished);
    Ok(run_exit_code(&finished.state))
}

pub(crate) fn print_summary(run: &Run) {
    let st = &run.state;
    let mut parts = vec![paint(run.status(), &run.status().to_string())];
    if let Some(code) = st.exit_code() {
        parts.push(format!("exit {code}"));
    }
    if let (Some(s), Some(e)) = (st.started_at(), st.ended_at()) {
        parts.push(human_duration(e - s));
    } else if let Some(e) = st.ended_at() {
        parts.push(human_duration(e - run.created_at));
    }
    let u = run.usage;
    parts.push(format!(
        "tokens {} (in {} / out {})",
        u.total_tokens(),
        u.input_tokens,
        u.output_tokens
    ));
    parts.push(format!("cost {}", cost_text(u.cost_usd)));
    if run.attempt > 1 {
        parts.push(format!("{} attempts", run.attempt));
    }
    eprintln!("run {} {}", run.id.short(), parts.join(" · "));
    if let Some(reason) = st
        .reason()
        .filter(|_| run.status() != dispatch_core::Status::Succeeded)
    {
        eprintln!("reason: {reason}");
    }
}
