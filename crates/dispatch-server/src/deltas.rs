//! Live text of native agents across processes. A native agent's loop
//! publishes its text in its own process (`dispatch_runtime::native::deltas`);
//! a `dispatch worker` on PostgreSQL relays it out with `NOTIFY`, and a
//! `dispatch server` relays it in, so the server's SSE streams show the text
//! of runs held by any worker as it arrives. Nothing of it is stored.

use std::time::Duration;

use dispatch_runtime::native::{TextDelta, deltas};
use dispatch_store::PgStore;
use dispatch_store::postgres::MAX_NOTIFY_BYTES;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

/// How long the relay waits before listening again after losing its connection.
const RETRY: Duration = Duration::from_secs(1);

/// Sends this process's deltas to the database (a worker process).
pub fn relay_out(pg: PgStore) -> tokio::task::JoinHandle<()> {
    let mut rx = deltas().subscribe();
    tokio::spawn(async move {
        loop {
            let d = match rx.recv().await {
                Ok(d) => d,
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            };
            for payload in payloads(&d) {
                // Live text is best effort: a lost notification loses a fragment of a view.
                let _ = pg.notify_delta(&payload).await;
            }
        }
    })
}

/// Publishes the deltas workers send through the database in this process (a server).
pub fn relay_in(pg: PgStore) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok(mut listener) = pg.listen_deltas().await else {
                tokio::time::sleep(RETRY).await;
                continue;
            };
            while let Some(payload) = listener.next().await {
                if let Some(d) = parse(&payload) {
                    let _ = deltas().send(d);
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    })
}

/// `d` as notification payloads no larger than PostgreSQL takes.
fn payloads(d: &TextDelta) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = d.text.as_str();
    let budget = MAX_NOTIFY_BYTES / 2; // JSON escaping may double the text
    while !rest.is_empty() {
        let mut end = rest.len().min(budget);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        out.push(json!({"run_id": d.run_id, "attempt": d.attempt, "text": piece}).to_string());
        rest = tail;
    }
    out
}

fn parse(payload: &str) -> Option<TextDelta> {
    let v: Value = serde_json::from_str(payload).ok()?;
    Some(TextDelta {
        run_id: v["run_id"].as_str()?.parse().ok()?,
        attempt: v["attempt"].as_u64()? as u32,
        text: v["text"].as_str()?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_split_into_payloads_that_parse_back() {
        let d = TextDelta {
            run_id: dispatch_core::RunId::new(),
            attempt: 2,
            text: "é\"".repeat(4_000),
        };
        let ps = payloads(&d);
        assert!(ps.len() > 1);
        assert!(ps.iter().all(|p| p.len() <= MAX_NOTIFY_BYTES));
        let back: String = ps.iter().filter_map(|p| parse(p)).map(|d| d.text).collect();
        assert_eq!(back, d.text);
    }
}
