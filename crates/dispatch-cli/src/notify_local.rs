//! Notifications on a machine without a server: the run's helper is the
//! process alive while the run is, so it drains the notification outbox
//! beside its run (approvals asked, their escalation steps, the run's end)
//! and, after the run ended, keeps delivering for `delivery.linger` at most.
//! What a helper leaves undelivered (an endpoint still failing) the next
//! run's helper takes up; `dispatch notify ls` shows the outbox.

use std::future::Future;

use dispatch_runtime::layout::Layout;
use dispatch_store::sqlite::SqliteStore;

use crate::error::{CliError, CliResult};

/// Refuses a dispatch while `notifications.toml` does not load (one line).
pub fn check(layout: &Layout) -> CliResult<()> {
    dispatch_notify::config::load_in(layout.root())
        .map(|_| ())
        .map_err(|e| CliError::input(e.to_string()))
}

/// Runs `work` (a run's helper) with the state directory's notifier
/// draining the outbox beside it, then lingers while notifications are
/// open; without a configuration, just `work`.
pub async fn beside<T>(layout: &Layout, store: &SqliteStore, work: impl Future<Output = T>) -> T {
    let notifier = match dispatch_notify::configured(layout.root()) {
        Ok(Some(n)) => n,
        Ok(None) => return work.await,
        Err(e) => {
            eprintln!("[dispatch] {e}; no notification is sent by this run's helper");
            return work.await;
        }
    };
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let drain = notifier.run_until(store, async {
        let _ = ended.await;
    });
    let work = async {
        let out = work.await;
        let _ = done.send(());
        out
    };
    let (out, ()) = tokio::join!(work, drain);
    notifier.linger(store).await;
    out
}
