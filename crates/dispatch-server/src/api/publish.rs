//! What runs are made of goes into the store: every parcel the server builds
//! or receives, and every brief it writes, so that a worker on another
//! machine (with no shared filesystem) can fetch and verify them.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use axum::http::StatusCode;
use dispatch_core::brief::Brief;
use dispatch_core::parcel::{self, Parcel};
use dispatch_core::{Operation, now_ms};
use dispatch_runtime::launch;
use dispatch_store::{NewRun, StoredParcel};

use super::{ApiError, ApiResult, AppState, codes};

/// Parcel digests this process put into the store, so that creating a run
/// costs no parcel write after the first.
#[derive(Debug, Default)]
pub struct Published {
    parcels: Mutex<HashSet<String>>,
}

impl Published {
    fn knows(&self, digest: &str) -> bool {
        self.lock().contains(digest)
    }

    fn note(&self, digest: &str) {
        self.lock().insert(digest.to_string());
    }

    /// The parcel was removed from the store: a run of it puts it back.
    pub(super) fn forget(&self, digest: &str) {
        self.lock().remove(digest);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.parcels.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Archives up to this size are kept in the parcel's database row; bigger
/// ones in the cluster's object store (when it has one).
pub const INLINE_ARCHIVE_MAX: u64 = 8 * 1024 * 1024;

/// Puts the parcel into the store. A stored copy that differs (damaged) is
/// replaced, so uploading a parcel again repairs it. The archive is packed
/// into a file first (constant memory, whatever the parcel's size).
pub(super) async fn put_parcel(state: &AppState, parcel: &Parcel) -> ApiResult<()> {
    let parcels = state.layout.parcels();
    std::fs::create_dir_all(&parcels)
        .map_err(|e| internal(format!("cannot create {}: {e}", parcels.display())))?;
    let tmp = parcel::scratch_path(&parcels);
    let result = put_packed(state, parcel, &tmp).await;
    let _ = std::fs::remove_file(&tmp);
    result?;
    state.published.note(&parcel.digest);
    // A workflow's members go with it: the worker that coordinates it
    // fetches them to create their runs.
    for m in parcel.manifest.workflow.iter().flat_map(|w| &w.members) {
        let dir = state.layout.parcels().join(&m.parcel);
        let member = parcel::load(&dir).map_err(|e| internal(e.to_string()))?;
        Box::pin(ensure_parcel(state, &member)).await?;
    }
    Ok(())
}

async fn put_packed(state: &AppState, parcel: &Parcel, tmp: &Path) -> ApiResult<()> {
    let (local, file) = (parcel.clone(), tmp.to_path_buf());
    let packed = tokio::task::spawn_blocking(move || {
        let out = std::fs::File::create(&file).map_err(|e| e.to_string())?;
        let mut out = std::io::BufWriter::new(out);
        let manifest = parcel::pack_to(&local, &mut out).map_err(|e| e.to_string())?;
        std::io::Write::flush(&mut out).map_err(|e| e.to_string())?;
        let size = std::fs::metadata(&file).map_err(|e| e.to_string())?.len();
        Ok::<_, String>((manifest, size))
    })
    .await
    .map_err(|e| internal(format!("packing parcel {}: {e}", parcel.digest)))?;
    let (manifest, size) = packed.map_err(internal)?;
    let archive = match &state.archives {
        Some(objects) if size > INLINE_ARCHIVE_MAX => {
            // The archive first: a row never names an archive that is not there.
            objects
                .put_parcel_archive(&parcel.digest, tmp)
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        codes::UNAVAILABLE,
                        format!(
                            "cannot store parcel {}'s archive: {}",
                            parcel.digest,
                            dispatch_runtime::objects::chain(&e)
                        ),
                    )
                })?;
            Vec::new()
        }
        _ => std::fs::read(tmp).map_err(|e| internal(format!("reading the packed parcel: {e}")))?,
    };
    let stored = StoredParcel {
        digest: parcel.digest.clone(),
        name: parcel.manifest.name.clone(),
        manifest,
        archive,
        created_at: now_ms(),
    };
    state.store.put_parcel(&stored).await?;
    Ok(())
}

/// Makes sure the parcel of a new run is in the store (a parcel built on
/// this machine before may not be).
pub(super) async fn ensure_parcel(state: &AppState, parcel: &Parcel) -> ApiResult<()> {
    if state.published.knows(&parcel.digest) {
        return Ok(());
    }
    if state.store.has_parcel(&parcel.digest).await? {
        state.published.note(&parcel.digest);
        return Ok(());
    }
    put_parcel(state, parcel).await
}

/// The record of a new run of `parcel` for `req` (its operation resolved),
/// with its parcel and brief in the store first: a worker on another
/// machine fetches them. The brief is written on this machine too.
pub(super) async fn new_run(
    state: &AppState,
    parcel: &Parcel,
    req: &launch::LaunchRequest,
    operation: Operation,
) -> ApiResult<NewRun> {
    let (new, (sha256, bytes)) = new_run_calling(state, parcel, req, operation, None).await?;
    state.store.put_brief(&sha256, &bytes).await?;
    Ok(new)
}

/// The record of a new run as [`new_run`] makes it, with the model a
/// native agent calls (`context.llm`), and its brief (SHA-256, bytes) to
/// store with it: the parcel is in the store, the brief only on this
/// machine yet.
pub(super) async fn new_run_calling(
    state: &AppState,
    parcel: &Parcel,
    req: &launch::LaunchRequest,
    operation: Operation,
    llm: Option<&serde_json::Value>,
) -> ApiResult<(NewRun, (String, Vec<u8>))> {
    ensure_parcel(state, parcel).await?;
    let mut brief = Brief::assemble(parcel, operation, req.payload.clone());
    if let Some(llm) = llm {
        brief.context["llm"] = llm.clone();
    }
    let sha256 = launch::write_brief(&state.layout, &brief)?;
    let (bytes, encoded) = brief.encode();
    debug_assert_eq!(encoded, sha256, "a brief encodes the same every time");
    Ok((
        req.new_run(parcel, operation, sha256.clone()),
        (sha256, bytes),
    ))
}

/// Stores a brief [`new_run_calling`] made, waiting out a lost database.
pub(super) async fn put_brief(
    state: &AppState,
    patience: &super::patience::Patience,
    brief: &(String, Vec<u8>),
) -> ApiResult<()> {
    patience
        .retry(|| async {
            state.store.put_brief(&brief.0, &brief.1).await?;
            Ok(())
        })
        .await
}

fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, message)
}
