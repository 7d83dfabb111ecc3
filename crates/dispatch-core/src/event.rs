//! Events: the append-only record of what happened in a run, and the events an
//! agent writes to `$DISPATCH_EVENTS` (one JSON object per line).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::run_event::EventKind;
use crate::time::Ts;

/// An event to append to a run's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The event type: `state`, `usage`, `step`, `tool_call`, `warning`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub attempt: u32,
    pub at: Ts,
    pub data: Value,
}

impl NewEvent {
    pub fn new(kind: impl Into<String>, attempt: u32, at: Ts, data: Value) -> Self {
        NewEvent {
            kind: kind.into(),
            attempt,
            at,
            data,
        }
    }

    /// The usage this event adds to the run's totals, if it is a usage event.
    pub fn usage(&self) -> Option<Usage> {
        if !self.is(EventKind::Usage) {
            return None;
        }
        let n = |k: &str| self.data.get(k).and_then(Value::as_u64).unwrap_or(0);
        Some(Usage {
            input_tokens: n("input_tokens"),
            output_tokens: n("output_tokens"),
            cost_usd: self
                .data
                .get("cost_usd")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        })
    }
}

/// Tokens and cost, summed per run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
    }
}

/// The event types an agent may write. Anything else is recorded as a warning.
pub const AGENT_EVENT_TYPES: [EventKind; 12] = [
    EventKind::Usage,
    EventKind::Step,
    EventKind::ToolCall,
    EventKind::Checkpoint,
    EventKind::Artifact,
    EventKind::Approval,
    EventKind::Message,
    EventKind::Handoff,
    EventKind::Error,
    EventKind::Output,
    EventKind::Log,
    EventKind::Wait,
];

/// One line the agent wrote to `$DISPATCH_EVENTS`, checked.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentEvent {
    /// A well-formed event of a known type; `data` is the whole object.
    Known { kind: EventKind, data: Value },
    /// A line that is not a JSON object with a known `type`; recorded as a warning.
    Malformed { warning: String },
}

impl AgentEvent {
    /// Parses one line of the events file. Never fails: a bad line becomes a warning.
    pub fn parse(line: &str) -> AgentEvent {
        let shown = shorten(line, 200);
        let value: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                return AgentEvent::Malformed {
                    warning: format!("events line is not JSON ({e}): {shown}"),
                };
            }
        };
        let mut value = value;
        let Some(obj) = value.as_object_mut() else {
            return AgentEvent::Malformed {
                warning: format!("events line is not a JSON object: {shown}"),
            };
        };
        let Some(ty) = obj.get("type").and_then(Value::as_str) else {
            return AgentEvent::Malformed {
                warning: format!("events line has no string `type`: {shown}"),
            };
        };
        let Some(kind) = AGENT_EVENT_TYPES.into_iter().find(|k| k.as_str() == ty) else {
            let known: Vec<&str> = AGENT_EVENT_TYPES.iter().map(|k| k.as_str()).collect();
            return AgentEvent::Malformed {
                warning: format!(
                    "unknown event type `{ty}` (expected one of: {})",
                    known.join(", ")
                ),
            };
        };
        if let Some(problem) = check_fields(kind.as_str(), obj) {
            return AgentEvent::Malformed {
                warning: format!("`{kind}` event {problem}: {shown}"),
            };
        }
        normalize(kind.as_str(), obj);
        AgentEvent::Known { kind, data: value }
    }
}

fn check_fields(kind: &str, obj: &serde_json::Map<String, Value>) -> Option<String> {
    let non_negative_int = |k: &str| match obj.get(k) {
        None => true,
        Some(v) => v.as_u64().is_some(),
    };
    match kind {
        "usage" => {
            for k in ["input_tokens", "output_tokens"] {
                if !non_negative_int(k) {
                    return Some(format!("has a `{k}` that is not a non-negative integer"));
                }
            }
            match obj.get("cost_usd") {
                Some(c) if c.as_f64().is_none_or(|c| c < 0.0 || !c.is_finite()) => {
                    Some("has a `cost_usd` that is not a non-negative number".into())
                }
                _ => None,
            }
        }
        "step" | "tool_call" if obj.get("name").and_then(Value::as_str).is_none() => {
            Some("needs a string `name`".into())
        }
        "approval" if obj.get("id").and_then(Value::as_str).is_none() => {
            Some("needs a string `id`".into())
        }
        "output" if !obj.contains_key("value") => Some("needs a `value`".into()),
        "wait" => check_wait(obj),
        "message" => check_message(obj),
        "handoff" => check_handoff(obj),
        _ => None,
    }
}

/// The kinds of a `message` event (`kind`; `RESULT` when absent).
pub const MESSAGE_KINDS: [&str; 5] = ["TASK", "RESULT", "VALIDATION", "ERROR", "CONTROL"];

/// The longest `idempotency_key` a `handoff` event may carry.
pub const MAX_HANDOFF_KEY: usize = 200;

fn non_empty_str<'a>(obj: &'a serde_json::Map<String, Value>, k: &str) -> Option<&'a str> {
    obj.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A `message` event: `to` a receiver's name, `kind` one of
/// [`MESSAGE_KINDS`] (any case), `payload` any JSON.
fn check_message(obj: &serde_json::Map<String, Value>) -> Option<String> {
    if non_empty_str(obj, "to").is_none() {
        return Some("needs a non-empty string `to` (the receiving agent's name)".into());
    }
    match obj.get("kind") {
        None => None,
        Some(Value::String(k)) if MESSAGE_KINDS.contains(&k.to_ascii_uppercase().as_str()) => None,
        Some(_) => Some(format!(
            "has a `kind` that is not one of {}",
            MESSAGE_KINDS.join(", ")
        )),
    }
}

/// A `handoff` event: `parcel` a built parcel's name or digest (prefix),
/// `payload` any JSON, optional `labels` (strings) and `idempotency_key`.
fn check_handoff(obj: &serde_json::Map<String, Value>) -> Option<String> {
    let Some(parcel) = non_empty_str(obj, "parcel") else {
        return Some("needs a non-empty string `parcel` (a built parcel's name or digest)".into());
    };
    if parcel.contains('/') || parcel.starts_with('.') {
        return Some(format!(
            "names `{parcel}`, a path; a handoff starts a built parcel \
             (hint: `dispatch build` it and give its name or digest)"
        ));
    }
    match obj.get("labels") {
        None => {}
        Some(Value::Array(ls)) if ls.iter().all(|l| l.as_str().is_some_and(|s| !s.is_empty())) => {}
        Some(_) => return Some("has `labels` that are not a list of non-empty strings".into()),
    }
    match obj.get("idempotency_key") {
        None => None,
        Some(Value::String(k)) if !k.is_empty() && k.len() <= MAX_HANDOFF_KEY => None,
        Some(_) => Some(format!(
            "has an `idempotency_key` that is not a string of 1 to {MAX_HANDOFF_KEY} bytes"
        )),
    }
}

/// Fills in what a checked event may leave out: a `message`'s `kind`
/// (`RESULT`, upper-cased when given) and `payload` (`{}`), a `handoff`'s
/// `payload` (`{}`).
fn normalize(kind: &str, obj: &mut serde_json::Map<String, Value>) {
    if matches!(kind, "message" | "handoff") && !obj.contains_key("payload") {
        obj.insert("payload".into(), Value::Object(Default::default()));
    }
    if kind == "message" {
        let k = obj
            .get("kind")
            .and_then(Value::as_str)
            .map_or("RESULT".to_string(), str::to_ascii_uppercase);
        obj.insert("kind".into(), Value::String(k));
    }
}

/// A `wait` event: `for` says what, and each kind needs its own field.
fn check_wait(obj: &serde_json::Map<String, Value>) -> Option<String> {
    let has_str = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let seconds_ok = |k: &str| match obj.get(k) {
        None => true,
        Some(v) => v.as_f64().is_some_and(|s| s >= 0.0 && s.is_finite()),
    };
    if !seconds_ok("timeout_s") {
        return Some("has a `timeout_s` that is not a non-negative number".into());
    }
    match obj.get("for").and_then(Value::as_str) {
        Some("signal") if !has_str("name") => Some("for a signal needs a string `name`".into()),
        Some("approval") if !has_str("id") => Some("for an approval needs a string `id`".into()),
        Some("timer") if obj.get("seconds").is_none() || !seconds_ok("seconds") => {
            Some("for a timer needs a non-negative number `seconds`".into())
        }
        Some("signal" | "approval" | "timer") => None,
        _ => Some("needs `for`: `signal`, `approval` or `timer`".into()),
    }
}

/// The durable wait a `wait` event asks for, as of `now`.
pub fn wait_of(data: &Value, now: crate::Ts) -> Option<crate::Wait> {
    use crate::WaitFor;
    let secs = |k: &str| data.get(k).and_then(Value::as_f64).filter(|s| *s >= 0.0);
    let until = |s: f64| now.saturating_add((s * 1000.0).min(1e15) as i64);
    let (wait_for, name, until) = match data.get("for").and_then(Value::as_str)? {
        "signal" => (
            WaitFor::Signal,
            data.get("name")?.as_str()?,
            secs("timeout_s").map(until),
        ),
        "approval" => (
            WaitFor::Approval,
            data.get("id")?.as_str()?,
            secs("timeout_s").map(until),
        ),
        "timer" => (WaitFor::Timer, "", Some(until(secs("seconds")?))),
        "quota" => (
            WaitFor::Quota,
            data.get("project")?.as_str()?,
            secs("timeout_s").map(until),
        ),
        _ => return None,
    };
    Some(crate::Wait {
        wait_for,
        name: name.to_string(),
        until,
    })
}

/// At most `max` bytes of `s`, cut on a character boundary, with `…` when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_lines_become_usage() {
        let e = AgentEvent::parse(
            r#"{"type":"usage","model":"m","input_tokens":10,"output_tokens":5,"cost_usd":0.5}"#,
        );
        let AgentEvent::Known { kind, data } = e else {
            panic!("a valid usage line is known")
        };
        let ev = NewEvent::new(kind, 1, 0, data);
        let u = ev.usage().expect("usage event");
        assert_eq!(u.total_tokens(), 15);
        assert_eq!(u.cost_usd, 0.5);
    }

    #[test]
    fn bad_lines_are_warnings_not_errors() {
        for line in [
            "not json",
            "[1,2]",
            r#"{"no":"type"}"#,
            r#"{"type":"teleport"}"#,
            r#"{"type":"usage","input_tokens":-4}"#,
            r#"{"type":"step"}"#,
            r#"{"type":"message","kind":"RESULT","payload":{}}"#,
            r#"{"type":"message","to":"","payload":{}}"#,
            r#"{"type":"message","to":"writer","kind":"SHOUT"}"#,
            r#"{"type":"message","to":7}"#,
            r#"{"type":"handoff","payload":{}}"#,
            r#"{"type":"handoff","parcel":"./billing"}"#,
            r#"{"type":"handoff","parcel":"billing","labels":"gpu"}"#,
            r#"{"type":"handoff","parcel":"billing","idempotency_key":""}"#,
        ] {
            assert!(
                matches!(AgentEvent::parse(line), AgentEvent::Malformed { .. }),
                "{line} should be a warning"
            );
        }
    }

    #[test]
    fn messages_and_handoffs_are_normalized() {
        let known = |line: &str| match AgentEvent::parse(line) {
            AgentEvent::Known { data, .. } => data,
            other => panic!("{line} should be known: {other:?}"),
        };
        let m = known(r#"{"type":"message","to":"writer"}"#);
        assert_eq!((&m["kind"], &m["payload"]), (&json!("RESULT"), &json!({})));
        let m = known(r#"{"type":"message","to":"w","kind":"validation","payload":[1]}"#);
        assert_eq!(
            (&m["kind"], &m["payload"]),
            (&json!("VALIDATION"), &json!([1]))
        );
        let h = known(r#"{"type":"handoff","parcel":"billing","labels":["eu"]}"#);
        assert_eq!(h["payload"], json!({}));
        let h = known(
            r#"{"type":"handoff","parcel":"billing","payload":{"a":1},"idempotency_key":"k"}"#,
        );
        assert_eq!(h["payload"], json!({"a": 1}));
    }

    #[test]
    fn shorten_cuts_on_char_boundaries() {
        assert_eq!(shorten("héllo", 2), "h…");
        assert_eq!(shorten("abc", 5), "abc");
    }
}
