//! A native agent's project budgets: before each model call the runtime
//! asks the store whether the run's project is over a budget of its quota
//! (tokens or USD per UTC day or month, counted across the cluster); if so
//! the run calls no more and ends `budget_exceeded`, naming the quota, as at
//! its own `LIMIT COST` (see `dispatch_core::quota`).

use dispatch_core::{RunId, now_ms};
use dispatch_store::Store;

/// Why `run` may not call its model any more, if its project is over a
/// budget now. The store out of reach: the call goes (as rate limits do).
pub(super) async fn over_quota<S: Store + ?Sized>(store: &S, run: &RunId) -> Option<String> {
    let project = store.get_run(run).await.ok()?.project;
    let used = store
        .quota_use(std::slice::from_ref(&project), now_ms())
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
