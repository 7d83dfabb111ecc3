//! Policy on triggers and tool calls: a Rego policy (the language of Open
//! Policy Agent, evaluated in-process by `regorus`) decides before a run is
//! created (allow, deny, send to review, or modify its labels, budget and
//! model) and before every tool call (allow, deny, require an approval, or
//! approve it by rule).
//!
//! A policy is one `.rego` file of `package dispatch` defining any of these
//! rules (a rule left out never matches):
//!
//! ```rego
//! package dispatch
//!
//! deny contains msg if { … }              # refuse the run / the tool call, saying why
//! review contains msg if { … }            # the run waits for a person before it starts
//! modify := {"labels": {…}, "limit_cost_usd": 1.5, "model": "…"} if { … }
//! require_approval contains msg if { … }  # the tool call waits for `dispatch approve`
//! auto_approve contains rule if { … }     # a call that would wait is approved by this rule
//! ```
//!
//! `input.action` is `create_run` or `tool_call`; the other inputs are in
//! [`input`]. A policy that does not parse, names an input Dispatch does not
//! give, or fails on a trial evaluation is refused when it is loaded: a
//! broken policy never opens the gate.

mod decision;
pub mod input;
mod memo;
mod refs;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use decision::{Decision, Modify, RunDecision, ToolDecision};
use regorus::Value;

/// The package every policy declares.
pub const PACKAGE: &str = "dispatch";
/// The longest one evaluation may take before it is an error (which denies).
pub const EVAL_LIMIT: Duration = Duration::from_millis(250);

/// Why a policy cannot be loaded or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("policy {path}: evaluation failed: {message} (the request is denied)")]
    Eval { path: PathBuf, message: String },
}

/// The rules a decision reads, by action.
const RUN_RULES: [&str; 3] = ["deny", "modify", "review"];
const TOOL_RULES: [&str; 3] = ["deny", "require_approval", "auto_approve"];

/// A loaded, checked policy.
pub struct Policy {
    path: PathBuf,
    engine: Mutex<Engine>,
    /// Of the rules decisions read, those the policy defines (each one is
    /// evaluated on its own: no query to parse, no other rule evaluated).
    defined: Vec<&'static str>,
}

/// The engine and the answers it gave (see [`memo`]), used under one lock.
struct Engine {
    regorus: regorus::Engine,
    memo: memo::Memo,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").field("path", &self.path).finish()
    }
}

impl Policy {
    /// Reads, parses and checks the policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::from_text(path, &text)
    }

    /// Parses and checks a policy's text (`path` names it in errors).
    pub fn from_text(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        refs::check_inputs(text).map_err(invalid)?;
        let mut engine = regorus::Engine::new();
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: EVAL_LIMIT,
            check_interval: std::num::NonZeroU32::MIN,
        });
        let package = engine
            .add_policy(path.display().to_string(), text.to_string())
            .map_err(|e| invalid(one_line(&e.to_string())))?;
        if package != format!("data.{PACKAGE}") {
            return Err(invalid(format!(
                "declares `package {}`, not `package {PACKAGE}` (hint: start the file with `package {PACKAGE}`)",
                package.trim_start_matches("data.")
            )));
        }
        // A rule the package does not define is "not a valid rule path";
        // any other answer (a value, or an error on this empty input) is a
        // rule's.
        let mut defined: Vec<&'static str> = RUN_RULES.into_iter().chain(TOOL_RULES).collect();
        defined.sort_unstable();
        defined.dedup();
        engine.set_input(Value::new_object());
        defined.retain(|n| match engine.eval_rule(format!("data.{PACKAGE}.{n}")) {
            Ok(_) => true,
            Err(e) => !e.to_string().contains("not a valid rule path"),
        });
        let policy = Policy {
            path: path.to_path_buf(),
            engine: Mutex::new(Engine {
                regorus: engine,
                memo: memo::Memo::new(text),
            }),
            defined,
        };
        // A trial of each action, so a rule that fails (a type error, an
        // unknown function) is found now rather than on the first run.
        for sample in [input::sample_run(), input::sample_tool_call()] {
            policy.decide(&sample).map_err(|e| match e {
                PolicyError::Eval { message, .. } => invalid(format!(
                    "fails on a trial {}: {message}",
                    sample["action"].as_str().unwrap_or("input")
                )),
                other => other,
            })?;
        }
        Ok(policy)
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decides whether a run may be created (`input.action` is `create_run`).
    pub fn decide_run(&self, input: &serde_json::Value) -> Result<RunDecision, PolicyError> {
        let rules = self.rules(input, &RUN_RULES)?;
        decision::run(&rules).map_err(|message| self.eval_error(message))
    }

    /// Decides whether a tool call may run (`input.action` is `tool_call`).
    pub fn decide_tool(&self, input: &serde_json::Value) -> Result<ToolDecision, PolicyError> {
        let rules = self.rules(input, &TOOL_RULES)?;
        decision::tool(&rules).map_err(|message| self.eval_error(message))
    }

    /// Either decision, by `input.action` (for `dispatch policy test`).
    pub fn decide(&self, input: &serde_json::Value) -> Result<Decision, PolicyError> {
        match input.get("action").and_then(serde_json::Value::as_str) {
            Some("create_run") => self.decide_run(input).map(Decision::Run),
            Some("tool_call") => self.decide_tool(input).map(Decision::Tool),
            other => Err(self.eval_error(format!(
                "input.action is {}, not `create_run` or `tool_call`",
                other.map_or_else(|| "missing".to_string(), |a| format!("`{a}`"))
            ))),
        }
    }

    /// The rules `names` of the package the policy defines, each evaluated
    /// against `input`, as one JSON object (an undefined value left out);
    /// an earlier answer for an input that agrees on what the policy reads
    /// is reused (see [`memo`]).
    fn rules(
        &self,
        input: &serde_json::Value,
        names: &[&str],
    ) -> Result<serde_json::Value, PolicyError> {
        let mut engine = self
            .engine
            .lock()
            .map_err(|_| self.eval_error("an earlier evaluation panicked".into()))?;
        let key = engine.memo.key(names, input);
        if let Some(answer) = key.as_deref().and_then(|k| engine.memo.get(k)) {
            return Ok(answer.clone());
        }
        engine.regorus.set_input(Value::from(input.clone()));
        let mut out = serde_json::Map::new();
        for name in names.iter().filter(|n| self.defined.contains(n)) {
            let value = engine
                .regorus
                .eval_rule(format!("data.{PACKAGE}.{name}"))
                .map_err(|e| self.eval_error(one_line(&e.to_string())))?;
            if value == Value::Undefined {
                continue;
            }
            // Converted directly, not through a JSON string.
            let value = serde_json::to_value(&value)
                .map_err(|e| self.eval_error(one_line(&e.to_string())))?;
            out.insert((*name).to_string(), value);
        }
        let answer = serde_json::Value::Object(out);
        if let Some(key) = key {
            engine.memo.put(key, answer.clone());
        }
        Ok(answer)
    }

    fn eval_error(&self, message: String) -> PolicyError {
        PolicyError::Eval {
            path: self.path.clone(),
            message,
        }
    }
}

/// A multi-line parser error on one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
