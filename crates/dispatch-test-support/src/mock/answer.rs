//! A step as a provider-neutral answer (text pieces, tool calls with their
//! argument pieces, usage, delays and how it ends), which `openai.rs` and
//! `anthropic.rs` each put in their wire format.

use serde_json::Value;

use super::script::{Call, Search, Step, Usage, pieces};

/// What every chunk of one answer repeats.
#[derive(Clone, Copy, Debug)]
pub(super) struct Meta<'a> {
    /// The request's model, echoed.
    pub model: &'a str,
    /// The request's number at this mock (0 for the first): makes ids unique.
    pub seq: usize,
    /// Unix seconds.
    pub created: u64,
}

/// What one answer says, before any wire format.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Answer {
    /// The text, in the pieces it streams in.
    pub text: Vec<String>,
    pub calls: Vec<PlannedCall>,
    pub usage: Usage,
    /// Wait before the first text piece.
    pub first_delay_ms: u64,
    /// Wait before each later text piece and each argument piece.
    pub chunk_delay_ms: u64,
    pub end: End,
    /// Hosted web searches run before the text.
    pub searches: Vec<Search>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct PlannedCall {
    /// From the script; `None`: the format makes a fresh one.
    pub id: Option<String>,
    pub name: String,
    /// The arguments' JSON text, in the pieces it streams in.
    pub arguments: Vec<String>,
}

impl PlannedCall {
    /// The call's id: the script's, else `{prefix}{seq}_{i}` (unique per answer).
    pub fn id(&self, prefix: &str, seq: usize, i: usize) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("{prefix}{seq}_{i}"))
    }
}

/// How the answer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// Complete, with this finish reason.
    Finish(Finish),
    /// Nothing more is sent until the client goes away.
    Stall,
    /// The body ends without its terminator.
    Cut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Finish {
    /// `stop` / `end_turn`.
    Stop,
    /// `tool_calls` / `tool_use`.
    ToolCalls,
    /// `length` / `max_tokens`.
    Length,
    /// Anthropic's `pause_turn` (`stop` / `STOP` / `completed` elsewhere).
    Paused,
}

/// One piece of a streamed body.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Frame {
    pub data: String,
    /// Carries generated text or tool-call content (the first such frame
    /// is "the first token").
    pub content: bool,
    /// Wait before sending it.
    pub delay_ms: u64,
}

impl Frame {
    pub fn new(data: String, content: bool, delay_ms: u64) -> Frame {
        Frame {
            data,
            content,
            delay_ms,
        }
    }
}

/// About four bytes a token, at least one.
pub(super) fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4).max(1)
}

impl Answer {
    /// The answer `step` (already resolved: not `rounds`) gives; `input_tokens`
    /// is the estimate used when the step sets no usage. `error` and
    /// `garbage` are not answers: they give an empty one.
    pub fn plan(step: &Step, input_tokens: u64) -> Answer {
        let usage = |u: &Option<Usage>, out_bytes: usize| {
            u.unwrap_or(Usage {
                input_tokens,
                output_tokens: estimate_tokens(out_bytes),
            })
        };
        let partial = |text: &str, end| Answer {
            text: pieces(text, 3),
            calls: Vec::new(),
            usage: usage(&None, text.len()),
            first_delay_ms: 0,
            chunk_delay_ms: 0,
            end,
            searches: Vec::new(),
        };
        match step {
            Step::Text {
                text,
                chunks,
                first_token_delay_ms,
                chunk_delay_ms,
                usage: u,
                truncated,
                searches,
                paused,
                ..
            } => Answer {
                text: pieces(text, *chunks),
                calls: Vec::new(),
                usage: usage(u, text.len()),
                first_delay_ms: *first_token_delay_ms,
                chunk_delay_ms: *chunk_delay_ms,
                end: End::Finish(match (*truncated, *paused) {
                    (true, _) => Finish::Length,
                    (false, true) => Finish::Paused,
                    (false, false) => Finish::Stop,
                }),
                searches: searches.clone(),
            },
            Step::ToolCalls {
                calls,
                arg_chunks,
                usage: u,
                ..
            } => {
                let calls: Vec<PlannedCall> =
                    calls.iter().map(|c| plan_call(c, *arg_chunks)).collect();
                let bytes = calls
                    .iter()
                    .map(|c| c.name.len() + c.arguments.iter().map(String::len).sum::<usize>())
                    .sum();
                Answer {
                    text: Vec::new(),
                    usage: usage(u, bytes),
                    calls,
                    first_delay_ms: 0,
                    chunk_delay_ms: 0,
                    end: End::Finish(Finish::ToolCalls),
                    searches: Vec::new(),
                }
            }
            Step::Stall { text_before, .. } => partial(text_before, End::Stall),
            Step::Cut { text_before, .. } => partial(text_before, End::Cut),
            Step::Error { .. } | Step::Garbage { .. } | Step::Page { .. } | Step::Rounds { .. } => {
                partial("", End::Finish(Finish::Stop))
            }
        }
    }

    /// The whole text.
    pub fn full_text(&self) -> String {
        self.text.concat()
    }

    /// The delay before text piece `i`.
    pub fn text_delay(&self, i: usize) -> u64 {
        if i == 0 {
            self.first_delay_ms
        } else {
            self.chunk_delay_ms
        }
    }
}

fn plan_call(c: &Call, arg_chunks: usize) -> PlannedCall {
    let json = match &c.arguments {
        Value::Null => "{}".to_string(),
        Value::String(raw) => raw.clone(),
        v => v.to_string(),
    };
    PlannedCall {
        id: c.id.clone(),
        name: c.name.clone(),
        arguments: pieces(&json, arg_chunks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_arguments_are_split_into_pieces_that_rejoin_to_the_json() {
        let step = Step::ToolCalls {
            calls: vec![Call {
                name: "lookup".into(),
                arguments: json!({"order": "12345", "deep": [1, 2]}),
                id: None,
            }],
            arg_chunks: 4,
            usage: None,
            delay_ms: 0,
        };
        let a = Answer::plan(&step, 7);
        assert_eq!(a.calls[0].arguments.len(), 4);
        let joined: serde_json::Value =
            serde_json::from_str(&a.calls[0].arguments.concat()).expect("json");
        assert_eq!(joined, json!({"order": "12345", "deep": [1, 2]}));
        assert_eq!(a.usage.input_tokens, 7);
        assert_eq!(a.end, End::Finish(Finish::ToolCalls));
        assert_eq!(a.calls[0].id("call_", 3, 0), "call_3_0");
    }

    #[test]
    fn a_truncated_text_finishes_for_length() {
        let mut step = Step::text("abc");
        if let Step::Text { truncated, .. } = &mut step {
            *truncated = true;
        }
        assert_eq!(Answer::plan(&step, 1).end, End::Finish(Finish::Length));
    }
}
