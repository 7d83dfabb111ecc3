//! `dispatch replay`: run again with the exact parcel digest, brief and
//! payload of an earlier run, as a new run linked to it (`origin_id`).

use dispatch_core::EventKind;
use dispatch_runtime::launch::LaunchRequest;
use dispatch_runtime::submit::SubmitOptions;
use dispatch_store::ReliabilityStore;

use crate::commands::run::{start_run, submit_run};
use crate::ctx::{Ctx, find_run};
use crate::error::{CliError, CliResult};
use crate::reliability_args::ReplayArgs;

/// Compares the run's MCP servers' `tools/list` digests (its last `bom`)
/// with theirs now: a change is a warning, or with `--strict` a refusal.
async fn check_mcp_drift(
    ctx: &Ctx,
    store: &dispatch_store::sqlite::SqliteStore,
    old: &dispatch_store::Run,
    strict: bool,
) -> CliResult<()> {
    use dispatch_store::EventStore;
    let events = store.list_events(&old.id, 0, 100_000).await?;
    let Some(recorded) = events.iter().rev().find(|e| e.event.is(EventKind::Bom)) else {
        return Ok(());
    };
    let servers = recorded.event.data["mcp_servers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if servers.is_empty() {
        return Ok(());
    }
    let parcel = dispatch_runtime::launch::resolve_parcel(&ctx.layout, &old.parcel_digest)?;
    let now = crate::commands::list_tools::current_bom(&parcel).await?;
    let mut changed = Vec::new();
    for s in &servers {
        let name = s["name"].as_str().unwrap_or("?");
        let then = s["tools_sha256"].as_str().unwrap_or("");
        let current = now["mcp_servers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .and_then(|c| c["tools_sha256"].as_str())
            .unwrap_or("");
        if then != current {
            changed.push(format!(
                "MCP server `{name}`'s tools changed since run {} (tools/list sha256 {} → {})",
                old.id.short(),
                &then[..then.len().min(12)],
                &current[..current.len().min(12)]
            ));
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    if strict {
        return Err(CliError::input(format!(
            "refusing to replay: {} (hint: drop --strict to replay with the tools as they are now)",
            changed.join("; ")
        )));
    }
    for c in changed {
        eprintln!("warning: {c}");
    }
    Ok(())
}

pub async fn replay(ctx: &Ctx, args: &ReplayArgs) -> CliResult {
    let store = ctx.store()?;
    let old = find_run(&store, &ctx.layout, &args.run).await?;
    crate::commands::eval::refuse_rerun(&old, "replay")?;
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
    check_mcp_drift(ctx, &store, &old, args.strict).await?;
    if args.offline {
        crate::commands::replay_offline::prepare(ctx, &store, &old).await?;
    }
    let req = LaunchRequest {
        source: old.parcel_digest.clone(),
        operation: Some(old.operation),
        payload: old.payload.clone(),
        parent_id: old.parent_id.clone(),
        origin_id: Some(old.id.clone()),
        project: old.project.clone(),
    };
    let opts = SubmitOptions {
        brief_sha256: Some(old.brief_sha256.clone()),
        policy: store.run_extras(&old.id).await?.policy,
        force: true,
        trigger: Some(dispatch_core::Trigger::Replay),
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
