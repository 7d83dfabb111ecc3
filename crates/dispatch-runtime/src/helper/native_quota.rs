//! A native agent's project budgets: before each model call the runtime
//! asks the store whether the run's project is over a budget of its quota
//! (tokens or USD per UTC day or month, counted across the cluster); if so
//! the run calls no more and ends `budget_exceeded`, naming the quota, as at
//! its own `LIMIT COST` (see `dispatch_core::quota`), or, with
//! `ON BUDGET pause`, pauses until the quota is raised or its period ends
//! ([`pause`]).

use dispatch_core::{RunId, now_ms};
use dispatch_store::Store;

/// Why a run of `project` may not call its model any more, if the project
/// is over a budget now. The store out of reach: the call goes (as rate
/// limits do).
pub(super) async fn over_quota<S: Store + ?Sized>(store: &S, project: &str) -> Option<String> {
    let used = store
        .quota_use(&[project.to_string()], now_ms())
        .await
        .ok()?;
    let over = used
        .into_iter()
        .find(|u| u.quota.limit.period().is_some() && u.hard_reached())?;
    Some(format!(
        "project `{project}` is over its quota {}: {} (hint: {})",
        over.quota.limit,
        over.text(),
        over.hint()
    ))
}

/// The `wait` event of a run pausing because its project is over a hard
/// budget (`ON BUDGET pause`): for the project's quota (a raise wakes it,
/// see `crate::suspend::quota_changed`), at the latest until the end of the
/// over budget's period (a new day or month, when it is no longer over).
pub(super) async fn pause<S: Store + ?Sized>(
    store: &S,
    run: &RunId,
    reason: &str,
) -> serde_json::Value {
    let now = now_ms();
    let project = store
        .get_run(run)
        .await
        .map_or_else(|_| "default".to_string(), |r| r.project);
    let ends = store
        .quota_use(std::slice::from_ref(&project), now)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|u| u.hard_reached())
        .filter_map(|u| u.quota.limit.period())
        .map(|p| dispatch_core::quota::period_of(p, now).1)
        .max();
    let mut wait = serde_json::json!({
        "type": "wait", "for": "quota", "project": project, "reason": reason,
    });
    if let Some(end) = ends {
        wait["timeout_s"] = serde_json::json!((end - now).max(0) as f64 / 1000.0);
    }
    wait
}
