//! A process agent's session file (`$DISPATCH_SESSION_FILE`) travels through
//! the store, not the disk: before an attempt the stored copy is written to
//! this machine's file; after it, the file is saved back (compare-and-set by
//! version). So `--session NAME` continues on whichever worker runs the
//! next turn, as a native agent's conversation does, and a session removed
//! from the store is gone from every machine.

use std::path::Path;

use dispatch_core::{RunId, now_ms};
use dispatch_store::{Store, StoreError};
use serde_json::{Value, json};

/// Where a session's file is kept in the sessions table: a prefix no
/// conversation key (`<parcel>/<name>`) can have.
fn key(session: &str) -> String {
    format!("@file/{session}")
}

/// Writes the stored copy to `file` (when there is one); returns the stored
/// version (0: none yet) and the text as written.
pub(crate) async fn pull<S: Store + ?Sized>(
    store: &S,
    file: &Path,
    session: &str,
) -> (i64, Option<String>) {
    let record = match store.get_session(&key(session)).await {
        Ok(Some(record)) => record,
        // The store is the session's truth: none there (never saved, or
        // removed by `dispatch session rm`, `prune` or `--session-ttl`) is
        // none here, whatever copy this machine kept of an earlier turn.
        Ok(None) => {
            let _ = std::fs::remove_file(file);
            return (0, None);
        }
        // Unreadable now: this machine's copy, if any, rather than nothing.
        Err(_) => return (0, std::fs::read_to_string(file).ok()),
    };
    let text = record.data["text"].as_str().unwrap_or_default().to_string();
    if std::fs::read_to_string(file).ok().as_deref() != Some(text.as_str()) {
        let _ = std::fs::write(file, &text);
    }
    (record.version, Some(text))
}

/// Saves `file` back when the attempt changed it.
pub(crate) async fn push<S: Store + ?Sized>(
    store: &S,
    file: &Path,
    session: &str,
    pulled: (i64, Option<String>),
    run: &RunId,
) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Ok(()); // the agent wrote none
    };
    if pulled.1.as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    let data: Value = json!({ "text": text });
    let mut version = pulled.0;
    for _ in 0..3 {
        match store
            .put_session(&key(session), &data, version, Some(run), now_ms())
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::SessionConflict { .. }) => {
                version = store
                    .get_session(&key(session))
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |r| r.version);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("it kept changing under other writers".into())
}
