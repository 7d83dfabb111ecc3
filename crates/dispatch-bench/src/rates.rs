//! `dispatch-bench rates [--calls 2000] [--tasks 10] [--database-url URL]`:
//! the cost of one model rate-bucket check (`rate_acquire` then
//! `rate_settle`, what a native agent does around each model call) with the
//! buckets in PostgreSQL (the default) and in Redis (`--rate-limit-store`,
//! 127.0.0.1:6379), in the same run: the median per call from one task, and
//! the throughput of `--tasks` concurrent callers on one bucket whose limit
//! is never reached. Prints a Markdown table; Redis ÷ PostgreSQL as the ratio.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatch_core::concurrency::Rate;
use dispatch_core::now_ms;
use dispatch_server::rates::RedisRates;
use dispatch_store::{BucketLimits, LimitStore, PgStore, RateGrant, StoreResult};
use dispatch_test_support::testdb::TestDatabase;

use crate::flag_value;

/// One way to keep the buckets.
trait Buckets: Send + Sync {
    fn check(&self, bucket: String) -> futures_util::future::BoxFuture<'_, StoreResult<()>>;
}

fn limits() -> BucketLimits {
    BucketLimits {
        requests: Some(Rate {
            limit: 100_000_000,
            window_ms: 60_000,
        }),
        tokens: Some(Rate {
            limit: 100_000_000_000,
            window_ms: 60_000,
        }),
    }
}

impl Buckets for PgStore {
    fn check(&self, bucket: String) -> futures_util::future::BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            match self.rate_acquire(&bucket, &limits(), 100, now_ms()).await? {
                RateGrant::Granted { grant } => self.rate_settle(grant, 80).await,
                RateGrant::WaitUntil(_) => panic!("the bench's limit is never reached"),
            }
        })
    }
}

impl Buckets for RedisRates {
    fn check(&self, bucket: String) -> futures_util::future::BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            match self.acquire(&bucket, &limits(), 100, now_ms()).await? {
                RateGrant::Granted { grant } => self.settle(grant, 80).await,
                RateGrant::WaitUntil(_) => panic!("the bench's limit is never reached"),
            }
        })
    }
}

/// Median of `calls` sequential checks, and checks/s of `tasks` concurrent callers.
async fn measure(b: Arc<dyn Buckets>, bucket: &str, calls: usize, tasks: usize) -> (Duration, f64) {
    let mut each = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        b.check(bucket.to_string()).await.expect("check");
        each.push(t.elapsed());
    }
    each.sort();
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (b, bucket) = (b.clone(), format!("{bucket}-c"));
        handles.push(tokio::spawn(async move {
            for _ in 0..calls / tasks {
                b.check(bucket.clone()).await.expect("check");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let rate = (calls / tasks * tasks) as f64 / started.elapsed().as_secs_f64();
    (each[each.len() / 2], rate)
}

pub fn main(args: &[String]) {
    crate::use_database_url(args);
    let calls: usize = flag_value(args, "--calls")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let tasks: usize = flag_value(args, "--tasks")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let db = TestDatabase::create().await.expect("PostgreSQL at 127.0.0.1:5432");
        let pg: Arc<dyn Buckets> = Arc::new(
            PgStore::connect(db.url(), tasks + 2)
                .await
                .expect("postgres connects"),
        );
        let redis: Arc<dyn Buckets> = Arc::new(
            RedisRates::connect("redis://127.0.0.1:6379")
                .await
                .expect("Redis at 127.0.0.1:6379"),
        );
        let bucket = format!("model:bench-{}-{}", std::process::id(), now_ms());
        // Warm both, then interleave the measurements.
        let _ = measure(pg.clone(), &bucket, 50, 5).await;
        let _ = measure(redis.clone(), &bucket, 50, 5).await;
        let (pg_p50, pg_rate) = measure(pg, &format!("{bucket}-pg"), calls, tasks).await;
        let (r_p50, r_rate) = measure(redis, &format!("{bucket}-r"), calls, tasks).await;
        println!("| rate-bucket check (acquire + settle) | PostgreSQL | Redis | Redis ÷ PostgreSQL |");
        println!("| --- | --- | --- | --- |");
        println!(
            "| p50 of {calls}, one caller | {:.0} µs | {:.0} µs | {:.2} |",
            pg_p50.as_secs_f64() * 1e6,
            r_p50.as_secs_f64() * 1e6,
            r_p50.as_secs_f64() / pg_p50.as_secs_f64()
        );
        println!(
            "| {tasks} concurrent callers, one bucket | {pg_rate:.0} checks/s | {r_rate:.0} checks/s | {:.2} |",
            r_rate / pg_rate
        );
    });
}
