//! A native attempt's tools: the [`ToolBox`] for the parcel's `TOOL` lines
//! (its MCP servers started once for the attempt), the memory behind the
//! `memory_*` built-ins, and the attempt's bill of materials.
//!
//! Tools work in `runs/<id>/work/` (created on first use); a tool's whole
//! output, when the model saw only its start, goes to the run's artifacts.
//! Tool processes get the environment a process agent would (the helper's,
//! less `DISPATCH_ROOT`, plus the parcel's ENV and SECRET values).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dispatch_agent::ResolvedModel;
use dispatch_agent::tools::{ApprovalAnswer, ApprovalAsk, Approver, Memory, ToolBox, ToolContext};
use dispatch_core::parcel::Parcel;
use dispatch_core::{RunId, now_ms};
use dispatch_core::{Status, Transition};
use dispatch_store::{Approval, Decision, Run, Store, StoreError};
use serde_json::{Value, json};

use super::Prepared;
use crate::layout::{Layout, ROOT_ENV};

/// Where the memory of `memory_*` lives in the sessions table: a prefix no
/// session key (`<parcel>/<name>`) can have.
const MEMORY_PREFIX: &str = "@memory/";

/// The memory of `memory_*`: key/value records in the store (so every
/// worker sees the same), scoped to the run's session when it has one,
/// else to its parcel.
pub(super) struct StoreMemory<'a, S: ?Sized> {
    store: &'a S,
    scope: String,
    run: RunId,
}

impl<'a, S: Store + ?Sized> StoreMemory<'a, S> {
    pub(super) fn new(store: &'a S, run: &Run, session: Option<&str>) -> Self {
        StoreMemory {
            store,
            scope: session.unwrap_or(&run.parcel_name).to_string(),
            run: run.id.clone(),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{MEMORY_PREFIX}{}/{key}", self.scope)
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
}

/// How often a call waiting for a decision looks for its decision file
/// (written where the decision was taken: this machine's decisions are
/// seen at once) …
const DECISION_FILE_POLL: Duration = Duration::from_millis(2);
/// … for the first seconds of the wait (a person at hand decides quickly);
/// after that every [`DECISION_FILE_POLL_LATER`], so a worker holding many
/// paused runs does not spend itself looking.
const DECISION_FILE_QUICK: Duration = Duration::from_secs(2);
const DECISION_FILE_POLL_LATER: Duration = Duration::from_millis(20);
/// … and asks the store (decisions taken on another machine).
const DECISION_STORE_POLL: Duration = Duration::from_millis(100);

/// Decides tool calls through the store's approval records: the run is
/// paused with an approval carrying the tool, its arguments, risk and
/// schema; `dispatch approve|deny` or the API decide it (on any machine:
/// the decision is read from the store), or its timeout denies it.
pub(super) struct StoreApprover<'a, S: ?Sized> {
    store: &'a S,
    layout: Layout,
    run: RunId,
    attempt: u32,
    /// Calls waiting for a decision now.
    pub(super) waiting: AtomicUsize,
}

impl<'a, S: Store + ?Sized> StoreApprover<'a, S> {
    pub(super) fn new(store: &'a S, layout: &Layout, run: &Run) -> Self {
        StoreApprover {
            store,
            layout: layout.clone(),
            run: run.id.clone(),
            attempt: run.attempt,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A fresh id for a call of `tool`: `<tool>-<n>`, n counting the run's
    /// approvals of that tool across attempts.
    async fn next_id(&self, tool: &str) -> Result<String, String> {
        let all = self
            .store
            .list_approvals(Some(&self.run), false)
            .await
            .map_err(|e| e.to_string())?;
        let prefix = format!("{tool}-");
        let n = all.iter().filter(|a| a.id.starts_with(&prefix)).count() + 1;
        Ok(format!("{tool}-{n}"))
    }

    /// Pauses the run (once its start is saved: a resumed round asks before
    /// the attempt's start is written).
    async fn pause(&self, reason: String) {
        for _ in 0..250 {
            let Ok(mut run) = self.store.get_run(&self.run).await else {
                return;
            };
            match run.status() {
                Status::Running => {
                    let t = Transition::Pause {
                        reason,
                        at: now_ms(),
                    };
                    let _ = crate::record::advance(self.store, &mut run, &t, None).await;
                    return;
                }
                Status::Starting => tokio::time::sleep(Duration::from_millis(20)).await,
                _ => return,
            }
        }
    }

    /// The decision, once there is one; denies at `deadline`.
    async fn wait(&self, id: &str, deadline: i64, timeout: Duration) -> Result<Approval, String> {
        let file = self
            .layout
            .run_dir(&self.run)
            .join("approvals")
            .join(format!("{id}.json"));
        let waiting = std::time::Instant::now();
        let mut asked = waiting;
        loop {
            // The store has the decision before the file is written.
            while !file.exists() && asked.elapsed() < DECISION_STORE_POLL && now_ms() < deadline {
                let pause = match waiting.elapsed() < DECISION_FILE_QUICK {
                    true => DECISION_FILE_POLL,
                    false => DECISION_FILE_POLL_LATER,
                };
                tokio::time::sleep(pause).await;
            }
            asked = std::time::Instant::now();
            let found = self
                .store
                .list_approvals(Some(&self.run), false)
                .await
                .ok()
                .and_then(|all| all.into_iter().find(|a| a.id == id));
            if let Some(a) = found.filter(|a| a.decision.is_some()) {
                return Ok(a);
            }
            if now_ms() >= deadline {
                let decision = Decision {
                    decision: "deny".into(),
                    by: "dispatch".into(),
                    rationale: Some(format!(
                        "no decision within {} (APPROVAL_TIMEOUT)",
                        dispatch_core::time::human_duration(timeout.as_millis() as i64)
                    )),
                    at: now_ms(),
                    input: None,
                };
                match crate::approvals::decide(self.store, &self.layout, &self.run, id, &decision)
                    .await
                {
                    Ok(a) => return Ok(a),
                    // Decided meanwhile: read it on the next turn.
                    Err(crate::RuntimeError::Store(StoreError::AlreadyDecided { .. })) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> Approver for StoreApprover<'_, S> {
    async fn ask(&self, ask: ApprovalAsk) -> Result<ApprovalAnswer, String> {
        let id = self.next_id(&ask.tool).await?;
        let at = now_ms();
        let deadline = at + ask.timeout.as_millis() as i64;
        let args = dispatch_core::event::shorten(&ask.arguments.to_string(), 200);
        let summary = format!("{}({args}) · risk {}", ask.tool, ask.risk.as_str());
        let approval = Approval {
            run_id: self.run.clone(),
            id: id.clone(),
            attempt: self.attempt,
            summary: summary.clone(),
            requested_at: at,
            deadline: Some(deadline),
            decision: None,
            decided_by: None,
            rationale: None,
            decided_at: None,
            details: Some(json!({
                "tool": ask.tool, "kind": ask.kind, "arguments": ask.arguments,
                "risk": ask.risk.as_str(), "schema": ask.schema,
            })),
            input: None,
        };
        self.store
            .request_approval(&approval)
            .await
            .map_err(|e| e.to_string())?;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.pause(format!("approval `{id}`: {summary}")).await;
        let decided = self.wait(&id, deadline, ask.timeout).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let _ = crate::approvals::resume_if_clear(self.store, &self.run).await;
        let a = decided?;
        Ok(ApprovalAnswer {
            id,
            approved: a.decision.as_deref() == Some("approve"),
            by: a.decided_by.unwrap_or_default(),
            rationale: a.rationale,
            input: a.input,
        })
    }
}

/// The context the run's tools work in.
pub(super) fn context<'a>(
    layout: &Layout,
    run: &Run,
    parcel: &Parcel,
    prepared: &Prepared,
    memory: &'a dyn Memory,
    approver: &'a dyn Approver,
) -> ToolContext<'a> {
    let mut env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k != ROOT_ENV).collect();
    env.extend(prepared.spec.env.iter().cloned());
    let lookup: HashMap<String, String> = env.iter().cloned().collect();
    let secrets = parcel
        .manifest
        .secrets
        .iter()
        .filter_map(|name| lookup.get(name).map(|v| (name.clone(), v.clone())))
        .collect();
    let agent = parcel.manifest.agent.as_ref();
    ToolContext {
        parcel_dir: layout.parcels().join(&run.parcel_digest).join("files"),
        work_dir: layout.run_dir(&run.id).join("work"),
        artifacts_dir: prepared.artifacts_dir.clone(),
        env,
        secrets,
        memory: Some(memory),
        approver: Some(approver),
        max_calls: agent.and_then(|a| a.max_tool_calls),
        max_output_bytes: agent.and_then(|a| a.max_tool_output_bytes),
        http: crate::native::client().clone(),
        spawn_hook: None,
    }
}

/// Starts the parcel's tools (`None` when it declares none).
pub(super) async fn start<'a>(
    parcel: &Parcel,
    ctx: ToolContext<'a>,
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
