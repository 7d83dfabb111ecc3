//! An answer cut at its output limit (`finish_reason: length`, Anthropic's
//! `stop_reason: max_tokens`).
//!
//! The decision: such an answer fails the run, not retryable, with a
//! reason that says so, unless the Agentfile says
//! `LIMIT OUTPUT_TOKENS <n> ALLOW_TRUNCATION`. A cut answer is not the
//! answer the agent meant — half a JSON output, a tool call whose
//! arguments end mid-string — and passing it on silently hides the cause
//! from whoever reads the result. The OpenAI and Anthropic SDKs' structured
//! output helpers raise on it for the same reason. Either way the call's
//! `model_call` event says `truncated: true` and a `warning` event is
//! written, so `inspect-run` shows it.

use serde_json::{Value, json};

/// What a cut answer of `model` produces: the `warning` event's data, and
/// the run's failure reason unless truncation is allowed.
pub fn truncated(
    model: &str,
    limit: Option<u64>,
    allow_truncation: bool,
) -> (Value, Option<String>) {
    let at = match limit {
        Some(n) => format!("LIMIT OUTPUT_TOKENS {n}"),
        None => "the provider's output limit".to_string(),
    };
    let message = format!("model {model}'s answer was cut at {at} (finish_reason length)");
    let warning = json!({"message": message, "model": model, "truncated": true});
    let reason = (!allow_truncation).then(|| {
        format!(
            "output_truncated: {message} (hint: raise LIMIT OUTPUT_TOKENS, or write `LIMIT OUTPUT_TOKENS <n> ALLOW_TRUNCATION` to accept cut answers)"
        )
    });
    (warning, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_answer_fails_unless_allowed_and_always_warns() {
        let (warning, reason) = truncated("gpt-4o-mini", Some(64), false);
        assert_eq!(
            warning["message"],
            "model gpt-4o-mini's answer was cut at LIMIT OUTPUT_TOKENS 64 (finish_reason length)"
        );
        let reason = reason.expect("fails by default");
        assert!(reason.starts_with("output_truncated: "), "{reason}");
        assert!(reason.contains("ALLOW_TRUNCATION"), "{reason}");
        let (warning, reason) = truncated("claude-haiku-4-5", None, true);
        assert!(reason.is_none(), "allowed");
        assert!(
            warning["message"]
                .as_str()
                .expect("text")
                .contains("the provider's output limit")
        );
    }
}
