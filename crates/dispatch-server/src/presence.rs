//! A worker's presence in the store ([`dispatch_store::WorkerStore`]): it
//! says who it is (name, labels, slots, lease length) when it starts, every
//! [`EVERY`] while it works, and once more, stopped, when it has drained —
//! what the dashboard's workers page lists.

use std::future::Future;
use std::time::Duration;

use dispatch_core::now_ms;
use dispatch_store::WorkerBeat;

use crate::SharedStore;
use crate::worker::WorkerConfig;

/// How often a working worker says it is there.
pub const EVERY: Duration = Duration::from_secs(5);

/// Runs `work` (the worker's loop) while keeping its presence fresh.
pub async fn beating<F: Future>(store: SharedStore, config: &WorkerConfig, work: F) -> F::Output {
    let mut beat = WorkerBeat {
        name: config.name.clone(),
        labels: config.labels.clone(),
        slots: u32::try_from(config.slots).unwrap_or(u32::MAX),
        lease_ms: i64::try_from(config.lease.as_millis()).unwrap_or(i64::MAX),
        started_at: now_ms(),
        seen_at: now_ms(),
        stopped_at: None,
    };
    let keep = {
        let (store, mut beat) = (store.clone(), beat.clone());
        async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                beat.seen_at = now_ms();
                if let Err(e) = store.worker_beat(&beat).await {
                    tracing::warn!("[worker] {}: cannot record presence: {e}", beat.name);
                }
            }
        }
    };
    let out = tokio::select! {
        out = work => out,
        never = keep => never,
    };
    beat.seen_at = now_ms();
    beat.stopped_at = Some(beat.seen_at);
    if let Err(e) = store.worker_beat(&beat).await {
        tracing::warn!("[worker] {}: cannot record that it stopped: {e}", beat.name);
    }
    out
}
