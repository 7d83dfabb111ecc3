//! Upstream Dispatch's eval files (`EVAL evals/smoke.eval`): TOML, one case
//! at the top level or a `[[cases]]` list, each `name`, `input` and
//! `expects_*` keys. Read into our cases (see docs/agentfile-compat.md):
//!
//! | upstream | here |
//! |---|---|
//! | `input = "…"` | the payload (a string: the agent's first user message) |
//! | `expects_tool = "t"`, `expects_tools = [..]` | `expect.tools.called` |
//! | `expects_no_tool = true` | no tool call at all |
//! | `expects_tool_count = n` | exactly n tool calls in all |
//! | `expects_text_contains`, `_exact`, `_not_contains` | the answer's text |
//! | `expects_error_contains = "…"` | `expect.status = "failed"`, its reason holding the text |
//!
//! A case expects `succeeded` unless it expects an error. The keys that
//! check a tool's own stdout, stderr, exit code or schema, an A2A endpoint,
//! and `entrypoint` are refused naming the key: `dispatch eval` runs each
//! case as a run of the parcel's ENTRYPOINT, and a tool call's record is
//! what the model was told, not the process's streams.

use serde::Deserialize;
use serde_json::Value;

use super::cases::{Case, DEFAULT_STATUS, Expect, TextCheck, ToolsCheck};
use crate::error::{CliError, CliResult};

/// Whether `table` is written the upstream way (no `[[case]]`, but
/// `[[cases]]` or top-level case keys).
pub fn is_upstream(table: &toml::Table) -> bool {
    !table.contains_key("case")
        && (table.contains_key("cases")
            || table.contains_key("input")
            || table.keys().any(|k| k.starts_with("expects_")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    expects_tool: Option<String>,
    #[serde(default)]
    expects_tools: Vec<String>,
    #[serde(default)]
    expects_no_tool: Option<bool>,
    #[serde(default)]
    expects_tool_count: Option<u64>,
    #[serde(default)]
    expects_text_contains: Option<String>,
    #[serde(default)]
    expects_text_exact: Option<String>,
    #[serde(default)]
    expects_text_not_contains: Option<String>,
    #[serde(default)]
    expects_error_contains: Option<String>,
}

/// Upstream keys with no counterpart here, and why.
const REFUSED: &[(&str, &str)] = &[
    (
        "entrypoint",
        "each case runs the parcel's ENTRYPOINT (hint: remove it, or write a case file of [[case]] tables for another parcel)",
    ),
    (
        "expects_tool_stdout_contains",
        "a tool call's record is what the model was told, not its process's stdout (hint: expect.tools.args, or an output check, in a [[case]] file)",
    ),
    (
        "expects_tool_stdout_matches_schema",
        "a tool call's record is what the model was told, not its process's stdout (hint: an expect.output schema in a [[case]] file)",
    ),
    (
        "expects_tool_stderr_contains",
        "a tool's stderr is not part of its record",
    ),
    (
        "expects_tool_exit_code",
        "a tool's exit code is checked by the run itself (a failing tool is an error the model sees)",
    ),
    (
        "expects_a2a_endpoint",
        "A2A tools are not part of this eval runner",
    ),
];

/// Reads an upstream eval file (already parsed as `table`).
pub fn parse(table: toml::Table, shown: &str) -> CliResult<Vec<Case>> {
    let raw: Vec<toml::Table> = match table.get("cases") {
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_table().cloned().ok_or_else(|| {
                    CliError::input(format!("{shown}: each [[cases]] entry must be a table"))
                })
            })
            .collect::<CliResult<_>>()?,
        Some(_) => {
            return Err(CliError::input(format!(
                "{shown}: `cases` must be a list of tables (hint: [[cases]])"
            )));
        }
        None => vec![table],
    };
    let mut cases: Vec<Case> = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let label = t
            .get("name")
            .and_then(toml::Value::as_str)
            .map_or_else(|| format!("case {}", i + 1), |n| format!("case \"{n}\""));
        if let Some((key, why)) = REFUSED.iter().find(|(k, _)| t.contains_key(*k)) {
            return Err(CliError::input(format!(
                "{shown}: {label}: upstream's `{key}` is not supported here: {why}"
            )));
        }
        let c: RawCase = toml::Value::Table(t).try_into().map_err(|e: toml::de::Error| {
            CliError::input(format!(
                "{shown}: {label}: {} (hint: upstream eval keys are name, input, expects_tool, expects_tools, expects_no_tool, expects_tool_count, expects_text_contains, expects_text_exact, expects_text_not_contains, expects_error_contains)",
                e.message().trim()
            ))
        })?;
        if cases.iter().any(|o| o.name == c.name) {
            return Err(CliError::input(format!(
                "{shown}: case \"{}\" is defined twice (hint: give each case its own name)",
                c.name
            )));
        }
        cases.push(case_of(c));
    }
    if cases.is_empty() {
        return Err(CliError::input(format!("{shown}: no cases")));
    }
    Ok(cases)
}

fn case_of(c: RawCase) -> Case {
    let mut called: Vec<String> = c.expects_tool.into_iter().collect();
    called.extend(c.expects_tools);
    let total = match (c.expects_no_tool, c.expects_tool_count) {
        (_, Some(n)) => Some(n),
        (Some(true), None) => Some(0),
        _ => None,
    };
    let tools = (!called.is_empty() || total.is_some()).then(|| ToolsCheck {
        called,
        total,
        ..ToolsCheck::default()
    });
    let mut text = Vec::new();
    text.extend(c.expects_text_contains.map(TextCheck::Contains));
    text.extend(c.expects_text_exact.map(TextCheck::Exact));
    text.extend(c.expects_text_not_contains.map(TextCheck::NotContains));
    let status = match c.expects_error_contains {
        Some(_) => "failed",
        None => DEFAULT_STATUS,
    };
    Case {
        name: c.name,
        payload: c
            .input
            .map_or(Value::Object(Default::default()), Value::String),
        expect: Expect {
            status: status.to_string(),
            exit_code: None,
            output: Vec::new(),
            tools,
            max_tokens: None,
            max_cost_usd: None,
            max_duration_ms: None,
            judge: None,
            messages: None,
            text,
            reason_contains: c.expects_error_contains,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> CliResult<Vec<Case>> {
        let table: toml::Table = toml::from_str(text).expect("toml");
        assert!(is_upstream(&table));
        parse(table, "smoke.eval")
    }

    #[test]
    fn a_single_case_and_a_list_of_cases_read_into_expectations() {
        let one = read(
            "name = \"smoke\"\ninput = \"What time is it?\"\nexpects_no_tool = true\nexpects_text_contains = \"reply\"\n",
        )
        .expect("reads");
        assert_eq!(one[0].payload, Value::String("What time is it?".into()));
        assert_eq!(one[0].expect.tools.as_ref().and_then(|t| t.total), Some(0));
        assert_eq!(
            one[0].expect.text,
            vec![TextCheck::Contains("reply".into())]
        );
        assert_eq!(one[0].expect.status, "succeeded");
        let many = read(
            "[[cases]]\nname = \"a\"\ninput = \"x\"\nexpects_tool = \"list_dir\"\nexpects_tools = [\"read_file\"]\n\n[[cases]]\nname = \"b\"\ninput = \"y\"\nexpects_error_contains = \"budget\"\nexpects_tool_count = 2\n",
        )
        .expect("reads");
        let t = many[0].expect.tools.as_ref().expect("tools");
        assert_eq!(t.called, vec!["list_dir", "read_file"]);
        assert_eq!(many[1].expect.status, "failed");
        assert_eq!(many[1].expect.reason_contains.as_deref(), Some("budget"));
        assert_eq!(many[1].expect.tools.as_ref().and_then(|t| t.total), Some(2));
    }

    #[test]
    fn keys_with_no_counterpart_are_refused_by_name() {
        let e = read("name = \"x\"\ninput = \"y\"\nexpects_tool_exit_code = 0\n")
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("case \"x\": upstream's `expects_tool_exit_code`"),
            "{e}"
        );
        let e = read("name = \"x\"\nexpects_txt = \"y\"\ninput = \"z\"\n")
            .expect_err("refused")
            .to_string();
        assert!(e.contains("expects_txt") && e.contains("hint"), "{e}");
    }
}
