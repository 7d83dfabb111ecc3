//! Objects kept in the database itself: the cluster's object store when no
//! `--artifacts URL` names another (artifacts, finished runs' log archives,
//! parcels' shared state, model-call records; see
//! `dispatch_runtime::objects`).
//!
//! An object is written as an **upload**: an id the writer picks, its bytes
//! as numbered parts of at most [`MAX_PART`] bytes (one row each), then a
//! commit that points the key at the upload. Until the commit nobody sees
//! any of it; the commit replaces the key's previous upload and deletes
//! that upload's parts in the same transaction, so a reader sees the old
//! object or the new one, whole. A reader reads one part per query, by the
//! upload its [`BlobMeta`] names: an object is never held in memory whole.
//!
//! An object is at most [`MAX_BLOB`] bytes (2 GiB): a part that would take
//! its upload over is refused with [`StoreError::BlobTooLarge`]. Larger
//! volumes belong in an object store of their own (`--artifacts URL`).
//!
//! A writer that dies between its first part and its commit leaves an
//! uncommitted upload: [`BlobStore::expire_blob_uploads`] deletes those
//! older than some age (a server's retention pass does, once a day's worth).

use async_trait::async_trait;
use dispatch_core::Ts;

use crate::{StoreError, StoreResult};

/// The largest object the database keeps: 2 GiB.
pub const MAX_BLOB: u64 = 2 << 30;

/// The largest part (one row): 4 MiB.
pub const MAX_PART: usize = 4 << 20;

/// A committed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobMeta {
    pub key: String,
    /// The upload that holds its bytes (its parts are read by this id).
    pub upload: String,
    pub size: u64,
    /// Changes with every commit: the upload id.
    pub etag: String,
    /// When it was committed (ms since the epoch).
    pub modified_at: Ts,
}

/// What a commit requires of the key's current object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobExpect {
    /// Nothing: the upload replaces whatever is there.
    Any,
    /// No object at the key.
    Absent,
    /// The object at the key has this etag.
    Etag(String),
}

/// One part of an upload: its number and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobPart {
    pub seq: i64,
    pub len: u64,
}

/// Chunked objects by key (an opt-in capability of a store).
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Starts upload `upload` (an id the writer made unique) at `at`.
    async fn begin_blob_upload(&self, upload: &str, at: Ts) -> StoreResult<()>;

    /// Writes part `seq` of `upload` (at most [`MAX_PART`] bytes; parts are
    /// read in `seq` order, which need not be the order they are written
    /// in). Writing a part again replaces it. `UploadGone` when the upload
    /// was never begun, or was committed, aborted or expired;
    /// `BlobTooLarge` when the upload would exceed [`MAX_BLOB`].
    async fn put_blob_part(&self, upload: &str, seq: i64, bytes: &[u8]) -> StoreResult<()>;

    /// Points `key` at `upload` (its parts, as written) if `expect` holds,
    /// deleting the key's previous upload with its parts, all in one
    /// transaction. `Ok(None)` when `expect` does not hold: nothing
    /// changes and the upload is aborted. `UploadGone` when the upload is
    /// not there to commit.
    async fn commit_blob(
        &self,
        key: &str,
        upload: &str,
        expect: &BlobExpect,
        at: Ts,
    ) -> StoreResult<Option<BlobMeta>>;

    /// Deletes an uncommitted upload and its parts (nothing when it is not there).
    async fn abort_blob_upload(&self, upload: &str) -> StoreResult<()>;

    /// Puts `bytes` (at most [`MAX_PART`]) at `key` as `upload`, all at
    /// once: what [`Self::begin_blob_upload`], one part and
    /// [`Self::commit_blob`] do, with their answers. A store may do it in
    /// one transaction (PostgreSQL does, and a new key in one statement: a
    /// small object, such as a run's call records, was three transactions
    /// of fifteen round trips).
    async fn put_blob(
        &self,
        key: &str,
        upload: &str,
        bytes: &[u8],
        expect: &BlobExpect,
        at: Ts,
    ) -> StoreResult<Option<BlobMeta>> {
        self.begin_blob_upload(upload, at).await?;
        if bytes.is_empty() {
            // An empty object has no part, as an empty upload's.
        } else if let Err(e) = self.put_blob_part(upload, 0, bytes).await {
            let _ = self.abort_blob_upload(upload).await;
            return Err(e);
        }
        self.commit_blob(key, upload, expect, at).await
    }

    /// The object at `key`, if any.
    async fn head_blob(&self, key: &str) -> StoreResult<Option<BlobMeta>>;

    /// The parts of a committed or pending `upload`, in `seq` order (empty
    /// when there is none).
    async fn blob_parts(&self, upload: &str) -> StoreResult<Vec<BlobPart>>;

    /// The bytes of part `seq` of `upload`; `None` when there is no such
    /// part (the object was replaced or deleted since its meta was read).
    async fn read_blob_part(&self, upload: &str, seq: i64) -> StoreResult<Option<Vec<u8>>>;

    /// Deletes the object at `key` with its parts. `false` when there was none.
    async fn delete_blob(&self, key: &str) -> StoreResult<bool>;

    /// Objects whose key starts with `prefix`, after `after` (exclusive)
    /// in byte order of their keys, at most `limit`.
    async fn list_blobs(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<BlobMeta>>;

    /// Deletes the uploads begun before `before` and never committed, with
    /// their parts. Returns how many.
    async fn expire_blob_uploads(&self, before: Ts) -> StoreResult<u64>;
}

/// The least string greater than every string that starts with `prefix`
/// (byte order, as UTF-8 orders code points): keys in `[prefix, end)` are
/// exactly those that start with it. `None` when `prefix` is empty or has
/// no such bound (only `char::MAX`s): no upper bound then.
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The refusal of a part that would take an upload over [`MAX_BLOB`].
pub(crate) fn too_large(upload: &str, size: u64) -> StoreError {
    StoreError::BlobTooLarge {
        upload: upload.to_string(),
        size,
        limit: MAX_BLOB,
    }
}

/// The refusal of a part or commit of an upload that is not there.
pub(crate) fn no_upload(upload: &str) -> StoreError {
    StoreError::UploadGone {
        upload: upload.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn the_prefix_end_bounds_exactly_the_keys_that_start_with_it() {
        assert_eq!(prefix_end("artifacts/"), Some("artifacts0".to_string()));
        assert_eq!(prefix_end("a"), Some("b".to_string()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a\u{10FFFF}"), Some("b".to_string()));
        // Below the surrogates' gap, the next scalar value is after it.
        assert_eq!(prefix_end("\u{D7FF}"), Some("\u{E000}".to_string()));
        let end = prefix_end("state/p/").expect("an end");
        for key in ["state/p/", "state/p/x", "state/p/\u{10FFFF}\u{10FFFF}"] {
            assert!(key >= "state/p/" && key < end.as_str(), "{key}");
        }
        for key in ["state/p", "state/q", "state/p0"] {
            assert!(!(key >= "state/p/" && key < end.as_str()), "{key}");
        }
    }
}
