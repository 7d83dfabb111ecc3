//! Concurrency keys and model rate limits, as an Agentfile declares them.
//!
//! `CONCURRENCY KEY <payload.path | label.NAME> MAX n [STRATEGY s]`: at most
//! `n` live runs (`starting`, `running`, `paused`) per value of the key, the
//! others wait queued in order. The value is taken from the run's payload
//! (or a label) when the run is dispatched; a payload without the path is
//! refused (see [`key_value`]).
//!
//! `RATE_LIMIT MODEL <name> | PROVIDER <name> REQUESTS n/<window> TOKENS n/<window>`:
//! every model call of the matching model (or provider) is admitted only
//! while fewer than `n` requests (and tokens) were admitted in the last
//! window, cluster-wide; a call that must wait, waits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a run whose key is taken does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Waits queued, in order, for a slot (the default).
    #[default]
    Queue,
    /// Cancels the oldest live or queued runs of its key to make room.
    CancelInProgress,
    /// Is cancelled at once when its key has no slot free.
    Drop,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Queue => "queue",
            Strategy::CancelInProgress => "cancel-in-progress",
            Strategy::Drop => "drop",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "queue" => Ok(Strategy::Queue),
            "cancel-in-progress" | "cancel_in_progress" => Ok(Strategy::CancelInProgress),
            "drop" => Ok(Strategy::Drop),
            _ => Err(format!(
                "unknown concurrency strategy `{s}` (hint: use queue, cancel-in-progress or drop)"
            )),
        }
    }
}

/// `CONCURRENCY KEY … MAX n [STRATEGY s]` of an Agentfile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencySpec {
    /// Where the key's value comes from: `payload.<path>` or `label.<NAME>`.
    pub key: String,
    pub max: u32,
    #[serde(default)]
    pub strategy: Strategy,
}

/// A run's concurrency key as dispatched: the value, the limit and the strategy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConcurrency {
    /// `<parcel name>/<value>`: keys are per parcel.
    pub key: String,
    pub max: u32,
    #[serde(default)]
    pub strategy: Strategy,
}

/// Checks a key source: `payload` or `payload.a.b` (object fields or array
/// indexes), or `label.NAME`.
pub fn check_key_source(source: &str) -> Result<(), String> {
    let hint = "(hint: `CONCURRENCY KEY payload.customer_id MAX 2`, or `label.team`)";
    if source == "payload" {
        return Ok(());
    }
    let bad = |why: &str| Err(format!("invalid concurrency key `{source}`: {why} {hint}"));
    if let Some(path) = source.strip_prefix("payload.") {
        if path.split('.').any(str::is_empty) {
            return bad("an empty field name");
        }
        return Ok(());
    }
    if let Some(name) = source.strip_prefix("label.") {
        if name.is_empty() || name.contains('.') {
            return bad("a label name is one word");
        }
        return Ok(());
    }
    bad("it must start with `payload.` or `label.`")
}

/// The value of `source` for a run: a string as it is, anything else as
/// compact JSON. A payload without the path is an error (not a `null` key:
/// runs missing the field would all share one slot without anyone asking).
pub fn key_value(
    source: &str,
    payload: &Value,
    labels: &BTreeMap<String, String>,
) -> Result<String, String> {
    check_key_source(source)?;
    if let Some(name) = source.strip_prefix("label.") {
        return labels.get(name).cloned().ok_or_else(|| {
            format!(
                "the run has no label `{name}` for its CONCURRENCY KEY {source} (hint: add `LABEL {name}=…` or pass --concurrency-key)"
            )
        });
    }
    let mut at = payload;
    if let Some(path) = source.strip_prefix("payload.") {
        for part in path.split('.') {
            let next = match at {
                Value::Object(m) => m.get(part),
                Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            at = next.filter(|v| !v.is_null()).ok_or_else(|| {
                format!(
                    "the payload has no `{path}` for the parcel's CONCURRENCY KEY {source} (hint: add it to the payload, or pass --concurrency-key VALUE)"
                )
            })?;
        }
    }
    Ok(match at {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// A limit over a window: `500/min`, `10/10s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub limit: u64,
    pub window_ms: u64,
}

impl Rate {
    /// Parses `n/min`, `n/s`, `n/h`, or `n/<duration>` (`10/10s`).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad = || {
            format!(
                "invalid rate `{text}` (hint: a count per window, e.g. `500/min`, `10/s` or `100/10s`)"
            )
        };
        let (n, window) = text.split_once('/').ok_or_else(bad)?;
        let limit: u64 = n.replace('_', "").parse().map_err(|_| bad())?;
        let window_ms = match window.to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => 1_000,
            "m" | "min" | "minute" => 60_000,
            "h" | "hour" => 3_600_000,
            w => crate::units::parse_duration_ms_or_seconds(w).map_err(|_| bad())?,
        };
        if limit == 0 || window_ms == 0 {
            return Err(format!(
                "rate `{text}` admits nothing (hint: a count and a window above zero)"
            ));
        }
        Ok(Rate { limit, window_ms })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.window_ms {
            60_000 => write!(f, "{}/min", self.limit),
            1_000 => write!(f, "{}/s", self.limit),
            3_600_000 => write!(f, "{}/h", self.limit),
            ms => write!(f, "{}/{}ms", self.limit, ms),
        }
    }
}

/// What a RATE_LIMIT line applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateScope {
    Model,
    Provider,
}

/// `RATE_LIMIT MODEL <name> REQUESTS n/min TOKENS n/min`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub scope: RateScope,
    /// The model (as named by MODEL/FALLBACK) or the provider (`openai`, `anthropic`).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Rate>,
}

impl RateScope {
    pub fn as_str(self) -> &'static str {
        match self {
            RateScope::Model => "MODEL",
            RateScope::Provider => "PROVIDER",
        }
    }
}

impl RateLimit {
    /// The bucket name shared by every run and worker: `model:<name>` or `provider:<name>`.
    pub fn bucket(&self) -> String {
        match self.scope {
            RateScope::Model => format!("model:{}", self.name),
            RateScope::Provider => format!("provider:{}", self.name),
        }
    }

    /// Whether a call to `model` of `provider` counts against this limit.
    /// `PROVIDER openai` covers both OpenAI wire formats (`openai`, the
    /// Responses API, and `openai_chat`): one company, one quota.
    pub fn applies(&self, model: &str, provider: &str) -> bool {
        match self.scope {
            RateScope::Model => self.name == model,
            RateScope::Provider => {
                self.name.eq_ignore_ascii_case(provider)
                    || crate::agent::ProviderKind::parse(provider)
                        .is_some_and(|k| self.name.eq_ignore_ascii_case(k.vendor()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_values_come_from_the_payload_or_a_label() {
        let labels = BTreeMap::from([("team".to_string(), "red".to_string())]);
        let p = json!({"customer": {"id": "acme"}, "n": 7, "list": [1, 2]});
        assert_eq!(
            key_value("payload.customer.id", &p, &labels).expect("as the test says"),
            "acme"
        );
        assert_eq!(
            key_value("payload.n", &p, &labels).expect("as the test says"),
            "7"
        );
        assert_eq!(
            key_value("payload.list.1", &p, &labels).expect("as the test says"),
            "2"
        );
        assert_eq!(
            key_value("label.team", &p, &labels).expect("as the test says"),
            "red"
        );
        let err = key_value("payload.customer.name", &p, &labels).expect_err("refused");
        assert!(err.contains("no `customer.name`"), "{err}");
        assert!(key_value("label.zone", &p, &labels).is_err());
        assert!(check_key_source("customer_id").is_err());
        assert!(check_key_source("payload..x").is_err());
    }

    #[test]
    fn a_provider_limit_on_openai_covers_both_openai_wire_formats() {
        let limit = RateLimit {
            scope: RateScope::Provider,
            name: "openai".into(),
            requests: None,
            tokens: None,
        };
        assert!(limit.applies("gpt-4o", "openai"));
        assert!(limit.applies("gpt-4o", "openai_chat"));
        assert!(!limit.applies("claude-haiku-4-5", "anthropic"));
        assert!(!limit.applies("llama3.2", "openai_compatible"));
    }

    #[test]
    fn rates_parse_with_their_window() {
        assert_eq!(
            Rate::parse("500/min").expect("as the test says"),
            Rate {
                limit: 500,
                window_ms: 60_000
            }
        );
        assert_eq!(
            Rate::parse("10/10s").expect("as the test says").window_ms,
            10_000
        );
        assert_eq!(
            Rate::parse("2/s").expect("as the test says").window_ms,
            1_000
        );
        assert!(Rate::parse("0/min").is_err());
        assert!(Rate::parse("ten/min").is_err());
        assert!(Rate::parse("10").is_err());
        assert!(Rate::parse("10/fortnight").is_err());
    }
}
