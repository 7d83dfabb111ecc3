//! Eval case files: TOML, one `[[case]]` table per case (see docs/evals.md).
//!
//! Every key is checked: an unknown one is an error naming it, its case and
//! its line; JSON paths, regexes, JSON Schemas, statuses and durations are
//! compiled here, before any run starts.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use serde_json_path::JsonPath;
use toml::Spanned;

use crate::error::{CliError, CliResult};

/// One case, checked and ready to run.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub payload: Value,
    pub expect: Expect,
}

/// What a case expects of its run.
#[derive(Debug)]
pub struct Expect {
    /// The run's end status; [`DEFAULT_STATUS`] unless the case says.
    pub status: String,
    pub exit_code: Option<i32>,
    pub output: Vec<OutputCheck>,
    pub tools: Option<ToolsCheck>,
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    pub max_duration_ms: Option<u64>,
    /// A model-graded check (see `grade.rs`).
    pub judge: Option<super::grade::JudgeSpec>,
    /// Checks of a workflow run's messages (sender → receiver, kind).
    pub messages: Option<MessagesCheck>,
    /// Checks of the answer as text (upstream eval files' `expects_text_*`).
    pub text: Vec<TextCheck>,
    /// The run's end reason holds this (upstream's `expects_error_contains`).
    pub reason_contains: Option<String>,
}

/// A check of the run's output read as text (a string as it is, anything
/// else as its JSON).
#[derive(Debug, Clone, PartialEq)]
pub enum TextCheck {
    Contains(String),
    Exact(String),
    NotContains(String),
}

/// One edge of a workflow's messages: `"writer -> analyst"`, optionally
/// with its kind, `"writer -> analyst VALIDATION"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub text: String,
    pub from: String,
    pub to: String,
    pub kind: Option<String>,
}

impl Edge {
    fn parse(text: &str) -> Result<Edge, String> {
        let bad = || {
            format!(
                "expect.messages: `{text}` is not an edge (hint: \"researcher -> analyst\", or with a kind: \"writer -> analyst VALIDATION\")"
            )
        };
        let (from, rest) = text.split_once("->").ok_or_else(bad)?;
        let mut words = rest.split_whitespace();
        let to = words.next().ok_or_else(bad)?;
        let kind = words.next().map(str::to_ascii_uppercase);
        let from = from.trim();
        if from.is_empty() || from.contains(char::is_whitespace) || words.next().is_some() {
            return Err(bad());
        }
        if let Some(k) = &kind
            && !["TASK", "RESULT", "VALIDATION", "ERROR", "CONTROL"].contains(&k.as_str())
        {
            return Err(format!(
                "expect.messages: `{text}`: `{k}` is not a message kind (hint: TASK, RESULT, VALIDATION, ERROR or CONTROL)"
            ));
        }
        Ok(Edge {
            text: text.trim().to_string(),
            from: from.to_string(),
            to: to.to_string(),
            kind,
        })
    }

    /// Whether a message `(from, to, kind)` is this edge.
    pub fn matches(&self, m: &(String, String, String)) -> bool {
        self.from == m.0 && self.to == m.1 && self.kind.as_ref().is_none_or(|k| *k == m.2)
    }
}

/// Checks of a workflow run's messages.
#[derive(Debug, Default)]
pub struct MessagesCheck {
    /// Each edge carried at least one message.
    pub sent: Vec<Edge>,
    /// No edge of these carried one.
    pub not_sent: Vec<Edge>,
    /// Exactly this many messages on each edge.
    pub count: Vec<(Edge, u64)>,
    /// At most this many messages in all.
    pub max: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessages {
    #[serde(default)]
    sent: Vec<String>,
    #[serde(default)]
    not_sent: Vec<String>,
    #[serde(default)]
    count: BTreeMap<String, u64>,
    max: Option<u64>,
}

/// A check of the run's output at a JSON path.
#[derive(Debug)]
pub struct OutputCheck {
    /// As written, for messages.
    pub path_text: String,
    pub path: JsonPath,
    pub test: OutputTest,
}

#[derive(Debug)]
pub enum OutputTest {
    Equals(Value),
    /// A string holds this text, an array holds this element, an object
    /// holds these keys with these values.
    Contains(Value),
    Regex(regex::Regex),
    Schema(Box<jsonschema::Validator>),
}

/// Checks of the run's `tool_call` events.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsCheck {
    #[serde(default)]
    pub called: Vec<String>,
    #[serde(default)]
    pub not_called: Vec<String>,
    /// Exactly this many calls of each tool.
    #[serde(default)]
    pub count: BTreeMap<String, u64>,
    /// Some call of each tool had arguments holding these (a subset match).
    #[serde(default)]
    pub args: BTreeMap<String, Value>,
    /// Exactly this many tool calls in all (upstream's `expects_no_tool`,
    /// `expects_tool_count`; not a key of our case files).
    #[serde(skip)]
    pub total: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    case: Vec<RawCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    expect: RawExpect,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    status: Option<Spanned<String>>,
    exit_code: Option<i32>,
    output: Option<Spanned<toml::Value>>,
    tools: Option<ToolsCheck>,
    max_tokens: Option<u64>,
    max_cost_usd: Option<f64>,
    max_duration: Option<Spanned<String>>,
    judge: Option<Spanned<toml::Value>>,
    messages: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJudge {
    criteria: String,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    #[serde(default)]
    path: Option<String>,
    equals: Option<Value>,
    contains: Option<Value>,
    regex: Option<String>,
    schema: Option<Value>,
}

/// The status a case expects when it names none: a case without
/// expectations passes only when its run succeeded.
pub const DEFAULT_STATUS: &str = "succeeded";

/// The statuses a run ends in.
const STATUSES: &[&str] = &["succeeded", "failed", "timed_out", "cancelled", "stopped"];

/// Reads and checks a case file. `shown` names it in messages.
pub fn load(path: &Path, shown: &str) -> CliResult<Vec<Case>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::input(format!(
            "cannot read case file {shown}: {e} (hint: pass a TOML file of [[case]] tables with --cases, or name one with EVAL in the Agentfile)"
        ))
    })?;
    parse(&text, shown)
}

/// Parses and checks the text of a case file.
pub fn parse(text: &str, shown: &str) -> CliResult<Vec<Case>> {
    // Upstream Dispatch's eval files (`name`, `input`, `expects_*`).
    if let Ok(table) = toml::from_str::<toml::Table>(text)
        && super::upstream::is_upstream(&table)
    {
        return super::upstream::parse(table, shown);
    }
    let raw: RawFile = toml::from_str(text).map_err(|e| syntax_error(text, shown, &e))?;
    if raw.case.is_empty() {
        return Err(CliError::input(format!(
            "{shown}: no cases (hint: add a [[case]] table with a name, a payload and expectations, see docs/evals.md)"
        )));
    }
    let mut seen = BTreeMap::new();
    let mut cases = Vec::new();
    for (i, c) in raw.case.into_iter().enumerate() {
        if c.name.trim().is_empty() {
            return Err(CliError::input(format!(
                "{shown}: case {} has an empty name (hint: name = \"refund request\")",
                i + 1
            )));
        }
        if let Some(prev) = seen.insert(c.name.clone(), i + 1) {
            return Err(CliError::input(format!(
                "{shown}: case \"{}\" is defined twice (cases {prev} and {}) (hint: give each case its own name)",
                c.name,
                i + 1
            )));
        }
        let expect = check_expect(text, shown, &c.name, c.expect)?;
        cases.push(Case {
            name: c.name,
            payload: c
                .payload
                .unwrap_or_else(|| Value::Object(Default::default())),
            expect,
        });
    }
    Ok(cases)
}

fn check_expect(text: &str, shown: &str, case: &str, raw: RawExpect) -> CliResult<Expect> {
    let at = |span: std::ops::Range<usize>, message: String| {
        let (line, col) = line_col(text, span.start);
        CliError::input(format!("{shown}:{line}:{col}: case \"{case}\": {message}"))
    };
    if let Some(s) = &raw.status
        && !STATUSES.contains(&s.get_ref().as_str())
    {
        return Err(at(
            s.span(),
            format!(
                "expect.status `{}` is not a run's end status (hint: one of {})",
                s.get_ref(),
                STATUSES.join(", ")
            ),
        ));
    }
    if let Some(code) = raw.exit_code.filter(|c| *c != 0) {
        let status = raw.status.as_ref().map_or(DEFAULT_STATUS, |s| s.get_ref());
        if status == DEFAULT_STATUS {
            let said = if raw.status.is_some() {
                "expect.status \"succeeded\""
            } else {
                "the default expect.status \"succeeded\""
            };
            return Err(CliError::input(format!(
                "{shown}: case \"{case}\": expect.exit_code {code} cannot pass with {said}: a run that exits {code} has failed (hint: add expect.status = \"failed\")"
            )));
        }
    }
    let max_duration_ms = match &raw.max_duration {
        None => None,
        Some(d) => Some(
            dispatch_core::units::parse_duration_ms_or_seconds(d.get_ref())
                .map_err(|e| at(d.span(), format!("expect.max_duration: {e}")))?,
        ),
    };
    if let Some(c) = raw.max_cost_usd.filter(|c| !c.is_finite() || *c < 0.0) {
        return Err(CliError::input(format!(
            "{shown}: case \"{case}\": expect.max_cost_usd {c} is not a cost (hint: a number of US dollars, e.g. 0.01)"
        )));
    }
    let mut output = Vec::new();
    if let Some(o) = raw.output {
        let span = o.span();
        let items = match o.into_inner() {
            toml::Value::Array(items) => items,
            one => vec![one],
        };
        for item in items {
            let parsed: RawOutput = item.try_into().map_err(|e: toml::de::Error| {
                at(
                    span.clone(),
                    format!(
                        "expect.output: {} (hint: output = {{ path = \"$.category\", equals = \"refund\" }}; the checks are equals, contains, regex, schema)",
                        e.message().trim()
                    ),
                )
            })?;
            output.push(check_output(parsed).map_err(|m| at(span.clone(), m))?);
        }
    }
    let judge = match raw.judge {
        None => None,
        Some(j) => {
            let span = j.span();
            let hint = "(hint: judge = \"the reply apologizes\", or judge = { criteria = \"…\", model = \"gpt-4o-mini\" })";
            let parsed = match j.into_inner() {
                toml::Value::String(criteria) => RawJudge {
                    criteria,
                    model: None,
                },
                other => other.try_into().map_err(|e: toml::de::Error| {
                    at(
                        span.clone(),
                        format!("expect.judge: {} {hint}", e.message().trim()),
                    )
                })?,
            };
            if parsed.criteria.trim().is_empty() {
                return Err(at(span, format!("expect.judge has empty criteria {hint}")));
            }
            Some(super::grade::JudgeSpec {
                criteria: parsed.criteria,
                model: parsed.model.filter(|m| !m.trim().is_empty()),
            })
        }
    };
    let messages = match raw.messages {
        None => None,
        Some(m) => {
            let span = m.span();
            let parsed: RawMessages = m.into_inner().try_into().map_err(|e: toml::de::Error| {
                at(
                    span.clone(),
                    format!(
                        "expect.messages: {} (hint: messages = {{ sent = [\"researcher -> analyst\"], not_sent = [\"writer -> __end__ ERROR\"], count = {{ \"writer -> analyst\" = 1 }}, max = 10 }})",
                        e.message().trim()
                    ),
                )
            })?;
            let edges = |list: &[String]| -> CliResult<Vec<Edge>> {
                list.iter()
                    .map(|t| Edge::parse(t).map_err(|e| at(span.clone(), e)))
                    .collect()
            };
            let mut count = Vec::new();
            for (t, n) in &parsed.count {
                count.push((Edge::parse(t).map_err(|e| at(span.clone(), e))?, *n));
            }
            Some(MessagesCheck {
                sent: edges(&parsed.sent)?,
                not_sent: edges(&parsed.not_sent)?,
                count,
                max: parsed.max,
            })
        }
    };
    Ok(Expect {
        messages,
        judge,
        status: raw
            .status
            .map_or_else(|| DEFAULT_STATUS.to_string(), Spanned::into_inner),
        exit_code: raw.exit_code,
        output,
        tools: raw.tools,
        max_tokens: raw.max_tokens,
        max_cost_usd: raw.max_cost_usd,
        max_duration_ms,
        text: Vec::new(),
        reason_contains: None,
    })
}

fn check_output(raw: RawOutput) -> Result<OutputCheck, String> {
    let path_text = raw.path.unwrap_or_else(|| "$".to_string());
    let path = JsonPath::parse(&path_text).map_err(|e| {
        format!(
            "expect.output.path `{path_text}` is not a JSON path ({e}) (hint: paths start at the output's root, e.g. `$.category` or `$.items[0].id`)"
        )
    })?;
    let mut tests = Vec::new();
    if let Some(v) = raw.equals {
        tests.push(OutputTest::Equals(v));
    }
    if let Some(v) = raw.contains {
        tests.push(OutputTest::Contains(v));
    }
    if let Some(r) = raw.regex {
        let re = regex::Regex::new(&r).map_err(|e| {
            let first = e.to_string();
            let first = first.lines().last().unwrap_or_default().trim().to_string();
            format!("expect.output.regex `{r}` is not a regex ({first}) (hint: the syntax is Rust's `regex` crate's)")
        })?;
        tests.push(OutputTest::Regex(re));
    }
    if let Some(s) = raw.schema {
        let v = jsonschema::validator_for(&s).map_err(|e| {
            format!("expect.output.schema is not a valid JSON Schema ({e}) (hint: e.g. schema = {{ type = \"object\", required = [\"category\"] }})")
        })?;
        tests.push(OutputTest::Schema(Box::new(v)));
    }
    let test = match tests.len() {
        1 => tests.remove(0),
        n => {
            return Err(format!(
                "expect.output at `{path_text}` needs exactly one of equals, contains, regex, schema; it has {n} (hint: use a list of checks, output = [{{ path = \"$.a\", equals = 1 }}, {{ path = \"$.b\", regex = \"x\" }}])"
            ));
        }
    };
    Ok(OutputCheck {
        path_text,
        path,
        test,
    })
}

/// Refuses a case whose `expect.tools` names a tool the agent does not
/// declare: a misspelt name would pass `not_called` (and `count = 0`)
/// forever. Only a native agent's tools are known before it runs (see
/// [`declared_tools`]); other agents' cases are not checked.
pub fn check_declared_tools(
    cases: &[Case],
    shown: &str,
    manifest: &dispatch_core::parcel::Manifest,
) -> CliResult<()> {
    let Some(declared) = declared_tools(manifest) else {
        return Ok(());
    };
    for c in cases {
        let Some(t) = &c.expect.tools else { continue };
        let named = t
            .called
            .iter()
            .map(|n| ("called", n))
            .chain(t.not_called.iter().map(|n| ("not_called", n)))
            .chain(t.count.keys().map(|n| ("count", n)))
            .chain(t.args.keys().map(|n| ("args", n)));
        for (key, name) in named {
            if declared.iter().any(|d| d == name) {
                continue;
            }
            let tools = if declared.is_empty() {
                "it declares no tools".to_string()
            } else {
                format!("its tools: {}", declared.join(", "))
            };
            return Err(CliError::input(format!(
                "{shown}: case \"{}\": expect.tools.{key} names `{name}`, which {} does not declare ({tools}) (hint: name a tool of its TOOL lines)",
                c.name, manifest.name
            )));
        }
    }
    Ok(())
}

/// The tools a native agent's model can call, in the Agentfile's order:
/// each TOOL's name, an MCP server's ALLOW list. `None` when they are not
/// known before a run: not a native agent (a process agent reports its own
/// tool calls), or an MCP server without ALLOW (its tools are its own).
fn declared_tools(manifest: &dispatch_core::parcel::Manifest) -> Option<Vec<String>> {
    use dispatch_core::tool::ToolKind;
    if manifest.courier != dispatch_core::parcel::Courier::Agent {
        return None;
    }
    let mut names = Vec::new();
    for t in manifest.agent.iter().flat_map(|a| &a.tools) {
        match &t.kind {
            ToolKind::Mcp { allow, .. } if allow.is_empty() => return None,
            ToolKind::Mcp { allow, .. } => names.extend(allow.iter().cloned()),
            _ => names.push(t.name.clone()),
        }
    }
    Some(names)
}

/// One line for a TOML error: file, line and column, the message, and the
/// case it is in when it is inside one.
fn syntax_error(text: &str, shown: &str, e: &toml::de::Error) -> CliError {
    let message = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else {
        return CliError::input(format!("{shown}: {message}"));
    };
    let (line, col) = line_col(text, span.start);
    let case = case_at(text, span.start)
        .map(|n| format!(" in case \"{n}\""))
        .unwrap_or_default();
    let hint = if message.starts_with("unknown field") {
        " (hint: expectations are status, exit_code, output, tools, max_tokens, max_cost_usd, max_duration, judge, messages; see docs/evals.md)"
    } else {
        ""
    };
    CliError::input(format!("{shown}:{line}:{col}: {message}{case}{hint}"))
}

/// The name of the `[[case]]` whose table holds byte `at`, if the file
/// parses as TOML at all.
fn case_at(text: &str, at: usize) -> Option<String> {
    let index = text
        .get(..at)
        .unwrap_or(text)
        .lines()
        .filter(|l| l.trim_start().starts_with("[[case]]"))
        .count()
        .checked_sub(1)?;
    let table: toml::Table = toml::from_str(text).ok()?;
    let case = table.get("case")?.as_array()?.get(index)?;
    case.get("name")?.as_str().map(str::to_string)
}

/// 1-based line and column (in characters) of byte `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, col)
}

#[cfg(test)]
#[path = "cases_tests.rs"]
mod tests;
