//! What the rules of a policy, evaluated, decide.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What `modify` may change of a run about to be created.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modify {
    /// Labels added to the run (replacing any of the same name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// A hard token budget for the run (the lower of this and the Agentfile's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_tokens: Option<u64>,
    /// A hard cost budget in USD (the lower of this and the Agentfile's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_cost_usd: Option<f64>,
    /// The model a native agent uses instead of its MODEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Whether a run may be created.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum RunDecision {
    Allow {
        #[serde(skip_serializing_if = "Option::is_none")]
        modify: Option<Modify>,
    },
    Deny {
        reasons: Vec<String>,
    },
    Review {
        reasons: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        modify: Option<Modify>,
    },
}

/// Whether a tool call may run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum ToolDecision {
    Allow,
    Deny {
        reasons: Vec<String>,
    },
    RequireApproval {
        reasons: Vec<String>,
    },
    /// Allowed; a call that would wait for a person is approved by these rules.
    AutoApprove {
        rules: Vec<String>,
    },
}

/// Either.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Decision {
    Run(RunDecision),
    Tool(ToolDecision),
}

/// A rule's value as messages: a set (array) of them, one string, `true`
/// (a message saying which rule), or nothing (`false`, undefined, empty).
fn messages(rules: &Value, rule: &str) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match rules.get(rule) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Vec::new(),
        Some(Value::Bool(true)) => vec![format!("policy rule `{rule}`")],
        Some(Value::Array(items)) => items.iter().map(text).collect(),
        Some(other) => vec![text(other)],
    }
}

fn modify(rules: &Value) -> Result<Option<Modify>, String> {
    match rules.get("modify") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value::<Modify>(v.clone())
            .map(Some)
            .map_err(|e| format!("`modify` is not what Dispatch can apply: {e} (hint: it may set labels, limit_tokens, limit_cost_usd and model)")),
    }
}

pub(crate) fn run(rules: &Value) -> Result<RunDecision, String> {
    let deny = messages(rules, "deny");
    if !deny.is_empty() {
        return Ok(RunDecision::Deny { reasons: deny });
    }
    let modify = modify(rules)?;
    let review = messages(rules, "review");
    Ok(match review.is_empty() {
        true => RunDecision::Allow { modify },
        false => RunDecision::Review {
            reasons: review,
            modify,
        },
    })
}

pub(crate) fn tool(rules: &Value) -> Result<ToolDecision, String> {
    let deny = messages(rules, "deny");
    if !deny.is_empty() {
        return Ok(ToolDecision::Deny { reasons: deny });
    }
    let require = messages(rules, "require_approval");
    if !require.is_empty() {
        return Ok(ToolDecision::RequireApproval { reasons: require });
    }
    let auto = messages(rules, "auto_approve");
    Ok(match auto.is_empty() {
        true => ToolDecision::Allow,
        false => ToolDecision::AutoApprove { rules: auto },
    })
}
