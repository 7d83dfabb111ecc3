//! Lease renewal on a thread of its own: the worker's runs share one async
//! runtime, and a runtime they saturate (thousands of runs, a run doing
//! blocking work, a flood of mounts) would delay the renewals that keep
//! their leases, until the worker fenced itself off its own runs and took
//! them again from the queue. So the leases in hand are renewed here: an OS
//! thread with its own single-threaded runtime and its own database
//! connection ([`LeaseDb`], opened on that runtime: a PostgreSQL
//! connection's socket is driven by the runtime that opened it), fed the
//! runs in hand through a shared map that the worker loop fills when it
//! starts a run and empties when the run ends or is let go.
//!
//! The schedule and the fencing are [`crate::self_fence`]'s, unchanged:
//! every `L/6` a renewal of every writable lease in one statement (every
//! `L/30` while renewals fail), each bounded by `L/6`; a run the database
//! did not renew and that has not ended was taken over, so its lease is
//! marked lost (no more writes), its agent's group killed and its task
//! aborted; the worker loop frees its slot when it next looks
//! ([`Phase::Gone`]). The watchdog thread that stops agents whose lease was
//! not renewed in time is separate again: a renewal that hangs in a
//! partition blocks this thread, never the fencing.
//!
//! What this does not decouple: a renewal's `UPDATE` waits for any write of
//! the same run in flight (every fenced write locks the run's row), so a
//! work runtime that stalls in the middle of a run's transaction delays
//! that row's renewal until it commits. A lease table of its own, which the
//! runs' writes do not lock, would remove that.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dispatch_core::{RunId, now_ms};
use dispatch_runtime::os;
use nix::sys::signal::Signal;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;

use super::bounded;
use crate::SharedStore;
use crate::fenced::FencedStore;
use crate::self_fence::LeaseTimes;

/// Where the renewal thread opens its own database connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDb {
    /// A PostgreSQL URL.
    Postgres(String),
    /// The embedded SQLite database at this path.
    Sqlite(PathBuf),
}

impl LeaseDb {
    /// The connections renewals need: one for the renewal, one to read a
    /// run that was not renewed.
    const CONNECTIONS: usize = 2;

    async fn open(&self) -> crate::ServerResult<SharedStore> {
        self.open_as(Self::CONNECTIONS, None).await
    }

    /// A store of its own on this database: on PostgreSQL a pool of
    /// `connections`, named `name` in `pg_stat_activity` when given.
    pub(crate) async fn open_as(
        &self,
        connections: usize,
        name: Option<&str>,
    ) -> crate::ServerResult<SharedStore> {
        Ok(match self {
            LeaseDb::Postgres(url) => {
                Arc::new(dispatch_store::PgStore::connect_as(url, connections, name).await?)
            }
            LeaseDb::Sqlite(path) => Arc::new(dispatch_store::SqliteStore::open(
                path,
                Duration::from_secs(5),
            )?),
        })
    }
}

/// A run whose lease is kept.
#[derive(Clone)]
struct Kept {
    store: Arc<FencedStore>,
    task: AbortHandle,
}

type Runs = Arc<Mutex<HashMap<RunId, Kept>>>;

fn lock(runs: &Runs) -> MutexGuard<'_, HashMap<RunId, Kept>> {
    runs.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the renewal thread needs to know of its worker.
pub(super) struct RenewConfig {
    /// The lease owner.
    pub name: String,
    pub lease: Duration,
    /// Its own connection; `None`: the worker's store (renewals still leave
    /// the work runtime's queue, but a PostgreSQL socket of that store is
    /// driven by the work runtime).
    pub db: Option<LeaseDb>,
    /// The worker's store, until (or unless) the thread's own is open.
    pub shared: SharedStore,
}

/// The handle of the renewal thread: register runs, let go of them; the
/// thread stops when this is dropped.
pub(super) struct Renewer {
    runs: Runs,
    stop: Arc<AtomicBool>,
    wake: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl Renewer {
    /// Starts the thread.
    pub(super) fn start(config: RenewConfig) -> Renewer {
        let runs: Runs = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let (r, s, w) = (runs.clone(), stop.clone(), wake.clone());
        let name = config.name.clone();
        let thread = std::thread::Builder::new()
            .name("lease-renewer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(
                            "[worker {name}] cannot start the lease renewal runtime: {e}"
                        );
                        return;
                    }
                };
                runtime.block_on(renew_loop(config, r, s, w));
            })
            .map_err(|e| tracing::error!("[worker] cannot start the lease renewal thread: {e}"))
            .ok();
        Renewer {
            runs,
            stop,
            wake,
            thread,
        }
    }

    /// Keeps the lease of `id`, held through `store`, run by `task`.
    pub(super) fn hold(&self, id: RunId, store: Arc<FencedStore>, task: AbortHandle) {
        lock(&self.runs).insert(id, Kept { store, task });
    }

    /// `id` is no longer held.
    pub(super) fn forget(&self, id: &RunId) {
        lock(&self.runs).remove(id);
    }
}

impl Renewer {
    /// Stops the thread and waits for it to end while the calling runtime
    /// goes on: until the renewal connection opens, renewals go through the
    /// worker's own store, whose connections that runtime drives, so a
    /// thread blocked joining there would wait for a renewal that waits for
    /// it (a worker drained after a partition hung so: the partition tests
    /// under load).
    pub(super) async fn stop(mut self) {
        self.signal_stop();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    fn signal_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        lock(&self.runs).clear();
        self.wake.notify_one();
    }
}

impl Drop for Renewer {
    /// Not joined (see [`Renewer::stop`]): the thread renews nothing more
    /// and ends after its current call, each bounded.
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// The thread's loop: ticks at the retry interval, renews every
/// `renew_every` (at every tick while renewals fail).
async fn renew_loop(config: RenewConfig, runs: Runs, stop: Arc<AtomicBool>, wake: Arc<Notify>) {
    let times = LeaseTimes::new(config.lease);
    let mut own: Option<SharedStore> = None;
    let mut told_shared = false;
    let mut tick = tokio::time::interval(times.retry_every());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut state = RenewState {
        renewed_at: Instant::now(),
        failing: false,
    };
    while !stop.load(Ordering::SeqCst) {
        tokio::select! {
            _ = tick.tick() => {}
            () = wake.notified() => continue,
        }
        if lock(&runs).is_empty()
            || (!state.failing && state.renewed_at.elapsed() < times.renew_every())
        {
            continue;
        }
        if own.is_none()
            && let Some(db) = &config.db
        {
            match bounded_open(db.open(), times.renew_every()).await {
                Ok(store) => own = Some(store),
                Err(e) if !told_shared => {
                    told_shared = true;
                    tracing::warn!(
                        "[worker {}] cannot open the lease renewal connection ({e}); renewing \
                         through the worker's own until it opens",
                        config.name
                    );
                }
                Err(_) => {}
            }
        }
        let store = own.as_ref().unwrap_or(&config.shared);
        renew(&config, store, &times, &runs, &mut state).await;
    }
}

/// The store `open` opens, or why not within `limit`.
pub(crate) async fn bounded_open(
    open: impl Future<Output = crate::ServerResult<SharedStore>>,
    limit: Duration,
) -> Result<SharedStore, String> {
    match tokio::time::timeout(limit, open).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

struct RenewState {
    /// When the last renewal that succeeded was sent.
    renewed_at: Instant,
    /// The last renewal failed: try again at the next tick.
    failing: bool,
}

/// Renews every writable lease in hand in one statement; a run not renewed
/// was taken over (unless it ended meanwhile): its lease is lost.
async fn renew(
    config: &RenewConfig,
    store: &SharedStore,
    times: &LeaseTimes,
    runs: &Runs,
    state: &mut RenewState,
) {
    let held: Vec<(RunId, i64)> = lock(runs)
        .iter()
        .filter(|(_, k)| k.store.lease().writable())
        .map(|(id, k)| (id.clone(), k.store.fence()))
        .collect();
    if held.is_empty() {
        return;
    }
    let lease = i64::try_from(config.lease.as_millis()).unwrap_or(i64::MAX);
    let sent = Instant::now();
    let renewal = store.renew_leases(&config.name, &held, now_ms() + lease);
    let renewed: HashSet<RunId> =
        match bounded(renewal, times.renew_every(), "a lease renewal").await {
            Ok(ids) => {
                if state.failing {
                    tracing::warn!("[worker {}] leases renewed again", config.name);
                }
                state.failing = false;
                state.renewed_at = sent;
                ids.into_iter().collect()
            }
            Err(e) => {
                if !state.failing {
                    tracing::warn!(
                        "[worker {}] cannot renew leases: {e}; retrying",
                        config.name
                    );
                }
                state.failing = true;
                return;
            }
        };
    for (id, _) in held {
        // Ended and let go meanwhile: nothing to do.
        let Some(kept) = lock(runs).get(&id).cloned() else {
            continue;
        };
        if renewed.contains(&id) {
            kept.store.lease().renewed(sent);
            if kept.store.lease().writable() {
                // The run's processes may live until the moment
                // self-fencing would kill them, even if this process is
                // frozen by then.
                let kill_at = sent + times.kill_after();
                dispatch_runtime::sandbox::lease_renewed(&id.to_string(), kill_at);
            }
            continue;
        }
        // Finished between the snapshot and the renewal, or taken over.
        let read = bounded(store.get_run(&id), times.renew_every(), "a run's read");
        let ended = match read.await {
            Ok(run) => run.state.is_terminal(),
            Err(_) => false,
        };
        if ended {
            // Its task is about to report; nothing was lost.
            continue;
        }
        tracing::warn!(
            "[worker {}] run {id}: lease lost; stopping its agent",
            config.name
        );
        kept.store.lease().lose();
        if let Some(agent) = kept.store.agent() {
            os::signal_group(agent.pid, Signal::SIGKILL);
        }
        kept.task.abort();
        lock(runs).remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_renewal_connection_is_opened_from_what_the_worker_was_given() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let db = LeaseDb::Sqlite(dir.path().join("dispatch.db"));
        assert!(rt.block_on(db.open()).is_ok());
        let bad = LeaseDb::Postgres("not a url".into());
        assert!(
            rt.block_on(db_open_err(&bad))
                .contains("not a PostgreSQL URL")
        );
    }

    async fn db_open_err(db: &LeaseDb) -> String {
        match db.open().await {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }
}
