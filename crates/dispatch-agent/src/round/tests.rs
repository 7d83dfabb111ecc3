//! A round's calls go on while a completed call is checkpointed.

use std::sync::Arc;
use std::time::Duration;

use dispatch_core::RunEvent;
use tokio::sync::{Mutex, Notify};

use super::{RoundEnd, run_round};
use crate::agent_loop::{Sink, ToolOutcome, Tools};
use crate::conversation::Conversation;
use crate::provider::{ToolCall, ToolSpec};

/// The run's row in the store: a write of the run (a checkpoint) waits
/// for whoever holds it, as a row lock does.
#[derive(Clone, Default)]
struct Row(Arc<Mutex<()>>);

/// `quick` returns once `slow` holds the row; `slow` holds it over a few
/// statements (awaits that need it to be polled again), as an approval's
/// transaction does.
struct TwoCalls {
    row: Row,
    held: Arc<Notify>,
}

#[async_trait::async_trait]
impl Tools for TwoCalls {
    fn specs(&self) -> std::borrow::Cow<'_, [ToolSpec]> {
        std::borrow::Cow::Borrowed(&[])
    }

    async fn call(&self, call: &ToolCall) -> ToolOutcome {
        if call.name == "quick" {
            self.held.notified().await;
            return ToolOutcome::ok("quick-done");
        }
        let _row = self.row.0.lock().await;
        self.held.notify_one();
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        ToolOutcome::ok("slow-done")
    }
}

/// Records under the run's row, as a fenced write does.
struct RowSink {
    row: Row,
    recorded: usize,
}

#[async_trait::async_trait]
impl Sink for RowSink {
    fn delta(&mut self, _text: &str) {}

    async fn record(&mut self, _events: Vec<RunEvent>) -> Result<(), String> {
        let _row = self.row.0.lock().await;
        self.recorded += 1;
        Ok(())
    }

    fn blob(&mut self, _bytes: &[u8]) -> Option<String> {
        None
    }
}

fn call(id: &str, name: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: "{}".into(),
        signature: None,
    }
}

/// The checkpoint of a call that completed first waits for the row a
/// call still running holds: that call must go on meanwhile, or neither
/// ever ends (a worker's run hung this way until its lease was fenced).
#[tokio::test]
async fn a_checkpoint_waiting_for_a_call_still_running_does_not_stall_it() {
    let row = Row::default();
    let tools = TwoCalls {
        row: row.clone(),
        held: Arc::new(Notify::new()),
    };
    let mut sink = RowSink { row, recorded: 0 };
    let calls = [call("c0", "quick"), call("c1", "slow")];
    let conv = Conversation::default();
    let round = run_round(&conv, 1, &calls, &tools, &mut sink);
    // A deadlock detector, not a speed limit: the round needs no time.
    let end = tokio::time::timeout(Duration::from_secs(10), round)
        .await
        .expect("the round ends: the running call was not starved by the checkpoint");
    let RoundEnd::Done { results, events } = end else {
        panic!("no call suspends");
    };
    let texts: Vec<&str> = results.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(texts, ["quick-done", "slow-done"], "in the model's order");
    assert_eq!(events.len(), 2, "both calls' events");
    assert_eq!(sink.recorded, 1, "the call done first was checkpointed");
}
