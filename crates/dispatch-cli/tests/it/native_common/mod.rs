//! Native agent tests: the real `dispatch` binary against the scripted mock
//! model server (`dispatch_test_support::mock`) on a loopback port.
#![allow(dead_code)]

pub mod terminal;

use std::path::{Path, PathBuf};

use dispatch_test_support::mock::{MockServer, Received, Script};
use serde_json::{Value, json};

/// A mock model server running on its own runtime for the test's life.
pub struct Mock {
    pub server: MockServer,
    _rt: tokio::runtime::Runtime,
}

impl Mock {
    /// Serves `steps` (the mock's script steps, as JSON) in order, then the default reply.
    pub fn start(steps: Value) -> Mock {
        Mock::with_script(json!({ "steps": steps }))
    }

    /// Serves a whole script (its steps, a `fallback`, ...), as JSON.
    pub fn with_script(script: Value) -> Mock {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let script: Script = serde_json::from_value(script).expect("a valid script");
        let server = rt.block_on(MockServer::start(script)).expect("mock starts");
        Mock { server, _rt: rt }
    }

    pub fn url(&self) -> String {
        self.server.base_url()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.server.requests()
    }
}

/// Writes a native agent: `FROM agent`, NAME, then `lines`.
pub fn native_agent(root: &Path, name: &str, lines: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("agent dir");
    std::fs::write(
        dir.join("Agentfile"),
        format!("FROM agent\nNAME {name}\n{lines}\n"),
    )
    .expect("Agentfile");
    dir
}

/// The `support` agent of the approval tests under `root`: a model at
/// `model_url`, and a LOCAL `refund` tool (schema: order, amount ≤ 100)
/// that needs confirmation (`extra` is added to its TOOL line) and appends
/// each input it runs with to the returned marks file.
pub fn refund_agent(root: &Path, model_url: &str, extra: &str) -> (PathBuf, PathBuf) {
    let dir = native_agent(
        root,
        "support",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {model_url}\nTOOL LOCAL refund.sh SCHEMA refund.json APPROVAL confirm RISK high {extra}"
        ),
    );
    let marks = root.join("refunds");
    std::fs::write(
        dir.join("refund.sh"),
        format!("cat >> '{}'\necho refunded\n", marks.display()),
    )
    .expect("tool");
    std::fs::write(
        dir.join("refund.json"),
        r#"{"type":"object","properties":{"order":{"type":"string"},"amount":{"type":"number","maximum":100}},"required":["order","amount"]}"#,
    )
    .expect("schema");
    (dir, marks)
}

/// The `model_call` events of a run's inspect document.
pub fn model_calls(doc: &Value) -> Vec<Value> {
    doc["model_calls"].as_array().cloned().unwrap_or_default()
}

/// A text step that streams `text` in `chunks` pieces with the given usage.
pub fn text(text: &str, input: u64, output: u64) -> Value {
    json!({"kind": "text", "text": text, "chunks": 4, "usage": {"input_tokens": input, "output_tokens": output}})
}

/// A step that calls one tool.
pub fn tool(name: &str) -> Value {
    json!({"kind": "tool_calls", "calls": [{"name": name, "arguments": {"q": "x"}}]})
}

/// The text of every message a request sent, in order.
pub fn message_texts(body: &Value) -> Vec<&str> {
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect()
}

/// The data of a run's events of type `kind` (its inspect document), in order.
pub fn events_of(doc: &Value, kind: &str) -> Vec<Value> {
    doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["data"].clone())
        .collect()
}
