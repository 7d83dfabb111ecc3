//! Completion callbacks: when a run created with a `callback_url` ends, a
//! server POSTs the finished run (JSON) there, signed:
//!
//! `Dispatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//!
//! `http://` or `https://` (rustls, the Mozilla roots); where a callback may
//! go is [`crate::callback_guard`]'s to say, when the run is created and
//! again when the callback is sent.
//!
//! Connection errors and 5xx answers are retried with backoff (0.5 s, doubling,
//! 5 tries); a 4xx is final. The outcome is recorded as a `callback` event;
//! the registration itself is a `callback_registered` event. Callbacks wait
//! in the store's outbox ([`dispatch_store::CallbackStore`]): any server with
//! the secret delivers them, and one that dies mid-delivery leaves them to be
//! taken over after a minute (delivery is at least once).

use dispatch_core::EventKind;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dispatch_core::{NewEvent, RunId, now_ms};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use dispatch_store::PgStore;

use crate::SharedStore;
use crate::callback_guard::{self, CallbackPolicy};
use dispatch_core::error_chain as chain;

/// Tries per callback.
const TRIES: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The `Dispatch-Signature` header value for `body` sent at `t`.
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How long a claimed callback is held by the server delivering it (longer
/// than all tries take), before another server may take it over.
const HOLD_MS: i64 = 60_000;
/// How often the outbox is looked at without notifications (SQLite, or
/// while the `LISTEN` connection is down).
const POLL: Duration = Duration::from_millis(200);
/// With notifications, the outbox is still looked at this often: for
/// callbacks a dead server held (taken over after [`HOLD_MS`]).
const NOTIFIED_POLL: Duration = Duration::from_secs(30);
/// Callbacks claimed per look at the outbox.
const BATCH: usize = 16;

/// Delivers due callbacks until `stop` completes: any server with the secret
/// takes its share of the outbox. On PostgreSQL (`pg`), a finished run's
/// notification wakes it; otherwise it polls. `http` is
/// [`callback_guard::client`]'s, for `policy`.
pub async fn dispatcher(
    store: SharedStore,
    pg: Option<PgStore>,
    secret: String,
    http: reqwest::Client,
    policy: CallbackPolicy,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut listener = None;
    loop {
        if listener.is_none()
            && let Some(pg) = &pg
        {
            listener = pg.listen_callbacks().await.ok();
        }
        let mut more = false;
        match store.claim_callbacks(now_ms(), HOLD_MS, BATCH).await {
            Ok(due) => {
                more = due.len() == BATCH;
                for d in due {
                    let post = Post {
                        http: http.clone(),
                        policy,
                        secret: secret.clone(),
                    };
                    tokio::spawn(deliver(store.clone(), post, d.run_id, d.url));
                }
            }
            Err(e) => tracing::warn!("[server] cannot read the callback outbox: {e}"),
        }
        let poll = if more {
            Duration::ZERO
        } else if listener.is_some() {
            NOTIFIED_POLL
        } else {
            POLL
        };
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            alive = notified => if !alive { listener = None },
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// How callbacks are sent.
struct Post {
    http: reqwest::Client,
    policy: CallbackPolicy,
    secret: String,
}

/// Posts the finished run to `url` (with retries), records the outcome as a
/// `callback` event and marks the callback done.
async fn deliver(store: SharedStore, post: Post, id: RunId, url: String) {
    let Ok(run) = store.get_run(&id).await else {
        return; // deleted, or the store is down (due again after the hold)
    };
    // The run as `GET /v1/runs/{id}` answers it (`dispatch_api::Run`).
    let body = serde_json::to_vec(&crate::api::wire::run(&run)).unwrap_or_default();
    let mut backoff = FIRST_BACKOFF;
    let mut outcome = json!({"url": url, "ok": false});
    // Checked again: the server's policy may have changed since the run
    // was created (an address the URL names is not resolved, so not
    // checked by the resolver).
    let target = match callback_guard::check_url(&url, post.policy) {
        Ok(target) => Some(target),
        Err(refusal) => {
            outcome["attempts"] = json!(0);
            outcome["error"] = json!(refusal);
            None
        }
    };
    for attempt in 1..=TRIES {
        let Some(target) = &target else { break };
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = signature(post.secret.as_bytes(), t, &body);
        let answer = post
            .http
            .post(target.clone())
            .header("content-type", "application/json")
            .header("Dispatch-Signature", header)
            .body(body.clone())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| chain(&e));
        outcome["attempts"] = json!(attempt);
        match answer {
            Ok(status) if status < 300 => {
                outcome["ok"] = json!(true);
                outcome["status"] = json!(status);
                break;
            }
            Ok(status) if status < 500 => {
                outcome["status"] = json!(status);
                break; // the receiver refused it: retrying will not help
            }
            Ok(status) => outcome["status"] = json!(status),
            Err(e) => outcome["error"] = json!(e),
        }
        if attempt < TRIES {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    let event = NewEvent::new(EventKind::Callback, run.attempt, now_ms(), outcome);
    if let Err(e) = store.append_events(&id, &[event]).await {
        tracing::warn!("[server] run {id}: cannot record the callback outcome: {e}");
    }
    if let Err(e) = store.finish_callback(&id, now_ms()).await {
        tracing::warn!("[server] run {id}: cannot mark the callback done: {e}");
    }
}
