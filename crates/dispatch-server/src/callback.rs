//! Completion callbacks: when a run created with a `callback_url` ends, the
//! server that created it POSTs the finished run (JSON) there, signed:
//!
//! `Dispatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//!
//! Connection errors and 5xx answers are retried with backoff (0.5 s, doubling,
//! 5 tries); a 4xx is final. The outcome is recorded as a `callback` event.
//! The registration itself is a `callback_registered` event. Delivery is done
//! by the creating server process: one that restarts before the run ends does
//! not deliver it (a known limit).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dispatch_core::{NewEvent, RunId, now_ms};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::SharedStore;
use crate::client;

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

/// `(base, path)` of an `http://host:port/path` URL; `None` when it is not one.
pub fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!authority.is_empty()).then(|| (format!("http://{authority}"), path.to_string()))
}

/// Delivers the run's end to `url` in the background.
pub fn spawn(store: SharedStore, secret: String, id: RunId, url: String) {
    tokio::spawn(async move { deliver(store, secret, id, url).await });
}

async fn deliver(store: SharedStore, secret: String, id: RunId, url: String) {
    let mut pause = Duration::from_millis(20);
    let run = loop {
        match store.get_run(&id).await {
            Ok(run) if run.state.is_terminal() => break run,
            Ok(_) | Err(dispatch_store::StoreError::Unavailable { .. }) => {}
            Err(_) => return, // deleted
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    };
    let Some((base, path)) = split_url(&url) else {
        return;
    };
    let mut body = serde_json::to_value(&run).unwrap_or_default();
    body["status"] = json!(run.status());
    let body = body.to_string().into_bytes();
    let mut backoff = FIRST_BACKOFF;
    let mut outcome = json!({"url": url, "ok": false});
    for attempt in 1..=TRIES {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = signature(secret.as_bytes(), t, &body);
        let (base, path, sent) = (base.clone(), path.clone(), body.clone());
        let answer = tokio::task::spawn_blocking(move || {
            client::request(
                &base,
                "POST",
                &path,
                &[("Dispatch-Signature", &header)],
                Some(&sent),
            )
            .map(|r| r.status)
            .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
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
    let event = NewEvent::new("callback", run.attempt, now_ms(), outcome);
    if let Err(e) = store.append_events(&id, &[event]).await {
        eprintln!("[server] run {id}: cannot record the callback outcome: {e}");
    }
}
