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
        let from = match m.component {
            Some(_) => "FROM dispatch/wasm",
            None => "FROM agent",
        };
        return Err(AgentfileError::new(
            from_line,
            format!(
                "{from} needs a MODEL (hint: `MODEL gpt-4o-mini PROVIDER openai KEY OPENAI_API_KEY`)"
            ),
        ));
    }
    if !m.command.is_empty() {
        return Err(AgentfileError::new(
            from_line,
            "FROM agent runs the model loop inside Dispatch and takes no COMMAND (hint: remove the COMMAND line, or use `FROM process` to run your own program)",
        ));
    }
    if m.component.is_none()
        && let Some((line, _)) = agent_lines.iter().find(|(_, w)| *w == "LIMIT FUEL")
    {
        return Err(AgentfileError::new(
            *line,
            "LIMIT FUEL meters a WebAssembly guest's instructions and applies to `FROM dispatch/wasm` only (hint: bound a native agent with LIMIT TOKENS, LIMIT COST or TIMEOUT RUN)",
        ));
    }
    check_tools(m)?;
    check_local_cli(m, agent_lines)?;
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

/// `PROVIDER claude|codex` runs a coding-agent CLI as the whole loop: it is
/// the only model, and the directives that shape Dispatch's own loop
/// (tools, fallbacks, per-call limits) cannot reach it.
fn check_local_cli(
    m: &Manifest,
    agent_lines: &[(usize, &'static str)],
) -> Result<(), AgentfileError> {
    let Some(agent) = m.agent.as_ref() else {
        return Ok(());
    };
    let Some(cli) = agent.models.iter().find(|m| m.provider.is_local_cli()) else {
        return Ok(());
    };
    let kind = cli.provider;
    let line_of = |what: &str| {
        agent_lines
            .iter()
            .find(|(_, w)| *w == what)
            .map(|(l, _)| *l)
    };
    if agent.models.len() > 1 {
        let line = line_of("FALLBACK").unwrap_or(0);
        return Err(AgentfileError::new(
            line,
            format!(
                "PROVIDER {kind} runs the `{kind}` CLI as the whole agent loop and cannot be combined with FALLBACK models (hint: keep one MODEL line; use hosted providers for fallbacks)"
            ),
        ));
    }
    let mut refused: Vec<(&str, String)> = vec![
        (
            "TOOL",
            format!(
                "Dispatch's TOOL lines cannot be handed to the `{kind}` CLI, which uses its own tools in the run's workspace (hint: remove the TOOL lines, or use a hosted provider such as `PROVIDER anthropic`)"
            ),
        ),
        (
            "LIMIT OUTPUT_TOKENS",
            format!(
                "LIMIT OUTPUT_TOKENS cannot be applied to the `{kind}` CLI's calls (hint: use LIMIT TOKENS or LIMIT COST for the run)"
            ),
        ),
        (
            "LIMIT CONTEXT_TOKENS",
            format!(
                "LIMIT CONTEXT_TOKENS cannot be applied: the `{kind}` CLI compacts its own context (hint: remove it)"
            ),
        ),
        (
            "LIMIT TOOL_ROUNDS",
            format!(
                "LIMIT TOOL_ROUNDS cannot be applied to the `{kind}` CLI, which does not report its rounds (hint: use LIMIT TOOL_CALLS{})",
                if kind == crate::agent::ProviderKind::Claude {
                    " or LIMIT ITERATIONS"
                } else {
                    ""
                }
            ),
        ),
        (
            "LIMIT TOOL_OUTPUT",
            format!(
                "LIMIT TOOL_OUTPUT cannot be applied: the `{kind}` CLI gives its tools' output to its model itself (hint: remove it)"
            ),
        ),
        (
            "TOOL_SANDBOX",
            format!(
                "TOOL_SANDBOX runs Dispatch's LOCAL tools in a container; the `{kind}` CLI has its own tools (hint: remove it)"
            ),
        ),
    ];
    if kind == crate::agent::ProviderKind::Codex {
        refused.push(("LIMIT ITERATIONS", "LIMIT ITERATIONS cannot be applied to the `codex` CLI, which reports one turn, not its model calls (hint: use LIMIT TOOL_CALLS or LIMIT TOKENS)".into()));
    }
    for (what, why) in refused {
        if let Some(line) = line_of(what) {
            return Err(AgentfileError::new(line, why));
        }
    }
    Ok(())
}
