//! Decisions reused: a policy is a function of its input, so the rules'
//! answer for an input that agrees with an earlier one on everything the
//! policy reads is that earlier answer. A batch of a thousand runs of one
//! parcel is evaluated once, not a thousand times.
//!
//! What the policy reads is found in its text at load ([`crate::refs::reads`]:
//! the top-level inputs it names); a policy that reads `input` as a whole
//! is keyed on the whole input, and one that asks the clock or randomness
//! (`time.now_ns`, `rand.intn`, …) is never reused. Only answers are kept,
//! never errors, and at most [`CAPACITY`] of them (all forgotten when full).

use std::collections::HashMap;

use serde_json::Value;

/// The most answers kept.
pub const CAPACITY: usize = 4096;
/// The longest key kept: an input whose read parts are bigger (a large
/// payload the policy reads) is evaluated each time, so the answers kept
/// stay under CAPACITY × MAX_KEY (32 MiB) whatever callers send.
pub const MAX_KEY: usize = 8 * 1024;

/// The answers of one loaded policy.
#[derive(Debug)]
pub struct Memo {
    /// The top-level inputs the policy reads; `None`: all of them.
    reads: Option<Vec<String>>,
    /// Whether answers may be reused at all.
    stable: bool,
    answers: HashMap<String, Value>,
}

impl Memo {
    pub fn new(text: &str) -> Memo {
        Memo {
            reads: crate::refs::reads(text),
            stable: crate::refs::is_stable(text),
            answers: HashMap::new(),
        }
    }

    /// The key of the rules `names` evaluated against `input`: the rules
    /// and the inputs the policy reads; `None` when nothing is reused.
    pub fn key(&self, names: &[&str], input: &Value) -> Option<String> {
        if !self.stable {
            return None;
        }
        let mut key = names.join(",");
        key.push('\n');
        let Some(reads) = &self.reads else {
            key.push_str(&serde_json::to_string(input).ok()?);
            return (key.len() <= MAX_KEY).then_some(key);
        };
        for name in std::iter::once("action").chain(reads.iter().map(String::as_str)) {
            key.push_str(name);
            match input.get(name) {
                Some(v) => {
                    key.push('=');
                    key.push_str(&serde_json::to_string(v).ok()?);
                }
                None => key.push('~'),
            }
            key.push('\n');
        }
        (key.len() <= MAX_KEY).then_some(key)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.answers.get(key)
    }

    pub fn put(&mut self, key: String, answer: Value) {
        if self.answers.len() >= CAPACITY {
            self.answers.clear();
        }
        self.answers.insert(key, answer);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_hold_what_the_policy_reads_and_nothing_else() {
        let memo =
            Memo::new("package dispatch\ndeny contains \"x\" if input.parcel.name == \"a\"\n");
        let a = json!({"action": "create_run", "parcel": {"name": "a"}, "payload": 1});
        let b = json!({"action": "create_run", "parcel": {"name": "a"}, "payload": 2});
        let c = json!({"action": "create_run", "parcel": {"name": "b"}, "payload": 1});
        assert_eq!(memo.key(&["deny"], &a), memo.key(&["deny"], &b));
        assert_ne!(memo.key(&["deny"], &a), memo.key(&["deny"], &c));
        assert_ne!(memo.key(&["deny"], &a), memo.key(&["deny", "modify"], &a));
        let tool = json!({"action": "tool_call", "parcel": {"name": "a"}, "payload": 1});
        assert_ne!(memo.key(&["deny"], &a), memo.key(&["deny"], &tool));
    }

    #[test]
    fn a_policy_reading_the_whole_input_is_keyed_on_all_of_it() {
        let memo = Memo::new("package dispatch\ndeny contains \"x\" if count(input) > 3\n");
        let a = json!({"action": "create_run", "payload": 1});
        let b = json!({"action": "create_run", "payload": 2});
        assert_ne!(memo.key(&["deny"], &a), memo.key(&["deny"], &b));
        let memo = Memo::new("package dispatch\ndeny contains \"x\" if input[\"payload\"] == 1\n");
        assert_ne!(memo.key(&["deny"], &a), memo.key(&["deny"], &b));
    }

    #[test]
    fn a_policy_asking_the_clock_is_never_reused() {
        let memo = Memo::new(
            "package dispatch\ndeny contains \"x\" if time.now_ns() > input.budget.tokens\n",
        );
        assert_eq!(memo.key(&["deny"], &json!({"action": "create_run"})), None);
        // Named only in a string or a comment, it is not a call.
        let memo = Memo::new(
            "package dispatch\n# time.now_ns\ndeny contains \"rand.intn\" if input.tool == \"x\"\n",
        );
        assert!(
            memo.key(&["deny"], &json!({"action": "tool_call"}))
                .is_some()
        );
    }

    #[test]
    fn a_big_input_the_policy_reads_is_not_kept() {
        let memo = Memo::new("package dispatch\ndeny contains \"x\" if input.payload.n > 1\n");
        let small = json!({"action": "create_run", "payload": {"n": 2}});
        let big = json!({"action": "create_run", "payload": {"n": 2, "pad": "x".repeat(MAX_KEY)}});
        assert!(memo.key(&["deny"], &small).is_some());
        assert_eq!(memo.key(&["deny"], &big), None);
    }

    #[test]
    fn it_forgets_everything_when_full() {
        let mut memo = Memo::new("package dispatch\n");
        for i in 0..CAPACITY {
            memo.put(i.to_string(), json!(i));
        }
        assert_eq!(memo.get("7"), Some(&json!(7)));
        memo.put("new".into(), json!(0));
        assert_eq!((memo.get("7"), memo.answers.len()), (None, 1));
    }
}
