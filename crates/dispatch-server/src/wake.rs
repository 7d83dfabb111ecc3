//! How an idle worker learns that runs were enqueued: an in-process signal
//! from the API of the same process, PostgreSQL `LISTEN/NOTIFY` from anywhere
//! in the cluster, in bus mode a Redis stream read through a consumer group,
//! and a slow poll as the safety net (a run created by a process that cannot
//! notify, a lost connection).

use std::sync::Arc;
use std::time::Duration;

use dispatch_store::PgStore;

use crate::bus::{BusConfig, Subscription};
use dispatch_store::postgres::QueueListener;
use tokio::sync::Notify;

/// Wake-ups for one worker.
pub struct Wake {
    local: Arc<Notify>,
    pg: Option<PgStore>,
    listener: Option<QueueListener>,
    /// Bus mode: the Redis stream and this worker's consumer name.
    bus: Option<(BusConfig, String)>,
    subscription: Option<Subscription>,
}

impl Wake {
    /// Wakes on `local` only (SQLite, or tests).
    pub fn local(local: Arc<Notify>) -> Self {
        Wake {
            local,
            pg: None,
            listener: None,
            bus: None,
            subscription: None,
        }
    }

    /// Wakes on `local` and on the database's queue notifications.
    pub fn postgres(local: Arc<Notify>, pg: PgStore) -> Self {
        Wake {
            local,
            pg: Some(pg),
            listener: None,
            bus: None,
            subscription: None,
        }
    }

    /// Also wakes on the Redis stream, read as `consumer` of the workers' group.
    pub fn with_bus(mut self, bus: Option<BusConfig>, consumer: &str) -> Self {
        self.bus = bus.map(|b| (b, consumer.to_string()));
        self
    }

    /// Waits for a wake-up, at most `poll`.
    pub async fn wait(&mut self, poll: Duration) {
        if self.listener.is_none()
            && let Some(pg) = &self.pg
        {
            // Unreachable now: the poll covers until the next try.
            self.listener = pg.listen_queue().await.ok();
        }
        if self.subscription.is_none()
            && let Some((config, consumer)) = &self.bus
        {
            self.subscription = Subscription::open(config, consumer).await.ok();
        }
        let Wake {
            local,
            listener,
            subscription,
            ..
        } = self;
        let from_bus = async {
            match subscription.as_mut() {
                Some(s) => s.notified().await,
                None => std::future::pending().await,
            }
        };
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.notified().await,
                None => std::future::pending().await,
            }
        };
        let (lost_listener, lost_bus) = tokio::select! {
            _ = local.notified() => (false, false),
            alive = notified => (!alive, false),
            alive = from_bus => (false, !alive),
            _ = tokio::time::sleep(poll) => (false, false),
        };
        if lost_listener {
            self.listener = None;
        }
        if lost_bus {
            self.subscription = None;
        }
    }
}
