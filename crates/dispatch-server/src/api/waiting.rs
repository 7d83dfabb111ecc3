//! Why a queued run is still waiting, in words a user acts on: a backoff
//! before its next attempt, no live worker (or none with its labels), its
//! concurrency key full, its project at its live-run cap (`project quota,
//! 10/10 live runs`), or every worker that could take it busy; and why a
//! running agent is not calling its model: a shared rate limit (its newest
//! `rate_limit_waiting` event, while the time it names is ahead). Shown as
//! `waiting` by `GET /v1/runs/{id}` and `GET /v1/runs`, and so by `ps`,
//! `inspect-run` and the dashboard.
//!
//! Worked out when asked, from what the store holds (the workers' last
//! words, the key's slots): nothing is recorded for it, so it is never
//! stale, and a run that is about to be claimed has no reason.

use dispatch_core::EventKind;
use std::collections::HashMap;

use dispatch_core::{RunState, Ts, now_ms};
use dispatch_store::{Run, WorkerInfo};

use super::AppState;
use crate::presence::SILENT_AFTER;

/// At most this many runs of one listing get a reason (each may cost a
/// query or two).
const MAX_PER_LISTING: usize = 200;

/// What the reasons of one request share: the live workers, read once.
pub(crate) struct Waiting {
    live: Vec<WorkerInfo>,
    now: Ts,
    /// Slots held per concurrency key, read once per key.
    holding: HashMap<String, u32>,
    /// Why a project's runs wait (a limit of its quota reached), read once
    /// per project.
    caps: HashMap<String, Option<String>>,
}

impl Waiting {
    /// Reads the live workers (those heard from lately that did not stop).
    pub(crate) async fn read(state: &AppState) -> Waiting {
        let now = now_ms();
        let silent = i64::try_from(SILENT_AFTER.as_millis()).unwrap_or(15_000);
        let live = state
            .store
            .list_workers(now - silent)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|w| w.beat.stopped_at.is_none() && w.beat.seen_at >= now - silent)
            .collect();
        Waiting {
            live,
            now,
            holding: HashMap::new(),
            caps: HashMap::new(),
        }
    }

    /// Why `run` waits, if something holds it back.
    pub(crate) async fn reason(&mut self, state: &AppState, run: &Run) -> Option<String> {
        let not_before = match &run.state {
            RunState::Queued { not_before } => not_before,
            RunState::Running { .. } => return self.rate_limited(state, run).await,
            _ => return None,
        };
        if let Some(at) = not_before.filter(|at| *at > self.now) {
            return Some(format!(
                "retry backoff: attempt {} starts in {}",
                run.attempt + 1,
                secs(at - self.now)
            ));
        }
        if let Some(why) = self.no_worker(&run.labels) {
            return Some(why);
        }
        let concurrency = state
            .store
            .run_extras(&run.id)
            .await
            .ok()
            .and_then(|e| e.concurrency);
        if let Some(c) = concurrency {
            let holding = match self.holding.get(&c.key) {
                Some(n) => *n,
                None => {
                    let n = state.store.concurrency_holding(&c.key).await.ok()?;
                    self.holding.insert(c.key.clone(), n);
                    n
                }
            };
            if holding >= c.max {
                return Some(format!(
                    "concurrency key {}: {holding} of {} running",
                    c.key, c.max
                ));
            }
        }
        if let Some(why) = self.project_capped(state, &run.project).await {
            return Some(why);
        }
        let able: Vec<&WorkerInfo> = self.able(&run.labels).collect();
        if able.iter().all(|w| w.held >= w.beat.slots) {
            let (held, slots) = able
                .iter()
                .fold((0, 0), |(h, s), w| (h + w.held, s + w.beat.slots));
            return Some(format!(
                "every live worker that can take it is busy ({held} of {slots} slots)"
            ));
        }
        None
    }

    /// `project quota, 10/10 live runs` while the project is at its
    /// live-run cap; `project quota, tokens_per_day 2000000/2000000 tokens
    /// today (UTC)` while a budget of it is at its hard limit.
    async fn project_capped(&mut self, state: &AppState, project: &str) -> Option<String> {
        if !self.caps.contains_key(project) {
            let used = state
                .store
                .quota_use(&[project.to_string()], self.now)
                .await
                .ok()?;
            let why = used
                .iter()
                .find(|u| u.hard_reached())
                .map(dispatch_store::QuotaUse::waiting_text);
            self.caps.insert(project.to_string(), why);
        }
        self.caps.get(project).cloned().flatten()
    }

    /// `rate limit <model>: next call in N s`, while the run's newest word
    /// on its model calls is that it waits for a shared rate limit.
    async fn rate_limited(&self, state: &AppState, run: &Run) -> Option<String> {
        let kinds = ["rate_limit_waiting", "rate_limit_wait", "model_call_sent"];
        let latest = state.store.latest_event(&run.id, &kinds).await.ok()??;
        let data = &latest.event.data;
        let until = data["until"].as_i64()?;
        (latest.event.is(EventKind::RateLimitWaiting) && until > self.now).then(|| {
            format!(
                "rate limit {}: next call in {}",
                data["model"].as_str().unwrap_or("?"),
                secs(until - self.now)
            )
        })
    }

    /// Live workers with every one of `labels`.
    fn able<'a>(&'a self, labels: &'a [String]) -> impl Iterator<Item = &'a WorkerInfo> {
        self.live
            .iter()
            .filter(move |w| labels.iter().all(|l| w.beat.labels.contains(l)))
    }

    /// Why no live worker can claim a run of `labels`, if none can.
    fn no_worker(&self, labels: &[String]) -> Option<String> {
        if self.live.is_empty() {
            return Some(
                "no live worker (start one: `dispatch worker --database-url …`)".to_string(),
            );
        }
        if self.able(labels).next().is_some() {
            return None;
        }
        let missing: Vec<&str> = labels
            .iter()
            .filter(|l| !self.live.iter().any(|w| w.beat.labels.contains(l)))
            .map(String::as_str)
            .collect();
        Some(match missing.as_slice() {
            [] => format!("no live worker has labels {} together", labels.join(", ")),
            [one] => format!("no live worker has label {one}"),
            many => format!("no live worker has labels {}", many.join(", ")),
        })
    }
}

/// Fills in `waiting` in the answer of each waiting run of a listing.
pub(crate) async fn annotate(state: &AppState, runs: &[Run], docs: &mut [dispatch_api::Run]) {
    if !runs
        .iter()
        .any(|r| matches!(r.state, RunState::Queued { .. } | RunState::Running { .. }))
    {
        return;
    }
    let mut waiting = Waiting::read(state).await;
    for (run, doc) in runs.iter().zip(docs.iter_mut()).take(MAX_PER_LISTING) {
        doc.waiting = waiting.reason(state, run).await;
    }
}

/// `ms` as whole seconds, at least 1.
fn secs(ms: i64) -> String {
    format!("{} s", ((ms + 999) / 1000).max(1))
}
