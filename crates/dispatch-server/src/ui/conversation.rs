//! A model call's conversation: the messages that went in and the answer
//! that came out, read from the call's record the runtime keeps with the
//! run (`runs/<id>/calls.jsonl`, keys redacted; the cassette entry
//! when there is one, else the raw request and response). All of it is
//! model- and tool-produced text: maud escapes it.

use dispatch_core::RunId;
use dispatch_runtime::Layout;
use dispatch_runtime::report::ModelCall;
use maud::{Markup, html};
use serde_json::Value;

use super::fmt;

/// Characters of one message shown before "more".
const CLIP: usize = 4000;
/// The largest call record read.
const MAX_BYTES: u64 = 4 << 20;

/// The record `sha` of run `id`, if this server has it.
fn record(layout: &Layout, id: &RunId, sha: Option<&str>) -> Option<String> {
    let text = dispatch_runtime::call_records::read(&layout.run_dir(id), sha?)?;
    (text.len() as u64 <= MAX_BYTES).then_some(text)
}

fn text(t: &str) -> Markup {
    let short = fmt::clip(t, CLIP);
    html! {
        @if short.len() < t.len() {
            details { summary { pre.msg { (short) } } pre.msg { (t) } }
        } @else {
            pre.msg { (t) }
        }
    }
}

fn tool_calls(calls: &Value) -> Markup {
    html! {
        @for c in calls.as_array().into_iter().flatten() {
            p.tool-ask {
                "calls " strong { (c["name"].as_str().unwrap_or("?")) }
                " " code.mono { (fmt::clip(c["arguments"].as_str().unwrap_or(""), 600)) }
            }
        }
    }
}

fn message(role: &str, content: &str, calls: &Value) -> Markup {
    html! {
        div class={ "msg-turn role-" (role) } data-role=(role) {
            p.role { (role) }
            @if !content.is_empty() { (text(content)) }
            (tool_calls(calls))
        }
    }
}

/// The conversation of the model call whose event data is `call`.
pub fn render(layout: &Layout, id: &RunId, call: &ModelCall) -> Markup {
    if let Some(entry) = record(layout, id, call.str("cassette_sha256"))
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    {
        let req = &entry["request"];
        let res = &entry["response"];
        return html! {
            div.conversation {
                @if let Some(system) = req["system"].as_str().filter(|s| !s.is_empty()) {
                    details.msg-turn.role-system data-role="system" { summary.role { "system" } (text(system)) }
                }
                @for m in req["messages"].as_array().into_iter().flatten() {
                    (message(m["role"].as_str().unwrap_or("?"), m["content"].as_str().unwrap_or(""), &m["tool_calls"]))
                }
                div.answer {
                    (message("answer", res["text"].as_str().unwrap_or(""), &res["tool_calls"]))
                }
            }
        };
    }
    let request = record(layout, id, call.str("request_sha256"));
    let response = record(layout, id, call.str("response_sha256"));
    html! {
        @if request.is_none() && response.is_none() {
            p.muted { "This server has no record of the call's messages (it ran on another machine, or was removed)." }
        } @else {
            div.conversation {
                @if let Some(r) = request {
                    p.role { "request" }
                    (text(&serde_json::from_str::<Value>(&r).map(|v| fmt::json(&v)).unwrap_or(r)))
                }
                @if let Some(r) = response { div.answer { p.role { "response" } (text(&r)) } }
            }
        }
    }
}
