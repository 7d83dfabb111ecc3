//! `--rate-limit-store redis://…`: the Redis rate buckets answer as the
//! database's do (the same steps as the store conformance suite's
//! `rate_limits_admit_no_more_than_their_window`), and concurrent callers
//! never get more grants than the limit. Against the real Redis at
//! 127.0.0.1:6379, under a key prefix of their own; skipped (with a message)
//! without it, except under `CI=true`, where that fails.

use std::sync::Arc;

use dispatch_core::concurrency::Rate;
use dispatch_server::rates::RedisRates;
use dispatch_store::{BucketLimits, RateGrant};

/// A key prefix of this test's own, when Redis is up.
fn redis() -> Option<String> {
    if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
        let how =
            "start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''`";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Redis is not running on 127.0.0.1:6379 ({how})"
        );
        eprintln!("skipping: Redis is not running on 127.0.0.1:6379 ({how})");
        return None;
    }
    // Each test its own keys (two tests may start in the same millisecond).
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(format!(
        "dispatch-test:{}:{}:{n}:",
        std::process::id(),
        dispatch_core::now_ms()
    ))
}

/// Connected on the runtime that uses it (its connection's task lives there).
async fn connect(prefix: &str) -> RedisRates {
    RedisRates::connect("redis://127.0.0.1:6379")
        .await
        .expect("Redis connects")
        .with_prefix(prefix)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn limits(requests: u64, tokens: u64) -> BucketLimits {
    BucketLimits {
        requests: Some(Rate {
            limit: requests,
            window_ms: 1000,
        }),
        tokens: Some(Rate {
            limit: tokens,
            window_ms: 1000,
        }),
    }
}

fn grant(r: RateGrant) -> i64 {
    match r {
        RateGrant::Granted { grant } => grant,
        RateGrant::WaitUntil(t) => panic!("expected a grant, told to wait until {t}"),
    }
}

#[test]
fn redis_buckets_admit_no_more_than_their_window() {
    let Some(prefix) = redis() else { return };
    let limits = limits(2, 100);
    runtime().block_on(async {
        let store = connect(&prefix).await;
        let acquire = |bucket: &'static str, est: u64, now: i64| {
            let store = store.clone();
            async move {
                store
                    .acquire(bucket, &limits, est, now)
                    .await
                    .expect("acquire")
            }
        };
        let g1 = grant(acquire("model:m", 10, 0).await);
        grant(acquire("model:m", 10, 100).await);
        assert_eq!(
            acquire("model:m", 10, 200).await,
            RateGrant::WaitUntil(1000),
            "two requests a second"
        );
        grant(acquire("model:other", 10, 200).await);
        // The first call really used 90 tokens: with 10 more, no room for 10.
        store.settle(g1, 90).await.expect("settle");
        // (Grant ids come from one counter that other tests running at the
        // same time take from too: only that it is granted is checked.)
        let later = acquire("model:m", 10, 1050).await;
        assert!(
            matches!(later, RateGrant::Granted { grant } if grant > g1),
            "the first request left the window: {later:?}"
        );
        // Tokens: 10 + 10 in the window; 85 more do not fit until 1100.
        assert_eq!(
            acquire("model:m", 85, 1060).await,
            RateGrant::WaitUntil(1100)
        );
        // A 429 blocks the bucket until its retry-after.
        store.block("model:m", 5000).await.expect("block");
        assert_eq!(
            acquire("model:m", 1, 3000).await,
            RateGrant::WaitUntil(5000)
        );
        grant(acquire("model:m", 1, 5000).await);
    });
}

#[test]
fn concurrent_callers_never_get_more_than_the_limit() {
    let Some(prefix) = redis() else { return };
    let limits = limits(7, 1_000_000);
    let granted = runtime().block_on(async {
        let store = Arc::new(connect(&prefix).await);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                for _ in 0..5 {
                    if let RateGrant::Granted { .. } = store
                        .acquire("model:busy", &limits, 1, 500)
                        .await
                        .expect("acquire")
                    {
                        n += 1;
                    }
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("task");
        }
        total
    });
    assert_eq!(granted, 7, "100 tries at one instant, 7 a second");
}
