//! Durable waits that run out: every `dispatch server` wakes the suspended
//! runs whose timer rang or whose signal or approval timed out (see
//! `dispatch_runtime::suspend`), and cancels the runs whose review nobody
//! decided by its deadline (see `dispatch_runtime::review`). Several
//! servers may do it at once: each wake or end is a compare-and-set, so a
//! run is woken or ended once.

use std::future::Future;
use std::time::Duration;

use crate::SharedStore;

/// How often suspended runs are looked at: a timer rings within about this.
pub const TIMER_POLL: Duration = Duration::from_secs(1);

/// Wakes due suspended runs until `shutdown` completes.
pub async fn keep(store: SharedStore, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        if let Err(e) = dispatch_runtime::suspend::wake_due(&*store).await {
            tracing::warn!("[dispatch] could not wake suspended runs that are due: {e}");
        }
        match dispatch_runtime::review::expire_due(&*store).await {
            Ok(ended) => {
                for run in ended {
                    tracing::info!(
                        "[dispatch] run {} cancelled: {}",
                        run.id,
                        run.state.reason().unwrap_or_default()
                    );
                }
            }
            Err(e) => tracing::warn!("[dispatch] could not end reviews past their deadline: {e}"),
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(TIMER_POLL) => {}
        }
    }
}
