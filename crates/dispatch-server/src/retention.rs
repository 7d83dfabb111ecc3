//! `dispatch server --retention`: every interval, a retention pass (see
//! `dispatch_runtime::retention`) deletes the finished runs and events the
//! spec says are old enough, a bounded batch per transaction, with the
//! artifacts and log archives no remaining run has (in the cluster's
//! artifact store too, when there is one), and the uploads into the
//! database's object store that a writer abandoned a day ago. Several
//! servers may run it at once: each batch locks its runs with `SKIP LOCKED`
//! on PostgreSQL, so they share the work.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dispatch_core::time::now_ms;
use dispatch_runtime::Layout;
use dispatch_runtime::objects::Objects;
use dispatch_runtime::retention::{RetentionSpec, retention_pass};

use crate::SharedStore;

/// How often a server runs a retention pass unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

/// What the server keeps and how often it looks.
#[derive(Clone, Debug)]
pub struct Retention {
    pub spec: RetentionSpec,
    pub interval: Duration,
}

/// Runs a pass at once, then every `retention.interval`, until `shutdown`.
pub async fn keep(
    store: SharedStore,
    layout: Layout,
    shared: Option<Arc<Objects>>,
    retention: Retention,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let pass = retention_pass(
            &*store,
            &layout,
            shared.as_deref(),
            &retention.spec,
            now_ms(),
        );
        tokio::select! {
            _ = &mut shutdown => return,
            done = pass => match done {
                Ok(r) if r.runs + r.events > 0 => tracing::info!(
                    "[server] retention: deleted {} finished run(s), the events of {} more",
                    r.runs, r.events
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("[server] retention pass failed (next in {:?}): {e}", retention.interval),
            },
        }
        expire_uploads(&*store).await;
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(retention.interval) => {}
        }
    }
}

/// Uploads into the database's object store that were begun this long ago
/// and never committed (a writer that died) are deleted by a retention pass.
pub const ABANDONED_UPLOAD: Duration = Duration::from_secs(24 * 3600);

/// A server without `--retention` still deletes abandoned uploads: once at
/// start, then every hour, until `shutdown`.
pub async fn sweep_uploads(store: SharedStore, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            () = expire_uploads(&*store) => {}
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Deletes the abandoned uploads (see [`ABANDONED_UPLOAD`]); a failure is a
/// warning: the parts cost space until the next pass.
async fn expire_uploads(store: &dyn crate::ClusterStore) {
    let before = now_ms().saturating_sub(ABANDONED_UPLOAD.as_millis() as i64);
    match store.expire_blob_uploads(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!("[server] retention: deleted {n} abandoned object upload(s)"),
        Err(e) => tracing::warn!("[server] retention: abandoned object uploads stay: {e}"),
    }
}
