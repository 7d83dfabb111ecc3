//! The native agents' model: the scripted mock on loopback (its own thread
//! and runtime), and what its record says against the store's.
//!
//! Every run's payload is a marker (`chaos-<n>`) that becomes its first user
//! message, so each request the mock received names its run.

use std::collections::HashMap;

use dispatch_test_support::mock::{MockServer, Received, Script};
use serde_json::{Value, json};

/// The mock, serving on its own thread until the process ends.
pub(super) fn start() -> Result<MockServer, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(format!("a runtime for the mock: {e}")));
                return;
            }
        };
        rt.block_on(async move {
            // One call of the beating tool, then the answer; stateless, so
            // every run and every resume gets the same script.
            let script = json!({
                "steps": [],
                "fallback": {"kind": "rounds", "tool_rounds": 1, "tool_name": "beat", "text": "done"},
                "record_bodies": true,
            });
            let script: Script = match serde_json::from_value(script) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(format!("the mock's script: {e}")));
                    return;
                }
            };
            match MockServer::start(script).await {
                Ok(mock) => {
                    let _ = tx.send(Ok(mock));
                    std::future::pending::<()>().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("the mock model cannot listen: {e}")));
                }
            }
        });
    });
    rx.recv()
        .map_err(|_| "the mock's thread ended".to_string())?
}

/// The marker a run's payload carries.
pub(super) fn marker(n: usize) -> String {
    format!("chaos-{n}")
}

/// What the mock's record says, against what the store recorded.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Tally {
    /// Requests the mock received from the runs.
    pub requests: usize,
    /// Requests sent again after an identical one of the same run had been
    /// answered completely, beyond the calls the store billed as lost (a
    /// worker that got an answer it could not save — cut off, frozen,
    /// killed — leaves it to be asked again; that one is billed): a
    /// completed, recorded call repeated.
    pub repeated: usize,
    /// Requests no `model_call` event accounts for (per run: received −
    /// recorded, when positive).
    pub unbilled: usize,
}

/// The run marker of a request: its first user message's text.
fn marker_of(body: &Value) -> Option<&str> {
    body["messages"]
        .as_array()?
        .iter()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
}

/// `recorded`: `model_call` events per marker, and how many of them are
/// estimated (cut, stopped, lost).
pub(super) fn tally(received: &[Received], recorded: &HashMap<String, (usize, usize)>) -> Tally {
    let mut t = Tally::default();
    let mut per_run: HashMap<&str, usize> = HashMap::new();
    let mut resent: HashMap<&str, usize> = HashMap::new();
    // (marker, conversation) → when its earliest complete answer finished.
    let mut answered: HashMap<(&str, String), u64> = HashMap::new();
    let mut sorted: Vec<&Received> = received.iter().collect();
    sorted.sort_by_key(|r| r.received_at_us);
    for r in sorted {
        let Some(marker) = marker_of(&r.body) else {
            continue;
        };
        t.requests += 1;
        *per_run.entry(marker).or_default() += 1;
        let key = (marker, r.body["messages"].to_string());
        if answered.get(&key).is_some_and(|at| *at <= r.received_at_us) {
            *resent.entry(marker).or_default() += 1;
        }
        if let Some(done) = r.finished_at_us {
            let e = answered.entry(key).or_insert(done);
            *e = (*e).min(done);
        }
    }
    for (marker, n) in per_run {
        let (got, estimated) = recorded.get(marker).copied().unwrap_or((0, 0));
        t.unbilled += n.saturating_sub(got);
        t.repeated += resent
            .get(marker)
            .copied()
            .unwrap_or(0)
            .saturating_sub(estimated);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(marker: &str, turns: usize, at: u64, finished: Option<u64>) -> Received {
        let mut messages = vec![json!({"role": "user", "content": marker})];
        for i in 0..turns {
            messages.push(json!({"role": "assistant", "content": format!("t{i}")}));
        }
        Received {
            path: "/v1/chat/completions".into(),
            headers: Vec::new(),
            body: json!({"messages": messages}),
            received_at_us: at,
            first_token_sent_at_us: None,
            finished_at_us: finished,
        }
    }

    #[test]
    fn a_completed_call_sent_again_is_repeated_and_a_cut_one_is_not() {
        let got = vec![
            req("chaos-1", 0, 10, Some(20)),
            req("chaos-1", 1, 30, None), // cut: the resume may send it again
            req("chaos-1", 1, 40, Some(50)),
            req("chaos-1", 0, 60, Some(70)), // completed at 20: repeated
            req("chaos-2", 0, 10, Some(20)),
        ];
        let recorded = HashMap::from([
            ("chaos-1".to_string(), (3, 0)),
            ("chaos-2".to_string(), (1, 0)),
        ]);
        let t = tally(&got, &recorded);
        assert_eq!(
            t,
            Tally {
                requests: 5,
                repeated: 1,
                unbilled: 1
            }
        );
        // A completed answer its worker could not save was billed as lost:
        // asking again is how the run goes on.
        let recorded = HashMap::from([
            ("chaos-1".to_string(), (4, 1)),
            ("chaos-2".to_string(), (1, 0)),
        ]);
        assert_eq!(tally(&got, &recorded).repeated, 0);
    }
}
