//! A native attempt's tools: the [`ToolBox`] for the parcel's `TOOL` lines
//! (its MCP servers started once for the attempt), the memory behind the
//! `memory_*` built-ins, and the attempt's bill of materials.
//!
//! Tools work in `runs/<id>/work/` (the run's workspace: a copy of the parcel's files); a tool's whole
//! output, when the model saw only its start, goes to the run's artifacts.
//! Tool processes get the environment a process agent would: empty plus the
//! allowlist (`PATH`, locale, the run's `HOME` and `TMPDIR`, the parcel's
//! ENV, ENV_PASSTHROUGH, REQUIRES URLs, `DISPATCH_*`), but of the SECRETs
//! only those scoped to them (`SECRET NAME TO tool`); a model's KEY never.
//! Every secret value is masked in their output before anyone sees it.

use dispatch_core::EventKind;
use std::collections::HashMap;

use dispatch_agent::ResolvedModel;
use dispatch_agent::tools::{Approver, Memory, Messenger, ToolBox, ToolContext};
use dispatch_core::parcel::Parcel;
use dispatch_core::{RunId, now_ms};
use dispatch_store::{Run, Store, StoreError};
use serde_json::{Value, json};

pub(super) use super::native_approval::StoreApprover;

use super::Prepared;
use crate::layout::Layout;

/// Where the memory of `memory_*` lives in the sessions table: a prefix no
/// session key (`<parcel>/<name>`) can have.
const MEMORY_PREFIX: &str = "@memory/";
/// Where the named checkpoints of `checkpoint_*` live, likewise.
const CHECKPOINT_PREFIX: &str = "@checkpoint/";

/// The memory of `memory_*`: key/value records in the store (so every
/// worker sees the same), scoped to the run's session when it has one,
/// else to its parcel.
pub(super) struct StoreMemory<'a, S: ?Sized> {
    store: &'a S,
    prefix: &'static str,
    scope: String,
    run: RunId,
}

impl<'a, S: Store + ?Sized> StoreMemory<'a, S> {
    pub(super) fn new(store: &'a S, run: &Run, session: Option<&str>) -> Self {
        StoreMemory {
            store,
            prefix: MEMORY_PREFIX,
            scope: session.unwrap_or(&run.parcel_name).to_string(),
            run: run.id.clone(),
        }
    }

    /// The store of `checkpoint_*`: the same records under another prefix.
    pub(super) fn checkpoints(store: &'a S, run: &Run, session: Option<&str>) -> Self {
        StoreMemory {
            prefix: CHECKPOINT_PREFIX,
            ..StoreMemory::new(store, run, session)
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}/{key}", self.prefix, self.scope)
    }
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> Memory for StoreMemory<'_, S> {
    async fn get(&self, key: &str) -> Result<Option<Value>, String> {
        match self.store.get_session(&self.key(key)).await {
            Ok(found) => Ok(found.map(|r| r.data)),
            Err(e) => Err(format!("cannot read memory `{key}`: {e}")),
        }
    }

    async fn put(&self, key: &str, value: &Value) -> Result<(), String> {
        let full = self.key(key);
        // Compare-and-set on the record's version: a concurrent writer's
        // value is replaced, never half-merged.
        for _ in 0..5 {
            let version = match self.store.get_session(&full).await {
                Ok(found) => found.map_or(0, |r| r.version),
                Err(e) => return Err(format!("cannot write memory `{key}`: {e}")),
            };
            match self
                .store
                .put_session(&full, value, version, Some(&self.run), now_ms())
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::SessionConflict { .. }) => continue,
                Err(e) => return Err(format!("cannot write memory `{key}`: {e}")),
            }
        }
        Err(format!(
            "cannot write memory `{key}`: it kept changing under other writers"
        ))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
        let base = self.key("");
        let records = self
            .store
            .list_sessions(Some(&format!("{base}{prefix}")))
            .await
            .map_err(|e| format!("cannot list memory: {e}"))?;
        let mut keys: Vec<String> = records
            .into_iter()
            .filter_map(|r| r.key.strip_prefix(&base).map(str::to_string))
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<bool, String> {
        self.store
            .delete_session(&self.key(key))
            .await
            .map_err(|e| format!("cannot delete `{key}`: {e}"))
    }
}

/// `send_message` and `handoff` of a native run: the same `message` and
/// `handoff` events a process agent writes, recorded in the run's log (a
/// handoff's run started first, through the host's [`Upstream`]). A
/// handoff that starts nothing is the tool call's error, which the model
/// sees (plus a `warning` and an `error` event in the log); the run goes on.
pub(super) struct StoreMessenger<'a, S: ?Sized> {
    store: &'a S,
    run: RunId,
    attempt: u32,
    upstream: &'a dyn crate::handoff::Upstream,
}

impl<'a, S: Store + ?Sized> StoreMessenger<'a, S> {
    pub(super) fn new(store: &'a S, run: &Run, upstream: &'a dyn crate::handoff::Upstream) -> Self {
        StoreMessenger {
            store,
            run: run.id.clone(),
            attempt: run.attempt,
            upstream,
        }
    }

    async fn record(&self, events: &[dispatch_core::NewEvent]) -> Result<(), String> {
        self.store
            .append_events(&self.run, events)
            .await
            .map_err(|e| format!("could not record the event: {e}"))
    }
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> Messenger for StoreMessenger<'_, S> {
    async fn send_message(&self, event: Value) -> Result<String, String> {
        let said = format!(
            "sent {} to {}",
            event["kind"].as_str().unwrap_or("RESULT"),
            event["to"].as_str().unwrap_or_default()
        );
        let e = dispatch_core::NewEvent::new(EventKind::Message, self.attempt, now_ms(), event);
        self.record(&[e]).await.map(|()| said)
    }

    async fn handoff(&self, event: Value) -> Result<String, String> {
        let parcel = event["parcel"].as_str().unwrap_or_default().to_string();
        let at = now_ms();
        match super::agent::hand_off(&self.run, self.upstream, event, self.attempt, at).await {
            Ok(events) => {
                let id = events
                    .first()
                    .and_then(|e| e.data["run_id"].as_str())
                    .unwrap_or_default()
                    .to_string();
                self.record(&events).await?;
                Ok(json!({"run_id": id, "parcel": parcel}).to_string())
            }
            Err((reason, _, events)) => {
                let _ = self.record(&events).await;
                Err(reason)
            }
        }
    }
}

/// The context the run's tools work in.
pub(super) fn context<'a>(
    layout: &Layout,
    run: &Run,
    parcel: &Parcel,
    prepared: &'a Prepared,
    memory: &'a dyn Memory,
    approver: &'a dyn Approver,
    messenger: &'a dyn Messenger,
) -> ToolContext<'a> {
    // The agent's environment: the allowlist, nothing else (see
    // `agent_env`); a secret only for the tools it is scoped to.
    let lookup: HashMap<String, String> = prepared.spec.env.iter().cloned().collect();
    let declared: Vec<(String, String)> = parcel
        .manifest
        .secrets
        .iter()
        .filter_map(|name| lookup.get(name).map(|v| (name.clone(), v.clone())))
        .collect();
    let tool_env = super::agent_env::for_tools(&parcel.manifest, &prepared.spec.env, &declared);
    let agent = parcel.manifest.agent.as_ref();
    ToolContext {
        parcel_dir: layout.parcels().join(&run.parcel_digest).join("files"),
        work_dir: layout.run_dir(&run.id).join("work"),
        artifacts_dir: prepared.artifacts_dir.clone(),
        env: tool_env.base,
        secrets: declared.into_iter().collect(),
        scoped: tool_env.scoped,
        mask: Vec::new(), // set by the attempt, which knows the model keys
        memory: Some(memory),
        checkpoints: None, // set by the attempt
        default_timeout_ms: agent.and_then(|a| a.tool_timeout_ms),
        approver: Some(approver),
        messenger: Some(messenger),
        max_calls: agent.and_then(|a| a.max_tool_calls),
        max_output_bytes: agent.and_then(|a| a.max_tool_output_bytes),
        http: crate::native::client().clone(),
        sandbox: None, // set by `start` (TOOL_SANDBOX)
        spawn_hook: None,
        gate: crate::policy_gate::tool_gate(layout, run, parcel),
        launcher: None,
    }
}

/// RESOURCES for the attempt's LOCAL tool processes (the loop itself is
/// ours), and the hooks each of them is spawned with: the run's group
/// entered first, the sandbox last (see `sandbox::Plan::contain` and
/// `apply`).
pub(super) fn limit_tools(
    run: &Run,
    parcel: &Parcel,
    prepared: &Prepared,
    log: &mut super::LifecycleLog,
    own_signals: bool,
    tool_ctx: &mut ToolContext<'_>,
) -> super::resources::AttemptLimits {
    let limits = super::resources::AttemptLimits::begin(
        &run.id,
        run.attempt,
        Some(parcel),
        log,
        own_signals,
    );
    let hooks: Vec<dispatch_agent::tools::SpawnHook> = [
        prepared.sandbox.contain_hook(),
        limits.hook(),
        prepared.sandbox.hook(),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !hooks.is_empty() {
        tool_ctx.spawn_hook = Some(std::sync::Arc::new(
            move |cmd: &mut tokio::process::Command| {
                for hook in &hooks {
                    hook(cmd);
                }
            },
        ));
    }
    limits
}

/// Starts the parcel's tools (`None` when it declares none).
pub(super) async fn start<'a>(
    parcel: &Parcel,
    mut ctx: ToolContext<'a>,
) -> Result<Option<ToolBox<'a>>, String> {
    let decls = parcel
        .manifest
        .agent
        .as_ref()
        .map(|a| a.tools.as_slice())
        .unwrap_or_default();
    if decls.is_empty() {
        return Ok(None);
    }
    if let Some(image) = &parcel.manifest.tool_sandbox {
        let (parcel_dir, work_dir) = (&ctx.parcel_dir, &ctx.work_dir);
        let _ = std::fs::create_dir_all(work_dir);
        let sandbox =
            crate::container::tool::sandbox(image, &parcel.manifest, parcel_dir, work_dir).await;
        ctx.sandbox = Some(sandbox.map_err(|e| format!("TOOL_SANDBOX: {e}"))?);
    }
    ToolBox::start(decls, ctx).await.map(Some)
}

/// The attempt's bill of materials: the models (provider and host, never a
/// key), the tools and MCP servers in effect, the limits.
pub(super) fn bom(
    parcel: &Parcel,
    models: &[ResolvedModel],
    tools: Option<&ToolBox<'_>>,
    policy: &dispatch_core::policy::RunPolicy,
) -> Value {
    let models: Vec<Value> = models
        .iter()
        .map(|m| {
            let host = url::Url::parse(m.model.endpoint())
                .ok()
                .and_then(|u| u.host_str().map(str::to_string));
            json!({"model": m.model.name, "provider": m.model.provider, "host": host})
        })
        .collect();
    let agent = parcel.manifest.agent.as_ref();
    let mut bom = json!({
        "parcel": {"name": parcel.manifest.name, "digest": parcel.digest},
        "models": models,
        "limits": {
            "tool_rounds": agent.and_then(|a| a.max_tool_rounds),
            "iterations": agent.and_then(|a| a.max_iterations),
            "max_tokens": policy.limits.max_tokens,
            "max_cost_usd": policy.limits.max_cost_usd,
        },
        "tools": [],
        "mcp_servers": [],
    });
    if let Some(t) = tools {
        let tb = t.bom();
        bom["tools"] = tb["tools"].clone();
        bom["mcp_servers"] = tb["mcp_servers"].clone();
        bom["limits"]["tool_calls"] = tb["limits"]["tool_calls"].clone();
        bom["limits"]["tool_output_bytes"] = tb["limits"]["tool_output_bytes"].clone();
    }
    bom
}

/// How a `PROVIDER claude|codex` CLI runs: where the LOCAL tools would (the
/// workspace, their environment, protections and limits). Unsandboxed, the
/// CLI finds its login under the real `HOME`; sandboxed, only the run's
/// `HOME` is there (keys come from the environment: `ANTHROPIC_API_KEY`,
/// `OPENAI_API_KEY`, …).
pub(super) fn cli_run(
    tool_ctx: &ToolContext<'_>,
    parcel: &Parcel,
    prepared: &Prepared,
) -> dispatch_agent::cli::CliRun {
    let sandboxed = prepared.sandbox.hook().is_some();
    dispatch_agent::cli::CliRun {
        work_dir: tool_ctx.work_dir.clone(),
        env: tool_ctx
            .env
            .iter()
            .filter(|(k, _)| sandboxed || k != "HOME")
            .cloned()
            .collect(),
        sandboxed,
        spawn_hook: tool_ctx.spawn_hook.clone(),
        max_tool_calls: tool_ctx.max_calls,
        timeout: parcel
            .manifest
            .agent
            .as_ref()
            .and_then(|a| a.llm_timeout_ms)
            .map(std::time::Duration::from_millis),
    }
}
