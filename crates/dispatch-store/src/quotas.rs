//! Quotas per project (see [`dispatch_core::quota`]): one row per project
//! and limit, and the live-run cap every claim obeys.
//!
//! **Max live runs, never exceeded.** A run of a project whose quota has
//! `max_live_runs` is claimed (by a worker, by a local helper, or at its
//! creation by `dispatch run`) only while fewer than that many runs of the
//! project are live (`starting`, `running`, `paused`), counted in the
//! claim's own transaction. SQLite's single writer serializes claims;
//! PostgreSQL claimers lock the project's quota row (`FOR UPDATE`) and count
//! again after the lock, so two workers never both take the last slot. A
//! run at the cap stays queued (no FIFO order per project: the first
//! claimer after a slot frees takes the oldest claimable run).

use async_trait::async_trait;
use dispatch_core::RunId;
use dispatch_core::quota::{Quota, QuotaLimit};

use serde::{Deserialize, Serialize};

use crate::limits::SLOT_HOLDING;
use crate::{NewNotification, StoreResult};

/// The SQL condition that run `r` (a table alias) fits under its project's
/// live-run cap now (as the statement's snapshot sees it: PostgreSQL
/// claimers count again under the quota row's lock). `live_runs` is how
/// the store names the runs table to count live runs in (see [`LIVE_RUNS`]).
pub(crate) fn under_cap(r: &str, live_runs: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM project_quotas q WHERE q.project = {r}.project \
         AND q.name = 'max_live_runs' AND (SELECT count(*) FROM {live_runs} \
         WHERE o.project = {r}.project AND o.status IN {SLOT_HOLDING}) >= q.value)"
    )
}

/// Live runs of a project are counted through the runs by status (there
/// are no more live runs than slots), not an index of their own that
/// every claim and every end of every run would have to write. SQLite,
/// without statistics, would take the runs by project (all of a project's
/// runs, finished ones too) unless told.
pub(crate) const LIVE_RUNS: &str = "runs o INDEXED BY runs_by_status";

/// Of `candidates` (run id, project), in claim order, those that fit the
/// free slots of their project (`caps`: project, cap, live now); a project
/// not in `caps` has no cap.
pub(crate) fn fit(candidates: &[(String, String)], caps: &[(String, f64, i64)]) -> Vec<String> {
    let mut free: std::collections::HashMap<&str, i64> = caps
        .iter()
        .map(|(p, cap, live)| (p.as_str(), (*cap as i64) - live))
        .collect();
    candidates
        .iter()
        .filter(|(_, project)| match free.get_mut(project.as_str()) {
            None => true,
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            Some(_) => false,
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// The error of a claim refused by its project's live-run cap.
pub(crate) fn limited(id: &RunId, project: &str, cap: f64, live: i64) -> crate::StoreError {
    crate::StoreError::QuotaLimited {
        id: id.clone(),
        project: project.to_string(),
        why: format!("{live}/{} live runs", cap as u64),
        hint: format!(
            "it starts when a live run of the project ends, or `dispatch quota set {project} --max-live-runs N` raises the cap"
        ),
    }
}

/// The SQL condition that run `r`'s project has no budget (tokens or USD
/// per day or month) at or over its hard limit in the periods named by the
/// parameters `day` and `month` (`2026-11-26`, `2026-11`).
pub(crate) fn under_budget(r: &str, day: &str, month: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM project_quotas q JOIN quota_usage u \
         ON u.project = q.project AND u.period = CASE WHEN q.name LIKE '%_per_day' \
         THEN {day} ELSE {month} END WHERE q.project = {r}.project \
         AND q.name <> 'max_live_runs' AND CASE WHEN q.name LIKE 'usd_%' \
         THEN u.usd ELSE u.tokens END >= q.value)"
    )
}

/// One limit of a quota with what is used of it now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuotaUse {
    #[serde(flatten)]
    pub quota: Quota,
    /// Live runs now, or tokens or USD billed in the current period.
    pub used: f64,
    /// The current period (`2026-11-26`, `2026-11`); none for live runs.
    pub period: Option<String>,
}

impl QuotaUse {
    /// Whether the hard limit is reached.
    pub fn hard_reached(&self) -> bool {
        self.used >= self.quota.value
    }

    /// Why the project's queued runs wait, where runs are listed:
    /// `project quota, 10/10 live runs`, `project quota, tokens_per_day
    /// 2000000/2000000 tokens today (UTC)`.
    pub fn waiting_text(&self) -> String {
        match self.quota.limit == dispatch_core::quota::QuotaLimit::MaxLiveRuns {
            true => format!("project quota, {}", self.text()),
            false => format!("project quota, {} {}", self.quota.limit, self.text()),
        }
    }

    /// `2000000/2000000 tokens today (UTC)`, `10/10 live runs`.
    pub fn text(&self) -> String {
        let l = self.quota.limit;
        format!(
            "{}/{} {}",
            l.show(self.used),
            l.show(self.quota.value),
            l.unit()
        )
    }

    /// How the user gets room: wait for what frees it, or raise the limit.
    pub fn hint(&self) -> String {
        let (project, l) = (&self.quota.project, self.quota.limit);
        let flag = l.as_str().replace('_', "-");
        let wait = match l.period() {
            None => "wait for a live run of the project to end",
            Some(dispatch_core::quota::Period::Day) => "wait for the next UTC day",
            Some(dispatch_core::quota::Period::Month) => "wait for the next month (UTC)",
        };
        format!("{wait}, or raise it: `dispatch quota set {project} --{flag} N`")
    }

    /// The refusal of a new run by this limit.
    pub fn refusal(&self) -> crate::StoreError {
        let l = self.quota.limit;
        crate::StoreError::QuotaExceeded {
            project: self.quota.project.clone(),
            limit: l,
            used: format!("{} {}", l.show(self.used), l.unit()),
            value: l.show(self.quota.value),
            hint: self.hint(),
        }
    }

    /// The wait of a run held back by this limit.
    pub fn waiting(&self, id: &RunId) -> crate::StoreError {
        crate::StoreError::QuotaLimited {
            id: id.clone(),
            project: self.quota.project.clone(),
            why: format!("{} {}", self.quota.limit, self.text()),
            hint: self.hint(),
        }
    }
}

/// A mark of a budget crossed by one accounting of usage.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Crossed {
    pub quota: Quota,
    /// The hard limit (else the soft mark).
    pub hard: bool,
    pub used: f64,
    pub period: String,
}

/// The marks of `quotas` (budgets only) crossed when their period's usage
/// went from `before` to `after`: `usage(limit)` answers (before, after,
/// period name).
pub(crate) fn crossed(
    quotas: &[Quota],
    usage: impl Fn(QuotaLimit) -> Option<(f64, f64, String)>,
) -> Vec<Crossed> {
    let mut out = Vec::new();
    for q in quotas {
        let Some((before, after, period)) = usage(q.limit) else {
            continue;
        };
        for (mark, hard) in [(q.soft_value(), false), (q.value, true)] {
            if before < mark && after >= mark {
                out.push(Crossed {
                    quota: q.clone(),
                    hard,
                    used: after,
                    period: period.clone(),
                });
            }
        }
    }
    out
}

impl Crossed {
    fn data(&self) -> serde_json::Value {
        let q = &self.quota;
        serde_json::json!({
            "project": q.project,
            "limit": q.limit,
            "mark": if self.hard { "hard" } else { "soft" },
            "percent": if self.hard { 100 } else { q.soft_pct },
            "used": self.used,
            "value": q.value,
            "on_hard": q.on_hard,
            "period": self.period,
        })
    }

    /// Its notification: one per quota, mark and period (keyed).
    pub(crate) fn notification(&self, run: &RunId, at: dispatch_core::Ts) -> NewNotification {
        let kind = match self.hard {
            true => crate::notifications::QUOTA_HARD,
            false => crate::notifications::QUOTA_SOFT,
        };
        NewNotification {
            key: format!(
                "{kind}:{}:{}:{}",
                self.quota.project, self.quota.limit, self.period
            ),
            run_id: run.clone(),
            kind: kind.to_string(),
            data: self.data(),
            at,
        }
    }

    /// Its event in the log of the run whose usage crossed it.
    pub(crate) fn event(&self, attempt: u32, at: dispatch_core::Ts) -> dispatch_core::NewEvent {
        dispatch_core::NewEvent::new(dispatch_core::EventKind::Quota, attempt, at, self.data())
    }
}

/// The period names budgets count over at `at`: (day, month).
pub(crate) fn periods_at(at: dispatch_core::Ts) -> (String, String) {
    use dispatch_core::quota::{Period, period_of};
    (period_of(Period::Day, at).2, period_of(Period::Month, at).2)
}

/// Quotas per project.
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Sets these limits (a limit already set for the project is replaced),
    /// all in one transaction. On PostgreSQL, workers are woken: a raise may
    /// let queued runs go.
    async fn set_quotas(&self, quotas: &[Quota]) -> StoreResult<()>;

    /// Removes the project's limits (all, or only `limit`); answers how
    /// many were removed. Workers are woken as by [`Self::set_quotas`].
    async fn remove_quotas(&self, project: &str, limit: Option<QuotaLimit>) -> StoreResult<u64>;

    /// The limits of `projects` (empty: every project), by project, then
    /// limit.
    async fn list_quotas(&self, projects: &[String]) -> StoreResult<Vec<Quota>>;

    /// How many runs of `project` are live now (starting, running, paused).
    async fn live_runs(&self, project: &str) -> StoreResult<u32>;

    /// The limits of `projects` (empty: every project) with what is used of
    /// each at `now`, ordered as [`Self::list_quotas`].
    async fn quota_use(
        &self,
        projects: &[String],
        now: dispatch_core::Ts,
    ) -> StoreResult<Vec<QuotaUse>>;
}

/// Sorts quotas by project, then limit.
pub(crate) fn sort(quotas: &mut [Quota]) {
    quotas.sort_by(|a, b| a.project.cmp(&b.project).then(a.limit.cmp(&b.limit)));
}

/// A stored limit name.
pub(crate) fn limit_of(name: &str) -> Result<QuotaLimit, String> {
    QuotaLimit::parse(name).map_err(|_| format!("`{name}` is not a quota limit"))
}

/// A stored action.
pub(crate) fn on_hard_of(name: &str) -> Result<dispatch_core::quota::OnHard, String> {
    dispatch_core::quota::OnHard::parse(name).map_err(|_| format!("`{name}` is not a quota action"))
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn a_claim_takes_no_more_runs_of_a_project_than_its_free_slots() {
        let c = |id: &str, p: &str| (id.to_string(), p.to_string());
        let candidates = [
            c("1", "a"),
            c("2", "b"),
            c("3", "a"),
            c("4", "a"),
            c("5", "c"),
        ];
        let caps = [("a".to_string(), 3.0, 1), ("c".to_string(), 2.0, 2)];
        assert_eq!(fit(&candidates, &caps), vec!["1", "2", "3"]);
    }
}
