//! Riding out a short database outage where runs are created
//! (`POST /v1/runs`, `POST /v1/runs/{id}/replay`,
//! `POST /v1/dead-letters/{id}/replay`): a store call that found the
//! database out of reach (a restart, a cut connection, no connection to be
//! had: [`StoreError::Unavailable`](dispatch_store::StoreError)) is tried
//! again, pausing 50 ms, then twice as long each time up to 1 s, until the
//! request's budget (`dispatch server --enqueue-retry`, default 10 s) has
//! passed; then the request answers 503 `unavailable` with `Retry-After`.
//! Nothing else is retried: a refused write, a conflict or bad input fails
//! the same way every time.
//!
//! The run is never created twice: its id is chosen before the first try,
//! and every retry first looks that id up. A try whose commit reached the
//! database but whose answer was lost with the connection has created the
//! run, and that run is the answer. Parcels and briefs are stored by their
//! digest, so writing them again is harmless.

use std::future::Future;
use std::time::{Duration, Instant};

use dispatch_store::{Created, NewRun, QueueOptions, RunExtras, StoreError};

use super::{ApiResult, AppState};

/// How long a request that creates a run waits for a lost database by default.
pub const DEFAULT_ENQUEUE_RETRY: Duration = Duration::from_secs(10);

/// The first pause after a failed try.
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// The longest pause between two tries.
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// One request's budget for a lost database.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Patience {
    until: Instant,
}

impl Patience {
    /// A budget of `budget` from now (zero: no retry).
    pub(crate) fn new(budget: Duration) -> Patience {
        let now = Instant::now();
        Patience {
            // A budget past what the clock can hold is a day: still bounded.
            until: now
                .checked_add(budget)
                .unwrap_or(now + Duration::from_secs(86_400)),
        }
    }

    /// Whether the budget has passed.
    pub(crate) fn spent(&self) -> bool {
        Instant::now() >= self.until
    }

    /// `call`, again while it fails because the database is out of reach
    /// and the budget lasts; the last answer otherwise.
    pub(crate) async fn retry<T, F, Fut>(&self, mut call: F) -> ApiResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ApiResult<T>>,
    {
        let mut pause = FIRST_PAUSE;
        loop {
            let error = match call().await {
                Err(e) if e.retry => e,
                answer => return answer,
            };
            let left = self.until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(error);
            }
            tracing::debug!(
                "[server] the database is out of reach; trying again in {:?}",
                pause.min(left)
            );
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }
}

/// Stores `new` with its extras and queue options (see
/// [`StoreError::Unavailable`] retries in the module doc): after a failed
/// try, a run stored under `new`'s id is the one that try created.
pub(super) async fn enqueue_once(
    state: &AppState,
    patience: &Patience,
    new: &NewRun,
    extras: &RunExtras,
    options: &QueueOptions,
    dedupe: bool,
) -> ApiResult<Created> {
    let first = state.store.enqueue_with(new, extras, options, dedupe).await;
    match first {
        Err(e @ StoreError::Unavailable { .. }) if !patience.spent() => {
            tracing::debug!("[server] run {}: enqueue failed ({e}); retrying", new.id);
        }
        other => return Ok(other?),
    }
    patience
        .retry(|| async {
            match state.store.get_run(&new.id).await {
                Ok(run) => return Ok(Created::New(run)),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(state
                .store
                .enqueue_with(new, extras, options, dedupe)
                .await?)
        })
        .await
}
