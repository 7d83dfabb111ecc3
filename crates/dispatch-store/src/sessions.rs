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
    /// The live run bound to session `name` (`<parcel>/<name>`, as a run's
    /// `session` names it), if any.
    async fn session_holder(&self, name: &str) -> StoreResult<Option<RunId>>;
    /// Removes everything session `name` keeps — its conversation, its
    /// process agent's file (`@file/`), the memory and named checkpoints
    /// scoped to it — in one transaction; how many records went.
    /// `SessionBusy` (nothing removed) while a live run holds it.
    async fn remove_session(&self, name: &str) -> StoreResult<u64>;
    /// Removes each session whose name starts with `prefix` that nothing
    /// used since `before`: last saved before it, bound by no run created
    /// since, and held by no live run. Their names, sorted.
    async fn expire_sessions(&self, prefix: &str, before: Ts) -> StoreResult<Vec<String>>;
}

/// Where a process agent's session file is kept (see `dispatch-runtime`'s
/// `session_file`): a prefix no session name can have.
pub const FILE_PREFIX: &str = "@file/";
/// The prefixes of records scoped to a session: `<prefix><name>/<key>`.
pub const SCOPED_PREFIXES: [&str; 2] = ["@memory/", "@checkpoint/"];

/// The session a record of the sessions table is (part of): a conversation
/// key is its name, a file key names it after [`FILE_PREFIX`]; memory and
/// checkpoints are not sessions of their own.
pub fn session_name_of(key: &str) -> Option<&str> {
    match key.strip_prefix(FILE_PREFIX) {
        Some(name) => Some(name),
        None if key.starts_with('@') => None,
        None => Some(key),
    }
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

/// A session as `dispatch session ls` and `GET /v1/sessions` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// `<parcel>/<name>`, as `dispatch run --session NAME` and an A2A
    /// context (`a2a-<contextId>`) bind it.
    pub name: String,
    pub parcel: String,
    /// A native agent's conversation is kept: its number of messages.
    pub messages: Option<u64>,
    /// Saves of the conversation (one a turn).
    pub turns: i64,
    /// A process agent's session file is kept.
    pub file: bool,
    /// When a turn last saved it (ms since the epoch).
    pub updated_at: Ts,
    /// The run whose turn saved it last.
    pub last_run: Option<RunId>,
    /// The live run that holds it now (it cannot be removed until that ends).
    pub in_use_by: Option<RunId>,
}

/// The sessions whose name starts with `prefix`, most recently used first.
pub async fn summaries<S: SessionStore + ?Sized>(
    store: &S,
    prefix: &str,
) -> StoreResult<Vec<SessionSummary>> {
    let mut by_name: std::collections::BTreeMap<String, SessionSummary> = Default::default();
    for r in store.list_sessions(None).await? {
        let Some(name) = session_name_of(&r.key).filter(|n| n.starts_with(prefix)) else {
            continue;
        };
        let s = by_name
            .entry(name.to_string())
            .or_insert_with(|| SessionSummary {
                name: name.to_string(),
                parcel: name.split_once('/').map_or(name, |(p, _)| p).to_string(),
                messages: None,
                turns: 0,
                file: false,
                updated_at: r.updated_at,
                last_run: r.updated_by.clone(),
                in_use_by: None,
            });
        if r.key.starts_with(FILE_PREFIX) {
            s.file = true;
        } else {
            s.turns = r.version;
            s.messages = Some(r.data["messages"].as_array().map_or(0, |m| m.len() as u64));
        }
        if r.updated_at > s.updated_at {
            s.updated_at = r.updated_at;
            s.last_run = r.updated_by.clone();
        }
    }
    let mut all: Vec<SessionSummary> = by_name.into_values().collect();
    for s in &mut all {
        s.in_use_by = store.session_holder(&s.name).await?;
    }
    all.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.name.cmp(&b.name)));
    Ok(all)
}

/// Everything session `name` keeps: its summary, the conversation, the
/// file's text, and the keys of the memory and checkpoints scoped to it.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionContents {
    pub summary: SessionSummary,
    /// A native agent's conversation, when one is kept.
    pub conversation: Option<serde_json::Value>,
    /// A process agent's session file, when one is kept.
    pub file_text: Option<String>,
    pub memory: Vec<String>,
    pub checkpoints: Vec<String>,
}

/// Everything session `name` keeps (`GET /v1/sessions/{parcel}/{name}`);
/// `None` when it keeps nothing.
pub async fn session_contents<S: SessionStore + ?Sized>(
    store: &S,
    name: &str,
) -> StoreResult<Option<SessionContents>> {
    let Some(summary) = summaries(store, name)
        .await?
        .into_iter()
        .find(|s| s.name == name)
    else {
        return Ok(None);
    };
    let conversation = store.get_session(name).await?.map(|r| r.data);
    let file_text = store
        .get_session(&format!("{FILE_PREFIX}{name}"))
        .await?
        .and_then(|r| r.data["text"].as_str().map(str::to_string));
    let [memory, checkpoints] = SCOPED_PREFIXES;
    let memory = scoped_keys(store, memory, name).await?;
    let checkpoints = scoped_keys(store, checkpoints, name).await?;
    Ok(Some(SessionContents {
        summary,
        conversation,
        file_text,
        memory,
        checkpoints,
    }))
}

/// The keys of the records scoped to session `name` under `prefix` (one of
/// [`SCOPED_PREFIXES`]), without the prefix and the name.
async fn scoped_keys<S: SessionStore + ?Sized>(
    store: &S,
    prefix: &str,
    name: &str,
) -> StoreResult<Vec<String>> {
    let base = format!("{prefix}{name}/");
    Ok(store
        .list_sessions(Some(&base))
        .await?
        .into_iter()
        .filter_map(|r| r.key.strip_prefix(&base).map(str::to_string))
        .collect())
}
