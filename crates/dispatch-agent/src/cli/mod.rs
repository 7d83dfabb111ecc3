//! Local coding-agent CLIs as the model loop (`PROVIDER claude|codex`):
//! Claude Code (`claude -p --output-format stream-json`) or Codex (`codex
//! exec --json`) runs headless in the run's workspace, in a process group
//! of its own, with its own tools. What it prints becomes the run's event
//! stream, written by the runtime like any courier's:
//!
//! - each model call it reports is a `model_call` event and a `usage` (Claude
//!   Code: each assistant message, billed once by its id; Codex: each turn),
//!   billed at the model's price (`PRICE`, else the built-in table);
//! - each tool call it made is a `tool_call` event (`by`: the CLI);
//! - its final answer is the run's output.
//!
//! `LIMIT TOKENS` and `LIMIT COST` are checked on every usage it reports
//! (and, for Codex, which reports usage only when its turn ends, on an
//! estimate of what it has said and read so far); `LIMIT TOOL_CALLS` on
//! every tool call it starts. Crossing one kills the CLI's process group
//! and ends the run. When the CLI reports a total (Claude Code's
//! `total_cost_usd` and `usage`) above what was billed per call, the
//! difference is billed too: the run is never billed less than the CLI says.
//! Dropping the loop (a stop, a timeout) ends the process group: SIGTERM,
//! then SIGKILL after [`GRACE`].

mod claude;
mod codex;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dispatch_core::RunEvent;
use dispatch_core::agent::ProviderKind;
use dispatch_core::event::Usage;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::agent_loop::{LoopConfig, LoopEnd, Sink};
use crate::billing;
use crate::conversation::{Conversation, estimate_tokens};
use crate::prompt::output_of;
use crate::provider::{
    Delta, Exchange, Flow, Message, ModelRequest, ModelResponse, Provider, ProviderError, Role,
    TokenUsage,
};
use crate::tools::SpawnHook;

/// How long a CLI's group has between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(2);
/// How much of the CLI's stderr an error quotes.
const STDERR_TAIL: usize = 2000;

/// What a CLI's output line amounts to, provider-neutral.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Ev {
    /// Text the agent said (to the log and live streams).
    Text(String),
    /// One model call, with the usage the CLI reported for it.
    Call {
        id: String,
        model: Option<String>,
        usage: TokenUsage,
        /// Why the call ended, as the CLI said (Claude Code's `stop_reason`,
        /// often null in its stream); recorded as it is.
        finish: Option<String>,
    },
    /// A tool call began.
    ToolStart {
        id: String,
        name: String,
        input: Value,
    },
    /// A tool call ended.
    ToolEnd {
        id: String,
        name: String,
        input: Value,
        output: String,
        ok: bool,
        meta: serde_json::Map<String, Value>,
    },
    /// Something the run's reader should know (a tool the CLI's
    /// permission mode refused).
    Warning(String),
    /// The CLI's last word: its answer or error, and its own totals.
    Done {
        text: Option<String>,
        error: Option<String>,
        usage: Option<TokenUsage>,
        cost_usd: Option<f64>,
    },
}

/// A CLI's output format.
pub(crate) trait Parse: Send {
    /// What one JSON line says.
    fn line(&mut self, v: &Value) -> Vec<Ev>;
    /// At the end of the output: the last word, when no line gave it.
    fn finish(&mut self) -> Option<Ev>;
}

/// Where and how the CLI runs.
pub struct CliRun {
    /// The run's workspace (its working directory).
    pub work_dir: PathBuf,
    /// Added to the environment it inherits (the run's tool environment).
    pub env: Vec<(String, String)>,
    /// The run's protections (control groups, rlimits, sandbox).
    pub spawn_hook: Option<SpawnHook>,
    /// `LIMIT TOOL_CALLS`.
    pub max_tool_calls: Option<u64>,
    /// The run's sandbox applies (`spawn_hook` enters it): the CLI sees
    /// only the host's system directories, so an error says so.
    pub sandboxed: bool,
    /// `TIMEOUT LLM`, when the Agentfile sets it: the longest the CLI may
    /// run (one CLI run is one request to it, as upstream Dispatch counts).
    pub timeout: Option<Duration>,
}

/// The variable that names the program of `kind`, and what to install.
fn program_of(kind: ProviderKind) -> (&'static [&'static str], &'static str, &'static str) {
    match kind {
        ProviderKind::Codex => (
            &["DISPATCH_CODEX_BIN"],
            "codex",
            "install Codex: `npm install -g @openai/codex`",
        ),
        _ => (
            // `CLAUDE_BINARY` is upstream Dispatch's name for it.
            &["DISPATCH_CLAUDE_BIN", "CLAUDE_BINARY"],
            "claude",
            "install Claude Code: `npm install -g @anthropic-ai/claude-code`",
        ),
    }
}

/// The program `PROVIDER claude|codex` runs: `DISPATCH_CLAUDE_BIN` (or
/// `CLAUDE_BINARY`) / `DISPATCH_CODEX_BIN`, else `claude` / `codex` on
/// `PATH`. The error is one line saying what to install.
pub fn find_program(
    kind: ProviderKind,
    env: impl Fn(&str) -> Option<String>,
) -> Result<PathBuf, String> {
    let (vars, name, install) = program_of(kind);
    for var in vars {
        if let Some(p) = env(var).filter(|p| !p.trim().is_empty()) {
            let path = PathBuf::from(p.trim());
            return match is_executable(&path) {
                true => Ok(path),
                false => Err(format!(
                    "PROVIDER {kind}: {var} names `{}`, which is not an executable file (hint: {install}, or fix {var})",
                    path.display()
                )),
            };
        }
    }
    let found = env("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    });
    found.ok_or_else(|| {
        format!(
            "PROVIDER {kind} runs the `{name}` CLI, which is not on PATH (hint: {install}, or set {} to its path)",
            vars[0]
        )
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The prompt given on stdin: the task, after the session's earlier turns.
fn prompt(conv: &Conversation, system_inline: bool) -> String {
    let mut out = String::new();
    if system_inline && !conv.system.trim().is_empty() {
        out.push_str("<instructions>\n");
        out.push_str(conv.system.trim());
        out.push_str("\n</instructions>\n\n");
    }
    let said: Vec<&Message> = conv
        .messages
        .iter()
        .filter(|m| m.role != Role::Tool && !m.content.trim().is_empty())
        .collect();
    if let Some((last, earlier)) = said.split_last() {
        if !earlier.is_empty() {
            out.push_str("<conversation_so_far>\n");
            for m in earlier {
                let who = if m.role == Role::User {
                    "user"
                } else {
                    "assistant"
                };
                out.push_str(&format!("[{who}]\n{}\n\n", m.content.trim()));
            }
            out.push_str("</conversation_so_far>\n\n");
        }
        out.push_str(&last.content);
    }
    out
}

/// Ends the CLI's process group when dropped: SIGTERM, then SIGKILL after
/// [`GRACE`] (from a thread, as a drop cannot wait).
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        let Some(pgid) = self.0.filter(|p| *p > 1) else {
            return;
        };
        let pgid = Pid::from_raw(pgid as i32);
        if killpg(pgid, Signal::SIGTERM).is_err() {
            return; // nothing left in it
        }
        std::thread::spawn(move || {
            let deadline = Instant::now() + GRACE;
            while Instant::now() < deadline {
                // Signal 0: does anything of the group remain?
                if killpg(pgid, None).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = killpg(pgid, Signal::SIGKILL);
        });
    }
}

/// Runs the CLI of `cfg.models[0]` on `conv` to its end.
pub async fn run_cli(
    cfg: &LoopConfig,
    conv: &mut Conversation,
    run: &CliRun,
    sink: &mut dyn Sink,
) -> LoopEnd {
    if let Some(answer) = conv.answered() {
        // Resumed after the answer was checkpointed: nothing to run again.
        let text = answer.content.clone();
        return LoopEnd::Answered {
            output: output_of(&text),
            text,
        };
    }
    let Some(model) = cfg.models.first() else {
        return failed("the agent has no MODEL", false);
    };
    let kind = model.model.provider;
    let env_of = |k: &str| {
        run.env
            .iter()
            .rev()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(k).ok())
    };
    let program = match find_program(kind, env_of) {
        Ok(p) => p,
        Err(e) => return failed(&e, false),
    };
    let mut used = cfg.used;
    let est_in = estimate_tokens(conv.chars());
    if let Some(reason) = over(cfg, &used, est_in) {
        return LoopEnd::Budget(format!(
            "budget_exceeded: {reason} (stopped before starting {kind})"
        ));
    }
    // `--reasoning-effort=…` on the MODEL line, else REASONING's level.
    let effort = model.model.options.reasoning_effort.clone().or_else(|| {
        cfg.reasoning
            .and_then(|r| r.effort_level())
            .map(|e| e.as_str().to_string())
    });
    let (args, input, mut parser): (Vec<String>, String, Box<dyn Parse>) = match kind {
        ProviderKind::Codex => (
            codex::args(&model.model, &run.work_dir, effort.as_deref()),
            prompt(conv, true),
            Box::new(codex::Parser::default()),
        ),
        _ => (
            claude::args(
                &model.model,
                &conv.system,
                cfg.max_iterations,
                effort.as_deref(),
            ),
            prompt(conv, false),
            Box::new(claude::Parser::default()),
        ),
    };
    let _ = std::fs::create_dir_all(&run.work_dir);
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&args)
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&run.work_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, ended by `Group` (TERM, grace, KILL), never a lone kill.
        .process_group(0);
    crate::tools::die_with_parent(&mut command);
    if let Some(hook) = &run.spawn_hook {
        hook(&mut command);
    }
    let started = Instant::now();
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let hint = match run.sandboxed {
                true => {
                    " (hint: the run's sandbox shows the host's /usr, /bin, /lib, /etc and /opt only: install the CLI there, or set DISPATCH_SANDBOX=off where runs execute)"
                }
                false => "",
            };
            return failed(
                &format!("cannot start {}: {e}{hint}", program.display()),
                false,
            );
        }
    };
    let _group = Group(child.id());
    let by = kind.as_str();
    let _ = sink
        .record(vec![RunEvent::CliStarted(
            json!({"provider": by, "program": program.display().to_string(), "args": redact_args(&args), "pid": child.id()}),
        )])
        .await;
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            let _ = stdin.write_all(input.as_bytes()).await;
        });
    }
    let stderr = child.stderr.take();
    let stderr_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(s) = stderr {
            let _ = s.take(1 << 20).read_to_end(&mut buf).await;
        }
        buf
    });
    let Some(stdout) = child.stdout.take() else {
        return failed("the CLI's stdout was not captured", false);
    };
    let mut lines = BufReader::new(stdout).lines();
    let mut billed = TokenUsage::default();
    let mut billed_cost = 0.0;
    let mut calls = 0u64;
    let mut tools = 0u64;
    let mut said = String::new();
    let mut unreported_chars = 0usize;
    let mut open: std::collections::HashMap<String, Instant> = Default::default();
    let mut done = None;
    let deadline = run.timeout.map(|t| tokio::time::Instant::now() + t);
    let timed_out = || {
        let t = run.timeout.map_or(0, |t| t.as_millis() as i64);
        failed(
            &format!(
                "`{by}` did not finish within {} (TIMEOUT LLM) and was stopped",
                dispatch_core::time::human_duration(t)
            ),
            true,
        )
    };
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, lines.next_line()).await {
                Ok(r) => r,
                Err(_) => return timed_out(),
            },
            None => lines.next_line().await,
        };
        let line = match next {
            Ok(Some(l)) => l,
            Ok(None) | Err(_) => break,
        };
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
            continue; // a banner or a blank line
        };
        let mut evs = parser.line(&v);
        for ev in evs.drain(..) {
            match ev {
                Ev::Text(t) => {
                    unreported_chars += t.len();
                    sink.delta(&t);
                    if !t.ends_with('\n') {
                        sink.delta("\n");
                    }
                    said = t;
                }
                Ev::Call {
                    id,
                    model: answered_by,
                    usage,
                    finish,
                } => {
                    calls += 1;
                    unreported_chars = 0;
                    let u = Usage {
                        input_tokens: usage.input_tokens,
                        output_tokens: usage.output_tokens,
                        cost_usd: 0.0,
                    };
                    let cost = model
                        .price
                        .as_ref()
                        .map(|p| p.cost(u.input_tokens, u.output_tokens));
                    billed.input_tokens += u.input_tokens;
                    billed.output_tokens += u.output_tokens;
                    billed_cost += cost.unwrap_or(0.0);
                    used.input_tokens += u.input_tokens;
                    used.output_tokens += u.output_tokens;
                    used.cost_usd += cost.unwrap_or(0.0);
                    let event = json!({
                        "id": id, "model": model.model.name, "provider": by,
                        "base_url": model.model.endpoint(), "call": conv.calls + calls,
                        "round": conv.rounds + 1, "retry": 0, "fallback": false,
                        "input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                        "cost_usd": cost, "finish_reason": finish,
                        "response_model": answered_by, "latency_ms": started.elapsed().as_millis() as u64,
                    });
                    let usage_event = billing::usage_event(&model.model.name, u, cost, false);
                    let _ = sink
                        .record(vec![
                            RunEvent::ModelCall(event),
                            RunEvent::Usage(usage_event),
                        ])
                        .await;
                    if let Some(reason) = over(cfg, &used, 0) {
                        return LoopEnd::Budget(format!(
                            "budget_exceeded: {reason} ({by} was stopped)"
                        ));
                    }
                }
                Ev::ToolStart { id, name, .. } => {
                    tools += 1;
                    open.insert(id, Instant::now());
                    if let Some(max) = run.max_tool_calls
                        && tools > max
                    {
                        return LoopEnd::ToolRounds(format!(
                            "tool_calls_exceeded: {by} called tools more than {max} times (LIMIT TOOL_CALLS {max}; it was stopped at `{name}`)"
                        ));
                    }
                }
                Ev::ToolEnd {
                    id,
                    name,
                    input,
                    output,
                    ok,
                    meta,
                } => {
                    let began = open.remove(&id);
                    let took = began.map_or(0, |t| t.elapsed().as_millis() as u64);
                    // Reported whole, never started (Codex's file changes): counted now.
                    let over_calls = match (began, run.max_tool_calls) {
                        (None, Some(max)) => {
                            tools += 1;
                            (tools > max).then_some(max)
                        }
                        (None, None) => {
                            tools += 1;
                            None
                        }
                        _ => None,
                    };
                    unreported_chars += output.len();
                    let mut event = json!({
                        "name": name, "id": id, "input": input, "output": output, "ok": ok,
                        "duration_ms": took, "round": conv.rounds + 1, "by": by, "kind": "cli",
                    });
                    if let Some(fields) = event.as_object_mut() {
                        fields.extend(meta);
                    }
                    let _ = sink.record(vec![RunEvent::ToolCall(event)]).await;
                    if let Some(max) = over_calls {
                        return LoopEnd::ToolRounds(format!(
                            "tool_calls_exceeded: {by} called tools more than {max} times (LIMIT TOOL_CALLS {max}; it was stopped after `{name}`)"
                        ));
                    }
                }
                Ev::Warning(message) => {
                    let _ = sink
                        .record(vec![RunEvent::Warning(
                            json!({"message": message, "by": by}),
                        )])
                        .await;
                }
                Ev::Done { .. } => done = Some(ev),
            }
            // Codex reports usage only when its turn ends: meanwhile, what
            // it said and read counts as an estimate.
            let unreported = match kind {
                ProviderKind::Codex => estimate_tokens(unreported_chars),
                _ => 0, // Claude Code reports each message's usage with it
            };
            if let Some(reason) = over(cfg, &used, unreported) {
                return LoopEnd::Budget(format!(
                    "budget_exceeded: {reason} (estimated; {by} was stopped)"
                ));
            }
        }
    }
    let status = match deadline {
        Some(d) => match tokio::time::timeout_at(d, child.wait()).await {
            Ok(s) => s,
            Err(_) => return timed_out(),
        },
        None => child.wait().await,
    };
    let stderr = stderr_task.await.unwrap_or_default();
    let done = done.or_else(|| parser.finish());
    let Some(Ev::Done {
        text,
        error,
        usage,
        cost_usd,
    }) = done
    else {
        let how = match status.as_ref().ok().and_then(|s| s.code()) {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".to_string(),
        };
        return failed(
            &format!(
                "`{}` {how} before its result{}",
                program.display(),
                stderr_tail(&stderr)
            ),
            true,
        );
    };
    // The CLI's own totals, when above what was billed call by call.
    let extra = Usage {
        input_tokens: usage.map_or(0, |u| u.input_tokens.saturating_sub(billed.input_tokens)),
        output_tokens: usage.map_or(0, |u| u.output_tokens.saturating_sub(billed.output_tokens)),
        cost_usd: 0.0,
    };
    let extra_cost = cost_usd.map(|c| (c - billed_cost).max(0.0));
    if extra.total_tokens() > 0 || extra_cost.is_some_and(|c| c > 0.0) {
        used.input_tokens += extra.input_tokens;
        used.output_tokens += extra.output_tokens;
        used.cost_usd += extra_cost.unwrap_or(0.0);
        let mut e = billing::usage_event(&model.model.name, extra, extra_cost, false);
        e["reconciled"] = json!(by);
        let _ = sink.record(vec![RunEvent::Usage(e)]).await;
    }
    if let Some(reason) = over(cfg, &used, 0) {
        return LoopEnd::Budget(format!("budget_exceeded: {reason}"));
    }
    if let Some(e) = error {
        return failed(&format!("{by}: {e}{}", stderr_tail(&stderr)), false);
    }
    let text = text.unwrap_or(said);
    conv.calls += calls.max(1);
    conv.messages
        .push(Message::assistant(text.clone(), Vec::new()));
    let _ = sink
        .record(vec![RunEvent::Checkpoint(conv.checkpoint("answer"))])
        .await;
    conv.mark_saved();
    LoopEnd::Answered {
        output: output_of(&text),
        text,
    }
}

fn failed(reason: &str, retryable: bool) -> LoopEnd {
    LoopEnd::Failed {
        reason: reason.to_string(),
        retryable,
    }
}

fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let t = text.trim();
    if t.is_empty() {
        return String::new();
    }
    let start = t
        .char_indices()
        .map(|(i, _)| i)
        .find(|i| t.len() - i <= STDERR_TAIL)
        .unwrap_or(0);
    format!("; stderr: {}", &t[start..])
}

/// The CLI's arguments for the record, the system prompt shortened.
fn redact_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut prev = "";
    for a in args {
        if prev == "--append-system-prompt" {
            out.push(format!("<{} bytes>", a.len()));
        } else {
            out.push(a.clone());
        }
        prev = a;
    }
    out
}

/// Why `used` plus `extra` tokens crosses a hard budget.
fn over(cfg: &LoopConfig, used: &Usage, extra: u64) -> Option<String> {
    let tokens = used.total_tokens() + extra;
    if let Some(max) = cfg.max_tokens
        && tokens > max
    {
        return Some(format!("{tokens} tokens, limit {max}"));
    }
    if let Some(max) = cfg.max_cost_usd {
        let price = cfg.models.first().and_then(|m| m.price.as_ref());
        let cost = used.cost_usd + price.map_or(0.0, |p| p.cost(0, extra));
        if cost > max {
            return Some(format!("cost ${cost:.4} exceeds limit ${max:.4}"));
        }
    }
    None
}

/// What `provider_for` gives for a CLI model: it runs whole loops, never
/// one call (an eval judge, say, needs a hosted model).
pub struct NotPerCall(pub ProviderKind);

#[async_trait::async_trait]
impl Provider for NotPerCall {
    fn kind(&self) -> ProviderKind {
        self.0
    }

    async fn stream(
        &self,
        _req: &ModelRequest,
        _on_delta: &mut (dyn for<'d> FnMut(Delta<'d>) -> Flow + Send),
        _exchange: &mut Exchange,
    ) -> Result<ModelResponse, ProviderError> {
        Err(ProviderError::Refused {
            status: 400,
            message: format!(
                "PROVIDER {} runs the `{}` CLI as a whole agent loop and cannot answer a single call (hint: name a hosted model here, e.g. `model = \"gpt-4o-mini\"`)",
                self.0, self.0
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_carries_earlier_turns_and_codex_gets_the_instructions_inline() {
        let conv = Conversation {
            system: "You are terse.".into(),
            messages: vec![
                Message::user("hi"),
                Message::assistant("hello", Vec::new()),
                Message::user("what next?"),
            ],
            rounds: 0,
            calls: 0,
            compacted: 0,
            done: Vec::new(),
            saved: None,
        };
        let p = prompt(&conv, false);
        assert!(p.starts_with("<conversation_so_far>\n[user]\nhi"), "{p}");
        assert!(p.ends_with("</conversation_so_far>\n\nwhat next?"), "{p}");
        let p = prompt(&conv, true);
        assert!(p.starts_with("<instructions>\nYou are terse.\n</instructions>"));
    }

    #[test]
    fn a_missing_cli_is_one_line_naming_what_to_install() {
        let env = |k: &str| (k == "PATH").then(|| "/nonexistent".to_string());
        let e = find_program(ProviderKind::Claude, env).expect_err("missing");
        assert!(
            e.contains("npm install -g @anthropic-ai/claude-code"),
            "{e}"
        );
        assert!(e.contains("DISPATCH_CLAUDE_BIN"), "{e}");
        let e = find_program(ProviderKind::Codex, env).expect_err("missing");
        assert!(e.contains("@openai/codex") && !e.contains('\n'), "{e}");
        let bin = |k: &str| (k == "DISPATCH_CODEX_BIN").then(|| "/nonexistent/codex".to_string());
        let e = find_program(ProviderKind::Codex, bin).expect_err("not executable");
        assert!(
            e.contains("DISPATCH_CODEX_BIN names `/nonexistent/codex`"),
            "{e}"
        );
    }
}
