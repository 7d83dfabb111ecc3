//! Masking secret values in what the runtime stores or prints (a run's
//! reason, log, output, events, model calls, tool output).
//!
//! What is masked: each secret's exact value, and its JSON-escaped form
//! (a value with a quote, backslash or control character is written so
//! inside JSON text), each replaced by [`MASK`]. Longer values are masked
//! first, so a secret that contains another is masked whole. Nothing less
//! than a whole value is: a prefix or a provider's own abbreviation of a
//! key (`sk-…abcd`) stays as it is.

use serde_json::Value;

/// What a secret value becomes.
pub const MASK: &str = "****";

/// `text` with every secret value (and its JSON-escaped form) replaced by [`MASK`].
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut forms: Vec<String> = Vec::new();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        forms.push(s.clone());
        let escaped = escaped(s);
        if escaped != *s {
            forms.push(escaped);
        }
    }
    if forms.is_empty() {
        return text.to_string();
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    let mut out = text.to_string();
    for f in &forms {
        if out.contains(f.as_str()) {
            out = out.replace(f.as_str(), MASK);
        }
    }
    out
}

/// Whether `text` holds a secret value (or its JSON-escaped form).
pub fn contains(text: &str, secrets: &[String]) -> bool {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .any(|s| text.contains(s.as_str()) || text.contains(escaped(s).as_str()))
}

/// `value` with every secret masked in its strings and object keys (still
/// the same JSON shape).
pub fn mask_value(value: Value, secrets: &[String]) -> Value {
    if secrets.iter().all(String::is_empty) {
        return value;
    }
    match value {
        Value::String(s) => Value::String(mask(&s, secrets)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| mask_value(v, secrets)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (mask(&k, secrets), mask_value(v, secrets)))
                .collect(),
        ),
        other => other,
    }
}

/// `s` as it appears inside a JSON string (without the quotes).
fn escaped(s: &str) -> String {
    let quoted = Value::String(s.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_values_are_masked_and_prefixes_are_not() {
        let s = secrets(&["sk-live-123456", ""]);
        assert_eq!(
            mask("key sk-live-123456 and sk-live-1 again", &s),
            "key **** and sk-live-1 again"
        );
        assert_eq!(mask("nothing", &[]), "nothing");
    }

    #[test]
    fn the_longer_secret_is_masked_whole() {
        let s = secrets(&["abc", "abcdef"]);
        assert_eq!(mask("x abcdef y abc", &s), "x **** y ****");
    }

    #[test]
    fn json_escaped_forms_are_masked_too() {
        let s = secrets(&["p\"w\\d"]);
        let text = json!({"said": "the key is p\"w\\d"}).to_string();
        assert!(contains(&text, &s), "{text}");
        let masked = mask(&text, &s);
        assert!(!contains(&masked, &s), "{masked}");
        assert_eq!(masked, r#"{"said":"the key is ****"}"#);
    }

    #[test]
    fn values_keep_their_shape() {
        let s = secrets(&["hunter2"]);
        let v = json!({"a": ["hunter2!", 1, null], "hunter2": {"b": "x hunter2"}});
        assert_eq!(
            mask_value(v, &s),
            json!({"a": ["****!", 1, null], "****": {"b": "x ****"}})
        );
    }
}
