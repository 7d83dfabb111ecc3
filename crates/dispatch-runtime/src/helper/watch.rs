//! What the helper watches while an attempt runs: the run and step timeouts,
//! the token and cost budgets, checkpoints and approvals. Fed the agent's
//! events as they arrive and ticked on a short interval; when a deadline or a
//! hard limit is crossed it stops the agent's process group (SIGTERM, a grace
//! period, SIGKILL) and keeps the verdict for the attempt's end.

use dispatch_core::EventKind;
use std::time::{Duration, Instant};

use dispatch_core::event::Usage;
use dispatch_core::policy::RunPolicy;
use dispatch_core::time::human_duration;
use dispatch_core::{NewEvent, RunId, Status, Transition, now_ms};
use dispatch_store::{Approval, Decision, Store, StoreError};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::approvals::{resume_if_clear, valid_approval_id};
use crate::layout::Layout;
use crate::os;
use crate::record::{AdvanceError, advance};

/// Time between SIGTERM and SIGKILL when the runtime stops an agent.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);

/// Why the runtime ended an attempt.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// A run or step deadline passed (retryable).
    TimedOut(String),
    /// A hard budget was crossed: `budget_exceeded: …` (never retried).
    Budget(String),
    /// A `RESOURCES` limit was crossed (never retried).
    Limit(String),
    /// A handoff started nothing: why, and whether another attempt may do
    /// better (an unknown parcel will not; a store out of reach may).
    Handoff(String, bool),
}

struct Pending {
    id: String,
    deadline: Option<Instant>,
    timeout_s: Option<u64>,
}

pub(crate) struct Watch {
    run_id: RunId,
    attempt: u32,
    policy: RunPolicy,
    layout: Layout,
    started: Instant,
    paused_total: Duration,
    paused_since: Option<Instant>,
    /// The current step and the active time when it started.
    step: Option<(String, Duration)>,
    usage: Usage,
    warned: Vec<&'static str>,
    /// The last `checkpoint` event of this attempt (the whole event object).
    pub checkpoint: Option<Value>,
    pending: Vec<Pending>,
    pub verdict: Option<Verdict>,
    pgid: u32,
    term_sent: Option<Instant>,
    killed: bool,
    /// When the store was last asked for decisions taken elsewhere.
    decisions_read: Option<Instant>,
    /// `RESOURCES` limits the helper checks itself (`DISK`, refused forks).
    limits: Option<crate::limits::LimitWatch>,
}

/// How often a run waiting for approvals asks the store for decisions taken
/// on another machine (a server, while a worker runs the agent).
const STORE_DECISIONS: Duration = Duration::from_millis(250);

impl Watch {
    /// `baseline`: what the run used in earlier attempts (budgets are per run).
    pub fn new(
        run_id: RunId,
        attempt: u32,
        policy: RunPolicy,
        layout: Layout,
        baseline: Usage,
    ) -> Self {
        Watch {
            run_id,
            attempt,
            policy,
            layout,
            started: Instant::now(),
            paused_total: Duration::ZERO,
            paused_since: None,
            step: None,
            usage: baseline,
            warned: Vec::new(),
            checkpoint: None,
            pending: Vec::new(),
            verdict: None,
            pgid: 0,
            term_sent: None,
            killed: false,
            decisions_read: None,
            limits: None,
        }
    }

    /// The agent's process group, once it runs.
    pub fn set_group(&mut self, pgid: u32) {
        self.pgid = pgid;
        self.started = Instant::now();
    }

    /// Limits to check on every tick.
    pub(crate) fn set_limits(&mut self, limits: crate::limits::LimitWatch) {
        self.limits = Some(limits);
    }

    /// Time the attempt has been running, not counting time paused.
    fn active(&self, now: Instant) -> Duration {
        let paused = self.paused_total + self.paused_since.map_or(Duration::ZERO, |p| now - p);
        (now - self.started).saturating_sub(paused)
    }

    /// Takes in events the agent just wrote (already stored). `live` is false
    /// once the agent has exited (nothing is paused or stopped then).
    pub async fn observe<S: Store + ?Sized>(&mut self, store: &S, events: &[NewEvent], live: bool) {
        let now = Instant::now();
        for e in events {
            match e.kind.as_str() {
                "step" => {
                    let name = e.data["name"].as_str().unwrap_or("?").to_string();
                    match e.data["phase"].as_str() {
                        Some("end") | Some("finish") | Some("done") => {
                            if self.step.as_ref().is_some_and(|(n, _)| *n == name) {
                                self.step = None;
                            }
                        }
                        _ => self.step = Some((name, self.active(now))),
                    }
                }
                "checkpoint" => self.checkpoint = Some(e.data.clone()),
                "usage" => {
                    if let Some(u) = e.usage() {
                        self.usage.add(u);
                    }
                    self.check_budget(store).await;
                }
                "approval" if live => self.request_approval(store, &e.data).await,
                _ => {}
            }
        }
    }

    async fn check_budget<S: Store + ?Sized>(&mut self, store: &S) {
        let l = self.policy.limits.clone();
        let tokens = self.usage.total_tokens();
        let cost = self.usage.cost_usd;
        if self.verdict.is_none() {
            let crossed = match (l.max_tokens, l.max_cost_usd) {
                (Some(max), _) if tokens > max => {
                    Some(format!("{tokens} tokens used, limit {max}"))
                }
                (_, Some(max)) if cost > max => {
                    Some(format!("cost ${cost:.4} exceeds limit ${max:.4}"))
                }
                _ => None,
            };
            if let Some(what) = crossed {
                self.stop_with(Verdict::Budget(format!("budget_exceeded: {what}")));
            }
        }
        let mut soft = Vec::new();
        if let Some(max) = l.soft_max_tokens.filter(|m| tokens > *m) {
            soft.push((
                "tokens",
                format!("soft token limit crossed: {tokens} tokens used, soft limit {max}"),
            ));
        }
        if let Some(max) = l.soft_max_cost_usd.filter(|m| cost > *m) {
            soft.push((
                "cost",
                format!("soft cost limit crossed: ${cost:.4} spent, soft limit ${max:.4}"),
            ));
        }
        for (which, message) in soft {
            if self.warned.contains(&which) {
                continue;
            }
            self.warned.push(which);
            let event = NewEvent::new(
                EventKind::Warning,
                self.attempt,
                now_ms(),
                json!({"message": message, "limit": which, "soft": true}),
            );
            let _ = store.append_events(&self.run_id, &[event]).await;
        }
    }

    async fn request_approval<S: Store + ?Sized>(&mut self, store: &S, data: &Value) {
        let id = data["id"].as_str().unwrap_or_default().to_string();
        if !valid_approval_id(&id) {
            let event = NewEvent::new(
                EventKind::Warning,
                self.attempt,
                now_ms(),
                json!({ "message": format!(
                    "approval id `{id}` cannot name a file; ignored \
                     (hint: use letters, digits, `-`, `_`)"
                ) }),
            );
            let _ = store.append_events(&self.run_id, &[event]).await;
            return;
        }
        let summary = data["summary"].as_str().unwrap_or("").to_string();
        let timeout_s = data["timeout_s"].as_u64();
        let at = now_ms();
        let approval = Approval {
            run_id: self.run_id.clone(),
            id: id.clone(),
            attempt: self.attempt,
            summary: summary.clone(),
            requested_at: at,
            deadline: timeout_s.map(|s| at + (s as i64) * 1000),
            decision: None,
            decided_by: None,
            rationale: None,
            decided_at: None,
            details: None,
            input: None,
        };
        match store.request_approval(&approval).await {
            Ok(a) if a.decision.is_some() => return, // decided already (a repeated request)
            Ok(_) => {}
            Err(_) => return,
        }
        self.pending.push(Pending {
            id: id.clone(),
            deadline: timeout_s.map(|s| Instant::now() + Duration::from_secs(s)),
            timeout_s,
        });
        if self.paused_since.is_none() {
            self.paused_since = Some(Instant::now());
        }
        let reason = if summary.is_empty() {
            format!("approval `{id}`")
        } else {
            format!("approval `{id}`: {summary}")
        };
        if let Ok(mut run) = store.get_run(&self.run_id).await
            && run.status() == Status::Running
        {
            let t = Transition::Pause { reason, at };
            if let Err(AdvanceError::Store(e)) = advance(store, &mut run, &t, None).await {
                crate::say_warn!("[dispatch] could not pause for approval `{id}`: {e}");
            }
        }
    }

    /// Checks approvals, deadlines and a pending SIGKILL.
    pub async fn tick<S: Store + ?Sized>(&mut self, store: &S) {
        let now = Instant::now();
        self.tick_approvals(store, now).await;
        if self.verdict.is_none() && self.paused_since.is_none() {
            let active = self.active(now);
            let step_over = match (&self.step, self.policy.timeouts.step_ms) {
                (Some((name, since)), Some(ms))
                    if active.saturating_sub(*since).as_millis() as u64 >= ms =>
                {
                    Some(format!(
                        "step `{name}` timed out after {}",
                        human_duration(ms as i64)
                    ))
                }
                _ => None,
            };
            let run_over = match self.policy.timeouts.run_ms {
                Some(ms) if active.as_millis() as u64 >= ms => {
                    let during = self
                        .step
                        .as_ref()
                        .map(|(n, _)| format!(" during step `{n}`"))
                        .unwrap_or_default();
                    Some(format!(
                        "run timed out after {}{during}",
                        human_duration(ms as i64)
                    ))
                }
                _ => None,
            };
            if let Some(reason) = step_over.or(run_over) {
                self.stop_with(Verdict::TimedOut(reason));
            }
        }
        if self.verdict.is_none()
            && let Some(reason) = self.limits.as_mut().and_then(|l| l.check(now))
        {
            self.stop_with(Verdict::Limit(reason));
        }
        if let (Some(t), false) = (self.term_sent, self.killed)
            && now - t >= KILL_GRACE
        {
            os::signal_group(self.pgid, Signal::SIGKILL);
            self.killed = true;
        }
    }

    /// Writes here the decision files of approvals decided elsewhere (the
    /// API on a server writes them on its own disk): the agent reads them
    /// from its `$DISPATCH_APPROVALS`.
    async fn fetch_decisions<S: Store + ?Sized>(&mut self, store: &S, now: Instant) {
        if self
            .decisions_read
            .is_some_and(|at| now.duration_since(at) < STORE_DECISIONS)
        {
            return;
        }
        self.decisions_read = Some(now);
        let Ok(all) = store.list_approvals(Some(&self.run_id), false).await else {
            return;
        };
        let dir = self.layout.run_dir(&self.run_id).join("approvals");
        for p in &self.pending {
            let decided = all.iter().find(|a| a.id == p.id && a.decision.is_some());
            if let Some(a) = decided
                && !dir.join(format!("{}.json", p.id)).exists()
            {
                let decision = Decision {
                    decision: a.decision.clone().unwrap_or_default(),
                    by: a.decided_by.clone().unwrap_or_default(),
                    rationale: a.rationale.clone(),
                    at: a.decided_at.unwrap_or_else(now_ms),
                    input: a.input.clone(),
                };
                let _ = crate::approvals::write_decision_file(
                    &self.layout,
                    &self.run_id,
                    &p.id,
                    &decision,
                );
            }
        }
    }

    async fn tick_approvals<S: Store + ?Sized>(&mut self, store: &S, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        self.fetch_decisions(store, now).await;
        let dir = self.layout.run_dir(&self.run_id).join("approvals");
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let decided = dir.join(format!("{}.json", p.id)).exists();
            if !decided && p.deadline.is_some_and(|d| now >= d) {
                let decision = Decision {
                    decision: "deny".into(),
                    by: "dispatch".into(),
                    rationale: Some(format!(
                        "no decision within {}s (timeout_s)",
                        p.timeout_s.unwrap_or(0)
                    )),
                    at: now_ms(),
                    input: None,
                };
                match store.decide_approval(&self.run_id, &p.id, &decision).await {
                    Ok(_) | Err(StoreError::AlreadyDecided { .. }) => {}
                    Err(_) => {
                        i += 1;
                        continue;
                    }
                }
                // A human may have decided first: the stored decision stands.
                let stored = store
                    .list_approvals(Some(&self.run_id), false)
                    .await
                    .ok()
                    .and_then(|all| all.into_iter().find(|a| a.id == p.id));
                let file = match stored {
                    Some(a) if a.decision.is_some() => Decision {
                        decision: a.decision.unwrap_or_default(),
                        by: a.decided_by.unwrap_or_default(),
                        rationale: a.rationale,
                        at: a.decided_at.unwrap_or(decision.at),
                        input: None,
                    },
                    _ => decision,
                };
                let _ =
                    crate::approvals::write_decision_file(&self.layout, &self.run_id, &p.id, &file);
            } else if !decided {
                i += 1;
                continue;
            }
            self.pending.remove(i);
        }
        if self.pending.is_empty() {
            if let Some(since) = self.paused_since.take() {
                self.paused_total += now - since;
            }
            let _ = resume_if_clear(store, &self.run_id).await;
        }
    }

    /// Denies what is still pending when the attempt ends: the agent that
    /// asked is gone, so no decision can reach it.
    pub async fn expire_pending<S: Store + ?Sized>(&mut self, store: &S) {
        if !std::mem::take(&mut self.pending).is_empty() {
            crate::approvals::expire_pending(
                store,
                &self.run_id,
                "the attempt ended before a decision",
            )
            .await;
        }
    }

    /// Whether nothing here needs a look soon: no deadline, no limit of its
    /// own, no approval pending, no agent being stopped, no verdict. A
    /// native run's loop then looks once a second instead of ten times (its
    /// approvals and stops do not go through the watch's looks): a worker
    /// holding thousands of runs does not wake for each of them every
    /// 100 ms (issue #38).
    pub(crate) fn quiet(&self) -> bool {
        self.policy.timeouts.run_ms.is_none()
            && self.policy.timeouts.step_ms.is_none()
            && self.limits.is_none()
            && self.pending.is_empty()
            && self.term_sent.is_none()
            && self.verdict.is_none()
    }

    /// A native agent's tool call waits for a decision (`true`) or no longer
    /// does: time paused is not counted against the run's timeouts.
    pub fn set_paused(&mut self, paused: bool) {
        match (paused, self.paused_since) {
            (true, None) => self.paused_since = Some(Instant::now()),
            (false, Some(since)) if self.pending.is_empty() => {
                self.paused_total += Instant::now() - since;
                self.paused_since = None;
            }
            _ => {}
        }
    }

    /// A handoff of the agent's started nothing: the attempt fails (its
    /// agent is stopped).
    pub fn refuse(&mut self, reason: String, retryable: bool) {
        if self.verdict.is_none() {
            self.stop_with(Verdict::Handoff(reason, retryable));
        }
    }

    /// The agent's group is gone: nothing is left to signal.
    pub fn agent_gone(&mut self) {
        self.pgid = 0;
    }

    fn stop_with(&mut self, verdict: Verdict) {
        self.verdict = Some(verdict);
        if self.pgid != 0 && self.term_sent.is_none() {
            os::signal_group(self.pgid, Signal::SIGTERM);
            self.term_sent = Some(Instant::now());
        }
    }
}
