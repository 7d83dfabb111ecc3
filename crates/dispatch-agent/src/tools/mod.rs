//! A native agent's tools (`TOOL` lines): LOCAL programs, HTTP requests,
//! MCP servers' tools and the built-ins, behind the loop's [`Tools`] trait.
//!
//! Every call is checked before it runs: its arguments must be JSON and
//! pass the tool's JSON Schema (an error goes back to the model, which may
//! try again), and the run's `LIMIT TOOL_CALLS` must not be spent. Each runs
//! under its `TIMEOUT` (default [`DEFAULT_TOOL_TIMEOUT_MS`](dispatch_core::tool::DEFAULT_TOOL_TIMEOUT_MS)); output past
//! `LIMIT TOOL_OUTPUT` is cut for the model, which is told so, and kept whole
//! as an artifact. The runtime records every call as a `tool_call` event
//! with the fields [`ToolOutcome::meta`] adds (kind, bytes, truncated, …).

mod a2a;
mod builtin;
mod builtin_state;
mod edit;
mod gate;
mod http;
pub mod launch;
mod local;
pub mod powers;
mod sandbox;
mod schema;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dispatch_core::tool::{
    ApprovalPolicy, DEFAULT_TOOL_CALLS, DEFAULT_TOOL_OUTPUT_BYTES, ToolDecl, ToolKind,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::agent_loop::{ToolOutcome, Tools};
use crate::mcp::{McpConfig, McpServer};
use crate::provider::{ToolCall, ToolSpec};

pub use builtin::{Memory, Messenger};
pub use gate::{GateAsk, GateDecision, ToolGate};
pub(crate) use local::die_with_parent;
pub use sandbox::Sandbox;

/// What a tool call asks an approver (`APPROVAL always|confirm`).
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalAsk {
    pub tool: String,
    pub kind: &'static str,
    pub arguments: Value,
    pub risk: dispatch_core::tool::Risk,
    /// The tool's arguments schema (edited arguments are checked against it).
    pub schema: Value,
    pub timeout: Duration,
    /// The model's id for the call, and the round it belongs to: together
    /// they find the approval again when a suspended round resumes.
    pub call_id: String,
    pub round: u64,
}

/// The decision on a tool call.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalAnswer {
    /// The approval's id (as `dispatch approvals ls` shows it).
    pub id: String,
    pub approved: bool,
    pub by: String,
    pub rationale: Option<String>,
    /// Arguments to run the tool with instead of the model's.
    pub input: Option<Value>,
    /// When it was decided (milliseconds since the epoch).
    pub at: Option<i64>,
}

/// What an approver says about a call.
#[derive(Clone, Debug, PartialEq)]
pub enum Asked {
    /// The decision is taken.
    Decided(ApprovalAnswer),
    /// Not yet: the round suspends until it is (a durable wait).
    Pending(crate::round::PendingApproval),
}

/// Decides tool calls that need an approval: the runtime records an
/// approval and either suspends the run until `dispatch approve|deny`, the
/// API or the approval's timeout (a denial) decides it, or waits for that.
#[async_trait::async_trait]
pub trait Approver: Send + Sync {
    async fn ask(&self, ask: ApprovalAsk) -> Result<Asked, String>;
}

/// The HTTP client HTTP tools use (share the process's, for its connections).
pub type HttpClient = reqwest::Client;

/// How long an MCP server may take to start and list its tools.
const MCP_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a run's tools run, and with what.
#[derive(Clone)]
pub struct ToolContext<'a> {
    /// The parcel's files: LOCAL programs are here.
    pub parcel_dir: PathBuf,
    /// The run's working directory: LOCAL tools and MCP servers start in
    /// it; the file built-ins cannot leave it.
    pub work_dir: PathBuf,
    /// Where a tool's whole output goes when the model saw only its start.
    pub artifacts_dir: PathBuf,
    /// The environment every tool process starts with, exactly (no secret
    /// is in it unless scoped to the tool: see `scoped`). Borrowed when the
    /// caller keeps it anyway (a native run's agent environment): a run
    /// waiting on its model holds it once.
    pub env: Cow<'a, [(String, String)]>,
    /// Declared secrets' values (HEADER values come from here; they are
    /// never in a tool process's environment on their own).
    pub secrets: HashMap<String, String>,
    /// The secrets scoped to a tool (`SECRET NAME TO tool`), by TOOL name:
    /// added to `env` for that LOCAL tool's or MCP server's processes only.
    pub scoped: HashMap<String, Vec<(String, String)>>,
    /// Values masked (`****`) in every tool's output before the model, the
    /// event log or an artifact sees it: every secret of the run, model keys
    /// included.
    pub mask: Vec<String>,
    /// The key/value memory of `memory_*` (shared by every worker).
    pub memory: Option<&'a dyn Memory>,
    /// The named checkpoints of `checkpoint_*` (shared by every worker).
    pub checkpoints: Option<&'a dyn Memory>,
    /// `TIMEOUT TOOL`: the timeout of a tool whose TOOL line sets none (ms).
    pub default_timeout_ms: Option<u64>,
    /// Decides calls of tools with `APPROVAL always|confirm`.
    pub approver: Option<&'a dyn Approver>,
    /// Where `send_message` and `handoff` go (the run's event log).
    pub messenger: Option<&'a dyn Messenger>,
    /// `LIMIT TOOL_CALLS`, `LIMIT TOOL_OUTPUT`.
    pub max_calls: Option<u64>,
    pub max_output_bytes: Option<u64>,
    pub http: reqwest::Client,
    /// `TOOL_SANDBOX image`: LOCAL tools run in a container.
    pub sandbox: Option<Sandbox>,
    /// Called on every LOCAL tool's command before it is spawned (the run's
    /// `RESOURCES`: its control groups and rlimits).
    pub spawn_hook: Option<SpawnHook>,
    /// The policy asked before every call (none: every call is allowed).
    pub gate: Option<Arc<dyn ToolGate>>,
    /// Starts LOCAL tools' processes instead of `Command::spawn` when set
    /// (and no `TOOL_SANDBOX` applies); `spawn_hook` is then not called.
    pub launcher: Option<launch::Launcher>,
}

impl ToolContext<'_> {
    /// The environment of the processes of the TOOL named `tool`: `env`
    /// plus the secrets scoped to it (`env` itself, not a copy, when none is).
    pub fn env_for(&self, tool: &str) -> Cow<'_, [(String, String)]> {
        let Some(scoped) = self.scoped.get(tool).filter(|s| !s.is_empty()) else {
            return Cow::Borrowed(&self.env);
        };
        let mut env = self.env.to_vec();
        for (k, v) in scoped {
            env.retain(|(name, _)| name != k);
            env.push((k.clone(), v.clone()));
        }
        Cow::Owned(env)
    }
}

/// Prepares a tool process's command (see [`ToolContext::spawn_hook`]).
pub type SpawnHook = Arc<dyn Fn(&mut tokio::process::Command) + Send + Sync>;

/// How one tool runs.
enum Runner {
    /// The program and the `USING` command that runs it (its environment
    /// is made at each call: [`ToolContext::env_for`]).
    Local(PathBuf, Vec<String>),
    Http {
        method: reqwest::Method,
        url: String,
        headers: Vec<(String, String)>,
    },
    Mcp {
        server: Arc<McpServer>,
        tool: String,
    },
    Builtin(String),
    /// A remote agent; `data` sends the arguments as a data part (the TOOL
    /// line has a SCHEMA), else the `message` argument as text.
    A2a {
        remote: Box<crate::a2a::client::Remote>,
        data: bool,
    },
}

struct Entry {
    decl: ToolDecl,
    /// Shared with every run of this process offering the same schema.
    validator: Option<Arc<jsonschema::Validator>>,
    runner: Runner,
}

/// The tools of one attempt (MCP servers started once for it).
pub struct ToolBox<'a> {
    entries: Vec<Entry>,
    /// The entries' specs, in their order: what each model call offers,
    /// lent to the request (not copied per call).
    specs: Vec<ToolSpec>,
    servers: Vec<Arc<McpServer>>,
    ctx: ToolContext<'a>,
    calls: AtomicU64,
    /// The round the calls belong to (see [`Tools::begin_round`]).
    round: AtomicU64,
    /// `TOOL BUILTIN web_search`: the provider searches (see [`Tools::web_search`]).
    web_search: bool,
}

impl<'a> ToolBox<'a> {
    /// Prepares `decls`: starts each MCP server and lists its tools. An
    /// error names the tool or server (and a server's stderr).
    pub async fn start(decls: &[ToolDecl], ctx: ToolContext<'a>) -> Result<ToolBox<'a>, String> {
        // With its spec until the names are checked; split exactly below.
        let mut entries = Vec::with_capacity(decls.len());
        let mut servers = Vec::new();
        std::fs::create_dir_all(&ctx.work_dir).map_err(|e| {
            format!(
                "cannot create the working directory {}: {e}",
                ctx.work_dir.display()
            )
        })?;
        // The operator's A2A policy, read once where the run executes.
        let a2a_policy = if decls.iter().any(|d| matches!(d.kind, ToolKind::A2a { .. })) {
            Some(Arc::new(crate::a2a::trust::Policy::from_env(|k| {
                std::env::var(k).ok()
            })?))
        } else {
            None
        };
        let mut web_search = false;
        for decl in decls {
            match &decl.kind {
                // Run by the model's provider inside its calls: no entry here.
                ToolKind::Builtin if decl.is_hosted() => {
                    web_search = true;
                }
                ToolKind::Mcp {
                    command,
                    url,
                    headers,
                    allow,
                } => {
                    let config = McpConfig {
                        name: decl.name.clone(),
                        command: command.clone(),
                        url: url.clone(),
                        headers: resolve_headers(headers, &ctx.secrets, &decl.name)?,
                        allow: allow.clone(),
                        cwd: ctx.work_dir.clone(),
                        env: ctx.env_for(&decl.name).into_owned(),
                        spawn_hook: crate::mcp::HookSlot(ctx.spawn_hook.clone()),
                    };
                    let server = Arc::new(McpServer::start(&config, MCP_START_TIMEOUT).await?);
                    for t in server.tools() {
                        let spec = ToolSpec {
                            name: t.name.clone(),
                            description: t.description.clone(),
                            parameters: Arc::new(t.input_schema.clone()),
                        };
                        let runner = Runner::Mcp {
                            server: server.clone(),
                            tool: t.name.clone(),
                        };
                        entries.push(entry(decl, spec, runner)?);
                    }
                    servers.push(server);
                }
                ToolKind::A2a { .. } => {
                    let policy = a2a_policy.clone().unwrap_or_default();
                    let (spec, runner) = a2a::prepare(decl, &ctx, policy)?;
                    entries.push(entry(decl, spec, runner)?);
                }
                kind => {
                    let (spec, runner) = prepare(decl, kind, &ctx)?;
                    entries.push(entry(decl, spec, runner)?);
                }
            }
        }
        for (i, (spec, e)) in entries.iter().enumerate() {
            if let Some((_, other)) = entries[..i].iter().find(|(o, _)| o.name == spec.name) {
                return Err(format!(
                    "tool `{}` of {} clashes with the one of {} (hint: ALLOW a subset of the MCP server's tools, or rename the other with AS)",
                    spec.name, e.decl.name, other.decl.name
                ));
            }
        }
        // Exactly as many as there are (`unzip` would reserve four of each).
        let mut specs = Vec::with_capacity(entries.len());
        let mut held = Vec::with_capacity(entries.len());
        for (spec, entry) in entries {
            specs.push(spec);
            held.push(entry);
        }
        let entries = held;
        Ok(ToolBox {
            entries,
            specs,
            servers,
            ctx,
            calls: AtomicU64::new(0),
            round: AtomicU64::new(0),
            web_search,
        })
    }

    /// What was in effect, for the attempt's bill of materials: every tool
    /// with the digest of its schema and its policies; every MCP server
    /// with its name, version and the digest of its `tools/list`.
    pub fn bom(&self) -> Value {
        let tools: Vec<Value> = self
            .entries
            .iter()
            .zip(&self.specs)
            .map(|(e, spec)| {
                let schema = serde_json::to_vec(&spec.parameters).unwrap_or_default();
                let mut row = json!({
                    "name": spec.name,
                    "kind": e.decl.kind.as_str(),
                    "source": e.decl.name,
                    "schema_sha256": hex::encode(Sha256::digest(&schema)),
                    "approval": e.decl.approval().as_str(),
                    "risk": e.decl.risk().as_str(),
                    "timeout_ms": e.decl.timeout_ms_or(self.ctx.default_timeout_ms),
                });
                if let ToolKind::A2a {
                    url,
                    discovery,
                    auth,
                    expect_agent_name,
                    expect_card_sha256,
                } = &e.decl.kind
                {
                    // Where it goes and how it is trusted; the secrets by name only.
                    row["a2a"] = json!({
                        "url": url,
                        "discovery": discovery.as_str(),
                        "auth": auth,
                        "expect_agent_name": expect_agent_name,
                        "expect_card_sha256": expect_card_sha256,
                    });
                }
                row
            })
            .collect();
        let servers: Vec<Value> = self
            .servers
            .iter()
            .map(|s| {
                let (name, version) = s.server_info();
                json!({
                    "name": s.name(),
                    "server_name": name,
                    "server_version": version,
                    "tools_sha256": s.tools_digest(),
                })
            })
            .collect();
        json!({
            "tools": tools,
            "mcp_servers": servers,
            "limits": {
                "tool_calls": self.ctx.max_calls.unwrap_or(DEFAULT_TOOL_CALLS),
                "tool_output_bytes": self.ctx.max_output_bytes.unwrap_or(DEFAULT_TOOL_OUTPUT_BYTES),
            },
        })
    }

    /// Stops the MCP servers.
    pub async fn shutdown(self) {
        drop(self.entries);
        for server in self.servers {
            if let Ok(server) = Arc::try_unwrap(server) {
                server.shutdown().await;
            }
        }
    }

    /// Waits for the call's approval: the arguments to run with, the
    /// approval's fields for the event and the approver's edit if any, or
    /// what the model is told instead.
    async fn approve(
        &self,
        e: &Entry,
        spec: &ToolSpec,
        args: Value,
        call_id: &str,
    ) -> Result<(Value, serde_json::Map<String, Value>, Option<edit::Edit>), ToolOutcome> {
        let Some(approver) = self.ctx.approver else {
            return Err(ToolOutcome::error(format!(
                "error: `{}` needs an approval and nobody can give one here",
                spec.name
            )));
        };
        let ask = ApprovalAsk {
            tool: spec.name.clone(),
            kind: e.decl.kind.as_str(),
            arguments: args.clone(),
            risk: e.decl.risk(),
            schema: Value::clone(&spec.parameters),
            timeout: Duration::from_millis(e.decl.approval_timeout_ms()),
            call_id: call_id.to_string(),
            round: self.round.load(Ordering::SeqCst),
        };
        let answer = match approver.ask(ask).await {
            Ok(Asked::Decided(answer)) => answer,
            Ok(Asked::Pending(pending)) => return Err(ToolOutcome::suspended(pending)),
            Err(why) => {
                return Err(ToolOutcome::error(format!(
                    "error: could not ask for an approval: {why}"
                )));
            }
        };
        let edit = edit::Edit::of(&answer, &args).filter(|_| answer.approved);
        let mut fields = serde_json::Map::new();
        fields.insert(
            "approval".into(),
            json!({"id": answer.id, "decision": if answer.approved { "approve" } else { "deny" },
                   "by": answer.by, "rationale": answer.rationale, "edited": edit.is_some()}),
        );
        if !answer.approved {
            let why = answer
                .rationale
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            let mut o = ToolOutcome::error(format!(
                "denied by {}{why}. The tool did not run.",
                answer.by
            ));
            o.meta = fields;
            return Err(o);
        }
        match edit {
            Some(edit) => {
                fields.extend(edit.fields());
                Ok((edit.input.clone(), fields, Some(edit)))
            }
            None => Ok((args, fields, None)),
        }
    }

    async fn run(&self, e: &Entry, args: Value, call_id: &str) -> ToolOutcome {
        let timeout = Duration::from_millis(e.decl.timeout_ms_or(self.ctx.default_timeout_ms));
        let mut outcome = match &e.runner {
            Runner::Local(program, using) => {
                // Made for the call: a run holds its environment once (`ctx.env`).
                let env = self.ctx.env_for(&e.decl.name);
                local::run(program, using, &env, &args, &self.ctx, timeout).await
            }
            Runner::Http {
                method,
                url,
                headers,
            } => http::run(&self.ctx.http, method, url, headers, &args, timeout).await,
            Runner::Mcp { server, tool } => match server.call(tool, args, timeout).await {
                Ok((text, is_error)) => ToolOutcome {
                    text,
                    is_error,
                    ..ToolOutcome::default()
                },
                Err(e) => ToolOutcome::error(e),
            },
            Runner::Builtin(name) => builtin::run(name, &args, &self.ctx).await,
            Runner::A2a { remote, data } => {
                a2a::run(&self.ctx.http, remote, *data, args, timeout).await
            }
        };
        // A secret a tool prints never reaches the model, the log or an artifact.
        if dispatch_core::redact::contains(&outcome.text, &self.ctx.mask) {
            outcome.text = dispatch_core::redact::mask(&outcome.text, &self.ctx.mask);
        }
        self.cut(&mut outcome, call_id);
        outcome
    }

    /// Cuts an output past `LIMIT TOOL_OUTPUT` for the model (saying so),
    /// keeping it whole as an artifact.
    fn cut(&self, outcome: &mut ToolOutcome, call_id: &str) {
        let max = self
            .ctx
            .max_output_bytes
            .unwrap_or(DEFAULT_TOOL_OUTPUT_BYTES) as usize;
        let bytes = outcome.text.len();
        outcome.meta.insert("bytes".into(), json!(bytes));
        if bytes <= max {
            return;
        }
        let safe: String = call_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(64)
            .collect();
        let name = format!("tool-outputs/{safe}.txt");
        let path = self.ctx.artifacts_dir.join(&name);
        let kept = std::fs::create_dir_all(path.parent().unwrap_or(&self.ctx.artifacts_dir))
            .and_then(|()| std::fs::write(&path, outcome.text.as_bytes()))
            .is_ok();
        let mut end = max;
        while !outcome.text.is_char_boundary(end) {
            end -= 1;
        }
        outcome.text.truncate(end);
        outcome.text.push_str(&format!(
            "\n[output truncated: the first {end} of {bytes} bytes{}]",
            if kept {
                format!("; the whole output is kept as artifact {name}")
            } else {
                String::new()
            }
        ));
        outcome.meta.insert("truncated".into(), json!(true));
        if kept {
            outcome.meta.insert("artifact".into(), json!(name));
        }
    }
}

#[async_trait::async_trait]
impl Tools for ToolBox<'_> {
    fn specs(&self) -> Cow<'_, [ToolSpec]> {
        Cow::Borrowed(&self.specs)
    }

    fn begin_round(&self, round: u64) {
        self.round.store(round, Ordering::SeqCst);
    }

    fn web_search(&self) -> bool {
        self.web_search
    }

    async fn call(&self, call: &ToolCall) -> ToolOutcome {
        let Some((e, spec)) = self
            .entries
            .iter()
            .zip(&self.specs)
            .find(|(_, spec)| spec.name == call.name)
        else {
            let names: Vec<&str> = self.specs.iter().map(|s| s.name.as_str()).collect();
            return ToolOutcome::error(format!(
                "error: there is no tool named `{}` (the tools are: {})",
                call.name,
                names.join(", ")
            ));
        };
        let mut meta = serde_json::Map::new();
        meta.insert("kind".into(), json!(e.decl.kind.as_str()));
        if let ToolKind::Mcp { .. } = e.decl.kind {
            meta.insert("server".into(), json!(e.decl.name));
        }
        let with_meta = |mut o: ToolOutcome| {
            let mut m = meta.clone();
            m.extend(o.meta);
            o.meta = m;
            o
        };
        let text = if call.arguments.trim().is_empty() {
            "{}"
        } else {
            call.arguments.as_str()
        };
        let args: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(err) => {
                return with_meta(ToolOutcome::error(format!(
                    "error: the arguments are not valid JSON ({err}); call `{}` again with a JSON object",
                    call.name
                )));
            }
        };
        if let Some(v) = &e.validator {
            let problems: Vec<String> = v
                .iter_errors(&args)
                .take(3)
                .map(|err| {
                    let at = err.instance_path().to_string();
                    let at = if at.is_empty() { "/".into() } else { at };
                    format!("{at}: {err}")
                })
                .collect();
            if !problems.is_empty() {
                let mut o = ToolOutcome::error(format!(
                    "error: the arguments do not match the tool's schema: {}; call `{}` again with valid arguments",
                    problems.join("; "),
                    call.name
                ));
                o.meta.insert("invalid".into(), json!(true));
                return with_meta(o);
            }
        }
        let max = self.ctx.max_calls.unwrap_or(DEFAULT_TOOL_CALLS);
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n > max {
            let reason = format!(
                "tool_calls_exceeded: the model called tools more than {max} times (LIMIT TOOL_CALLS {max})"
            );
            let mut o = ToolOutcome::error(format!("error: {reason}; not run"));
            o.stop = Some(reason);
            return with_meta(o);
        }
        let decision = self.ctx.gate.as_ref().map(|g| {
            g.decide(&GateAsk {
                tool: &spec.name,
                kind: e.decl.kind.as_str(),
                arguments: &args,
                risk: Some(e.decl.risk().as_str()),
                approval: e.decl.approval().as_str(),
            })
        });
        let needs_person = matches!(
            e.decl.approval(),
            ApprovalPolicy::Always | ApprovalPolicy::Confirm
        );
        match decision {
            Some(GateDecision::Deny(reasons)) => {
                let mut o = ToolOutcome::error(format!(
                    "error: the policy denies this call: {reasons}; not run"
                ));
                o.meta.insert(
                    "policy".into(),
                    json!({"decision": "deny", "reasons": reasons}),
                );
                return with_meta(o);
            }
            Some(GateDecision::RequireApproval(reasons)) => {
                return with_meta(match self.approve(e, spec, args, &call.id).await {
                    Ok((args, fields, edit)) => {
                        let mut outcome = self.run(e, args, &call.id).await;
                        outcome.meta.extend(fields);
                        outcome.note = edit
                            .map(|edit| dispatch_core::redact::mask(&edit.note(), &self.ctx.mask));
                        outcome.meta.insert(
                            "policy".into(),
                            json!({"decision": "require_approval", "reasons": reasons}),
                        );
                        outcome
                    }
                    Err(outcome) => outcome,
                });
            }
            Some(GateDecision::AutoApprove(rules)) if needs_person => {
                // Approved by the rule: recorded as its decision, nobody asked.
                let mut outcome = self.run(e, args, &call.id).await;
                outcome.meta.insert(
                    "approval".into(),
                    json!({"policy": e.decl.approval().as_str(), "decision": "approve", "by": format!("policy rule: {rules}")}),
                );
                outcome.meta.insert(
                    "policy".into(),
                    json!({"decision": "auto_approve", "rules": rules}),
                );
                return with_meta(outcome);
            }
            _ => {}
        }
        let args = match e.decl.approval() {
            ApprovalPolicy::Never => args,
            ApprovalPolicy::Audit => {
                // Let through at once; the call's event records the policy that did.
                let mut outcome = self.run(e, args, &call.id).await;
                outcome.meta.insert(
                    "approval".into(),
                    json!({"policy": "audit", "decision": "approve", "by": "audit policy"}),
                );
                return with_meta(outcome);
            }
            _ => match self.approve(e, spec, args, &call.id).await {
                Ok((args, fields, edit)) => {
                    let mut outcome = self.run(e, args, &call.id).await;
                    outcome.meta.extend(fields);
                    // The model learns its input was changed, and to what.
                    outcome.note =
                        edit.map(|edit| dispatch_core::redact::mask(&edit.note(), &self.ctx.mask));
                    return with_meta(outcome);
                }
                Err(outcome) => return with_meta(outcome),
            },
        };
        with_meta(self.run(e, args, &call.id).await)
    }
}

/// A tool with its compiled schema (an MCP server's own schema that does
/// not compile leaves its arguments to the server to check).
fn entry(decl: &ToolDecl, spec: ToolSpec, runner: Runner) -> Result<(ToolSpec, Entry), String> {
    let validator = match (schema::validator(&spec.parameters), &runner) {
        (Ok(v), _) => Some(v),
        (Err(_), Runner::Mcp { .. }) => None,
        (Err(e), _) => {
            return Err(format!(
                "tool `{}`: its schema does not compile: {e}",
                spec.name
            ));
        }
    };
    Ok((
        spec,
        Entry {
            decl: decl.clone(),
            validator,
            runner,
        },
    ))
}

/// The spec and runner of a LOCAL, HTTP or built-in tool.
fn prepare(
    decl: &ToolDecl,
    kind: &ToolKind,
    ctx: &ToolContext<'_>,
) -> Result<(ToolSpec, Runner), String> {
    let any_object = schema::any_object;
    let spec = |description: String, parameters: Arc<Value>| ToolSpec {
        name: decl.name.clone(),
        description: decl.description.clone().unwrap_or(description),
        parameters: decl.schema.clone().map(Arc::new).unwrap_or(parameters),
    };
    Ok(match kind {
        ToolKind::Local { program, using } => (
            spec(format!("Runs {program}"), any_object()),
            Runner::Local(ctx.parcel_dir.join(program), using.clone()),
        ),
        ToolKind::Http {
            method,
            url,
            headers,
        } => {
            let method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|_| format!("tool `{}`: bad method `{method}`", decl.name))?;
            (
                spec(format!("{method} {url}"), any_object()),
                Runner::Http {
                    method,
                    url: url.clone(),
                    headers: resolve_headers(headers, &ctx.secrets, &decl.name)?,
                },
            )
        }
        ToolKind::Builtin => {
            let (description, schema) = builtin::spec(&decl.name)
                .ok_or_else(|| format!("unknown built-in tool `{}`", decl.name))?;
            (
                spec(description.to_string(), Arc::new(schema)),
                Runner::Builtin(decl.name.clone()),
            )
        }
        ToolKind::Mcp { .. } => unreachable!("MCP servers are started by ToolBox::start"),
        ToolKind::A2a { .. } => unreachable!("A2A tools are prepared by a2a::prepare"),
    })
}

/// HEADER values from the declared secrets; a missing one is an error.
fn resolve_headers(
    headers: &[dispatch_core::tool::SecretHeader],
    secrets: &HashMap<String, String>,
    tool: &str,
) -> Result<Vec<(String, String)>, String> {
    headers
        .iter()
        .map(|h| match secrets.get(&h.secret) {
            Some(v) => Ok((h.name.clone(), v.clone())),
            None => Err(format!(
                "tool `{tool}`: HEADER {} needs secret {}, which is not set where the run executes (hint: export it, or store it with the secret store)",
                h.name, h.secret
            )),
        })
        .collect()
}
