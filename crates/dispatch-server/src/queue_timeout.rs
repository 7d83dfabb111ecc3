//! Queue timeouts: every `dispatch server` ends the queued runs nobody
//! claimed in time (`timed_out`, with the reason), whether or not it has
//! workers of its own — a run whose labels no worker has, or that waits
//! while every worker is busy or gone, still ends.
//!
//! Like an idle worker, the keeper asks the database nothing while nothing
//! is due: it sleeps until the next deadline it knows, and looks again when
//! a run enters the queue (this process's API, or a PostgreSQL `NOTIFY` from
//! anywhere in the cluster), at most once per [`MIN_LOOK_GAP`] under load.
//! Several servers may keep the same queue: a run is ended once, by
//! whichever gets its row first (the others find it gone).

use std::future::Future;
use std::time::Duration;

use dispatch_core::{Ts, now_ms};
use tokio::time::Instant;

use crate::SharedStore;
use crate::metrics::Metrics;
use crate::wake::Wake;
use crate::worker::CONNECTED_POLL;

/// The least time between two looks at the queue prompted by enqueues: a
/// busy queue costs at most one query a second, and a deadline is kept to
/// within about as much.
pub const MIN_LOOK_GAP: Duration = Duration::from_secs(1);

/// What the keeper needs: the store, its wake-ups, and how often to look
/// while notifications are not connected (the embedded SQLite database,
/// whose workers requeue without telling anyone).
pub struct Keeper {
    pub store: SharedStore,
    pub wake: Wake,
    pub poll: Duration,
    pub metrics: std::sync::Arc<Metrics>,
    /// Where the traces of runs timed out in the queue go.
    pub tracer: Option<crate::otel::Tracer>,
}

impl Keeper {
    /// Keeps the queue's deadlines until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        self.wake.connect().await;
        loop {
            let next = self.look().await;
            let looked = Instant::now();
            let safety = if self.wake.complete() {
                CONNECTED_POLL
            } else {
                self.poll
            };
            let until = next.map_or(looked + safety, |n| n.min(looked + safety));
            tokio::select! {
                () = &mut shutdown => return,
                () = self.wake.wait(until) => {}
            }
            if Instant::now() < until {
                // Woken by an enqueue: wait out the gap, then look.
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep_until(looked + MIN_LOOK_GAP) => {}
                }
            }
            if !self.wake.complete() {
                // Enqueues sent while disconnected were missed: the look covers them.
                self.wake.connect().await;
            }
        }
    }

    /// Ends what is due; returns when the next deadline falls (`None`: no
    /// run waits with a queue timeout).
    async fn look(&self) -> Option<Instant> {
        loop {
            let now = now_ms();
            let times = match self.store.queue_times(now).await {
                Ok(times) => times,
                Err(e) => {
                    tracing::warn!("[server] cannot read the queue's deadlines: {e}");
                    return Some(Instant::now() + self.poll);
                }
            };
            let deadline = times.next_queue_deadline?;
            if deadline >= now {
                return Some(instant_after(deadline, now));
            }
            match self.store.expire_queued(now).await {
                Ok(ended) if ended.is_empty() => {
                    // Taken meanwhile (a claim, another server): look again later.
                    return Some(Instant::now() + MIN_LOOK_GAP);
                }
                Ok(ended) => {
                    Metrics::add(&self.metrics.runs_queue_timed_out, ended.len() as u64);
                    for id in &ended {
                        tracing::info!(
                            "[server] run {id}: queue timeout, nobody claimed it in time"
                        );
                        if let Some(tracer) = &self.tracer {
                            tracer.finished(id);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("[server] cannot end runs past their queue timeout: {e}");
                    return Some(Instant::now() + self.poll);
                }
            }
        }
    }
}

/// The instant just after `deadline` (a run may be claimed until its deadline).
fn instant_after(deadline: Ts, now: Ts) -> Instant {
    let wait = u64::try_from(deadline.saturating_sub(now)).unwrap_or(0) + 1;
    Instant::now() + Duration::from_millis(wait)
}
