//! The conversation a native agent carries from round to round: what is
//! checkpointed after each round (so a new attempt resumes there) and what a
//! session keeps between runs.
//!
//! Compaction (`LIMIT CONTEXT_TOKENS`): before each call, when the system
//! prompt and messages are estimated (4 characters a token) above the limit,
//! the oldest exchanges are dropped, whole user turns at a time (a tool call
//! is never separated from its result, and the latest user message is always
//! kept), until the estimate is at most three quarters of the limit. The
//! first message kept starts with a note saying how many were dropped.

use serde::{Deserialize, Serialize};

use crate::provider::{Message, Role};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub system: String,
    pub messages: Vec<Message>,
    /// Rounds of tool calls done in this run.
    #[serde(default)]
    pub rounds: u64,
    /// Model calls completed in this run.
    #[serde(default)]
    pub calls: u64,
    /// Messages dropped by compaction so far (over the session's life).
    #[serde(default)]
    pub compacted: u64,
    /// The calls of a suspended round that completed (see [`crate::round`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<crate::round::DoneCall>,
    /// How many of `messages` the run's checkpoints hold already (`None`:
    /// none yet, or compaction dropped some since): the next checkpoint is
    /// whole, or only what followed them (see [`dispatch_core::checkpoint`]).
    #[serde(skip)]
    pub saved: Option<usize>,
}

/// What a session keeps between runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionData {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub compacted: u64,
}

/// Tokens `text` is estimated to take (4 characters a token, rounded up).
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

impl Conversation {
    /// Characters of the system prompt and every message.
    pub fn chars(&self) -> usize {
        self.system.len()
            + self
                .messages
                .iter()
                .map(|m| {
                    m.content.len()
                        + m.tool_calls
                            .iter()
                            .map(|c| c.name.len() + c.arguments.len())
                            .sum::<usize>()
                })
                .sum::<usize>()
    }

    /// Whether the last message is a final answer (no tool calls pending).
    pub fn answered(&self) -> Option<&Message> {
        self.messages
            .last()
            .filter(|m| m.role == Role::Assistant && m.tool_calls.is_empty())
    }

    /// This conversation as a `checkpoint` event's data: whole the first
    /// time, else what changed since the last checkpoint saved.
    pub fn checkpoint(&self, step: &str) -> serde_json::Value {
        let state = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        match self.saved.filter(|n| *n <= self.messages.len()) {
            Some(saved) => dispatch_core::checkpoint::delta(step, state, saved),
            None => serde_json::json!({"step": step, "state": state}),
        }
    }

    /// The last checkpoint was saved: it holds every message up to now.
    pub fn mark_saved(&mut self) {
        self.saved = Some(self.messages.len());
    }

    /// Compacts to fit `limit` tokens. Returns how many messages were dropped.
    pub fn compact(&mut self, limit: u64) -> usize {
        if estimate_tokens(self.chars()) <= limit {
            return 0;
        }
        let target = limit * 3 / 4;
        // Cut points: indexes of user messages (not tool results), never the last one.
        let last_user = self.messages.iter().rposition(|m| m.role == Role::User);
        let mut cut = 0;
        for (i, m) in self.messages.iter().enumerate() {
            if m.role != Role::User || i == 0 {
                continue;
            }
            if Some(i) > last_user {
                break;
            }
            cut = i;
            let kept: usize = self.system.len()
                + self.messages[i..]
                    .iter()
                    .map(|m| {
                        m.content.len()
                            + m.tool_calls
                                .iter()
                                .map(|c| c.arguments.len())
                                .sum::<usize>()
                    })
                    .sum::<usize>();
            if estimate_tokens(kept) <= target {
                break;
            }
        }
        if cut == 0 {
            return 0;
        }
        self.messages.drain(..cut);
        self.compacted += cut as u64;
        // What the checkpoints hold starts with the dropped messages.
        self.saved = None;
        if let Some(first) = self.messages.first_mut() {
            first.content = format!(
                "[{} earlier messages of this conversation were dropped to fit LIMIT CONTEXT_TOKENS]\n\n{}",
                self.compacted, first.content
            );
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_drops_whole_old_turns_and_keeps_the_last_question() {
        let mut c = Conversation {
            system: "s".into(),
            ..Conversation::default()
        };
        for i in 0..10 {
            c.messages
                .push(Message::user(format!("question {i} {}", "x".repeat(400))));
            c.messages.push(Message::assistant(
                format!("answer {i} {}", "y".repeat(400)),
                vec![],
            ));
        }
        c.messages.push(Message::user("last question"));
        let dropped = c.compact(500);
        assert!(dropped > 0);
        assert_eq!(dropped % 2, 0, "whole turns");
        assert!(estimate_tokens(c.chars()) <= 500);
        assert_eq!(c.messages[0].role, Role::User);
        assert!(
            c.messages[0]
                .content
                .contains("dropped to fit LIMIT CONTEXT_TOKENS")
        );
        assert_eq!(
            c.messages.last().map(|m| m.content.as_str()),
            Some("last question")
        );
        assert_eq!(c.compact(500), 0, "fits now");
    }
}
