//! A worker's inputs from the store: before a claimed run starts, its parcel
//! and brief must be on this machine's disk. What is missing is fetched from
//! the store (where the server put it), verified against its digest, and
//! materialised atomically (a temporary file or directory renamed into
//! place), so a half-written parcel or brief is never seen.
//!
//! Anything that fails verification is refused: the run fails with the
//! reason and nothing of it is used or left on disk.

use std::path::Path;

use dispatch_core::{brief, parcel};
use dispatch_runtime::Layout;
use dispatch_runtime::objects::{Objects, ObjectsError, chain};
use dispatch_store::{ParcelStore, Run, StoreError};
use tokio::sync::Mutex;

/// Why a run's inputs are not ready.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// They cannot be had, or failed verification: the run fails with this reason.
    Refused(String),
    /// The store failed: the run may be tried again later.
    Store(StoreError),
}

impl From<StoreError> for FetchError {
    /// A store that cannot be reached may answer later; anything else
    /// (a stored value that does not decode) will not get better.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { .. } | StoreError::Locked { .. } => FetchError::Store(e),
            other => FetchError::Refused(format!("cannot read the run's inputs: {other}")),
        }
    }
}

/// One fetch at a time in this process: runs of the same parcel claimed
/// together fetch it once, and the rest find it on disk.
static FETCHING: Mutex<()> = Mutex::const_new(());

/// Makes sure the parcel and the brief of `run` are in `layout`, fetching
/// what is missing from `store` (a big parcel's archive from `archives`,
/// the cluster's object store).
pub(crate) async fn inputs<S: ParcelStore + ?Sized>(
    store: &S,
    archives: Option<&Objects>,
    layout: &Layout,
    run: &Run,
) -> Result<(), FetchError> {
    let parcel_dir = layout.parcels().join(&run.parcel_digest);
    let brief_path = layout.brief(&run.brief_sha256);
    if has_parcel(&parcel_dir) && brief_path.is_file() {
        return Ok(());
    }
    let _one_at_a_time = FETCHING.lock().await;
    if !has_parcel(&parcel_dir) {
        fetch_parcel(store, archives, layout, &run.parcel_digest).await?;
    }
    if !brief_path.is_file() {
        fetch_brief(store, layout, &run.brief_sha256).await?;
    }
    Ok(())
}

/// Makes sure the member parcels of workflow parcel `digest` are in
/// `layout` (its coordinator creates their runs here).
pub(crate) async fn members<S: ParcelStore + ?Sized>(
    store: &S,
    archives: Option<&Objects>,
    layout: &Layout,
    digest: &str,
) -> Result<(), FetchError> {
    let Ok(p) = parcel::load(&layout.parcels().join(digest)) else {
        return Ok(());
    };
    for m in p.manifest.workflow.iter().flat_map(|w| &w.members) {
        if !has_parcel(&layout.parcels().join(&m.parcel)) {
            let _one_at_a_time = FETCHING.lock().await;
            if !has_parcel(&layout.parcels().join(&m.parcel)) {
                fetch_parcel(store, archives, layout, &m.parcel).await?;
            }
        }
    }
    Ok(())
}

/// Puts the briefs of the member runs a workflow's coordinator creates on
/// this worker into the store, for the workers that claim them.
pub(crate) struct StoreBriefs(pub(crate) crate::SharedStore);

impl dispatch_runtime::workflow::BriefSink for StoreBriefs {
    fn put<'a>(
        &'a self,
        sha256: &'a str,
        bytes: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            self.0
                .put_brief(sha256, &bytes)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

/// The parcel `digest`, fetched from the store first when this machine
/// does not have it (a server firing a service registered on another).
pub(crate) async fn parcel<S: ParcelStore + ?Sized>(
    store: &S,
    archives: Option<&Objects>,
    layout: &Layout,
    digest: &str,
) -> Result<parcel::Parcel, FetchError> {
    let dir = layout.parcels().join(digest);
    if !has_parcel(&dir) {
        let _one_at_a_time = FETCHING.lock().await;
        if !has_parcel(&dir) {
            fetch_parcel(store, archives, layout, digest).await?;
        }
    }
    parcel::load(&dir).map_err(|e| FetchError::Refused(format!("cannot load parcel {digest}: {e}")))
}

fn has_parcel(dir: &Path) -> bool {
    dir.join("manifest.json").is_file()
}

async fn fetch_parcel<S: ParcelStore + ?Sized>(
    store: &S,
    archives: Option<&Objects>,
    layout: &Layout,
    digest: &str,
) -> Result<(), FetchError> {
    let Some(stored) = store.get_parcel(digest).await? else {
        return Err(FetchError::Refused(format!(
            "parcel {digest} is neither on this machine nor in the cluster's database \
             (hint: upload it through a server: `dispatch build <dir> --host …`)"
        )));
    };
    let root = layout.parcels();
    if !stored.archive.is_empty() {
        let digest = digest.to_string();
        return unpacked(
            tokio::task::spawn_blocking(move || {
                parcel::unpack(
                    &digest,
                    stored.manifest.as_bytes(),
                    stored.archive.as_slice(),
                    &root,
                )
            })
            .await,
        );
    }
    // A big parcel: its archive is in the cluster's object store.
    let Some(objects) = archives else {
        return Err(FetchError::Refused(format!(
            "parcel {digest}'s archive is in the cluster's object store, which this process was not given \
             (hint: give every server and worker of the cluster the same --artifacts URL, or none on PostgreSQL)"
        )));
    };
    std::fs::create_dir_all(&root)
        .map_err(|e| FetchError::Refused(format!("cannot create {}: {e}", root.display())))?;
    let tmp = parcel::scratch_path(&root);
    let result = async {
        match objects.download_parcel_archive(digest, &tmp).await {
            Ok(_) => {}
            Err(e @ ObjectsError::NotFound { .. }) => {
                return Err(FetchError::Refused(format!(
                    "parcel {digest}'s archive is missing: {} (hint: upload the parcel again)",
                    chain(&e)
                )));
            }
            Err(e) => {
                return Err(FetchError::Refused(format!(
                    "cannot fetch parcel {digest}'s archive: {}",
                    chain(&e)
                )));
            }
        }
        let (digest, file) = (digest.to_string(), tmp.clone());
        unpacked(
            tokio::task::spawn_blocking(move || {
                let reader = std::fs::File::open(&file).map(std::io::BufReader::new);
                let reader = reader.map_err(|source| parcel::ParcelError::Io {
                    what: "cannot read",
                    path: file.clone(),
                    source,
                })?;
                parcel::unpack(&digest, stored.manifest.as_bytes(), reader, &root)
            })
            .await,
        )
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    result
}

/// The outcome of an unpack on a blocking thread.
fn unpacked(
    done: Result<Result<parcel::Parcel, parcel::ParcelError>, tokio::task::JoinError>,
) -> Result<(), FetchError> {
    done.map_err(|e| FetchError::Refused(format!("unpacking the parcel failed: {e}")))?
        .map(drop)
        .map_err(|e| FetchError::Refused(format!("cannot use the stored parcel: {e}")))
}

async fn fetch_brief<S: ParcelStore + ?Sized>(
    store: &S,
    layout: &Layout,
    sha256: &str,
) -> Result<(), FetchError> {
    let Some(bytes) = store.get_brief(sha256).await? else {
        return Err(FetchError::Refused(format!(
            "brief {sha256} is neither on this worker nor in the cluster's database \
             (hint: dispatch the run again through the server)"
        )));
    };
    // Verified before anything is written: a verified digest is 64 hex
    // digits, so it is also a safe file name.
    brief::verify(&bytes, sha256)
        .map_err(|e| FetchError::Refused(format!("refusing to start: the stored {e}")))?;
    let dir = layout.briefs();
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{sha256}.{}.fetch.tmp", std::process::id()));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, layout.brief(sha256)).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    };
    write().map_err(|e| {
        FetchError::Refused(format!(
            "cannot write brief {sha256} into {}: {e}",
            dir.display()
        ))
    })
}
