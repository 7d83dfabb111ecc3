//! What a cluster needs besides run records, so that a worker on another
//! machine can run anything with no shared filesystem: the parcels and briefs
//! runs are made of (content-addressed, written once), and the run logs that
//! workers ship back.
//!
//! The store keeps these as opaque bytes and does not verify them: a digest
//! is whatever the writer said. Whoever materialises a parcel or a brief
//! checks it against its digest before use.

use async_trait::async_trait;
use dispatch_core::{RunId, Ts};

use crate::StoreResult;

/// A parcel as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredParcel {
    /// Hex SHA-256 of `manifest` (the parcel's digest).
    pub digest: String,
    /// The parcel's name (from its manifest), for listings.
    pub name: String,
    /// The canonical manifest JSON, byte for byte.
    pub manifest: String,
    /// A tar archive of the parcel's `files/` directory.
    pub archive: Vec<u8>,
    pub created_at: Ts,
}

/// Parcels and briefs, by digest (an opt-in capability, next to
/// [`crate::Store`]).
///
/// Puts are idempotent: putting what is stored already writes nothing. Only
/// one content is right for a digest, and a writer puts only what it has
/// verified; so a put whose content differs from the stored one replaces it
/// (the stored copy was damaged), which is how uploading a parcel again
/// repairs it.
#[async_trait]
pub trait ParcelStore: Send + Sync {
    /// Stores the parcel under its digest. `true` when this call wrote
    /// (a new digest, or a stored copy that differed).
    async fn put_parcel(&self, parcel: &StoredParcel) -> StoreResult<bool>;

    /// Whether a parcel with this digest is stored (cheap: no archive read).
    async fn has_parcel(&self, digest: &str) -> StoreResult<bool>;

    /// The parcel stored under `digest`, if any.
    async fn get_parcel(&self, digest: &str) -> StoreResult<Option<StoredParcel>>;

    /// The digests a parcel reference may mean, as `dispatch run <name>`
    /// resolves one: the newest parcel named `reference` if there is one;
    /// else those (at most 2) whose digest starts with it (4 characters at
    /// least). Empty when none.
    async fn find_parcels(&self, reference: &str) -> StoreResult<Vec<String>>;

    /// Stores a brief's bytes under their SHA-256. `true` when this call
    /// wrote (as for [`ParcelStore::put_parcel`]).
    async fn put_brief(&self, sha256: &str, bytes: &[u8]) -> StoreResult<bool>;

    /// The brief stored under `sha256`, if any.
    async fn get_brief(&self, sha256: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Removes those of the briefs `sha256s` that no run references (as a
    /// prune leaves them); returns the bytes removed.
    async fn delete_unreferenced_briefs(&self, sha256s: &[String]) -> StoreResult<u64>;
}

/// A chunk of one held run's log, to append with other runs'
/// ([`RunLogStore::append_logs_many`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLog {
    pub id: RunId,
    /// The holder's fencing token.
    pub fence: i64,
    /// Where the chunk starts: the stored log's length, as the holder knows it.
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Run logs shipped by workers, as append-only byte chunks per run.
///
/// A run's stored log is one byte stream; each chunk sits at the byte
/// offset where it starts. Appends are a compare-and-set on the stream's
/// length, so two writers never interleave inside a chunk and a reader
/// paging by offset never misses a chunk that commits later.
///
/// Appends are fenced: each carries its writer's fencing token
/// ([`crate::Run::fence`]), and only the run's current token may append. A
/// worker cut off from the database while its agent printed, whose run was
/// taken over meanwhile, appends nothing when it comes back.
#[async_trait]
pub trait RunLogStore: Send + Sync {
    /// Appends `bytes` to the run's stored log at `offset`, which must be its
    /// current length, for the holder of fencing token `fence`. A retry of
    /// an append that already committed (the same bytes at the same offset)
    /// succeeds without writing again. `Fenced` when `fence` is not the
    /// run's current token (checked first, in the same transaction; the
    /// holder's last bytes may still ship after its run ended, as long as
    /// nobody claimed the run since); `LogMoved` (with the actual length)
    /// when the log is longer or shorter; `NotFound` for an unknown run.
    async fn append_log(
        &self,
        run: &RunId,
        fence: i64,
        offset: u64,
        bytes: &[u8],
    ) -> StoreResult<()>;

    /// The appends of many held runs at once, each answered as
    /// [`append_log`](Self::append_log) would answer it, in order. `Err`
    /// when the batch as a whole failed: nothing was appended. By default,
    /// one after another.
    async fn append_logs_many(&self, batch: &[HeldLog]) -> StoreResult<Vec<StoreResult<()>>> {
        let mut answers = Vec::with_capacity(batch.len());
        for held in batch {
            answers.push(
                self.append_log(&held.id, held.fence, held.offset, &held.bytes)
                    .await,
            );
        }
        Ok(answers)
    }

    /// The length in bytes of the run's stored log (0 when nothing was
    /// shipped, or for an unknown run).
    async fn log_length(&self, run: &RunId) -> StoreResult<u64>;

    /// At most `max` (at least 1) bytes of the run's stored log from
    /// `offset` on; empty at the end of what is stored. The bytes before
    /// the end of the run's archive ([`RunLogStore::log_archive`]) are not
    /// in the database: read from an `offset` at or past it.
    async fn read_log(&self, run: &RunId, offset: u64, max: usize) -> StoreResult<Vec<u8>>;

    /// Records that the first `archive.size` bytes of the run's log are in
    /// the object store as `archive.sha256`, and drops those chunks from
    /// the database, in one transaction. Only when the stored log is
    /// exactly that long and the run has no archive yet (`false`, nothing
    /// changed, otherwise: something appended meanwhile, or another worker
    /// archived it). Later appends go on at `archive.size`.
    async fn archive_log(&self, run: &RunId, archive: &LogArchive) -> StoreResult<bool>;

    /// The run's log archive, if its log was moved to the object store.
    async fn log_archive(&self, run: &RunId) -> StoreResult<Option<LogArchive>>;

    /// Whether any run has log archive `sha256` (a prune deletes the
    /// objects of those none has).
    async fn log_archive_in_use(&self, sha256: &str) -> StoreResult<bool>;
}

/// The first `size` bytes of a run's log, moved to the object store as
/// `logs/<sha256>` when the run finished (see `dispatch_runtime::objects`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogArchive {
    pub sha256: String,
    pub size: u64,
}

/// The bytes from `offset` on, at most `max` (at least 1), out of chunks
/// `(position, data)` in position order, the first one starting at or
/// before `offset` (nothing when it starts after: the bytes before it are
/// archived).
pub(crate) fn gather(chunks: Vec<(i64, Vec<u8>)>, offset: u64, max: usize) -> Vec<u8> {
    let max = max.max(1);
    let mut out = Vec::new();
    for (pos, data) in chunks {
        let pos = u64::try_from(pos).unwrap_or(0);
        if out.is_empty() && pos > offset {
            // `offset` is in the run's archive, not in these chunks.
            break;
        }
        let skip = usize::try_from(offset.saturating_sub(pos)).unwrap_or(usize::MAX);
        if let Some(rest) = data.get(skip..) {
            out.extend_from_slice(rest);
        }
        if out.len() >= max {
            out.truncate(max);
            break;
        }
    }
    out
}
