//! Tool results in the cassette: `dispatch eval --record` keeps every tool
//! call's result beside the model calls, and `--replay --replay-tools`
//! answers tool calls from there instead of running the tools, so an eval
//! whose tools reach the network, a database or a clock is deterministic
//! offline too.
//!
//! An entry is `<cassette>/tools/<key>.json`, `{"key", "tool", "arguments",
//! "text", "is_error"}`; the key is the SHA-256 of the canonical JSON of
//! `{"tool": name, "arguments": arguments}` (arguments parsed when they are
//! JSON, object keys sorted, as for model requests). Calls that waited for
//! an approval or stopped the run are not recorded. In replay, a call that
//! is not in the cassette stops the run with a reason naming the tool and
//! its arguments: the case fails loudly rather than running the tool.

use std::path::PathBuf;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::agent_loop::{ToolOutcome, Tools};
use crate::cassette::{Mode, canonical_text, write_entry};
use crate::provider::{ToolCall, ToolSpec};

/// `replay`: answer tool calls from the cassette (with a `replay:` mode).
pub const TOOLS_ENV: &str = "DISPATCH_CASSETTE_TOOLS";

/// `tools` wrapped as this process's cassette mode says, if it says anything.
pub fn wrap(tools: &dyn Tools) -> Option<CassetteTools<'_>> {
    let replay_tools = std::env::var(TOOLS_ENV).is_ok_and(|v| v == "replay");
    match Mode::from_env()? {
        Mode::Record(dir) => Some(CassetteTools {
            inner: tools,
            dir: dir.join("tools"),
            replay: false,
        }),
        Mode::Replay(dir) if replay_tools => Some(CassetteTools {
            inner: tools,
            dir: dir.join("tools"),
            replay: true,
        }),
        Mode::Replay(_) => None,
    }
}

/// Records the results of `inner`'s calls, or answers them from the cassette.
pub struct CassetteTools<'a> {
    inner: &'a dyn Tools,
    dir: PathBuf,
    replay: bool,
}

/// The cassette key of a tool call.
pub fn call_key(call: &ToolCall) -> String {
    hex::encode(Sha256::digest(canonical_text(&identity(call)).as_bytes()))
}

fn identity(call: &ToolCall) -> Value {
    let arguments = serde_json::from_str::<Value>(&call.arguments)
        .unwrap_or_else(|_| Value::String(call.arguments.clone()));
    json!({"tool": call.name, "arguments": arguments})
}

#[async_trait::async_trait]
impl Tools for CassetteTools<'_> {
    fn specs(&self) -> std::borrow::Cow<'_, [ToolSpec]> {
        self.inner.specs()
    }

    fn begin_round(&self, round: u64) {
        self.inner.begin_round(round);
    }

    async fn call(&self, call: &ToolCall) -> ToolOutcome {
        let key = call_key(call);
        let path = self.dir.join(format!("{key}.json"));
        if self.replay {
            return match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            {
                Some(entry) => {
                    let mut o = ToolOutcome {
                        text: entry["text"].as_str().unwrap_or_default().to_string(),
                        is_error: entry["is_error"].as_bool().unwrap_or(false),
                        ..ToolOutcome::default()
                    };
                    o.meta.insert("replayed".into(), json!(true));
                    o
                }
                None => {
                    let why = format!(
                        "replay: tool call `{}` with arguments {} is not in the cassette {} (hint: record it with `dispatch eval --record`, or drop --replay-tools to run the tools)",
                        call.name,
                        canonical_text(&identity(call)["arguments"]),
                        self.dir.display()
                    );
                    ToolOutcome {
                        text: format!("error: {why}"),
                        is_error: true,
                        stop: Some(why),
                        ..ToolOutcome::default()
                    }
                }
            };
        }
        let outcome = self.inner.call(call).await;
        if outcome.suspend.is_none() && outcome.stop.is_none() {
            let mut entry = identity(call);
            entry["key"] = json!(key);
            entry["text"] = json!(outcome.text);
            entry["is_error"] = json!(outcome.is_error);
            if let Err(e) = write_entry(&self.dir, &key, &entry) {
                let why = format!(
                    "cannot record the tool call into cassette {}: {e}",
                    self.dir.display()
                );
                return ToolOutcome {
                    text: format!("error: {why}"),
                    is_error: true,
                    stop: Some(why),
                    ..ToolOutcome::default()
                };
            }
        }
        outcome
    }
}
