//! How an idle worker learns that runs were enqueued: an in-process signal
//! from the API of the same process, PostgreSQL `LISTEN/NOTIFY` from anywhere
//! in the cluster, and a slow poll as the safety net (a run created by a
//! process that cannot notify, a lost listen connection).

use std::sync::Arc;
use std::time::Duration;

use dispatch_store::PgStore;
use dispatch_store::postgres::QueueListener;
use tokio::sync::Notify;

/// Wake-ups for one worker.
pub struct Wake {
    local: Arc<Notify>,
    pg: Option<PgStore>,
    listener: Option<QueueListener>,
}

impl Wake {
    /// Wakes on `local` only (SQLite, or tests).
    pub fn local(local: Arc<Notify>) -> Self {
        Wake {
            local,
            pg: None,
            listener: None,
        }
    }

    /// Wakes on `local` and on the database's queue notifications.
    pub fn postgres(local: Arc<Notify>, pg: PgStore) -> Self {
        Wake {
            local,
            pg: Some(pg),
            listener: None,
        }
    }

    /// Waits for a wake-up, at most `poll`.
    pub async fn wait(&mut self, poll: Duration) {
        if self.listener.is_none()
            && let Some(pg) = &self.pg
        {
            // Unreachable now: the poll covers until the next try.
            self.listener = pg.listen_queue().await.ok();
        }
        let Wake {
            local, listener, ..
        } = self;
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.notified().await,
                None => std::future::pending().await,
            }
        };
        let lost = tokio::select! {
            _ = local.notified() => false,
            alive = notified => !alive,
            _ = tokio::time::sleep(poll) => false,
        };
        if lost {
            self.listener = None;
        }
    }
}
