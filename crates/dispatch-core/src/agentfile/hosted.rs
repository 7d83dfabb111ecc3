//! Checks of the built-ins the model's provider runs (`TOOL BUILTIN
//! web_search`, see [`crate::tool::HOSTED_BUILTINS`]): every model the agent
//! may call must be one whose API hosts the tool, and the options that only
//! a tool run by Dispatch can honour (an approval first, a timeout) are
//! refused rather than ignored.

use super::AgentfileError;
use crate::agent::AgentConfig;
use crate::tool::ApprovalPolicy;

pub(super) fn check(agent: &AgentConfig) -> Result<(), AgentfileError> {
    let hosted = agent.tools.iter().filter(|t| t.is_hosted());
    for t in hosted {
        let fail = |why: String| {
            Err(AgentfileError::new(
                t.line,
                format!("TOOL BUILTIN {}: {why}", t.name),
            ))
        };
        if matches!(
            t.approval,
            Some(ApprovalPolicy::Always | ApprovalPolicy::Confirm)
        ) {
            return fail(
                "the model's provider runs it inside the model call, so no one can approve a search before it runs (hint: `APPROVAL audit` records each one; or leave APPROVAL out)"
                    .into(),
            );
        }
        if t.timeout_ms.is_some() || t.approval_timeout_ms.is_some() {
            return fail(
                "it runs inside the model call, which TIMEOUT LLM bounds (hint: remove TIMEOUT and APPROVAL_TIMEOUT from this line)"
                    .into(),
            );
        }
        if let Some(m) = agent.models.iter().find(|m| !m.provider.hosts_web_search()) {
            return fail(format!(
                "model `{}` (PROVIDER {}) has no hosted web search: the search runs at the provider (hint: models of PROVIDER openai, anthropic or gemini search the web inside their calls; for another provider declare your search API with `TOOL HTTP` or `TOOL MCP`)",
                m.name, m.provider
            ));
        }
    }
    Ok(())
}
