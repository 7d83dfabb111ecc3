//! A native agent's `RATE_LIMIT`s: before each model call the runtime asks
//! the store (shared by every worker) for a grant in each bucket that
//! applies, waiting while the buckets are full; a call that waited records
//! a `rate_limit_wait` event (and one that will wait a second or more says
//! so as it starts, `rate_limit_waiting` with the time it expects to go, so
//! `ps` and the dashboard can say why the run waits); after the call the grant is settled to the
//! tokens really used; a provider's 429 blocks the buckets for its
//! `retry-after` (see [`dispatch_store::LimitStore`]).

use dispatch_core::EventKind;
use std::time::Duration;

use dispatch_agent::Admission;
use dispatch_core::concurrency::RateLimit;
use dispatch_core::{NewEvent, RunId, now_ms};
use dispatch_store::{BucketLimits, RateGrant, Store};
use serde_json::{Value, json};

/// The longest one wait sleeps before asking again (others may settle
/// grants to fewer tokens meanwhile).
const MAX_NAP: Duration = Duration::from_secs(1);

/// The limits of one run's parcel.
#[derive(Clone, Debug, Default)]
pub(super) struct Limits(pub Vec<RateLimit>);

impl Limits {
    fn applying<'a>(
        &'a self,
        model: &'a str,
        provider: &'a str,
    ) -> impl Iterator<Item = &'a RateLimit> {
        self.0.iter().filter(move |l| l.applies(model, provider))
    }

    /// Waits for a grant in every bucket that applies. Returns the grants
    /// and, when the call had to wait, its `rate_limit_wait` event; a wait
    /// of a second or more is announced first, once per call, as a
    /// `rate_limit_waiting` event of `run`'s attempt `attempt`.
    pub(super) async fn admit<S: Store + ?Sized>(
        &self,
        store: &S,
        model: &str,
        provider: &str,
        est_tokens: u64,
        (run, attempt): (&RunId, u32),
    ) -> (Admission, Option<Value>) {
        let mut announced = false;
        let started = now_ms();
        let mut grants = Vec::new();
        let mut buckets = Vec::new();
        for limit in self.applying(model, provider) {
            let bucket = limit.bucket();
            let limits = BucketLimits {
                requests: limit.requests,
                tokens: limit.tokens,
            };
            loop {
                match store
                    .rate_acquire(&bucket, &limits, est_tokens, now_ms())
                    .await
                {
                    Ok(RateGrant::Granted { grant }) => {
                        grants.push(grant);
                        break;
                    }
                    Ok(RateGrant::WaitUntil(at)) => {
                        if !announced && at - now_ms() >= 1000 {
                            announced = true;
                            let data = json!({"model": model, "provider": provider,
                                              "bucket": bucket, "until": at});
                            let event =
                                NewEvent::new(EventKind::RateLimitWaiting, attempt, now_ms(), data);
                            // Said at once, not with the round's events.
                            let _ = store.append_events(run, &[event]).await;
                        }
                        let ms = u64::try_from(at - now_ms()).unwrap_or(0).max(1);
                        tokio::time::sleep(Duration::from_millis(ms).min(MAX_NAP)).await;
                    }
                    // The store is out of reach: the call goes unlimited
                    // rather than the run failing (the provider may still 429).
                    Err(_) => break,
                }
            }
            buckets.push(bucket);
        }
        let waited = now_ms() - started;
        let event = (waited > 0 && !buckets.is_empty()).then(|| {
            json!({"model": model, "provider": provider, "waited_ms": waited,
                   "buckets": buckets, "estimated_tokens": est_tokens})
        });
        (Admission(grants), event)
    }

    pub(super) async fn settle<S: Store + ?Sized>(store: &S, admission: Admission, tokens: u64) {
        for grant in admission.0 {
            let _ = store.rate_settle(grant, tokens).await;
        }
    }

    pub(super) async fn block<S: Store + ?Sized>(
        &self,
        store: &S,
        model: &str,
        provider: &str,
        wait: Duration,
    ) {
        let until = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        for limit in self.applying(model, provider) {
            let _ = store.rate_block(&limit.bucket(), until).await;
        }
    }
}
