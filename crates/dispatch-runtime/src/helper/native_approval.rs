//! How a native agent's tool calls get their approvals (`APPROVAL
//! always|confirm`): an approval record carrying the tool, its arguments,
//! risk and schema, keyed by the round and the model's id for the call, so
//! a resumed round finds its own record instead of asking again.
//!
//! By default the call does not wait in this process: the round suspends
//! (a durable wait, see [`crate::suspend`]) and the run is `paused` with no
//! process and no worker slot until `dispatch approve|deny`, the API or the
//! approval's timeout decides. With `DISPATCH_APPROVAL_WAIT=process` in the
//! helper's or worker's environment, the call waits in the process as it
//! did before durable waits (the run paused, its process and slot held).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dispatch_agent::PendingApproval;
use dispatch_agent::tools::{ApprovalAnswer, ApprovalAsk, Approver, Asked};
use dispatch_core::{RunId, Status, Transition, now_ms};
use dispatch_store::{Approval, Decision, Run, Store, StoreError};
use serde_json::json;

use crate::layout::Layout;

/// The environment variable that chooses how a call waits for its decision.
pub const APPROVAL_WAIT_ENV: &str = "DISPATCH_APPROVAL_WAIT";

/// How often a call waiting for a decision looks for its decision file
/// (written where the decision was taken: this machine's decisions are
/// seen at once) …
const DECISION_FILE_POLL: Duration = Duration::from_millis(2);
/// … for the first seconds of the wait (a person at hand decides quickly);
/// after that every [`DECISION_FILE_POLL_LATER`], so a worker holding many
/// paused runs does not spend itself looking.
const DECISION_FILE_QUICK: Duration = Duration::from_secs(2);
const DECISION_FILE_POLL_LATER: Duration = Duration::from_millis(20);
/// … and asks the store (decisions taken on another machine).
const DECISION_STORE_POLL: Duration = Duration::from_millis(100);

/// Decides tool calls through the store's approval records: the decision
/// is read from the store (taken on any machine), or its timeout denies it.
pub(crate) struct StoreApprover<'a, S: ?Sized> {
    store: &'a S,
    layout: Layout,
    run: RunId,
    attempt: u32,
    /// Whether an undecided call suspends the round (else it waits here).
    suspend: bool,
    /// Calls waiting for a decision in this process now.
    pub(crate) waiting: AtomicUsize,
}

/// Whether calls suspend for their approvals (not `process` in `value`).
pub fn suspends(value: Option<&str>) -> bool {
    !matches!(value.map(str::trim), Some("process"))
}

/// Whether `a` was denied because whoever asked was gone (a lost helper,
/// an attempt that ended): before its deadline, by `dispatch`. A resumed
/// round asks again rather than take that for a decision.
fn expired(a: &Approval) -> bool {
    a.decided_by.as_deref() == Some("dispatch")
        && matches!((a.decided_at, a.deadline), (Some(at), Some(deadline)) if at < deadline)
}

/// Whether `a` is the approval of call `call_id` of `round`.
fn asked_for(a: &Approval, call_id: &str, round: u64) -> bool {
    a.details.as_ref().is_some_and(|d| {
        d["call_id"].as_str() == Some(call_id) && d["round"].as_u64() == Some(round)
    })
}

fn answer_of(a: Approval) -> ApprovalAnswer {
    ApprovalAnswer {
        approved: a.decision.as_deref() == Some("approve"),
        id: a.id,
        by: a.decided_by.unwrap_or_default(),
        rationale: a.rationale,
        input: a.input,
        at: a.decided_at,
    }
}

impl<'a, S: Store + ?Sized> StoreApprover<'a, S> {
    pub(crate) fn new(store: &'a S, layout: &Layout, run: &Run) -> Self {
        StoreApprover {
            store,
            layout: layout.clone(),
            run: run.id.clone(),
            attempt: run.attempt,
            suspend: suspends(std::env::var(APPROVAL_WAIT_ENV).ok().as_deref()),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The call's approval: the one a suspended attempt asked for, else a
    /// new one, `<tool>-<n>` (n counting the run's approvals of that tool).
    async fn record(&self, ask: &ApprovalAsk) -> Result<Approval, String> {
        let all = self
            .store
            .list_approvals(Some(&self.run), false)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(a) = all
            .iter()
            .find(|a| asked_for(a, &ask.call_id, ask.round) && !expired(a))
        {
            return Ok(a.clone());
        }
        let prefix = format!("{}-", ask.tool);
        let n = all.iter().filter(|a| a.id.starts_with(&prefix)).count() + 1;
        // Calls of one round ask at once: a number another call took is
        // skipped (the store keeps the first record of an id).
        for n in n..n + 64 {
            let asked = self.request(ask, format!("{}-{n}", ask.tool)).await?;
            if asked_for(&asked, &ask.call_id, ask.round) {
                return Ok(asked);
            }
        }
        Err(format!("too many approvals of `{}` at once", ask.tool))
    }

    /// Records approval `id` for the call (or finds the one of that id).
    async fn request(&self, ask: &ApprovalAsk, id: String) -> Result<Approval, String> {
        let at = now_ms();
        let args = dispatch_core::event::shorten(&ask.arguments.to_string(), 200);
        let approval = Approval {
            run_id: self.run.clone(),
            id,
            attempt: self.attempt,
            summary: format!("{}({args}) · risk {}", ask.tool, ask.risk.as_str()),
            requested_at: at,
            deadline: Some(at + ask.timeout.as_millis() as i64),
            decision: None,
            decided_by: None,
            rationale: None,
            decided_at: None,
            details: Some(json!({
                "tool": ask.tool, "kind": ask.kind, "arguments": ask.arguments,
                "risk": ask.risk.as_str(), "schema": ask.schema,
                "call_id": ask.call_id, "round": ask.round,
            })),
            input: None,
        };
        self.store
            .request_approval(&approval)
            .await
            .map_err(|e| e.to_string())
    }

    /// Denies approval `id`: no decision came within `timeout`.
    async fn time_out(&self, id: &str, timeout: Duration) -> Result<Option<Approval>, String> {
        let decision = Decision {
            decision: "deny".into(),
            by: "dispatch".into(),
            rationale: Some(format!(
                "no decision within {} (APPROVAL_TIMEOUT)",
                dispatch_core::time::human_duration(timeout.as_millis() as i64)
            )),
            at: now_ms(),
            input: None,
        };
        match crate::approvals::decide(self.store, &self.layout, &self.run, id, &decision).await {
            Ok(a) => Ok(Some(a)),
            // Decided meanwhile: read it again.
            Err(crate::RuntimeError::Store(StoreError::AlreadyDecided { .. })) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Pauses the run (once its start is saved: a resumed round asks before
    /// the attempt's start is written).
    async fn pause(&self, reason: String) {
        for _ in 0..250 {
            let Ok(mut run) = self.store.get_run(&self.run).await else {
                return;
            };
            match run.status() {
                Status::Running => {
                    let t = Transition::Pause {
                        reason,
                        at: now_ms(),
                    };
                    let _ = crate::record::advance(self.store, &mut run, &t, None).await;
                    return;
                }
                Status::Starting => tokio::time::sleep(Duration::from_millis(20)).await,
                _ => return,
            }
        }
    }

    /// The decision, once there is one; denies at `deadline`.
    async fn wait(&self, id: &str, deadline: i64, timeout: Duration) -> Result<Approval, String> {
        let file = self
            .layout
            .run_dir(&self.run)
            .join("approvals")
            .join(format!("{id}.json"));
        let waiting = std::time::Instant::now();
        let mut asked = waiting;
        loop {
            // The store has the decision before the file is written.
            while !file.exists() && asked.elapsed() < DECISION_STORE_POLL && now_ms() < deadline {
                let pause = match waiting.elapsed() < DECISION_FILE_QUICK {
                    true => DECISION_FILE_POLL,
                    false => DECISION_FILE_POLL_LATER,
                };
                tokio::time::sleep(pause).await;
            }
            asked = std::time::Instant::now();
            let found = self
                .store
                .list_approvals(Some(&self.run), false)
                .await
                .ok()
                .and_then(|all| all.into_iter().find(|a| a.id == id));
            if let Some(a) = found.filter(|a| a.decision.is_some()) {
                return Ok(a);
            }
            if now_ms() >= deadline
                && let Some(a) = self.time_out(id, timeout).await?
            {
                return Ok(a);
            }
        }
    }
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> Approver for StoreApprover<'_, S> {
    async fn ask(&self, ask: ApprovalAsk) -> Result<Asked, String> {
        let approval = self.record(&ask).await?;
        if approval.decision.is_some() {
            return Ok(Asked::Decided(answer_of(approval)));
        }
        let id = approval.id.clone();
        let deadline = approval
            .deadline
            .unwrap_or(approval.requested_at + ask.timeout.as_millis() as i64);
        if self.suspend {
            if now_ms() < deadline {
                return Ok(Asked::Pending(PendingApproval {
                    id,
                    summary: approval.summary,
                    deadline_ms: Some(deadline),
                }));
            }
            // Its time ran out while nothing woke the run.
            if let Some(a) = self.time_out(&id, ask.timeout).await? {
                return Ok(Asked::Decided(answer_of(a)));
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.pause(format!("approval `{id}`: {}", approval.summary))
            .await;
        let decided = self.wait(&id, deadline, ask.timeout).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let _ = crate::approvals::resume_if_clear(self.store, &self.run).await;
        Ok(Asked::Decided(answer_of(decided?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(at: i64) -> Approval {
        Approval {
            run_id: RunId::new(),
            id: "refund-1".into(),
            attempt: 1,
            summary: String::new(),
            requested_at: 0,
            deadline: Some(1_000),
            decision: Some("deny".into()),
            decided_by: Some("dispatch".into()),
            rationale: None,
            decided_at: Some(at),
            details: None,
            input: None,
        }
    }

    #[test]
    fn a_denial_by_dispatch_before_the_deadline_is_an_expiry_not_a_decision() {
        assert!(expired(&denied(500)), "the asker was lost");
        assert!(!expired(&denied(1_000)), "the timeout is a decision");
        let mut by_person = denied(500);
        by_person.decided_by = Some("ana".into());
        assert!(!expired(&by_person));
    }

    #[test]
    fn calls_suspend_unless_told_to_wait_in_the_process() {
        assert!(suspends(None));
        assert!(suspends(Some("suspend")));
        assert!(!suspends(Some("process")));
    }
}
