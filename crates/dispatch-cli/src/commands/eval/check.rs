//! Checks a finished run against its case's expectations. Every failed
//! expectation is one line; the report shows the first.

use serde_json::Value;

use super::cases::{Expect, OutputCheck, OutputTest, TextCheck, ToolsCheck};

/// What a run did, as the checks see it.
pub struct Observed<'a> {
    pub status: String,
    pub exit_code: Option<i32>,
    /// The run's output; a string holding JSON is read as that JSON.
    pub output: Option<&'a Value>,
    /// Each `tool_call` event's tool name and arguments, in order.
    pub tool_calls: Vec<(String, Value)>,
    pub tokens: u64,
    pub cost_usd: f64,
    pub duration_ms: u64,
    /// Why it ended, when it did not succeed.
    pub reason: Option<String>,
    /// A workflow run's messages, in order: sender, receiver, kind.
    pub messages: Vec<(String, String, String)>,
}

/// Every expectation `observed` fails, in the order they are written in
/// docs/evals.md (status first).
pub fn failures(expect: &Expect, observed: &Observed<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let want = &expect.status;
    if *want != observed.status {
        let why = observed
            .reason
            .as_deref()
            .map(|r| format!(" ({})", short(r)))
            .unwrap_or_default();
        out.push(format!(
            "expect.status: wanted {want}, the run {}{why}",
            observed.status
        ));
    }
    if let Some(want) = expect.exit_code
        && observed.exit_code != Some(want)
    {
        let got = observed
            .exit_code
            .map_or_else(|| "no exit code".to_string(), |c| format!("exit code {c}"));
        out.push(format!("expect.exit_code: wanted {want}, got {got}"));
    }
    if !expect.output.is_empty() {
        let parsed = observed.output.map(parse_text);
        for check in &expect.output {
            if let Some(f) = output_failure(check, parsed.as_ref()) {
                out.push(f);
            }
        }
    }
    if !expect.text.is_empty() {
        out.extend(text_failures(&expect.text, observed.output));
    }
    if let Some(want) = &expect.reason_contains {
        let reason = observed.reason.as_deref().unwrap_or_default();
        if !reason.contains(want.as_str()) {
            out.push(format!(
                "expects_error_contains: the run's reason {} does not contain {want:?}",
                short(&format!("{reason:?}"))
            ));
        }
    }
    if let Some(tools) = &expect.tools {
        out.extend(tool_failures(tools, &observed.tool_calls));
        if let Some(want) = tools.total
            && observed.tool_calls.len() as u64 != want
        {
            let names: Vec<&str> = observed
                .tool_calls
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            out.push(format!(
                "expects_tool_count: {} tool call(s) ({}), wanted {want}",
                names.len(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
    }
    if let Some(m) = &expect.messages {
        out.extend(message_failures(m, &observed.messages));
    }
    if let Some(max) = expect.max_tokens
        && observed.tokens > max
    {
        out.push(format!(
            "expect.max_tokens: used {} tokens, more than {max}",
            observed.tokens
        ));
    }
    if let Some(max) = expect.max_cost_usd
        && observed.cost_usd > max
    {
        out.push(format!(
            "expect.max_cost_usd: cost ${:.6}, more than ${max}",
            observed.cost_usd
        ));
    }
    if let Some(max) = expect.max_duration_ms
        && observed.duration_ms > max
    {
        out.push(format!(
            "expect.max_duration: took {} ms, more than {max} ms",
            observed.duration_ms
        ));
    }
    out
}

/// Upstream's `expects_text_*`: the output as text.
fn text_failures(checks: &[TextCheck], output: Option<&Value>) -> Vec<String> {
    let text = match output {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let got = short(&format!("{text:?}"));
    checks
        .iter()
        .filter_map(|c| match c {
            TextCheck::Contains(w) if !text.contains(w.as_str()) => Some(format!(
                "expects_text_contains: {got} does not contain {w:?}"
            )),
            TextCheck::Exact(w) if text.trim() != w.trim() => {
                Some(format!("expects_text_exact: wanted {w:?}, got {got}"))
            }
            TextCheck::NotContains(w) if text.contains(w.as_str()) => {
                Some(format!("expects_text_not_contains: {got} contains {w:?}"))
            }
            _ => None,
        })
        .collect()
}

/// A string output holding JSON is that JSON (a native agent answers in text).
fn parse_text(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s.trim()).unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    }
}

fn output_failure(check: &OutputCheck, output: Option<&Value>) -> Option<String> {
    let p = &check.path_text;
    let Some(output) = output else {
        return Some(format!("expect.output `{p}`: the run has no output"));
    };
    let nodes = check.path.query(output).all();
    if nodes.is_empty() {
        return Some(format!(
            "expect.output `{p}`: nothing at that path in the output {}",
            short(&output.to_string())
        ));
    }
    let passes = |n: &Value| match &check.test {
        OutputTest::Equals(want) => json_eq(n, want),
        OutputTest::Contains(want) => contains(n, want),
        OutputTest::Regex(re) => match n {
            Value::String(s) => re.is_match(s),
            other => re.is_match(&other.to_string()),
        },
        OutputTest::Schema(v) => v.is_valid(n),
    };
    if nodes.iter().any(|n| passes(n)) {
        return None;
    }
    let got = short(&nodes[0].to_string());
    Some(match &check.test {
        OutputTest::Equals(want) => format!("expect.output `{p}`: wanted {want}, got {got}"),
        OutputTest::Contains(want) => {
            format!("expect.output `{p}`: {got} does not contain {want}")
        }
        OutputTest::Regex(re) => {
            format!(
                "expect.output `{p}`: {got} does not match /{}/",
                re.as_str()
            )
        }
        OutputTest::Schema(v) => {
            let why = v
                .iter_errors(nodes[0])
                .next()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            format!("expect.output `{p}`: {got} does not match the schema{why}")
        }
    })
}

fn tool_failures(t: &ToolsCheck, calls: &[(String, Value)]) -> Vec<String> {
    let count = |name: &str| calls.iter().filter(|(n, _)| n == name).count() as u64;
    let called: Vec<&str> = calls.iter().map(|(n, _)| n.as_str()).collect();
    let list = if called.is_empty() {
        "none".to_string()
    } else {
        called.join(", ")
    };
    let mut out = Vec::new();
    for name in &t.called {
        if count(name) == 0 {
            out.push(format!(
                "expect.tools.called: `{name}` was not called (calls: {list})"
            ));
        }
    }
    for name in &t.not_called {
        let n = count(name);
        if n > 0 {
            out.push(format!(
                "expect.tools.not_called: `{name}` was called {n} time(s)"
            ));
        }
    }
    for (name, want) in &t.count {
        let n = count(name);
        if n != *want {
            out.push(format!(
                "expect.tools.count: `{name}` was called {n} time(s), wanted {want}"
            ));
        }
    }
    for (name, want) in &t.args {
        let inputs: Vec<&Value> = calls
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, i)| i)
            .collect();
        if !inputs.iter().any(|i| contains(i, want)) {
            let seen = inputs
                .first()
                .map(|i| format!(" (first call's arguments: {})", short(&i.to_string())))
                .unwrap_or_else(|| " (it was not called)".to_string());
            out.push(format!(
                "expect.tools.args: no call of `{name}` had arguments holding {want}{seen}"
            ));
        }
    }
    out
}

/// Equal JSON, where numbers compare by value (TOML's `1` equals JSON's `1.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// `have` holds `want`: a substring of a string, an element of an array,
/// a subset of an object's keys with values holding theirs; else equality.
pub fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::String(h), Value::String(w)) => h.contains(w.as_str()),
        (Value::Array(h), Value::Array(w)) => w.iter().all(|x| h.iter().any(|y| json_eq(y, x))),
        (Value::Array(h), w) => h.iter().any(|y| json_eq(y, w)),
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contains(hv, v) || json_eq(hv, v))),
        _ => json_eq(have, want),
    }
}

/// At most 120 characters of `s`, on one line.
pub fn short(s: &str) -> String {
    let one: String = s.replace(['\n', '\r'], " ");
    if one.chars().count() <= 120 {
        return one;
    }
    let cut: String = one.chars().take(117).collect();
    format!("{cut}...")
}

/// What `expect.messages` finds wrong with a workflow's messages.
fn message_failures(
    check: &super::cases::MessagesCheck,
    messages: &[(String, String, String)],
) -> Vec<String> {
    let on = |e: &super::cases::Edge| messages.iter().filter(|m| e.matches(m)).count() as u64;
    let seen = || {
        if messages.is_empty() {
            return "no messages".to_string();
        }
        let all: Vec<String> = messages
            .iter()
            .map(|(f, t, k)| format!("{f} -> {t} {k}"))
            .collect();
        short(&all.join(", "))
    };
    let mut out = Vec::new();
    for e in &check.sent {
        if on(e) == 0 {
            out.push(format!(
                "expect.messages: no message `{}` (the run sent: {})",
                e.text,
                seen()
            ));
        }
    }
    for e in &check.not_sent {
        let n = on(e);
        if n > 0 {
            out.push(format!(
                "expect.messages: `{}` was sent {n} time(s), wanted never",
                e.text
            ));
        }
    }
    for (e, want) in &check.count {
        let n = on(e);
        if n != *want {
            out.push(format!(
                "expect.messages: `{}` was sent {n} time(s), wanted {want}",
                e.text
            ));
        }
    }
    if let Some(max) = check.max
        && messages.len() as u64 > max
    {
        out.push(format!(
            "expect.messages: {} messages, wanted at most {max}",
            messages.len()
        ));
    }
    out
}
