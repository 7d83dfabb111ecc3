//! A WASM agent's session record: the conversation (as a native agent's:
//! the turns' user and assistant messages) and the guest's `backend-state`
//! beside it, saved compare-and-set as the session's next version.

use dispatch_agent::SessionData;
use dispatch_core::{RunId, now_ms};
use dispatch_store::{Store, StoreError};
use serde_json::Value;

use super::LifecycleLog;

/// Saves `value` (a [`SessionData`] with the guest's state) as session
/// `key`'s next version after `expected`. Another run that saved in
/// between keeps its history; this turn's messages are appended to it.
pub(super) async fn save<S: Store + ?Sized>(
    store: &S,
    key: &str,
    mut value: Value,
    mut expected: i64,
    by: &RunId,
    log: &mut LifecycleLog,
) {
    for _ in 0..5 {
        match store
            .put_session(key, &value, expected, Some(by), now_ms())
            .await
        {
            Ok(_) => return,
            Err(StoreError::SessionConflict { .. }) => {
                let Ok(Some(current)) = store.get_session(key).await else {
                    continue;
                };
                let theirs: SessionData =
                    serde_json::from_value(current.data.clone()).unwrap_or_default();
                let mine: SessionData = serde_json::from_value(value.clone()).unwrap_or_default();
                let mut merged = theirs.messages.clone();
                merged.extend(
                    mine.messages
                        .into_iter()
                        .skip_while(|m| theirs.messages.contains(m)),
                );
                value["messages"] = serde_json::to_value(merged).unwrap_or(Value::Null);
                expected = current.version;
            }
            Err(e) => {
                log.line(&format!("could not save session {key}: {e}"));
                return;
            }
        }
    }
    log.line(&format!("could not save session {key}: it kept changing"));
}
