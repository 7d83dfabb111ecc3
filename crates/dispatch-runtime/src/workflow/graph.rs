//! The communication graph of a workflow run, from the store: its members
//! (each with its turns, their child runs and usage), the edges messages
//! took (with counts by kind), and the messages themselves; rendered as
//! JSON, Graphviz DOT or Mermaid.

use std::collections::BTreeMap;

use dispatch_core::RunId;
use dispatch_core::event::Usage;
use dispatch_store::{Run, RunFilter, Store};
use serde_json::{Value, json};

use crate::error::RuntimeResult;

/// The graph of workflow run `run`, or `None` when it sent no messages
/// (not a workflow run).
pub async fn graph<S: Store + ?Sized>(store: &S, run: &Run) -> RuntimeResult<Option<Value>> {
    let msgs = store.list_messages(&run.id).await?;
    if msgs.is_empty() {
        return Ok(None);
    }
    let filter = RunFilter {
        parent_id: Some(run.id.clone()),
        summary: true,
        ..RunFilter::default()
    };
    let children: BTreeMap<RunId, Run> = store
        .list_runs(&filter)
        .await?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    #[derive(Default)]
    struct Node {
        runs: Vec<Value>,
        usage: Usage,
        duration_ms: i64,
    }
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut edges: BTreeMap<(String, String), BTreeMap<String, u64>> = BTreeMap::new();
    let mut messages = Vec::new();
    for m in &msgs {
        let n = &m.message;
        // A JOIN member's combined message repeats edges already counted.
        let joined = n.sender == super::JOIN;
        for name in [&n.sender, &n.receiver] {
            let skip = joined && name == &n.sender;
            if !skip && !nodes.contains_key(name.as_str()) {
                nodes.insert(name.clone(), Node::default());
                order.push(name.clone());
            }
        }
        if !joined {
            *edges
                .entry((n.sender.clone(), n.receiver.clone()))
                .or_default()
                .entry(n.kind.clone())
                .or_default() += 1;
        }
        let child = n.child_run.as_ref().and_then(|c| children.get(c));
        if let Some(c) = child {
            let node = nodes.get_mut(&n.receiver).expect("inserted above");
            node.usage.add(c.usage);
            let took = match (c.state.started_at(), c.state.ended_at()) {
                (Some(s), Some(e)) => e - s,
                _ => 0,
            };
            node.duration_ms += took;
            node.runs
                .push(json!({"id": c.id, "status": c.status(), "duration_ms": took}));
        }
        messages.push(json!({
            "id": n.id,
            "seq": m.seq,
            "from": n.sender,
            "to": n.receiver,
            "kind": n.kind,
            "at": n.created_at,
            "sender_run": n.sender_run,
            "child_run": n.child_run,
            "delivered": child.is_some(),
        }));
    }
    let nodes: Vec<Value> = order
        .iter()
        .map(|name| {
            let n = &nodes[name];
            json!({
                "id": name,
                "turns": n.runs.len(),
                "runs": n.runs,
                "usage": n.usage,
                "duration_ms": n.duration_ms,
            })
        })
        .collect();
    let edges: Vec<Value> = edges
        .into_iter()
        .map(|((from, to), kinds)| {
            let count: u64 = kinds.values().sum();
            json!({"from": from, "to": to, "count": count, "kinds": kinds})
        })
        .collect();
    Ok(Some(json!({
        "workflow": run.id,
        "name": run.parcel_name,
        "nodes": nodes,
        "edges": edges,
        "messages": messages,
    })))
}

fn edge_label(e: &Value) -> String {
    let kinds = e["kinds"].as_object().cloned().unwrap_or_default();
    kinds
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn node_label(n: &Value) -> String {
    let id = n["id"].as_str().unwrap_or("?");
    match n["turns"].as_u64().unwrap_or(0) {
        0 => id.to_string(),
        1 => format!("{id}\\n1 turn"),
        t => format!("{id}\\n{t} turns"),
    }
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The graph in Graphviz DOT.
pub fn dot(g: &Value) -> String {
    let mut out = format!(
        "digraph {} {{\n  rankdir=LR;\n",
        quoted(g["name"].as_str().unwrap_or("workflow"))
    );
    for n in g["nodes"].as_array().into_iter().flatten() {
        let id = n["id"].as_str().unwrap_or("?");
        let shape = if id.starts_with("__") {
            "circle"
        } else {
            "box"
        };
        let label = node_label(n).replace('"', "\\\"");
        out.push_str(&format!(
            "  {} [shape={shape}, label=\"{label}\"];\n",
            quoted(id)
        ));
    }
    for e in g["edges"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {} -> {} [label={}];\n",
            quoted(e["from"].as_str().unwrap_or("?")),
            quoted(e["to"].as_str().unwrap_or("?")),
            quoted(&edge_label(e))
        ));
    }
    out.push_str("}\n");
    out
}

/// The graph as a Mermaid flowchart.
pub fn mermaid(g: &Value) -> String {
    let nodes: Vec<&Value> = g["nodes"].as_array().into_iter().flatten().collect();
    let key = |name: &str| {
        let i = nodes
            .iter()
            .position(|n| n["id"] == name)
            .unwrap_or(usize::MAX);
        format!("n{i}")
    };
    let mut out = String::from("flowchart LR\n");
    for n in &nodes {
        let id = n["id"].as_str().unwrap_or("?");
        let label = node_label(n).replace("\\n", "<br/>").replace('"', "#quot;");
        let shape = if id.starts_with("__") {
            format!("((\"{label}\"))")
        } else {
            format!("[\"{label}\"]")
        };
        out.push_str(&format!("  {}{shape}\n", key(id)));
    }
    for e in g["edges"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {} -->|\"{}\"| {}\n",
            key(e["from"].as_str().unwrap_or("?")),
            edge_label(e),
            key(e["to"].as_str().unwrap_or("?"))
        ));
    }
    out
}
