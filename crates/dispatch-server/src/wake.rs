//! How an idle worker learns that runs were enqueued: an in-process signal
//! from the API of the same process, PostgreSQL `LISTEN/NOTIFY` from anywhere
//! in the cluster, in bus mode a Redis stream read through a consumer group,
//! and a slow poll as the safety net (a run created by a process that cannot
//! notify, a lost connection).

use std::sync::Arc;

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

    /// Opens what is not open yet (the `LISTEN` connection, the bus
    /// subscription). `true` when something was (re)opened: notifications
    /// sent while it was closed were missed, so the caller looks at the queue.
    pub async fn connect(&mut self) -> bool {
        let mut opened = false;
        if self.listener.is_none()
            && let Some(pg) = &self.pg
        {
            // Unreachable now: the caller polls until the next try.
            self.listener = pg.listen_queue().await.ok();
            opened |= self.listener.is_some();
        }
        if self.subscription.is_none()
            && let Some((config, consumer)) = &self.bus
        {
            self.subscription = Subscription::open(config, consumer).await.ok();
            opened |= self.subscription.is_some();
        }
        opened
    }

    /// Whether enqueues anywhere in the cluster reach this worker: the
    /// database's notifications (or the bus) are connected. Otherwise (SQLite
    /// shared with other processes, a lost connection) the caller must poll.
    pub fn complete(&self) -> bool {
        self.listener.is_some() || self.subscription.is_some()
    }

    /// Waits for a wake-up or `deadline`, whichever comes first. Cancel-safe:
    /// a wake-up that arrives while nobody waits is kept for the next call.
    pub async fn wait(&mut self, deadline: tokio::time::Instant) {
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
            _ = tokio::time::sleep_until(deadline) => (false, false),
        };
        if lost_listener {
            self.listener = None;
        }
        if lost_bus {
            self.subscription = None;
        }
    }
}
