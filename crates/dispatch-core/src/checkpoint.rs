//! A run's checkpoints, folded into the one a next attempt resumes from.
//!
//! A process agent's `checkpoint` event is whole (`{"step", "state"}`):
//! the last one is the run's. A native agent checkpoints its conversation
//! up to three times a round; writing it whole each time made a run's
//! record grow with the square of its length. Its first checkpoint (and the
//! first after a compaction dropped messages) is whole; every later one is
//! what changed since the last one saved:
//!
//! ```json
//! {"step": "round-3", "conversation_delta": {"from": 7, "messages": [...],
//!  "rounds": 3, "calls": 4, "compacted": 0, "done": [...]}}
//! ```
//!
//! `from` is how many messages of the conversation before it are kept;
//! `messages` follow them; every other field replaces the conversation's
//! own (`done`, when absent, is empty). Folding a run's checkpoint events
//! in order gives the whole conversation again. A delta whose base is
//! missing or shorter than `from` folds the chain to nothing (it cannot
//! happen for a chain the store kept: deltas are written only after their
//! base was saved, and a stale holder's are fenced off).

use serde_json::{Map, Value};

/// The key of a delta checkpoint's changes.
pub const DELTA: &str = "conversation_delta";

/// Folds checkpoint event data, oldest first, into the whole checkpoint
/// (`{"step", "state"}`) the last of them stands for.
pub fn fold<'a>(checkpoints: impl IntoIterator<Item = &'a Value>) -> Option<Value> {
    checkpoints.into_iter().fold(None, fold_onto)
}

/// `data` applied to the whole checkpoint folded so far.
pub fn fold_onto(so_far: Option<Value>, data: &Value) -> Option<Value> {
    let Some(delta) = data.get(DELTA).and_then(Value::as_object) else {
        return Some(data.clone());
    };
    let mut whole = so_far?;
    let from = delta.get("from").and_then(Value::as_u64)?;
    let added = delta.get("messages").and_then(Value::as_array)?;
    let state = whole.get_mut("state")?.as_object_mut()?;
    let messages = state.get_mut("messages")?.as_array_mut()?;
    let from = usize::try_from(from)
        .ok()
        .filter(|n| *n <= messages.len())?;
    messages.truncate(from);
    messages.extend(added.iter().cloned());
    state.remove("done");
    for (k, v) in delta {
        if k != "from" && k != "messages" {
            state.insert(k.clone(), v.clone());
        }
    }
    whole["step"] = data.get("step").cloned().unwrap_or(Value::Null);
    Some(whole)
}

/// A delta checkpoint: `state` (a conversation as JSON, whole) as what
/// changed since `saved` of its messages were checkpointed.
pub fn delta(step: &str, state: Value, saved: usize) -> Value {
    let Value::Object(mut fields) = state else {
        return Value::Null;
    };
    let messages = match fields.remove("messages") {
        Some(Value::Array(all)) => all.into_iter().skip(saved).collect(),
        _ => Vec::new(),
    };
    fields.remove("system");
    let mut d = Map::new();
    d.insert("from".into(), Value::from(saved as u64));
    d.insert("messages".into(), Value::Array(messages));
    d.extend(fields);
    serde_json::json!({"step": step, DELTA: d})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(messages: &[&str], rounds: u64) -> Value {
        json!({"system": "be brief", "messages": messages, "rounds": rounds, "calls": rounds})
    }

    #[test]
    fn deltas_fold_back_into_the_whole_conversation() {
        let first = json!({"step": "round-1-tools", "state": conv(&["u", "a1"], 0)});
        let second = delta("round-1", conv(&["u", "a1", "t1"], 1), 2);
        let mut with_done = conv(&["u", "a1", "t1", "a2"], 1);
        with_done["done"] = json!([{"id": "c1"}]);
        let third = delta("round-2-call-c1", with_done, 3);
        let fourth = delta("round-2", conv(&["u", "a1", "t1", "a2", "t2"], 2), 4);
        assert_eq!(second[DELTA]["messages"], json!(["t1"]));
        assert!(second[DELTA].get("system").is_none(), "the prompt once");
        let whole = fold([&first, &second, &third]).expect("folds");
        assert_eq!(whole["step"], "round-2-call-c1");
        assert_eq!(whole["state"]["messages"], json!(["u", "a1", "t1", "a2"]));
        assert_eq!(whole["state"]["done"], json!([{"id": "c1"}]));
        assert_eq!(whole["state"]["system"], "be brief");
        let whole = fold([&first, &second, &third, &fourth]).expect("folds");
        assert_eq!(
            whole["state"],
            conv(&["u", "a1", "t1", "a2", "t2"], 2),
            "done cleared"
        );
    }

    #[test]
    fn a_delta_written_twice_or_after_a_whole_one_folds_the_same() {
        let first = json!({"step": "a", "state": conv(&["u", "a1"], 0)});
        let second = delta("b", conv(&["u", "a1", "t1"], 1), 2);
        // A retried write whose first try was saved: the same delta again.
        let once = fold([&first, &second]);
        assert_eq!(fold([&first, &second, &second]), once);
        // A compaction starts a whole one again.
        let compacted = json!({"step": "c", "state": conv(&["note", "t1"], 1)});
        let after = delta("d", conv(&["note", "t1", "a2"], 1), 2);
        let whole = fold([&first, &second, &compacted, &after]).expect("folds");
        assert_eq!(whole["state"]["messages"], json!(["note", "t1", "a2"]));
    }

    #[test]
    fn a_process_agents_checkpoints_stay_whole_and_the_last_wins() {
        let a = json!({"step": "asked", "state": {"order": 42}});
        let b = json!({"step": "paid", "state": {"order": 42, "paid": true}});
        assert_eq!(fold([&a, &b]), Some(b.clone()));
        assert_eq!(fold([]), None);
    }

    #[test]
    fn a_delta_without_its_base_is_not_applied() {
        let orphan = delta("b", conv(&["u", "a1", "t1"], 1), 2);
        assert_eq!(fold([&orphan]), None);
        let short = json!({"step": "a", "state": conv(&["u"], 0)});
        assert_eq!(fold([&short, &orphan]), None);
    }
}
