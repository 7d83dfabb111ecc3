//! Checks of a whole native agent's Agentfile, made once every line is read:
//! a MODEL, no COMMAND, declared secrets for keys and headers, unique tools.

use super::AgentfileError;
use crate::parcel::Manifest;

/// A native agent needs a MODEL, runs no COMMAND, and each KEY names a declared SECRET.
pub(super) fn check_agent(
    m: &Manifest,
    from_line: usize,
    agent_lines: &[(usize, &'static str)],
) -> Result<(), AgentfileError> {
    let line_of = |what: &str| {
        agent_lines
            .iter()
            .find(|(_, w)| *w == what)
            .map_or(from_line, |(l, _)| *l)
    };
    let models = m.agent.as_ref().map(|a| a.models.as_slice()).unwrap_or(&[]);
    if !models.is_empty() && !agent_lines.iter().any(|(_, w)| *w == "MODEL") {
        return Err(AgentfileError::new(
            line_of("FALLBACK"),
            "FALLBACK without MODEL (hint: the first model is `MODEL <name>`; FALLBACKs are tried after it)",
        ));
    }
    if models.is_empty() {
        return Err(AgentfileError::new(
            from_line,
            "FROM agent needs a MODEL (hint: `MODEL gpt-4o-mini PROVIDER openai KEY OPENAI_API_KEY`)",
        ));
    }
    if !m.command.is_empty() {
        return Err(AgentfileError::new(
            from_line,
            "FROM agent runs the model loop inside Dispatch and takes no COMMAND (hint: remove the COMMAND line, or use `FROM process` to run your own program)",
        ));
    }
    check_tools(m)?;
    for (i, model) in models.iter().enumerate() {
        if let Some(key) = model.key.as_ref().filter(|k| !m.secrets.contains(k)) {
            let what = if i == 0 { "MODEL" } else { "FALLBACK" };
            return Err(AgentfileError::new(
                line_of(what),
                format!(
                    "{what} {}: KEY names `{key}`, which is not a declared SECRET (hint: add `SECRET {key}`)",
                    model.name
                ),
            ));
        }
    }
    Ok(())
}

/// Tool names are unique, and every HEADER names a declared SECRET.
fn check_tools(m: &Manifest) -> Result<(), AgentfileError> {
    let tools = m.agent.as_ref().map(|a| a.tools.as_slice()).unwrap_or(&[]);
    for (i, t) in tools.iter().enumerate() {
        if let Some(first) = tools[..i].iter().find(|o| o.name == t.name) {
            return Err(AgentfileError::new(
                t.line,
                format!(
                    "tool `{}` is declared twice (first on line {}) (hint: give one of them another name with AS)",
                    t.name, first.line
                ),
            ));
        }
        if let crate::tool::ToolKind::A2a {
            auth: Some(auth), ..
        } = &t.kind
            && let Some(s) = auth
                .secrets()
                .into_iter()
                .find(|s| !m.secrets.iter().any(|d| d == s))
        {
            return Err(AgentfileError::new(
                t.line,
                format!(
                    "TOOL {}: AUTH names `{s}`, which is not a declared SECRET (hint: add `SECRET {s}`)",
                    t.name
                ),
            ));
        }
        let headers = match &t.kind {
            crate::tool::ToolKind::Http { headers, .. }
            | crate::tool::ToolKind::Mcp { headers, .. } => headers.as_slice(),
            _ => &[],
        };
        if let Some(h) = headers.iter().find(|h| !m.secrets.contains(&h.secret)) {
            return Err(AgentfileError::new(
                t.line,
                format!(
                    "TOOL {}: HEADER {} names `{}`, which is not a declared SECRET (hint: add `SECRET {}`)",
                    t.name, h.name, h.secret, h.secret
                ),
            ));
        }
    }
    Ok(())
}
