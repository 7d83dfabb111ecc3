//! The native agent's part of `dispatch inspect-run`: every model call
//! (model, provider, tokens, cost, latency, time to first token, finish
//! reason, fallback and retry) and the conversation as last checkpointed.

use dispatch_core::event::shorten;
use dispatch_runtime::report::{ModelCall, RunReport};
use serde_json::Value;

use crate::output::cost_text;

/// How many model calls were billed an estimate (cut, stopped or lost).
pub fn estimated_calls(r: &RunReport) -> usize {
    r.model_calls.iter().filter(|c| c.estimated()).count()
}

/// Whether some call had no known price (the run's cost is then unknown in part).
pub fn cost_unknown(r: &RunReport) -> bool {
    r.model_calls.iter().any(ModelCall::cost_unknown)
}

fn print_bom(b: &Value) {
    println!("Bill of materials (attempt {}):", b["attempt"]);
    for m in b["models"].as_array().into_iter().flatten() {
        println!(
            "  model  {} ({}, {})",
            m["model"].as_str().unwrap_or("?"),
            m["provider"].as_str().unwrap_or("?"),
            m["host"].as_str().unwrap_or("-")
        );
    }
    for t in b["tools"].as_array().into_iter().flatten() {
        println!(
            "  tool   {:<20} {:<8} schema {}  approval {}  risk {}",
            t["name"].as_str().unwrap_or("?"),
            t["kind"].as_str().unwrap_or("?"),
            t["schema_sha256"]
                .as_str()
                .map_or("-", |s| &s[..s.len().min(12)]),
            t["approval"].as_str().unwrap_or("-"),
            t["risk"].as_str().unwrap_or("-")
        );
    }
    for s in b["mcp_servers"].as_array().into_iter().flatten() {
        println!(
            "  mcp    {:<20} {} {}  tools/list {}",
            s["name"].as_str().unwrap_or("?"),
            s["server_name"].as_str().unwrap_or("?"),
            s["server_version"].as_str().unwrap_or("?"),
            s["tools_sha256"]
                .as_str()
                .map_or("-", |x| &x[..x.len().min(12)])
        );
    }
}

pub fn print_human(r: &RunReport) {
    if r.bom.is_object() {
        print_bom(&r.bom);
    }
    if !r.model_calls.is_empty() {
        println!("Model calls:");
        for c in &r.model_calls {
            let ms = |k: &str| {
                c.get(k)
                    .as_i64()
                    .map_or("-".to_string(), dispatch_core::time::human_duration)
            };
            let count = |k: &str| c.u64(k).map_or("-".into(), |n| n.to_string());
            let cost = match c.cost_usd() {
                Some(v) => cost_text(v),
                None => "unknown".into(),
            };
            let mut extra = Vec::new();
            if c.estimated() {
                extra.push("estimated".to_string());
            }
            if c.fallback() {
                extra.push(format!(
                    "fallback from {}",
                    c.str("fallback_from").unwrap_or("?")
                ));
            }
            if let Some(n) = c.u64("retry").filter(|n| *n > 0) {
                extra.push(format!("retry {n}"));
            }
            if c.truncated() {
                extra.push("truncated: cut at its output limit".to_string());
            }
            if let Some(e) = c.error() {
                extra.push(format!("error: {}", shorten(e, 200)));
            }
            println!(
                "  #{} attempt {} {} ({}) tokens {}/{} cost {} latency {} first token {} finish {}{}",
                count("call"),
                c.attempt,
                c.str("model").unwrap_or("?"),
                c.str("provider").unwrap_or("?"),
                count("input_tokens"),
                count("output_tokens"),
                cost,
                ms("latency_ms"),
                ms("first_token_ms"),
                c.str("finish_reason").unwrap_or("-"),
                if extra.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", extra.join("; "))
                }
            );
        }
    }
    let conv = &r.conversation;
    if let Some(messages) = conv["messages"].as_array() {
        println!("Conversation:");
        for m in messages {
            let role = m["role"].as_str().unwrap_or("?");
            let mut text = m["content"].as_str().unwrap_or("").replace('\n', " ");
            for tc in m["tool_calls"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    " [calls {}({})]",
                    tc["name"].as_str().unwrap_or("?"),
                    tc["arguments"].as_str().unwrap_or("")
                ));
            }
            println!("  {role:<10} {}", shorten(&text, 300));
        }
    }
}

/// `key=value` pairs of a flat-ish object (nested objects as compact JSON),
/// for one line of `dispatch inspect`; "" when there are none.
pub(crate) fn pairs(v: &Value) -> String {
    let Some(map) = v.as_object() else {
        return String::new();
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
