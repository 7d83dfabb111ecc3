//! Claude Code headless: `claude -p --output-format stream-json --verbose`,
//! the prompt on stdin. Its stdout is one JSON object a line:
//!
//! - `{"type":"system","subtype":"init","session_id","model","tools",…}`;
//! - `{"type":"assistant","message":{"id","model","content":[…],"usage"}}`:
//!   content blocks `text` and `tool_use` (`id`, `name`, `input`). One
//!   message may come as several lines (one per block) repeating its
//!   `usage`: a message is billed once, by its `id`;
//! - `{"type":"user","message":{"content":[{"type":"tool_result",
//!   "tool_use_id","content","is_error"}]}}`: what a tool gave;
//! - `{"type":"result","subtype":"success"|"error_…","is_error","result",
//!   "session_id","total_cost_usd","usage","num_turns"}`: the last line.
//!
//! Input tokens are `input_tokens` plus the cache's
//! (`cache_creation_input_tokens`, `cache_read_input_tokens`).

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::{Ev, Parse};
use crate::provider::TokenUsage;
use dispatch_core::agent::ModelRef;

/// The arguments after the program.
pub(super) fn args(
    model: &ModelRef,
    system: &str,
    max_turns: Option<u64>,
    effort: Option<&str>,
) -> Vec<String> {
    let mut a: Vec<String> = [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--model",
        &model.name,
        "--permission-mode",
        model
            .options
            .permission_mode
            .as_deref()
            .unwrap_or("acceptEdits"),
        // The parcel says what the agent is, not the user's settings files.
        "--setting-sources",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !system.trim().is_empty() {
        a.extend(["--append-system-prompt".into(), system.to_string()]);
    }
    if let Some(e) = effort {
        a.extend(["--effort".into(), e.to_string()]);
    }
    if let Some(n) = max_turns {
        a.extend(["--max-turns".into(), n.to_string()]);
    }
    a
}

fn usage_of(u: &Value) -> Option<TokenUsage> {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    u.is_object().then(|| TokenUsage {
        input_tokens: n("input_tokens")
            + n("cache_creation_input_tokens")
            + n("cache_read_input_tokens"),
        output_tokens: n("output_tokens"),
    })
}

/// A tool result's content: a string, or text blocks.
fn content_text(c: &Value) -> String {
    match c {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[derive(Default)]
pub(super) struct Parser {
    billed: HashSet<String>,
    /// Tool calls asked for and not answered: their name and input.
    open: HashMap<String, (String, Value)>,
}

impl Parse for Parser {
    fn line(&mut self, v: &Value) -> Vec<Ev> {
        let mut out = Vec::new();
        match v.get("type").and_then(Value::as_str) {
            Some("assistant") => {
                let msg = &v["message"];
                let id = msg["id"].as_str().unwrap_or_default().to_string();
                if let Some(usage) = usage_of(&msg["usage"])
                    && self.billed.insert(id.clone())
                {
                    out.push(Ev::Call {
                        id,
                        model: msg["model"].as_str().map(str::to_string),
                        usage,
                        finish: msg["stop_reason"].as_str().map(str::to_string),
                    });
                }
                for block in msg["content"].as_array().into_iter().flatten() {
                    match block["type"].as_str() {
                        Some("text") => {
                            let t = block["text"].as_str().unwrap_or_default();
                            out.push(Ev::Text(t.to_string()));
                        }
                        Some("tool_use") => {
                            let id = block["id"].as_str().unwrap_or_default().to_string();
                            let name = block["name"].as_str().unwrap_or("?").to_string();
                            let input = block.get("input").cloned().unwrap_or(json!({}));
                            self.open.insert(id.clone(), (name.clone(), input.clone()));
                            out.push(Ev::ToolStart { id, name, input });
                        }
                        _ => {}
                    }
                }
            }
            Some("user") => {
                for block in v["message"]["content"].as_array().into_iter().flatten() {
                    if block["type"] != "tool_result" {
                        continue;
                    }
                    let id = block["tool_use_id"].as_str().unwrap_or_default();
                    let (name, input) = self
                        .open
                        .remove(id)
                        .unwrap_or_else(|| ("?".into(), Value::Null));
                    out.push(Ev::ToolEnd {
                        id: id.to_string(),
                        name,
                        input,
                        output: content_text(&block["content"]),
                        ok: block["is_error"].as_bool() != Some(true),
                        meta: serde_json::Map::new(),
                    });
                }
            }
            Some("result") => {
                let denied: Vec<&str> = v["permission_denials"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d["tool_name"].as_str())
                    .collect();
                if !denied.is_empty() {
                    out.push(Ev::Warning(format!(
                        "Claude Code's permission mode refused {} call(s): {} (hint: `--permission-mode=…` on the MODEL line, inside the run's sandbox)",
                        denied.len(),
                        denied.join(", ")
                    )));
                }
                let text = v["result"].as_str().map(str::to_string);
                let failed = v["is_error"].as_bool() == Some(true)
                    || v["subtype"].as_str().is_some_and(|s| s != "success");
                let error = failed.then(|| {
                    let subtype = v["subtype"].as_str().unwrap_or("error");
                    match text.as_deref().filter(|t| !t.is_empty()) {
                        Some(t) => format!("{subtype}: {t}"),
                        None => subtype.to_string(),
                    }
                });
                out.push(Ev::Done {
                    text,
                    error,
                    usage: usage_of(&v["usage"]),
                    cost_usd: v["total_cost_usd"].as_f64(),
                });
            }
            _ => {}
        }
        out
    }

    fn finish(&mut self) -> Option<Ev> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = r#"{"type":"system","subtype":"init","session_id":"s1","model":"claude-sonnet-4-5","tools":["Bash","Read"],"cwd":"/w"}
{"type":"assistant","message":{"id":"msg_1","model":"claude-sonnet-4-5","role":"assistant","content":[{"type":"text","text":"Looking."}],"stop_reason":null,"usage":{"input_tokens":10,"cache_read_input_tokens":90,"output_tokens":5}},"session_id":"s1"}
{"type":"assistant","message":{"id":"msg_1","model":"claude-sonnet-4-5","role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"ls"}}],"stop_reason":null,"usage":{"input_tokens":10,"cache_read_input_tokens":90,"output_tokens":5}},"session_id":"s1"}
{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"a.txt"}],"is_error":false}]},"session_id":"s1"}
{"type":"assistant","message":{"id":"msg_2","model":"claude-sonnet-4-5","role":"assistant","content":[{"type":"text","text":"One file."}],"stop_reason":"end_turn","usage":{"input_tokens":120,"output_tokens":8}},"session_id":"s1"}
{"type":"result","subtype":"success","is_error":false,"duration_ms":900,"num_turns":2,"result":"One file.","session_id":"s1","total_cost_usd":0.0042,"usage":{"input_tokens":130,"cache_read_input_tokens":90,"output_tokens":13}}"#;

    #[test]
    fn a_recorded_stream_gives_two_calls_one_tool_and_the_answer() {
        let mut p = Parser::default();
        let evs: Vec<Ev> = STREAM
            .lines()
            .flat_map(|l| p.line(&serde_json::from_str(l).expect("json")))
            .collect();
        let calls: Vec<_> = evs
            .iter()
            .filter_map(|e| match e {
                Ev::Call { id, usage, .. } => Some((id.clone(), *usage)),
                _ => None,
            })
            .collect();
        // msg_1 came twice and is billed once, its cache reads as input.
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0].1.input_tokens, 100);
        assert_eq!(calls[1].1.output_tokens, 8);
        let tool = evs.iter().find_map(|e| match e {
            Ev::ToolEnd {
                name,
                input,
                output,
                ok,
                ..
            } => Some((name.clone(), input.clone(), output.clone(), *ok)),
            _ => None,
        });
        assert_eq!(
            tool,
            Some((
                "Bash".into(),
                json!({"command": "ls"}),
                "a.txt".into(),
                true
            ))
        );
        match evs.last() {
            Some(Ev::Done {
                text,
                error,
                usage,
                cost_usd,
            }) => {
                assert_eq!(text.as_deref(), Some("One file."));
                assert_eq!(*error, None);
                assert_eq!(usage.map(|u| u.input_tokens), Some(220));
                assert_eq!(*cost_usd, Some(0.0042));
            }
            other => panic!("last: {other:?}"),
        }
    }

    #[test]
    fn refused_permissions_are_a_warning() {
        let mut p = Parser::default();
        let evs = p.line(&json!({"type": "result", "subtype": "success", "is_error": false,
            "result": "ok", "permission_denials": [{"tool_name": "Bash", "tool_use_id": "t1", "tool_input": {}}]}));
        assert!(
            matches!(&evs[0], Ev::Warning(w) if w.contains("refused 1 call(s): Bash")),
            "{evs:?}"
        );
    }

    #[test]
    fn an_error_result_is_a_failure_with_its_subtype() {
        let mut p = Parser::default();
        let evs =
            p.line(&json!({"type": "result", "subtype": "error_max_turns", "is_error": true}));
        match &evs[..] {
            [Ev::Done { error, .. }] => assert_eq!(error.as_deref(), Some("error_max_turns")),
            other => panic!("{other:?}"),
        }
    }
}
