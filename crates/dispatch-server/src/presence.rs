//! A worker's presence in the store ([`dispatch_store::WorkerStore`]): it
//! says who it is (name, labels, slots, lease length) when it starts, every
//! [`EVERY`] while it works, and once more, stopped, when it has drained —
//! what the dashboard's workers page lists.

use std::future::Future;
use std::time::Duration;

use dispatch_core::now_ms;
use dispatch_store::WorkerBeat;

use crate::SharedStore;
use crate::error::{ServerError, ServerResult};
use crate::worker::WorkerConfig;

/// How often a working worker says it is there.
pub const EVERY: Duration = Duration::from_secs(5);

/// A worker not heard from for this long is silent: its name is free.
pub const SILENT_AFTER: Duration = Duration::from_secs(3 * EVERY.as_secs());

/// How long a stopping worker waits to record that it stopped: a database
/// that answers does so in milliseconds; one that does not (a partition)
/// must not hold the worker's exit for a whole beat.
const STOPPED_PATIENCE: Duration = Duration::from_secs(1);

fn silent_before(now: i64) -> i64 {
    now - i64::try_from(SILENT_AFTER.as_millis()).unwrap_or(15_000)
}

/// This machine's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Whether `pid` runs on this machine.
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Takes the worker's name in the store before it claims anything: refused
/// while another live worker holds it (on another machine, or a process of
/// this one that still runs), which the error names.
pub async fn claim(store: &SharedStore, config: &WorkerConfig) -> ServerResult<WorkerBeat> {
    let now = now_ms();
    let beat = WorkerBeat {
        name: config.name.clone(),
        labels: config.labels.clone(),
        slots: u32::try_from(config.slots).unwrap_or(u32::MAX),
        lease_ms: i64::try_from(config.lease.as_millis()).unwrap_or(i64::MAX),
        started_at: now,
        seen_at: now,
        stopped_at: None,
        host: hostname(),
        pid: std::process::id(),
    };
    if store.worker_beat(&beat, silent_before(now), None).await? {
        return Ok(beat);
    }
    let holder = store
        .list_workers(0)
        .await?
        .into_iter()
        .find(|w| w.beat.name == beat.name)
        .map(|w| w.beat);
    if let Some(h) = &holder
        && h.host == beat.host
        && !alive(h.pid)
        && store
            .worker_beat(&beat, silent_before(now), Some(h.pid))
            .await?
    {
        // A restart after a crash on this machine: its name is ours.
        return Ok(beat);
    }
    let who = holder.map_or_else(
        || "another worker".to_string(),
        |h| {
            format!(
                "pid {} on {}, last heard {} s ago",
                h.pid,
                if h.host.is_empty() { "?" } else { &h.host },
                (now - h.seen_at).max(0) / 1000
            )
        },
    );
    Err(ServerError::NameTaken(format!(
        "worker name `{}` is held by a live worker ({who}): stop it first, or give this one another --name (a silent worker's name is free {} s after its last word)",
        beat.name,
        SILENT_AFTER.as_secs()
    )))
}

/// Runs `work` (the worker's loop) while keeping its presence (`beat`, as
/// [`claim`] took it) fresh. `work` is given a future that completes when
/// the name is lost: this worker was silent longer than [`SILENT_AFTER`]
/// (frozen, cut off) and another live worker took its name meanwhile. A
/// worker that lost its name must drain and stop (its runs' leases have
/// lapsed or will; two live workers of one name are never in a cluster),
/// so it passes that on as its shutdown; `Err(NameTaken)` then says why.
pub async fn beating<F, W>(
    store: SharedStore,
    mut beat: WorkerBeat,
    work: W,
) -> ServerResult<F::Output>
where
    F: Future,
    W: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
{
    let lost = std::sync::Arc::new(tokio::sync::Notify::new());
    let is_lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keep = {
        let (store, mut beat) = (store.clone(), beat.clone());
        let (lost, is_lost) = (lost.clone(), is_lost.clone());
        async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                beat.seen_at = now_ms();
                match store
                    .worker_beat(&beat, silent_before(beat.seen_at), None)
                    .await
                {
                    Ok(true) => {}
                    // Silent too long (frozen, cut off): another took the name.
                    Ok(false) => {
                        tracing::error!(
                            "[worker] {}: another live worker now holds this name (this one was not heard from for over {} s): this one claims nothing more, drains and stops",
                            beat.name,
                            SILENT_AFTER.as_secs()
                        );
                        is_lost.store(true, std::sync::atomic::Ordering::SeqCst);
                        lost.notify_one();
                        std::future::pending::<()>().await;
                    }
                    Err(e) => tracing::warn!("[worker] {}: cannot record presence: {e}", beat.name),
                }
            }
        }
    };
    let out = {
        let lost = lost.clone();
        let work = work(Box::pin(async move { lost.notified().await }));
        tokio::select! {
            out = work => out,
            never = keep => never,
        }
    };
    if is_lost.load(std::sync::atomic::Ordering::SeqCst) {
        // The name is another's: its presence is not this one's to end.
        return Err(ServerError::NameTaken(format!(
            "worker name `{}` was taken by another live worker while this one was not heard from for over {} s (frozen or cut off): it drained and stopped (hint: give each worker its own --name; restart this one when the other is gone)",
            beat.name,
            SILENT_AFTER.as_secs()
        )));
    }
    beat.seen_at = now_ms();
    beat.stopped_at = Some(beat.seen_at);
    // Bounded: a worker stopping while cut off from its database does not
    // wait for the partition to heal (its presence then just goes silent).
    let said = store.worker_beat(&beat, silent_before(beat.seen_at), None);
    match tokio::time::timeout(STOPPED_PATIENCE, said).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!("[worker] {}: cannot record that it stopped: {e}", beat.name),
        Err(_) => tracing::warn!(
            "[worker] {}: cannot record that it stopped: the database gave no answer within {} s",
            beat.name,
            STOPPED_PATIENCE.as_secs()
        ),
    }
    Ok(out)
}
