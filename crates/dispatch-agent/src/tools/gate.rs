//! The policy's say on each tool call (the runtime implements it with the
//! run's Rego policy; see `dispatch_runtime::policy_gate`): asked after the
//! arguments are checked and before any approval, so a denied call never
//! asks a person and a call approved by rule never waits for one.

use serde_json::Value;

/// A tool call about to run.
pub struct GateAsk<'a> {
    pub tool: &'a str,
    pub kind: &'a str,
    pub arguments: &'a Value,
    pub risk: Option<&'a str>,
    pub approval: &'a str,
}

/// What the policy decided.
#[derive(Clone, Debug, PartialEq)]
pub enum GateDecision {
    Allow,
    /// Not run; the model is told why.
    Deny(String),
    /// Held for a person, whatever the tool's APPROVAL says.
    RequireApproval(String),
    /// A call that would wait for a person is approved by this rule.
    AutoApprove(String),
}

/// Decides tool calls; a failure to decide is a [`GateDecision::Deny`].
pub trait ToolGate: Send + Sync {
    fn decide(&self, ask: &GateAsk<'_>) -> GateDecision;
}
