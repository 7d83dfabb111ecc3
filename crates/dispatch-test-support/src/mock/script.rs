//! What the mock answers: a list of steps consumed one per request (both
//! endpoints share it), then a fallback step for every request after.
//!
//! A script is plain JSON, so `dispatch-bench mock-llm --script FILE` can load one:
//!
//! ```json
//! {
//!   "steps": [
//!     {"kind": "tool_calls", "calls": [{"name": "lookup", "arguments": {"order": "12345"}}]},
//!     {"kind": "text", "text": "It ships tomorrow.", "chunks": 4, "delay_ms": 200}
//!   ],
//!   "fallback": {"kind": "rounds", "tool_rounds": 2, "text": "done"},
//!   "record_bodies": false
//! }
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The default reply: a ticket-triage answer as JSON (what `examples/triage` expects).
pub const DEFAULT_REPLY: &str = r#"{"category":"shipping","reply":"Sorry your order has not arrived; we are looking into it."}"#;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Consumed in order, one per request.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Answers every request once `steps` is exhausted (default: the
    /// [`DEFAULT_REPLY`] text, no tool rounds).
    #[serde(default = "default_fallback")]
    pub fallback: Step,
    /// Keep each request's body in [`super::Received`] (off for big benchmarks).
    #[serde(default = "yes")]
    pub record_bodies: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script::with_steps(Vec::new())
    }
}

impl Script {
    /// `steps`, then the default fallback; bodies recorded.
    pub fn with_steps(steps: Vec<Step>) -> Script {
        Script {
            steps,
            fallback: default_fallback(),
            record_bodies: true,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_fallback() -> Step {
    Step::Rounds {
        tool_rounds: 0,
        tool_name: default_tool(),
        text: default_reply(),
        usage: None,
        delay_ms: 0,
        answer_delay_ms: None,
    }
}

fn default_reply() -> String {
    DEFAULT_REPLY.into()
}

fn default_garbage() -> String {
    "<html><body><h1>502 Bad Gateway</h1></body></html>".into()
}

fn default_page_type() -> String {
    "text/html; charset=utf-8".into()
}

fn default_page() -> String {
    "<!DOCTYPE html><html><head><title>Sign in to Guest Wi-Fi</title></head><body>Accept the terms to continue.</body></html>".into()
}

fn default_tool() -> String {
    "lookup".into()
}

fn three() -> usize {
    3
}

/// Token counts to report; without one the mock derives them from lengths
/// (about four bytes a token).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// One tool call in a `tool_calls` step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub name: String,
    /// Sent as its JSON text (`{}` when absent); a JSON string is sent as
    /// it is, so a script can send arguments that are not valid JSON.
    #[serde(default)]
    pub arguments: Value,
    /// The call's id (default: a fresh one per answer).
    #[serde(default)]
    pub id: Option<String>,
}

/// A web search the provider runs before its text (`TOOL BUILTIN
/// web_search`): each wire format reports it as that API does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    pub query: String,
    /// The pages found: `{"url": …, "title": …}`.
    #[serde(default)]
    pub results: Vec<Page>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    pub url: String,
    #[serde(default)]
    pub title: String,
}

/// One answer. Every kind may wait `delay_ms` before answering (a slow model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Text in `chunks` pieces.
    Text {
        text: String,
        #[serde(default = "three")]
        chunks: usize,
        /// Wait before the first piece (after the stream's first event).
        #[serde(default)]
        first_token_delay_ms: u64,
        /// Wait before each later piece.
        #[serde(default)]
        chunk_delay_ms: u64,
        #[serde(default)]
        usage: Option<Usage>,
        /// The output limit cut the answer: `length` / `max_tokens` instead
        /// of `stop` / `end_turn`.
        #[serde(default)]
        truncated: bool,
        /// Hosted web searches run before the text; the request must offer
        /// the provider's web search tool (else a 400, as without the tool
        /// the real API could not have searched).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        searches: Vec<Search>,
        /// Anthropic only: the API paused the turn (`stop_reason:
        /// pause_turn`, as it does when hosted tools run long); the next
        /// request must send the turn's content back to continue it. The
        /// other formats end such an answer as they end any text.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        paused: bool,
        #[serde(default)]
        delay_ms: u64,
    },
    /// Tool calls, each call's arguments JSON text split into `arg_chunks` pieces.
    ToolCalls {
        calls: Vec<Call>,
        #[serde(default = "three")]
        arg_chunks: usize,
        #[serde(default)]
        usage: Option<Usage>,
        #[serde(default)]
        delay_ms: u64,
    },
    /// An error status with the provider's JSON error body (and
    /// `Retry-After: <retry_after>` when given); `{api_key}` in `message`
    /// becomes the key the request carried, as a provider quotes a bad key.
    Error {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
        #[serde(default)]
        message: String,
        #[serde(default)]
        delay_ms: u64,
    },
    /// Headers and `text_before`, then nothing until the client goes away.
    Stall {
        #[serde(default)]
        text_before: String,
        #[serde(default)]
        delay_ms: u64,
    },
    /// Headers and `text_before`, then the body ends without its terminator
    /// (no finish chunk and `[DONE]`, no `message_stop`).
    Cut {
        #[serde(default)]
        text_before: String,
        #[serde(default)]
        delay_ms: u64,
    },
    /// A 200 `text/event-stream` whose data lines (one per line of `body`;
    /// default: a proxy's HTML error page) are not JSON.
    Garbage {
        #[serde(default = "default_garbage")]
        body: String,
        #[serde(default)]
        delay_ms: u64,
    },
    /// A 200 that is not a stream at all: `body` with `content_type`
    /// (default: a captive portal's login page as `text/html`), as a wrong
    /// BASE_URL or a proxy answers.
    Page {
        #[serde(default = "default_page_type")]
        content_type: String,
        #[serde(default = "default_page")]
        body: String,
        #[serde(default)]
        delay_ms: u64,
    },
    /// Stateless, for many concurrent runs on one step: one call of
    /// `tool_name` while the request's conversation holds fewer than
    /// `tool_rounds` assistant messages, else `text`.
    Rounds {
        #[serde(default)]
        tool_rounds: usize,
        #[serde(default = "default_tool")]
        tool_name: String,
        #[serde(default = "default_reply")]
        text: String,
        #[serde(default)]
        usage: Option<Usage>,
        #[serde(default)]
        delay_ms: u64,
        /// The wait before the final `text` instead of `delay_ms` (the tool
        /// rounds keep `delay_ms`): a long one holds every run on its last
        /// call, its whole conversation in flight (`dispatch-bench native
        /// --only memory`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer_delay_ms: Option<u64>,
    },
}

impl Step {
    /// A text step with the defaults (three pieces, no delays).
    pub fn text(text: impl Into<String>) -> Step {
        Step::Text {
            text: text.into(),
            chunks: 3,
            first_token_delay_ms: 0,
            chunk_delay_ms: 0,
            usage: None,
            truncated: false,
            searches: Vec::new(),
            paused: false,
            delay_ms: 0,
        }
    }

    /// How long to wait before answering.
    pub fn delay_ms(&self) -> u64 {
        match self {
            Step::Text { delay_ms, .. }
            | Step::ToolCalls { delay_ms, .. }
            | Step::Error { delay_ms, .. }
            | Step::Stall { delay_ms, .. }
            | Step::Cut { delay_ms, .. }
            | Step::Garbage { delay_ms, .. }
            | Step::Page { delay_ms, .. }
            | Step::Rounds { delay_ms, .. } => *delay_ms,
        }
    }

    /// A `rounds` step as the text or tool call it is for a conversation
    /// holding `assistant_messages`; any other step as it is.
    pub(super) fn resolve(&self, assistant_messages: usize) -> Step {
        let Step::Rounds {
            tool_rounds,
            tool_name,
            text,
            usage,
            delay_ms,
            answer_delay_ms,
        } = self
        else {
            return self.clone();
        };
        if assistant_messages < *tool_rounds {
            Step::ToolCalls {
                calls: vec![Call {
                    name: tool_name.clone(),
                    arguments: serde_json::json!({"round": assistant_messages + 1}),
                    id: None,
                }],
                arg_chunks: 2,
                usage: *usage,
                delay_ms: *delay_ms,
            }
        } else {
            Step::Text {
                text: text.clone(),
                chunks: 3,
                first_token_delay_ms: 0,
                chunk_delay_ms: 0,
                usage: *usage,
                truncated: false,
                searches: Vec::new(),
                paused: false,
                delay_ms: answer_delay_ms.unwrap_or(*delay_ms),
            }
        }
    }
}

/// `text` in `n` pieces of about equal length (fewer when it is shorter;
/// none when empty; never splitting a character).
pub(super) fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let n = n.clamp(1, chars.len());
    let size = chars.len().div_ceil(n);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_rejoin_to_the_text_without_splitting_characters() {
        assert_eq!(pieces("héllo ☃!", 3).concat(), "héllo ☃!");
        assert_eq!(pieces("héllo ☃!", 3).len(), 3);
        assert_eq!(pieces("ab", 5), vec!["a", "b"]);
        assert!(pieces("", 3).is_empty());
        assert_eq!(pieces("abc", 0), vec!["abc"]);
    }

    #[test]
    fn a_script_file_names_kinds_and_rejects_misspelt_fields() {
        let s: Script = serde_json::from_str(
            r#"{"steps": [{"kind": "text", "text": "hi"}, {"kind": "error", "status": 429, "retry_after": 2}]}"#,
        )
        .expect("a valid script");
        assert_eq!(s.steps[0], Step::text("hi"));
        assert!(s.record_bodies);
        assert!(
            matches!(s.fallback, Step::Rounds { tool_rounds: 0, ref text, .. } if text == DEFAULT_REPLY)
        );
        let typo = serde_json::from_str::<Script>(r#"{"steps": [{"kind": "text", "txt": "hi"}]}"#);
        assert!(typo.is_err());
        let kind = serde_json::from_str::<Script>(r#"{"steps": [{"kind": "tekst"}]}"#);
        assert!(kind.is_err());
    }

    #[test]
    fn rounds_call_a_tool_until_the_conversation_holds_enough_rounds() {
        let r: Step =
            serde_json::from_str(r#"{"kind": "rounds", "tool_rounds": 2, "delay_ms": 5}"#)
                .expect("a rounds step");
        assert!(
            matches!(r.resolve(0), Step::ToolCalls { ref calls, delay_ms: 5, .. } if calls[0].name == "lookup")
        );
        assert!(matches!(r.resolve(1), Step::ToolCalls { .. }));
        assert!(
            matches!(r.resolve(2), Step::Text { ref text, delay_ms: 5, .. } if text == DEFAULT_REPLY)
        );
    }

    #[test]
    fn a_rounds_step_may_hold_its_answer_longer_than_its_tool_rounds() {
        let step: Step = serde_json::from_value(serde_json::json!({
            "kind": "rounds", "tool_rounds": 2, "delay_ms": 5, "answer_delay_ms": 60000
        }))
        .expect("a valid step");
        assert!(matches!(
            step.resolve(0),
            Step::ToolCalls { delay_ms: 5, .. }
        ));
        assert!(matches!(
            step.resolve(1),
            Step::ToolCalls { delay_ms: 5, .. }
        ));
        assert_eq!(step.resolve(2).delay_ms(), 60000);
        // Without it, the answer waits as long as the tool rounds.
        assert_eq!(default_fallback().resolve(0).delay_ms(), 0);
    }
}
