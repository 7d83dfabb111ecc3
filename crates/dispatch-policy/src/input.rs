//! What a policy is given: `input` of a `create_run` and of a `tool_call`
//! decision. The names here are the documented contract; a policy that
//! names another one is refused when it is loaded.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

/// The inputs of a `create_run` decision, with what each holds.
#[rustfmt::skip]
pub const RUN_INPUTS: &[(&str, &str)] = &[
    ("action", "`\"create_run\"`"),
    ("who", "who asks: `{name, kind}`; `kind` is `local` (the local CLI; `name` is the OS user), `token` (a request to a server; `name` is the token's name) or `anonymous` (a server that requires no token)"),
    ("project", "the project the run is created in (`--project`, `\"project\"` of the request; `\"default\"` when none is named)"),
    ("parcel", "`{name, digest, version, labels}` of the parcel to run"),
    ("operation", "`job`, `heartbeat`, `service` or `workflow`"),
    ("trigger", "why the run is created: `manual`, `restart`, `replay`, `upstream`, `eval` or `workflow`"),
    ("labels", "the labels asked for the run (an object)"),
    ("payload", "the run's payload (any JSON)"),
    ("budget", "`{tokens, cost_usd}`: the Agentfile's hard limits, `null` when unset"),
    ("model", "the native agent's first MODEL, `null` for other couriers"),
];

/// The inputs of a `tool_call` decision, with what each holds.
#[rustfmt::skip]
pub const TOOL_INPUTS: &[(&str, &str)] = &[
    ("action", "`\"tool_call\"`"),
    ("who", "`{name, kind}` of where the call runs: the OS user of the local helper or the worker (`kind` `local`)"),
    ("project", "the run's project"),
    ("run_id", "the run's id"),
    ("parcel", "`{name, digest, version, labels}` of the run's parcel"),
    ("tool", "the tool's name, as the model calls it"),
    ("kind", "`local`, `http`, `mcp`, `builtin` or `a2a`"),
    ("arguments", "the arguments the model gave (any JSON)"),
    ("risk", "the tool's `RISK`, `null` when unset"),
    ("approval", "the tool's `APPROVAL` mode: `never`, `always`, `confirm` or `audit`"),
];

/// The fields of the inputs that are objects of known shape.
pub const FIELDS: &[(&str, &[&str])] = &[
    ("who", &["name", "kind"]),
    ("parcel", &["name", "digest", "version", "labels"]),
    ("budget", &["tokens", "cost_usd"]),
];

/// Every top-level input name, either action.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&str> = RUN_INPUTS
        .iter()
        .chain(TOOL_INPUTS)
        .map(|(n, _)| *n)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Who asks.
#[derive(Clone, Debug, Serialize)]
pub struct Who {
    pub name: String,
    pub kind: &'static str,
}

/// The parcel, as a policy sees it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Parcel {
    pub name: String,
    pub digest: String,
    pub version: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The hard limits of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Budget {
    pub tokens: Option<u64>,
    pub cost_usd: Option<f64>,
}

/// A `create_run` decision's input.
#[derive(Clone, Debug, Serialize)]
pub struct RunInput {
    pub who: Who,
    pub project: String,
    pub parcel: Parcel,
    pub operation: String,
    pub trigger: String,
    pub labels: BTreeMap<String, String>,
    pub payload: Value,
    pub budget: Budget,
    pub model: Option<String>,
}

impl RunInput {
    /// The `input` document.
    pub fn to_value(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        v["action"] = json!("create_run");
        v
    }
}

/// A `tool_call` decision's input.
#[derive(Clone, Debug, Serialize)]
pub struct ToolInput {
    pub who: Who,
    pub project: String,
    pub run_id: String,
    pub parcel: Parcel,
    pub tool: String,
    pub kind: String,
    pub arguments: Value,
    pub risk: Option<String>,
    pub approval: String,
}

impl ToolInput {
    /// The `input` document.
    pub fn to_value(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        v["action"] = json!("tool_call");
        v
    }
}

/// The local CLI's user, as `who`.
pub fn local_user() -> Who {
    Who {
        name: std::env::var("USER").unwrap_or_else(|_| "unknown".to_string()),
        kind: "local",
    }
}

/// A `create_run` input with every field set, for a policy's trial at load.
pub fn sample_run() -> Value {
    RunInput {
        who: Who {
            name: "trial".into(),
            kind: "local",
        },
        project: "default".into(),
        parcel: Parcel {
            name: "trial".into(),
            digest: "0".repeat(64),
            version: Some("0.1.0".into()),
            labels: BTreeMap::new(),
        },
        operation: "job".into(),
        trigger: "manual".into(),
        labels: BTreeMap::new(),
        payload: json!({}),
        budget: Budget::default(),
        model: None,
    }
    .to_value()
}

/// A `tool_call` input with every field set, for a policy's trial at load.
pub fn sample_tool_call() -> Value {
    ToolInput {
        who: Who {
            name: "trial".into(),
            kind: "local",
        },
        project: "default".into(),
        run_id: "0".repeat(32),
        parcel: Parcel::default(),
        tool: "trial".into(),
        kind: "local".into(),
        arguments: json!({}),
        risk: None,
        approval: "never".into(),
    }
    .to_value()
}

/// The reference of the inputs, as Markdown tables.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    for (action, inputs) in [("create_run", RUN_INPUTS), ("tool_call", TOOL_INPUTS)] {
        out.push_str(&format!(
            "\n### `input` of `{action}`\n\n| input | holds |\n|---|---|\n"
        ));
        for (name, what) in inputs {
            out.push_str(&format!("| `input.{name}` | {what} |\n"));
        }
    }
    out
}
