//! What the mock answers: a list of steps consumed one per request, then a fallback.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The default reply: a ticket-triage answer as JSON.
pub const DEFAULT_REPLY: &str = r#"{"category":"shipping","reply":"Sorry your order has not arrived yet; we are looking into it and will write within a day."}"#;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Script {
    /// Consumed in order, one per request (both endpoints share them).
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Answers every request once `steps` is exhausted.
    #[serde(default = "default_fallback")]
    pub fallback: Step,
    /// Keep each request's body (off for big benchmarks).
    #[serde(default = "yes")]
    pub record_bodies: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            steps: Vec::new(),
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
        text: DEFAULT_REPLY.into(),
        usage: None,
        delay_ms: 0,
    }
}

fn default_tool() -> String {
    "lookup".into()
}

fn three() -> usize {
    3
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// One tool call in a `tool_calls` step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Call {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
    #[serde(default)]
    pub id: Option<String>,
}

/// One answer. Every kind may wait `delay_ms` before answering.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// Text in `chunks` pieces.
    Text {
        text: String,
        #[serde(default = "three")]
        chunks: usize,
        #[serde(default)]
        first_token_delay_ms: u64,
        #[serde(default)]
        chunk_delay_ms: u64,
        #[serde(default)]
        usage: Option<Usage>,
        #[serde(default)]
        delay_ms: u64,
    },
    /// Tool calls, each call's arguments split into `arg_chunks` pieces.
    ToolCalls {
        calls: Vec<Call>,
        #[serde(default = "three")]
        arg_chunks: usize,
        #[serde(default)]
        usage: Option<Usage>,
        #[serde(default)]
        delay_ms: u64,
    },
    /// An error status with the provider's JSON error body.
    Error {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
        #[serde(default)]
        message: String,
        #[serde(default)]
        delay_ms: u64,
    },
    /// Headers and `text_before`, then nothing until the client leaves.
    Stall {
        #[serde(default)]
        text_before: String,
        #[serde(default)]
        delay_ms: u64,
    },
    /// Some chunks, then the body ends without its terminator.
    Cut {
        #[serde(default)]
        text_before: String,
        #[serde(default)]
        delay_ms: u64,
    },
    /// A 200 event stream whose data is not JSON.
    Garbage {
        #[serde(default)]
        body: String,
        #[serde(default)]
        delay_ms: u64,
    },
    /// Stateless: a tool call while the conversation has fewer than
    /// `tool_rounds` assistant messages, else `text`.
    Rounds {
        #[serde(default)]
        tool_rounds: usize,
        #[serde(default = "default_tool")]
        tool_name: String,
        #[serde(default)]
        text: String,
        #[serde(default)]
        usage: Option<Usage>,
        #[serde(default)]
        delay_ms: u64,
    },
}

impl Step {
    pub fn delay_ms(&self) -> u64 {
        match self {
            Step::Text { delay_ms, .. }
            | Step::ToolCalls { delay_ms, .. }
            | Step::Error { delay_ms, .. }
            | Step::Stall { delay_ms, .. }
            | Step::Cut { delay_ms, .. }
            | Step::Garbage { delay_ms, .. }
            | Step::Rounds { delay_ms, .. } => *delay_ms,
        }
    }

    /// A `rounds` step as the text or tool call it is for this conversation.
    pub(super) fn resolve(&self, assistant_messages: usize) -> Step {
        let Step::Rounds {
            tool_rounds,
            tool_name,
            text,
            usage,
            ..
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
                delay_ms: 0,
            }
        } else {
            Step::Text {
                text: text.clone(),
                chunks: 3,
                first_token_delay_ms: 0,
                chunk_delay_ms: 0,
                usage: *usage,
                delay_ms: 0,
            }
        }
    }
}

/// `text` in `n` pieces (at least one; never splitting a character).
pub(super) fn pieces(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let n = n.clamp(1, chars.len());
    let size = chars.len().div_ceil(n);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}
