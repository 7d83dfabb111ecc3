//! `SECRET NAME…` and `SECRET NAME… TO tool1,tool2`: which secrets the run
//! needs, and which tools' processes get them in their environment.

use super::{AgentfileError, env_name};
use crate::parcel::Manifest;

/// The names of a SECRET line and the tools after its `TO` (none: not scoped).
pub(super) fn parse(args: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
    let to = args.iter().position(|a| a.eq_ignore_ascii_case("TO"));
    let (names, tools) = match to {
        Some(i) => (&args[..i], Some(&args[i + 1..])),
        None => (args, None),
    };
    if names.is_empty() {
        return Err(
            "SECRET expects secret names before TO (hint: `SECRET GITHUB_TOKEN TO github`)".into(),
        );
    }
    let tools: Vec<String> = tools
        .unwrap_or_default()
        .join(",")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    if to.is_some() && tools.is_empty() {
        return Err("SECRET … TO expects tool names (hint: `SECRET GITHUB_TOKEN TO github,search`; the secret goes into the environment of only these tools)".into());
    }
    let names = names
        .iter()
        .map(|a| match a.contains('=') {
            true => Err(format!(
                "SECRET takes only a name, got `{a}` (hint: the value comes from the environment or the secret store when the agent runs)"
            )),
            false => env_name(a, "secret"),
        })
        .collect::<Result<_, _>>()?;
    Ok((names, tools))
}

/// Every tool a `SECRET … TO` names is a TOOL of the Agentfile (`lines`:
/// each named tool with the line that names it).
pub(super) fn check_scopes(m: &Manifest, lines: &[(String, usize)]) -> Result<(), AgentfileError> {
    let tools = m.agent.as_ref().map(|a| a.tools.as_slice()).unwrap_or(&[]);
    let Some((tool, line)) = lines
        .iter()
        .find(|(t, _)| !tools.iter().any(|d| d.name == *t))
    else {
        return Ok(());
    };
    let names: Vec<&str> = tools.iter().map(|d| d.name.as_str()).collect();
    let known = match names.is_empty() {
        true => "this Agentfile declares no TOOL".to_string(),
        false => format!("the tools are: {}", names.join(", ")),
    };
    Err(AgentfileError::new(
        *line,
        format!(
            "SECRET … TO names `{tool}`, which is not a TOOL ({known}) (hint: use the TOOL's name, as declared or given with AS)"
        ),
    ))
}
