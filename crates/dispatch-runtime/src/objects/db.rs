//! The cluster's database as an [`ObjectStore`]: what a cluster on
//! PostgreSQL keeps its artifacts, log archives, shared state and call
//! records in when no `--artifacts URL` names another store, so that every
//! server can hand back what any worker wrote with nothing else to set up.
//!
//! Objects are [`BlobStore`] uploads: a put writes its bytes as parts of at
//! most [`MAX_PART`] bytes and commits them under the key (readers see the
//! old object or the new one, never a mix); a multipart upload's parts
//! become such parts, numbered so that they read back in the order they
//! were given. A get reads one part per query as the stream is polled, so
//! an object is never held in memory whole. An object is at most
//! [`MAX_BLOB`] bytes (2 GiB).
//!
//! Modelled on `object_store`'s own `InMemory` store.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use dispatch_store::{BlobExpect, BlobMeta, BlobPart, BlobStore, MAX_BLOB, MAX_PART, StoreError};
use futures_util::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    Result, UploadPart,
};

/// The store's name in `object_store` errors.
const STORE: &str = "database";

/// Objects listed per query.
const PAGE: usize = 1000;

/// Parts of one multipart part: a part's index is shifted by this many bits
/// and its pieces numbered below (a part of up to 4 TiB; objects stop at 2 GiB).
const PIECE_BITS: u32 = 20;

/// Objects in the database behind a [`BlobStore`].
#[derive(Clone)]
pub struct DbObjects {
    store: Arc<dyn BlobStore>,
}

impl DbObjects {
    pub fn new(store: Arc<dyn BlobStore>) -> Self {
        DbObjects { store }
    }
}

impl std::fmt::Debug for DbObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbObjects")
    }
}

impl std::fmt::Display for DbObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the cluster's database")
    }
}

/// A store error as `object_store` carries it (the message kept whole).
fn failed(e: StoreError) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(e),
    }
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: message.into(),
    }
}

fn not_found(location: &Path) -> object_store::Error {
    object_store::Error::NotFound {
        path: location.to_string(),
        source: "no such object in the database".into(),
    }
}

/// A fresh upload id (also the object's etag once committed).
fn new_upload() -> String {
    format!(
        "{:012x}-{:016x}{:016x}",
        dispatch_core::time::now_ms(),
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

fn object_meta(location: Path, meta: &BlobMeta) -> ObjectMeta {
    ObjectMeta {
        location,
        last_modified: DateTime::<Utc>::from_timestamp_millis(meta.modified_at).unwrap_or_default(),
        size: meta.size,
        e_tag: Some(meta.etag.clone()),
        version: None,
    }
}

/// What a put in `mode` expects to find at `location`.
fn expect_of(location: &Path, mode: &PutMode) -> Result<BlobExpect> {
    Ok(match mode {
        PutMode::Overwrite => BlobExpect::Any,
        PutMode::Create => BlobExpect::Absent,
        PutMode::Update(v) => match &v.e_tag {
            Some(etag) => BlobExpect::Etag(etag.clone()),
            None => {
                return Err(object_store::Error::Precondition {
                    path: location.to_string(),
                    source: "an update needs the object's etag".into(),
                });
            }
        },
    })
}

/// A put's answer: `None` from the store (`expect` did not hold) is
/// `AlreadyExists` (create) or `Precondition` (update).
fn put_result(
    location: &Path,
    expect: &BlobExpect,
    committed: Option<BlobMeta>,
) -> Result<PutResult> {
    match committed {
        Some(meta) => Ok(PutResult {
            e_tag: Some(meta.etag),
            version: None,
            extensions: Default::default(),
        }),
        None if *expect == BlobExpect::Absent => Err(object_store::Error::AlreadyExists {
            path: location.to_string(),
            source: "an object is there already".into(),
        }),
        None => Err(object_store::Error::Precondition {
            path: location.to_string(),
            source: "the object changed".into(),
        }),
    }
}

fn too_large(size: u64) -> object_store::Error {
    generic(format!(
        "an object of {size} bytes is over the {MAX_BLOB}-byte limit of objects kept in the run database (hint: give every server and worker an object store of its own with --artifacts URL for large volumes)"
    ))
}

/// Writes `payload` as parts `first`, `first + 1`, … of `upload`, each at
/// most [`MAX_PART`] bytes.
async fn write_parts(
    store: &dyn BlobStore,
    upload: &str,
    first: i64,
    payload: PutPayload,
) -> Result<()> {
    let mut seq = first;
    let mut piece = BytesMut::new();
    for mut bytes in payload {
        while !bytes.is_empty() {
            let take = (MAX_PART - piece.len()).min(bytes.len());
            piece.extend_from_slice(&bytes.split_to(take));
            if piece.len() == MAX_PART {
                store
                    .put_blob_part(upload, seq, &piece)
                    .await
                    .map_err(failed)?;
                piece.clear();
                seq += 1;
            }
        }
    }
    if !piece.is_empty() {
        store
            .put_blob_part(upload, seq, &piece)
            .await
            .map_err(failed)?;
    }
    Ok(())
}

impl DbObjects {
    /// Commits `upload` under `location` as `mode` says; a refused
    /// condition is `AlreadyExists` (create) or `Precondition` (update).
    async fn commit(&self, location: &Path, upload: &str, mode: PutMode) -> Result<PutResult> {
        let expect = match expect_of(location, &mode) {
            Ok(expect) => expect,
            Err(e) => {
                let _ = self.store.abort_blob_upload(upload).await;
                return Err(e);
            }
        };
        let now = dispatch_core::time::now_ms();
        let committed = self
            .store
            .commit_blob(location.as_ref(), upload, &expect, now)
            .await
            .map_err(failed)?;
        put_result(location, &expect, committed)
    }

    /// The parts of `meta`'s upload that hold the bytes of `range`, each
    /// with the part of it wanted.
    async fn pieces(
        &self,
        meta: &BlobMeta,
        range: &Range<u64>,
    ) -> Result<Vec<(i64, Range<usize>)>> {
        let parts: Vec<BlobPart> = self.store.blob_parts(&meta.upload).await.map_err(failed)?;
        let total: u64 = parts.iter().map(|p| p.len).sum();
        if total != meta.size {
            return Err(generic(format!(
                "object {} holds {total} bytes in its parts, not the {} it was committed with",
                meta.key, meta.size
            )));
        }
        let mut out = Vec::new();
        let mut at = 0u64;
        for part in parts {
            let (start, end) = (at, at + part.len);
            at = end;
            if end <= range.start || start >= range.end {
                continue;
            }
            let from = range.start.max(start) - start;
            let to = range.end.min(end) - start;
            out.push((part.seq, from as usize..to as usize));
        }
        Ok(out)
    }
}

#[async_trait]
impl ObjectStore for DbObjects {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let size = payload.content_length() as u64;
        if size > MAX_BLOB {
            return Err(too_large(size));
        }
        let upload = new_upload();
        let now = dispatch_core::time::now_ms();
        if size <= MAX_PART as u64 {
            // One part: put at once (one transaction on PostgreSQL).
            let expect = expect_of(location, &opts.mode)?;
            let bytes = Bytes::from(payload);
            let put = self
                .store
                .put_blob(location.as_ref(), &upload, &bytes, &expect, now)
                .await
                .map_err(failed)?;
            return put_result(location, &expect, put);
        }
        self.store
            .begin_blob_upload(&upload, now)
            .await
            .map_err(failed)?;
        if let Err(e) = write_parts(&*self.store, &upload, 0, payload).await {
            let _ = self.store.abort_blob_upload(&upload).await;
            return Err(e);
        }
        self.commit(location, &upload, opts.mode).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = new_upload();
        let now = dispatch_core::time::now_ms();
        self.store
            .begin_blob_upload(&upload, now)
            .await
            .map_err(failed)?;
        Ok(Box::new(DbUpload {
            objects: self.clone(),
            location: location.clone(),
            upload,
            next: 0,
            done: false,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let Some(meta) = self
            .store
            .head_blob(location.as_ref())
            .await
            .map_err(failed)?
        else {
            return Err(not_found(location));
        };
        let object = object_meta(location.clone(), &meta);
        options.check_preconditions(&object)?;
        let range = match &options.range {
            Some(range) => range
                .as_range(meta.size)
                .map_err(|e| generic(format!("object {location}: {e}")))?,
            None => 0..meta.size,
        };
        let payload = if options.head {
            stream::empty().boxed()
        } else {
            let pieces = self.pieces(&meta, &range).await?;
            let (store, upload, key) = (self.store.clone(), meta.upload.clone(), meta.key.clone());
            // One query per part, as the reader gets to it.
            stream::iter(pieces)
                .then(move |(seq, wanted)| {
                    let (store, upload, key) = (store.clone(), upload.clone(), key.clone());
                    async move {
                        let bytes = store
                            .read_blob_part(&upload, seq)
                            .await
                            .map_err(failed)?
                            .ok_or_else(|| {
                                generic(format!(
                                    "object {key} was replaced or deleted while it was read"
                                ))
                            })?;
                        let bytes = Bytes::from(bytes);
                        if wanted.end > bytes.len() {
                            return Err(generic(format!(
                                "a part of object {key} is shorter than recorded"
                            )));
                        }
                        Ok(bytes.slice(wanted))
                    }
                })
                .boxed()
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta: object,
            range,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let store = self.store.clone();
        locations
            .then(move |location| {
                let store = store.clone();
                async move {
                    let location = location?;
                    store.delete_blob(location.as_ref()).await.map_err(failed)?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        // Under `a/b`: `a/b/…`, not `a/bc` nor `a/b` itself.
        let under = match prefix.map(|p| p.as_ref()).filter(|p| !p.is_empty()) {
            Some(p) => format!("{p}/"),
            None => String::new(),
        };
        let store = self.store.clone();
        // (where the next page starts, whether the last page was full)
        let pages = stream::try_unfold((None::<String>, true), move |(after, more)| {
            let (store, under) = (store.clone(), under.clone());
            async move {
                if !more {
                    return Ok(None);
                }
                let page = store
                    .list_blobs(&under, after.as_deref(), PAGE)
                    .await
                    .map_err(failed)?;
                let more = page.len() == PAGE;
                let next = page.last().map(|m| m.key.clone());
                let metas = page
                    .iter()
                    .map(|m| Ok(object_meta(Path::parse(&m.key)?, m)))
                    .collect::<Vec<Result<ObjectMeta>>>();
                Ok(Some((stream::iter(metas), (next, more))))
            }
        });
        pages
            .map(|page: Result<_>| match page {
                Ok(metas) => metas.boxed(),
                Err(e) => stream::once(async { Err(e) }).boxed(),
            })
            .flatten()
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let root = Path::default();
        let prefix = prefix.unwrap_or(&root);
        let mut common_prefixes = std::collections::BTreeSet::new();
        let mut objects = Vec::new();
        let mut listed = self.list(Some(prefix));
        while let Some(meta) = listed.next().await {
            let meta = meta?;
            let nested = {
                let Some(mut parts) = meta.location.prefix_match(prefix) else {
                    continue;
                };
                let Some(first) = parts.next() else { continue };
                parts.next().is_some().then(|| prefix.clone().join(first))
            };
            match nested {
                Some(common) => {
                    common_prefixes.insert(common);
                }
                None => objects.push(meta),
            }
        }
        Ok(ListResult {
            objects,
            common_prefixes: common_prefixes.into_iter().collect(),
            extensions: Default::default(),
        })
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let Some(meta) = self.store.head_blob(from.as_ref()).await.map_err(failed)? else {
            return Err(not_found(from));
        };
        let upload = new_upload();
        let now = dispatch_core::time::now_ms();
        self.store
            .begin_blob_upload(&upload, now)
            .await
            .map_err(failed)?;
        let copied = async {
            for part in self.store.blob_parts(&meta.upload).await.map_err(failed)? {
                let bytes = self
                    .store
                    .read_blob_part(&meta.upload, part.seq)
                    .await
                    .map_err(failed)?
                    .ok_or_else(|| not_found(from))?;
                self.store
                    .put_blob_part(&upload, part.seq, &bytes)
                    .await
                    .map_err(failed)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = copied {
            let _ = self.store.abort_blob_upload(&upload).await;
            return Err(e);
        }
        let mode = match options.mode {
            CopyMode::Overwrite => PutMode::Overwrite,
            CopyMode::Create => PutMode::Create,
        };
        self.commit(to, &upload, mode).await.map(|_| ())
    }
}

/// A multipart upload into the database: each part's pieces are written
/// as it is given; the commit makes them the object. Dropped before it
/// completed or aborted (a writer that failed half-way), it aborts itself
/// in the background, so no parts are left for the expiry to find.
#[derive(Debug)]
struct DbUpload {
    objects: DbObjects,
    location: Path,
    upload: String,
    /// The next part's index.
    next: i64,
    /// Completed or aborted.
    done: bool,
}

impl Drop for DbUpload {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, upload) = (self.objects.store.clone(), self.upload.clone());
            runtime.spawn(async move {
                let _ = store.abort_blob_upload(&upload).await;
            });
        }
    }
}

#[async_trait]
impl MultipartUpload for DbUpload {
    fn put_part(&mut self, payload: PutPayload) -> UploadPart {
        let first = self.next << PIECE_BITS;
        self.next += 1;
        let (store, upload) = (self.objects.store.clone(), self.upload.clone());
        Box::pin(async move {
            if payload.content_length() as u64 > MAX_BLOB {
                return Err(too_large(payload.content_length() as u64));
            }
            write_parts(&*store, &upload, first, payload).await
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let result = self
            .objects
            .commit(&self.location, &self.upload, PutMode::Overwrite)
            .await;
        // Committed, or gone with a refused commit; else aborted on drop.
        self.done = result.is_ok();
        result
    }

    async fn abort(&mut self) -> Result<()> {
        self.done = true;
        self.objects
            .store
            .abort_blob_upload(&self.upload)
            .await
            .map_err(failed)
    }
}
