//! The native agent's part of `dispatch inspect-run`: every model call
//! (model, provider, tokens, cost, latency, time to first token, finish
//! reason, fallback and retry) and the conversation as last checkpointed.

use dispatch_core::event::shorten;
use dispatch_runtime::report::RunReport;
use serde_json::Value;

use crate::output::cost_text;

/// How many model calls were billed an estimate (cut, stopped or lost).
pub fn estimated_calls(r: &RunReport) -> usize {
    r.model_calls
        .iter()
        .filter(|c| c["estimated"] == true)
        .count()
}

/// Whether some call had no known price (the run's cost is then unknown in part).
pub fn cost_unknown(r: &RunReport) -> bool {
    r.model_calls
        .iter()
        .any(|c| (c["error"].is_null() || c["estimated"] == true) && c["cost_usd"].is_null())
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
                c[k].as_i64()
                    .map_or("-".to_string(), dispatch_core::time::human_duration)
            };
            let cost = match c["cost_usd"].as_f64() {
                Some(v) => cost_text(v),
                None => "unknown".into(),
            };
            let mut extra = Vec::new();
            if c["estimated"].as_bool() == Some(true) {
                extra.push("estimated".to_string());
            }
            if c["fallback"].as_bool() == Some(true) {
                extra.push(format!(
                    "fallback from {}",
                    c["fallback_from"].as_str().unwrap_or("?")
                ));
            }
            if let Some(n) = c["retry"].as_u64().filter(|n| *n > 0) {
                extra.push(format!("retry {n}"));
            }
            if c["truncated"].as_bool() == Some(true) {
                extra.push("truncated: cut at its output limit".to_string());
            }
            if let Some(e) = c["error"].as_str() {
                extra.push(format!("error: {}", shorten(e, 200)));
            }
            println!(
                "  #{} attempt {} {} ({}) tokens {}/{} cost {} latency {} first token {} finish {}{}",
                c["call"].as_u64().map_or("-".into(), |n| n.to_string()),
                c["attempt"],
                c["model"].as_str().unwrap_or("?"),
                c["provider"].as_str().unwrap_or("?"),
                c["input_tokens"]
                    .as_u64()
                    .map_or("-".into(), |n| n.to_string()),
                c["output_tokens"]
                    .as_u64()
                    .map_or("-".into(), |n| n.to_string()),
                cost,
                ms("latency_ms"),
                ms("first_token_ms"),
                c["finish_reason"].as_str().unwrap_or("-"),
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
