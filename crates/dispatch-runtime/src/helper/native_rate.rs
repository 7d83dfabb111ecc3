//! A native agent's `RATE_LIMIT`s: before each model call the runtime asks
//! the store (shared by every worker) for a grant in each bucket that
//! applies, waiting while the buckets are full; a call that waited records
//! a `rate_limit_wait` event; after the call the grant is settled to the
//! tokens really used; a provider's 429 blocks the buckets for its
//! `retry-after` (see [`dispatch_store::LimitStore`]).

use std::time::Duration;

use dispatch_agent::Admission;
use dispatch_core::concurrency::RateLimit;
use dispatch_core::now_ms;
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
    /// and, when the call had to wait, its `rate_limit_wait` event.
    pub(super) async fn admit<S: Store + ?Sized>(
        &self,
        store: &S,
        model: &str,
        provider: &str,
        est_tokens: u64,
    ) -> (Admission, Option<Value>) {
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
