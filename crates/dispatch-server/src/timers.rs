//! Durable waits that run out: every `dispatch server` wakes the suspended
//! runs whose timer rang or whose signal or approval timed out (see
//! `dispatch_runtime::suspend`). Several servers may do it at once: each wake
//! is a compare-and-set, so a run is woken once.

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
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(TIMER_POLL) => {}
        }
    }
}
