//! Conversation sessions: what a native agent keeps between runs, under a
//! key `<parcel>/<name>`, saved by compare-and-set on its version so two
//! runs never overwrite each other's turn.

use async_trait::async_trait;
use dispatch_core::{RunId, Ts};
use serde::{Deserialize, Serialize};

use crate::{StoreError, StoreResult};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub key: String,
    /// The conversation (opaque to the store).
    pub data: serde_json::Value,
    /// 1 for the first save, +1 for each one after.
    pub version: i64,
    pub updated_at: Ts,
    /// The run whose turn saved it last.
    pub updated_by: Option<RunId>,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The session, or `None` when nothing was saved under `key`.
    async fn get_session(&self, key: &str) -> StoreResult<Option<SessionRecord>>;
    /// Saves `data` as the session's next version when its stored version is
    /// `expected` (0: it must not exist yet); returns the new version.
    /// `SessionConflict` when the version moved; nothing is written then.
    async fn put_session(
        &self,
        key: &str,
        data: &serde_json::Value,
        expected: i64,
        by: Option<&RunId>,
        at: Ts,
    ) -> StoreResult<i64>;
    /// Sessions whose key starts with `prefix`, most recently updated first.
    async fn list_sessions(&self, prefix: Option<&str>) -> StoreResult<Vec<SessionRecord>>;
    /// Removes the session; `false` when there was none.
    async fn delete_session(&self, key: &str) -> StoreResult<bool>;
}

/// The longest session key.
pub const MAX_SESSION_KEY: usize = 512;

/// Refuses a key no backend can store the same way (empty, too long, NUL).
pub(crate) fn check_key(key: &str) -> StoreResult<()> {
    if key.is_empty() || key.len() > MAX_SESSION_KEY || key.contains('\0') {
        return Err(StoreError::InvalidSession {
            key: dispatch_core::event::shorten(&key.replace('\0', "\\0"), 80),
        });
    }
    Ok(())
}
