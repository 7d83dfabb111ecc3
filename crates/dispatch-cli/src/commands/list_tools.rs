//! `dispatch run <dir> --list-tools`: the tools a native agent's model would
//! see — name, kind, approval, risk, description, and (`--format json`) the
//! specs as sent, MCP servers' tools included (each server is started, asked
//! for its tools, and stopped). No model is called and no run is created.

use dispatch_agent::Tools;
use dispatch_agent::tools::{ToolBox, ToolContext};
use dispatch_core::parcel::{Courier, Parcel};
use dispatch_runtime::launch::resolve_parcel;
use serde_json::json;

use crate::cli::{Format, RunArgs};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

pub async fn list_tools(ctx: &Ctx, args: &RunArgs) -> CliResult {
    let parcel = resolve_parcel(&ctx.layout, &args.source)?;
    if parcel.manifest.courier != Courier::Agent {
        return Err(CliError::input(format!(
            "--list-tools is for native agents, and {} is not FROM agent (hint: add `FROM agent`, a MODEL and TOOL lines)",
            args.source
        )));
    }
    let (tools, decls) = with_tools(&parcel, |t| t.specs().into_owned()).await?;
    if args.format == Some(Format::Json) {
        let out = json!({"tools": tools, "bom": decls});
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("plain JSON")
        );
        return Ok(0);
    }
    if tools.is_empty() {
        eprintln!(
            "{} has no tools (hint: add TOOL lines)",
            parcel.manifest.name
        );
        return Ok(0);
    }
    println!(
        "{:<24} {:<8} {:<9} {:<6} DESCRIPTION",
        "NAME", "KIND", "APPROVAL", "RISK"
    );
    let rows = decls["tools"].as_array().cloned().unwrap_or_default();
    for (spec, row) in tools.iter().zip(rows) {
        let kind = match row["kind"].as_str() {
            Some("mcp") => format!("mcp:{}", row["source"].as_str().unwrap_or("?")),
            Some(k) => k.to_string(),
            None => "?".into(),
        };
        println!(
            "{:<24} {:<8} {:<9} {:<6} {}",
            spec.name,
            kind,
            row["approval"].as_str().unwrap_or("-"),
            row["risk"].as_str().unwrap_or("-"),
            dispatch_core::event::shorten(&spec.description.replace('\n', " "), 100)
        );
    }
    Ok(0)
}

/// The bill of materials of `parcel`'s tools as they are now (MCP servers
/// started and asked for their tools).
pub async fn current_bom(parcel: &Parcel) -> CliResult<serde_json::Value> {
    Ok(with_tools(parcel, |_| ()).await?.1)
}

/// The tool specs the model gets for `parcel` (empty without TOOL lines).
pub async fn specs(parcel: &Parcel) -> CliResult<Vec<dispatch_agent::ToolSpec>> {
    Ok(with_tools(parcel, |t| t.specs().into_owned()).await?.0)
}

/// Starts `parcel`'s tools in a scratch directory, applies `f`, stops them.
async fn with_tools<T>(
    parcel: &Parcel,
    f: impl FnOnce(&ToolBox<'_>) -> T,
) -> CliResult<(T, serde_json::Value)>
where
    T: Default,
{
    let decls = parcel
        .manifest
        .agent
        .as_ref()
        .map(|a| a.tools.clone())
        .unwrap_or_default();
    if decls.is_empty() {
        return Ok((T::default(), json!({"tools": []})));
    }
    let scratch = std::env::temp_dir().join(format!("dispatch-list-tools-{}", std::process::id()));
    let secrets: std::collections::HashMap<String, String> = parcel
        .manifest
        .secrets
        .iter()
        .map(|s| {
            (
                s.clone(),
                std::env::var(s).unwrap_or_else(|_| "****".into()),
            )
        })
        .collect();
    // What the run's tools would get: the allowlist (see docs/isolation.md).
    let ws = dispatch_runtime::workspace::Workspace {
        work: scratch.clone(),
        home: scratch.join("home"),
        tmp: scratch.join("tmp"),
    };
    let parent: Vec<(String, String)> = std::env::vars().collect();
    let declared: Vec<(String, String)> = secrets
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let env = dispatch_runtime::helper::agent_env::build(
        &parcel.manifest,
        &ws,
        &parent,
        &declared,
        Vec::new(),
    );
    // As in a run: a secret only for the tools it is scoped to.
    let tool_env =
        dispatch_runtime::helper::agent_env::for_tools(&parcel.manifest, &env, &declared);
    let ctx = ToolContext {
        parcel_dir: parcel.dir.join("files"),
        work_dir: scratch.clone(),
        artifacts_dir: scratch.join("artifacts"),
        env: tool_env.base,
        secrets,
        scoped: tool_env.scoped,
        mask: Vec::new(),
        memory: None,
        checkpoints: None,
        default_timeout_ms: parcel
            .manifest
            .agent
            .as_ref()
            .and_then(|a| a.tool_timeout_ms),
        approver: None,
        messenger: None,
        max_calls: None,
        max_output_bytes: None,
        http: reqwest_client(),
        sandbox: None,
        spawn_hook: None,
        gate: None,
        launcher: None,
    };
    let started = ToolBox::start(&decls, ctx).await;
    let result = match started {
        Ok(tools) => {
            let out = f(&tools);
            let bom = tools.bom();
            tools.shutdown().await;
            Ok((out, bom))
        }
        Err(e) => Err(CliError::input(format!("cannot start the tools: {e}"))),
    };
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn reqwest_client() -> dispatch_agent::tools::HttpClient {
    dispatch_runtime::native::client().clone()
}
