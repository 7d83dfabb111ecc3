//! `serve --a2a --session-ttl DURATION`: the session of an A2A context
//! (`<parcel>/a2a-<contextId>`) that no task used for that long is removed,
//! with everything it keeps, as `dispatch session prune --until DURATION`
//! would; a session a live task holds is kept. The sweep runs in the
//! service helper every quarter of the TTL (at least every second, at most
//! every minute), so a session goes between TTL and TTL plus a minute after
//! its last use. Each removal is a `session_expired` event of the service.

use std::sync::Arc;
use std::time::Duration;

use dispatch_core::{NewEvent, RunId, now_ms};
use dispatch_store::Store;
use serde_json::json;

use crate::layout::Layout;

/// The sweep's period for `ttl_ms`.
pub fn period(ttl_ms: u64) -> Duration {
    Duration::from_millis((ttl_ms / 4).clamp(1_000, 60_000))
}

/// Sweeps the sessions under `prefix` until the helper ends.
pub(super) async fn expire(
    store: Arc<dyn Store>,
    layout: Layout,
    service: RunId,
    prefix: String,
    ttl_ms: u64,
) {
    let mut tick = tokio::time::interval(period(ttl_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sweep(&*store, &layout, &service, &prefix, ttl_ms).await;
    }
}

/// One sweep: removes the sessions under `prefix` unused for `ttl_ms`
/// (and this machine's copies of their files), each a `session_expired`
/// event of `service`; their names. (A cluster's servers each sweep its
/// A2A services: a session goes once, whoever comes first.)
pub async fn sweep<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    service: &RunId,
    prefix: &str,
    ttl_ms: u64,
) -> Vec<String> {
    let before = now_ms().saturating_sub(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
    let gone = match store.expire_sessions(prefix, before).await {
        Ok(gone) => gone,
        Err(e) => {
            crate::say_warn!("[dispatch] could not expire sessions under {prefix}: {e}");
            return Vec::new();
        }
    };
    if gone.is_empty() {
        return gone;
    }
    let attempt = store.get_run(service).await.map_or(1, |r| r.attempt);
    let mut events = Vec::new();
    for name in &gone {
        if let Some(file) = crate::submit::session_file(layout, name) {
            let _ = std::fs::remove_file(file);
        }
        crate::say_info!("[dispatch] session {name} expired (unused for {ttl_ms} ms)");
        events.push(NewEvent::new(
            "session_expired",
            attempt,
            now_ms(),
            json!({"session": name, "ttl_ms": ttl_ms}),
        ));
    }
    if let Err(e) = store.append_events(service, &events).await {
        crate::say_warn!("[dispatch] could not record session_expired events: {e}");
    }
    gone
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sweep_runs_every_quarter_ttl_between_a_second_and_a_minute() {
        use std::time::Duration;
        assert_eq!(super::period(2_000), Duration::from_secs(1));
        assert_eq!(super::period(40_000), Duration::from_secs(10));
        assert_eq!(super::period(86_400_000), Duration::from_secs(60));
    }
}
