//! Cassettes: model calls recorded at the [`Provider`] interface and served
//! again without a network, for deterministic, free evals.
//!
//! A cassette is a directory of `<key>.json` files, one per distinct request,
//! each `{"key", "request", "response"}` (a [`ModelRequest`] and the
//! [`ModelResponse`] it got). The key is the SHA-256 of the request's
//! canonical JSON ([`request_key`]): the model name, the system prompt, the
//! messages (role, content, tool calls, tool results), the tools (name,
//! description, parameter schema) and `max_output_tokens`; object keys
//! sorted, no whitespace, and each tool call's arguments (JSON text the
//! model wrote) parsed and written canonically when they are JSON. No URL,
//! key, header or provider is part of it: a cassette recorded against one
//! endpoint replays for any other serving the same model name.
//!
//! The mode comes from [`CASSETTE_ENV`] (`record:<dir>` or `replay:<dir>`),
//! which `dispatch eval --record/--replay` sets for the runs it starts.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::provider::{
    Delta, Exchange, Flow, ModelRequest, ModelResponse, Provider, ProviderError, ProviderKind,
};

/// `record:<dir>` or `replay:<dir>`.
pub const CASSETTE_ENV: &str = "DISPATCH_CASSETTE";

/// What [`CASSETTE_ENV`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Record(PathBuf),
    Replay(PathBuf),
}

impl Mode {
    /// The mode of this process, if any.
    pub fn from_env() -> Option<Mode> {
        let v = std::env::var(CASSETTE_ENV).ok()?;
        match v.split_once(':')? {
            ("record", dir) if !dir.is_empty() => Some(Mode::Record(dir.into())),
            ("replay", dir) if !dir.is_empty() => Some(Mode::Replay(dir.into())),
            _ => None,
        }
    }

    /// The value of [`CASSETTE_ENV`] for this mode.
    pub fn env_value(&self) -> String {
        match self {
            Mode::Record(d) => format!("record:{}", d.display()),
            Mode::Replay(d) => format!("replay:{}", d.display()),
        }
    }
}

/// Wraps `live` as the cassette mode says: recorded, replaced by the
/// cassette, or as it is.
pub fn wrap(live: Box<dyn Provider>, mode: Option<Mode>) -> Box<dyn Provider> {
    match mode {
        None => live,
        Some(Mode::Record(dir)) => Box::new(Recording { live, dir }),
        Some(Mode::Replay(dir)) => Box::new(Replaying {
            kind: live.kind(),
            dir,
        }),
    }
}

/// A provider answering from the cassette in `dir` as a `kind` provider
/// would (what [`wrap`] gives in replay mode).
pub fn replaying(dir: PathBuf, kind: ProviderKind) -> Box<dyn Provider> {
    Box::new(Replaying { kind, dir })
}

/// A cassette entry: `{key, request, response}`.
pub fn entry(req: &ModelRequest<'_>, response: &ModelResponse) -> Value {
    let request = canonical_request(req);
    json!({"key": key_of(&request), "request": request, "response": response})
}

/// The request's canonical JSON (see the module docs).
pub fn canonical_request(req: &ModelRequest<'_>) -> Value {
    let mut v = serde_json::to_value(req).unwrap_or(Value::Null);
    if let Some(messages) = v.get_mut("messages").and_then(Value::as_array_mut) {
        for m in messages {
            let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) else {
                continue;
            };
            for c in calls {
                let Some(text) = c.get("arguments").and_then(Value::as_str) else {
                    continue;
                };
                if let Ok(parsed) = serde_json::from_str::<Value>(text) {
                    c["arguments"] = Value::String(canonical_text(&parsed));
                }
            }
        }
    }
    sorted(v)
}

/// The cassette key of a request: hex SHA-256 of its canonical JSON.
pub fn request_key(req: &ModelRequest<'_>) -> String {
    key_of(&canonical_request(req))
}

/// The key of a canonical request.
fn key_of(canonical: &Value) -> String {
    hex::encode(Sha256::digest(canonical_text(canonical).as_bytes()))
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut pairs: Vec<(String, Value)> = m.into_iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(pairs.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Compact JSON with object keys in sorted order, whatever serde_json's
/// map keeps.
pub(crate) fn canonical_text(v: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    // serde_json writes UTF-8, and the rest is ASCII.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// [`canonical_text`] of `v`, appended to `out` (one buffer for the whole
/// value: a request holds the conversation so far).
fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(&k.as_str(), out);
                out.push(b':');
                write_canonical(&m[k.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => write_json(other, out),
    }
}

/// `v`'s compact JSON (as `Value`'s `Display` writes it), appended to `out`.
fn write_json(v: &impl serde::Serialize, out: &mut Vec<u8>) {
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Records every successful call of the live provider into the cassette.
struct Recording {
    live: Box<dyn Provider>,
    dir: PathBuf,
}

#[async_trait::async_trait]
impl Provider for Recording {
    fn kind(&self) -> ProviderKind {
        self.live.kind()
    }

    async fn stream(
        &self,
        req: &ModelRequest,
        on_delta: &mut (dyn for<'d> FnMut(Delta<'d>) -> Flow + Send),
        exchange: &mut Exchange,
    ) -> Result<ModelResponse, ProviderError> {
        let response = self.live.stream(req, on_delta, exchange).await?;
        let key = request_key(req);
        if let Err(e) = write_entry(&self.dir, &key, &entry(req, &response)) {
            return Err(ProviderError::Protocol(format!(
                "cannot record the call into cassette {}: {e}",
                self.dir.display()
            )));
        }
        Ok(response)
    }
}

/// Writes one entry into the cassette `dir` (atomically).
pub fn write_entry(dir: &Path, key: &str, entry: &Value) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{key}.json"));
    let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
    let text = serde_json::to_string_pretty(entry).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, &path)
}

/// Serves calls from the cassette; never touches the network.
struct Replaying {
    kind: ProviderKind,
    dir: PathBuf,
}

#[async_trait::async_trait]
impl Provider for Replaying {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    async fn stream(
        &self,
        req: &ModelRequest,
        on_delta: &mut (dyn for<'d> FnMut(Delta<'d>) -> Flow + Send),
        exchange: &mut Exchange,
    ) -> Result<ModelResponse, ProviderError> {
        let key = request_key(req);
        let path = self.dir.join(format!("{key}.json"));
        exchange.url = format!("cassette:{}", path.display());
        let canonical = canonical_request(req);
        exchange.request_body = crate::sse::encode(&canonical);
        let response = lookup(&path)
            .ok_or_else(|| ProviderError::Refused {
                status: 404,
                message: missing(&self.dir, &key, &canonical),
            })?
            .map_err(|e| {
                ProviderError::Protocol(format!("cassette entry {}: {e}", path.display()))
            })?;
        exchange.status = 200;
        exchange.response_body = serde_json::to_string(&response).unwrap_or_default();
        if !response.text.is_empty() {
            exchange.first_token_ms = Some(0);
            if on_delta(Delta::Text(&response.text)) == Flow::Abort {
                return Err(ProviderError::Aborted);
            }
        }
        for call in &response.tool_calls {
            exchange.first_token_ms.get_or_insert(0);
            if on_delta(Delta::ToolArguments(&call.arguments)) == Flow::Abort {
                return Err(ProviderError::Aborted);
            }
        }
        Ok(response)
    }
}

/// The recorded response at `path`: `None` when there is none.
fn lookup(path: &Path) -> Option<Result<ModelResponse, String>> {
    let bytes = std::fs::read(path).ok()?;
    Some(
        serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                serde_json::from_value(v.get("response").cloned().unwrap_or(Value::Null))
                    .map_err(|e| e.to_string())
            }),
    )
}

/// Why a request is not in the cassette, with how it differs from the
/// nearest recorded request.
pub fn missing(dir: &Path, key: &str, request: &Value) -> String {
    let head = format!(
        "replay: request {} is not in cassette {}",
        &key[..12.min(key.len())],
        dir.display()
    );
    let mut now = Vec::new();
    flatten("$", request, &mut now);
    let mut best: Option<(usize, String, Vec<String>)> = None;
    for (name, recorded) in recorded_requests(dir) {
        let mut then = Vec::new();
        flatten("$", &recorded, &mut then);
        let diffs = differences(&then, &now);
        if best.as_ref().is_none_or(|(n, _, _)| diffs.len() < *n) {
            best = Some((diffs.len(), name, diffs));
        }
    }
    match best {
        None => format!(
            "{head}, which holds no recordings (hint: record it first with `dispatch eval --record {}`)",
            dir.display()
        ),
        Some((n, name, diffs)) => {
            let shown: Vec<String> = diffs.into_iter().take(3).collect();
            let more = if n > 3 {
                format!(" (and {} more)", n - 3)
            } else {
                String::new()
            };
            format!(
                "{head}; the nearest recorded request {} differs at {}{more} (hint: record again with --record if the change is intended)",
                &name[..12.min(name.len())],
                shown.join("; ")
            )
        }
    }
}

/// Every recorded request of the cassette, by key.
fn recorded_requests(dir: &Path) -> Vec<(String, Value)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let key = name.strip_suffix(".json")?.to_string();
            if key.starts_with('.') {
                return None;
            }
            let v: Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((key, v.get("request")?.clone()))
        })
        .collect()
}

/// `(path, leaf)` for every leaf of `v`.
fn flatten(path: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                flatten(&format!("{path}.{k}"), x, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), x, out);
            }
        }
        leaf => out.push((path.to_string(), leaf.clone())),
    }
}

fn differences(then: &[(String, Value)], now: &[(String, Value)]) -> Vec<String> {
    let then_map: Map<String, Value> = then.iter().cloned().collect();
    let now_map: Map<String, Value> = now.iter().cloned().collect();
    let mut out = Vec::new();
    for (p, v) in now {
        match then_map.get(p) {
            Some(t) if t == v => {}
            Some(t) => out.push(format!("{p}: {}", changed(t, v))),
            None => out.push(format!("{p}: not recorded, now {}", short(v))),
        }
    }
    for (p, t) in then {
        if !now_map.contains_key(p) {
            out.push(format!("{p}: recorded {}, now absent", short(t)));
        }
    }
    out
}

/// How a recorded leaf differs from the new one: both whole when short;
/// two long texts as where they first differ, with both around that place
/// (their common start would hide the difference).
fn changed(then: &Value, now: &Value) -> String {
    match (then, now) {
        (Value::String(t), Value::String(n))
            if t.chars().count() > SHORT || n.chars().count() > SHORT =>
        {
            let at = t.chars().zip(n.chars()).take_while(|(a, b)| a == b).count();
            format!(
                "the texts first differ at character {}: recorded {}, now {}",
                at + 1,
                around(t, at),
                around(n, at)
            )
        }
        _ => format!("recorded {}, now {}", short(then), short(now)),
    }
}

/// The longest leaf shown whole.
const SHORT: usize = 80;
/// Characters shown either side of the first difference.
const AROUND: usize = 40;

/// `text` from [`AROUND`] characters before character `at` to as many
/// after, JSON-quoted (one line), `…` where it is cut.
fn around(text: &str, at: usize) -> String {
    let len = text.chars().count();
    let start = at.saturating_sub(AROUND);
    let end = (at + AROUND).min(len);
    let window: String = text.chars().skip(start).take(end - start).collect();
    format!(
        "{}{}{}",
        if start > 0 { "…" } else { "" },
        Value::String(window),
        if end < len { "…" } else { "" }
    )
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() <= SHORT {
        return s;
    }
    let cut: String = s.chars().take(77).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Message, ToolCall};

    fn req(text: &str, args: &str) -> ModelRequest<'static> {
        ModelRequest {
            model: "m".into(),
            system: "be brief".into(),
            messages: std::borrow::Cow::Owned(vec![
                Message::user(text),
                Message::assistant(
                    "",
                    vec![ToolCall {
                        id: "c1".into(),
                        name: "t".into(),
                        arguments: args.into(),
                        signature: None,
                    }],
                ),
            ]),
            tools: Vec::new().into(),
            max_output_tokens: None,
            reasoning: None,
            web_search: false,
        }
    }

    #[test]
    fn the_key_ignores_how_tool_arguments_are_spaced_but_not_what_they_say() {
        let a = request_key(&req("hi", r#"{"b": 1, "a": 2}"#));
        assert_eq!(a, request_key(&req("hi", r#"{"a":2,"b":1}"#)));
        assert_ne!(a, request_key(&req("hi", r#"{"a":3,"b":1}"#)));
        assert_ne!(a, request_key(&req("hello", r#"{"a":2,"b":1}"#)));
    }

    /// The text keys were made from since cassettes exist (recorded keys
    /// stay valid): compact, keys sorted at every depth, strings escaped
    /// as JSON, numbers as serde_json writes them, UTF-8 kept.
    #[test]
    fn the_canonical_text_is_the_one_recorded_keys_were_made_from() {
        let v =
            json!({"b": [1, {"d": "x\"y\n", "c": null}], "a": 1.5, "é\"": [true, -2, "ü"], "": {}});
        assert_eq!(
            canonical_text(&v),
            r#"{"":{},"a":1.5,"b":[1,{"c":null,"d":"x\"y\n"}],"é\"":[true,-2,"ü"]}"#
        );
    }

    #[test]
    fn two_long_texts_show_where_they_first_differ() {
        let then = format!("{}Answer briefly.", "x".repeat(200));
        let now = format!("{}Answer politely.", "x".repeat(200));
        let said = changed(&json!(then), &json!(now));
        assert!(
            said.starts_with("the texts first differ at character 208: recorded …"),
            "{said}"
        );
        assert!(said.contains(r#"xxxAnswer briefly.", now …"#), "{said}");
        assert!(said.ends_with(r#"xxxAnswer politely.""#), "{said}");
        // A text that only grew differs where the shorter one ends.
        let said = changed(
            &json!("y".repeat(100)),
            &json!(format!("{}z", "y".repeat(100))),
        );
        assert!(said.contains("at character 101"), "{said}");
        assert!(said.ends_with(r#"yyyz""#), "{said}");
    }

    #[test]
    fn a_missing_request_names_the_nearest_and_what_differs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recorded = req("classify: refund", "{}");
        let key = request_key(&recorded);
        let entry = json!({"key": key, "request": canonical_request(&recorded), "response": {}});
        write_entry(dir.path(), &key, &entry).expect("write");
        let now = req("classify: a refund", "{}");
        let msg = missing(dir.path(), &request_key(&now), &canonical_request(&now));
        assert!(msg.contains(&key[..12]), "{msg}");
        assert!(
            msg.contains(
                r#"$.messages[0].content: recorded "classify: refund", now "classify: a refund""#
            ),
            "{msg}"
        );
    }
}
