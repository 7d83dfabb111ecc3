//! A WASM agent's host functions, answered by the attempt: each [`Ask`] of
//! the guest becomes one step of the native agent's machinery
//! (`dispatch_agent::guest_step`), recorded in the run's events like a
//! native agent's: `model_call_sent`, `model_call`, `usage`, `tool_call`.
//!
//! Model calls: the guest's `model-request` is a conversation (its
//! instructions, messages, tools offered) or the continuation of an
//! earlier answer (`previous-response-id`, with `tool-outputs`), which the
//! host keeps by response id. `model` may only name a MODEL or FALLBACK of
//! the parcel (tried first); provider, key and endpoint are the parcel's.
//! Tools: only the parcel's TOOL lines, run as a native agent runs them
//! (approvals, LIMIT TOOL_CALLS, TOOL_OUTPUT, timeouts, sandbox). Memory:
//! the store behind the `memory_*` built-ins, one key per namespace/key.

use std::collections::HashMap;

use dispatch_agent::provider::{Role, ToolSpec};
use dispatch_agent::tools::Memory;
use dispatch_agent::{Conversation, LoopConfig, LoopEnd, Message, ToolCall, ToolOutcome, Tools};
use dispatch_core::event::Usage;
use serde_json::{Value, json};

use crate::wasm::abi::{
    MemoryEntry, ModelRequest, ModelResponse, ModelToolCall, ModelToolKind, ToolInvocation,
    ToolResult,
};
use crate::wasm::guest::{Ask, MemoryAnswer, MemoryAsk};

/// What the answers need, across the run's asks.
pub(super) struct Serve<'a> {
    pub cfg: &'a LoopConfig,
    pub sink: &'a mut (dyn dispatch_agent::Sink + Send),
    pub tools: &'a dyn Tools,
    pub memory: &'a dyn Memory,
    /// The LOCAL tools' programs, by name (a tool result's `command`).
    pub programs: HashMap<String, String>,
    /// The conversation after each answer, by its response id.
    pub chains: HashMap<String, Vec<Message>>,
    pub calls: u64,
    pub rounds: u64,
    pub used: Usage,
    /// The parcel's system prompt (when the guest gives no instructions).
    pub prompt: String,
}

impl Serve<'_> {
    /// Answers `ask`; `Some` when the run must end (a budget, a refused
    /// request): the guest is stopped, not answered.
    pub(super) async fn answer(&mut self, ask: Ask) -> Option<LoopEnd> {
        match ask {
            Ask::Model(req, reply) => match self.model(req).await {
                Ok(answer) => {
                    let _ = reply.send(answer);
                    None
                }
                Err(end) => Some(end),
            },
            Ask::Tool(inv, reply) => match self.tool(inv).await {
                Ok(answer) => {
                    let _ = reply.send(answer);
                    None
                }
                Err(end) => Some(end),
            },
            Ask::Memory(ask, reply) => {
                let _ = reply.send(self.memory(ask).await);
                None
            }
        }
    }

    async fn model(&mut self, req: ModelRequest) -> Result<Result<ModelResponse, String>, LoopEnd> {
        let mut messages = match &req.previous_response_id {
            Some(id) => match self.chains.get(id) {
                Some(m) => m.clone(),
                None => return Ok(Err(format!("unknown previous-response-id `{id}`"))),
            },
            None => Vec::new(),
        };
        let mut system = match req.instructions.trim().is_empty() {
            true => self.prompt.clone(),
            false => req.instructions.clone(),
        };
        for m in &req.messages {
            match m.role.as_str() {
                "assistant" => messages.push(Message::assistant(m.content.clone(), Vec::new())),
                "system" | "developer" => {
                    system.push_str("\n\n");
                    system.push_str(&m.content);
                }
                _ => messages.push(Message::user(m.content.clone())),
            }
        }
        for out in &req.tool_outputs {
            messages.push(Message::tool_result(
                out.call_id.clone(),
                out.output.clone(),
                false,
            ));
        }
        let mut cfg = self.cfg.clone();
        if let Some(name) = req.model.as_deref() {
            match cfg.models.iter().position(|m| m.model.name == name) {
                Some(i) => {
                    let chosen = cfg.models.remove(i);
                    cfg.models.insert(0, chosen);
                }
                None => {
                    return Ok(Err(format!(
                        "model `{name}` is not one of the parcel's (MODEL or FALLBACK); the host chooses models from the Agentfile"
                    )));
                }
            }
        }
        let offered = Offered {
            specs: req.tools.iter().map(spec_of).collect(),
            inner: self.tools,
        };
        let mut conv = Conversation {
            system,
            messages,
            rounds: self.rounds,
            calls: self.calls,
            compacted: 0,
            done: Vec::new(),
            saved: None,
        };
        let step = dispatch_agent::guest_step::complete(
            &cfg,
            &mut conv,
            &offered,
            &mut *self.sink,
            crate::native::client(),
            &mut self.used,
        )
        .await;
        self.calls = conv.calls;
        let (model, response) = match step {
            Ok(r) => r,
            // A request the provider refused is the guest's to handle (it
            // may try without it); budgets and lost records end the run.
            Err(LoopEnd::Failed {
                reason,
                retryable: false,
            }) => return Ok(Err(reason)),
            Err(end) => return Err(end),
        };
        let id = format!("resp-{}", self.calls);
        self.chains.insert(id.clone(), conv.messages);
        let text = (!response.text.is_empty()).then(|| response.text.clone());
        Ok(Ok(ModelResponse {
            backend: model.model.provider.as_str().to_string(),
            text,
            response_id: Some(id),
            tool_calls: response
                .tool_calls
                .iter()
                .map(|c| ModelToolCall {
                    call_id: c.id.clone(),
                    name: c.name.clone(),
                    input: c.arguments.clone(),
                    kind: ModelToolKind::Function,
                })
                .collect(),
        }))
    }

    async fn tool(&mut self, inv: ToolInvocation) -> Result<Result<ToolResult, String>, LoopEnd> {
        if !self.tools.specs().iter().any(|s| s.name == inv.name) {
            return Ok(Err(format!(
                "tool `{}` is not declared by the parcel (hint: add a TOOL line for it to the Agentfile)",
                inv.name
            )));
        }
        // The input as the tool's arguments: JSON as it is, other text as `{"input": …}`.
        let input = inv.input.clone().unwrap_or_default();
        let arguments = match serde_json::from_str::<Value>(&input) {
            Ok(v @ Value::Object(_)) => v.to_string(),
            _ if input.trim().is_empty() => "{}".to_string(),
            _ => json!({ "input": input }).to_string(),
        };
        let call = ToolCall::new(
            format!("wasm-tool-{}", self.rounds + 1),
            inv.name.clone(),
            arguments,
        );
        let mut conv = Conversation {
            system: String::new(),
            messages: Vec::new(),
            rounds: self.rounds,
            calls: self.calls,
            compacted: 0,
            done: Vec::new(),
            saved: None,
        };
        let capture = Capture {
            inner: self.tools,
            exit: std::sync::Mutex::new(None),
        };
        let step =
            dispatch_agent::guest_step::tool(self.cfg, &mut conv, call, &capture, &mut *self.sink)
                .await;
        self.rounds = conv.rounds;
        let done = match step {
            Ok(done) => done,
            Err(LoopEnd::Suspended(p)) => {
                return Err(LoopEnd::Failed {
                    reason: format!(
                        "tool `{}` waits for an approval ({}); a WASM agent cannot wait for one (hint: drop its APPROVAL, or run the agent as `FROM agent`)",
                        inv.name, p.summary
                    ),
                    retryable: false,
                });
            }
            Err(end) => return Err(end),
        };
        if let Some(reason) = done.stop {
            return Err(LoopEnd::ToolRounds(reason));
        }
        let exit = capture.exit.lock().ok().and_then(|e| *e);
        let command = self.programs.get(&inv.name).cloned().unwrap_or_default();
        Ok(match (exit, done.is_error) {
            (None, true) => Err(done.text),
            (exit, is_error) => Ok(ToolResult {
                tool: inv.name,
                command,
                args: Vec::new(),
                exit_code: exit.unwrap_or(if is_error { 1 } else { 0 }),
                stdout: if is_error {
                    String::new()
                } else {
                    done.text.clone()
                },
                stderr: if is_error { done.text } else { String::new() },
            }),
        })
    }

    async fn memory(&mut self, ask: MemoryAsk) -> Result<MemoryAnswer, String> {
        let key = |ns: &str, k: &str| format!("{ns}/{k}");
        match ask {
            MemoryAsk::Get { namespace, key: k } => {
                let found = self.memory.get(&key(&namespace, &k)).await?;
                Ok(MemoryAnswer::Entry(found.map(|v| entry(&namespace, &k, v))))
            }
            MemoryAsk::Put {
                namespace,
                key: k,
                value,
            } => {
                let full = key(&namespace, &k);
                let existed = self.memory.get(&full).await?.is_some();
                self.memory.put(&full, &Value::String(value)).await?;
                Ok(MemoryAnswer::Done(!existed))
            }
            MemoryAsk::Delete { namespace, key: k } => self
                .memory
                .delete(&key(&namespace, &k))
                .await
                .map(MemoryAnswer::Done),
            MemoryAsk::List { namespace, prefix } => {
                let base = key(&namespace, "");
                let keys = self
                    .memory
                    .list(&format!("{base}{}", prefix.unwrap_or_default()))
                    .await?;
                let mut entries = Vec::new();
                for full in keys {
                    if let Some(v) = self.memory.get(&full).await? {
                        let k = full.strip_prefix(&base).unwrap_or(&full);
                        entries.push(entry(&namespace, k, v));
                    }
                }
                Ok(MemoryAnswer::Entries(entries))
            }
        }
    }
}

fn entry(namespace: &str, key: &str, value: Value) -> MemoryEntry {
    MemoryEntry {
        namespace: namespace.to_string(),
        key: key.to_string(),
        value: match value {
            Value::String(s) => s,
            other => other.to_string(),
        },
        updated_at: 0,
    }
}

fn spec_of(t: &crate::wasm::abi::ModelTool) -> ToolSpec {
    let parameters = t
        .input_schema_json
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    ToolSpec {
        name: t.name.clone(),
        description: t.description.clone(),
        parameters: std::sync::Arc::new(parameters),
    }
}

/// The tools the guest offers the model (its list), run by the parcel's.
struct Offered<'a> {
    specs: Vec<ToolSpec>,
    inner: &'a dyn Tools,
}

#[async_trait::async_trait]
impl Tools for Offered<'_> {
    fn specs(&self) -> std::borrow::Cow<'_, [ToolSpec]> {
        std::borrow::Cow::Borrowed(&self.specs)
    }

    async fn call(&self, call: &ToolCall) -> ToolOutcome {
        self.inner.call(call).await
    }
}

/// The parcel's tools, keeping the exit status of the call (a tool result's
/// `exit-code`).
struct Capture<'a> {
    inner: &'a dyn Tools,
    exit: std::sync::Mutex<Option<i32>>,
}

#[async_trait::async_trait]
impl Tools for Capture<'_> {
    fn specs(&self) -> std::borrow::Cow<'_, [ToolSpec]> {
        self.inner.specs()
    }

    async fn call(&self, call: &ToolCall) -> ToolOutcome {
        let outcome = self.inner.call(call).await;
        let code = outcome.meta.get("exit_code").and_then(Value::as_i64);
        if let (Some(code), Ok(mut exit)) = (code, self.exit.lock()) {
            *exit = i32::try_from(code).ok();
        }
        outcome
    }

    fn begin_round(&self, round: u64) {
        self.inner.begin_round(round);
    }
}

/// The role names of the guest's ABI.
pub(super) fn role_name(role: &Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}
