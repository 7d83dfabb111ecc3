//! Codex headless: `codex exec --json … -`, the prompt on stdin. Its stdout
//! is one JSON object a line:
//!
//! - `{"type":"thread.started","thread_id"}`, `{"type":"turn.started"}`;
//! - `{"type":"item.started"|"item.updated"|"item.completed","item":{"id",
//!   "type",…}}`: items `agent_message` (`text`), `reasoning`,
//!   `command_execution` (`command`, `aggregated_output`, `exit_code`,
//!   `status`), `mcp_tool_call` (`server`, `tool`, `arguments`, `result`,
//!   `error`, `status`), `file_change` (`changes`, `status`), `web_search`
//!   (`query`), `todo_list`, `error` (`message`);
//! - `{"type":"turn.completed","usage":{"input_tokens","cached_input_tokens",
//!   "output_tokens"}}`, or `{"type":"turn.failed","error":{"message"}}`;
//! - `{"type":"error","message"}`: the stream failed.
//!
//! Codex reports usage once per turn and no cost: one `exec` is one turn,
//! billed as one model call at the model's price. `cached_input_tokens` are
//! part of `input_tokens`.

use serde_json::{Value, json};

use super::{Ev, Parse};
use crate::provider::TokenUsage;
use dispatch_core::agent::ModelRef;

/// The arguments after the program (the prompt, system prompt first, is on stdin).
pub(super) fn args(
    model: &ModelRef,
    work_dir: &std::path::Path,
    effort: Option<&str>,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "exec".into(),
        "--json".into(),
        // The run's workspace is not a git repository.
        "--skip-git-repo-check".into(),
        "--sandbox".into(),
        model
            .options
            .sandbox
            .clone()
            .unwrap_or_else(|| "workspace-write".into()),
        "--cd".into(),
        work_dir.display().to_string(),
        "--model".into(),
        model.name.clone(),
    ];
    if let Some(e) = effort {
        a.extend(["-c".into(), format!("model_reasoning_effort=\"{e}\"")]);
    }
    a.push("-".into());
    a
}

#[derive(Default)]
pub(super) struct Parser {
    turns: u64,
    last_message: Option<String>,
    error: Option<String>,
    done: bool,
}

/// A tool-like item, as the run records it.
struct Tool {
    name: String,
    input: Value,
    output: String,
    ok: bool,
    meta: serde_json::Map<String, Value>,
}

fn tool(name: &str, input: Value, output: String, ok: bool) -> Tool {
    Tool {
        name: name.to_string(),
        input,
        output,
        ok,
        meta: serde_json::Map::new(),
    }
}

/// The tool call an item is, if it is one.
fn tool_of(item: &Value) -> Option<Tool> {
    let status_ok = item["status"].as_str() != Some("failed");
    let text = |k: &str| item[k].as_str().unwrap_or_default().to_string();
    Some(match item["type"].as_str()? {
        "command_execution" => {
            let code = item["exit_code"].as_i64();
            let ok = status_ok && code.is_none_or(|c| c == 0);
            let input = json!({"command": item["command"]});
            let mut t = tool("command", input, text("aggregated_output"), ok);
            t.meta.insert("exit_code".into(), json!(code));
            t
        }
        "mcp_tool_call" => {
            let name = format!(
                "{}.{}",
                item["server"].as_str().unwrap_or("?"),
                item["tool"].as_str().unwrap_or("?")
            );
            let failed = item["error"].is_object();
            let output = match &item["result"] {
                _ if failed => item["error"]["message"]
                    .as_str()
                    .unwrap_or("error")
                    .to_string(),
                Value::Null => String::new(),
                r => r.to_string(),
            };
            tool(
                &name,
                item["arguments"].clone(),
                output,
                status_ok && !failed,
            )
        }
        "file_change" => {
            let input = json!({"changes": item["changes"]});
            tool("file_change", input, String::new(), status_ok)
        }
        "web_search" => tool(
            "web_search",
            json!({"query": item["query"]}),
            String::new(),
            true,
        ),
        _ => return None,
    })
}

impl Parse for Parser {
    fn line(&mut self, v: &Value) -> Vec<Ev> {
        let mut out = Vec::new();
        let item = &v["item"];
        let id = item["id"].as_str().unwrap_or_default().to_string();
        match v.get("type").and_then(Value::as_str) {
            Some("item.started") => {
                if let Some(t) = tool_of(item) {
                    out.push(Ev::ToolStart {
                        id,
                        name: t.name,
                        input: t.input,
                    });
                }
            }
            Some("item.completed") => match item["type"].as_str() {
                Some("agent_message") => {
                    let text = item["text"].as_str().unwrap_or_default().to_string();
                    out.push(Ev::Text(text.clone()));
                    self.last_message = Some(text);
                }
                _ => {
                    if let Some(t) = tool_of(item) {
                        out.push(Ev::ToolEnd {
                            id,
                            name: t.name,
                            input: t.input,
                            output: t.output,
                            ok: t.ok,
                            meta: t.meta,
                        });
                    }
                }
            },
            Some("turn.completed") => {
                // An error the turn recovered from (a reconnection) is not its end.
                self.error = None;
                self.turns += 1;
                let n = |k: &str| v["usage"][k].as_u64().unwrap_or(0);
                out.push(Ev::Call {
                    id: format!("turn-{}", self.turns),
                    model: None,
                    usage: TokenUsage {
                        input_tokens: n("input_tokens"),
                        output_tokens: n("output_tokens"),
                    },
                    finish: Some("stop".into()),
                });
            }
            Some("turn.failed") => {
                let message = v["error"]["message"].as_str().unwrap_or("the turn failed");
                self.error = Some(message.to_string());
            }
            Some("error") => {
                let message = v["message"].as_str().unwrap_or("error");
                self.error = Some(message.to_string());
            }
            _ => {}
        }
        out
    }

    fn finish(&mut self) -> Option<Ev> {
        if std::mem::replace(&mut self.done, true) {
            return None;
        }
        // A failed turn fails the run even when something was said before.
        let error = match (self.turns, self.error.take()) {
            (_, Some(e)) => Some(e),
            (0, None) => Some("the stream ended without turn.completed".into()),
            _ => None,
        };
        Some(Ev::Done {
            text: self.last_message.take(),
            error,
            usage: None,
            cost_usd: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = r#"{"type":"thread.started","thread_id":"th_1"}
{"type":"turn.started"}
{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"**Listing files**"}}
{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"","status":"in_progress"}}
{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"a.txt\n","exit_code":0,"status":"completed"}}
{"type":"item.completed","item":{"id":"item_2","type":"mcp_tool_call","server":"docs","tool":"search","arguments":{"q":"x"},"error":{"message":"offline"},"status":"failed"}}
{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"One file: a.txt"}}
{"type":"turn.completed","usage":{"input_tokens":2400,"cached_input_tokens":2000,"output_tokens":60}}"#;

    #[test]
    fn a_recorded_stream_gives_one_call_two_tools_and_the_last_message() {
        let mut p = Parser::default();
        let mut evs: Vec<Ev> = STREAM
            .lines()
            .flat_map(|l| p.line(&serde_json::from_str(l).expect("json")))
            .collect();
        evs.extend(p.finish());
        let ends: Vec<(String, bool)> = evs
            .iter()
            .filter_map(|e| match e {
                Ev::ToolEnd { name, ok, .. } => Some((name.clone(), *ok)),
                _ => None,
            })
            .collect();
        assert_eq!(
            ends,
            vec![("command".into(), true), ("docs.search".into(), false)]
        );
        assert!(evs.iter().any(|e| matches!(e, Ev::Call { usage, .. }
            if usage.input_tokens == 2400 && usage.output_tokens == 60)));
        match evs.last() {
            Some(Ev::Done { text, error, .. }) => {
                assert_eq!(text.as_deref(), Some("One file: a.txt"));
                assert_eq!(*error, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_turn_is_a_failure_naming_its_message() {
        let mut p = Parser::default();
        p.line(&json!({"type": "turn.failed", "error": {"message": "usage limit reached"}}));
        match p.finish() {
            Some(Ev::Done { error, .. }) => {
                assert_eq!(error.as_deref(), Some("usage limit reached"))
            }
            other => panic!("{other:?}"),
        }
    }
}
