//! A worker with a shared artifact store (`--artifacts URL`): the parcel's
//! state is pulled from it before the agent starts and pushed back after
//! it exits, before the run's terminal state is saved (so the next run,
//! on any worker, sees it); artifacts are uploaded there as they are
//! collected. See [`crate::objects`] for the store and the semantics.

use dispatch_core::RunId;
use dispatch_store::{Artifact, Run, Store};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{LifecycleLog, Prepared};
use crate::layout::Layout;
use crate::objects::Objects;
use crate::objects::state::Synced;

/// An output larger than this (as JSON) is stored as an artifact.
pub const OUTPUT_LIMIT: usize = 256 * 1024;
/// The name of that artifact.
pub const OUTPUT_ARTIFACT: &str = "run-output.json";

/// The parcel's state as pulled at the attempt's start.
pub(crate) struct Pulled {
    parcel: String,
    synced: Synced,
}

/// Pulls the parcel's state into this machine's state directory. `Err`
/// is why the attempt cannot start (it is retried: the store may answer later).
pub(crate) async fn pull_state(
    prepared: &Prepared,
    layout: &Layout,
    parcel: &str,
    log: &mut LifecycleLog,
) -> Result<Option<Pulled>, String> {
    let Some(objects) = &prepared.shared else {
        return Ok(None);
    };
    let dir = layout.state_dir(parcel);
    match objects
        .pull_state(parcel, &dir, &layout.state_record(parcel))
        .await
    {
        Ok(synced) => {
            if !synced.is_empty() {
                log.line(&format!(
                    "state of {parcel}: {} file(s) from {}",
                    synced.len(),
                    objects.url()
                ));
                // The files pulled are the helper's: a sandboxed agent must
                // be able to change and remove them, as it could its own.
                if let Some(owner) = crate::sandbox::owner::of_courier(prepared.courier) {
                    crate::sandbox::owner::give_all(&dir, owner).map_err(|e| {
                        format!(
                            "cannot give the state of parcel {parcel} to the sandbox's user: {e}"
                        )
                    })?;
                }
            }
            Ok(Some(Pulled {
                parcel: parcel.to_string(),
                synced,
            }))
        }
        Err(e) => Err(format!(
            "cannot bring the state of parcel {parcel} from the artifact store: {}",
            crate::objects::chain(&e)
        )),
    }
}

/// Pushes what the attempt changed in the state directory. A failure is a
/// line in the run's log: the run's own result stands.
///
/// Fenced: the run's token is read just before the push, and a holder
/// whose run was taken over meanwhile (its lease ran out while it was
/// frozen or cut off) pushes nothing, so its older files never replace
/// what the attempt that took over saves. The object store has no
/// transaction with the database: a holder stalled between that read and
/// the push's end can still write (see docs/security.md, "Fencing").
pub(crate) async fn push_state<S: Store + ?Sized>(
    store: &S,
    run: &Run,
    prepared: &Prepared,
    layout: &Layout,
    pulled: Option<Pulled>,
    log: &mut LifecycleLog,
) {
    let (Some(objects), Some(Pulled { parcel, synced })) = (&prepared.shared, pulled) else {
        return;
    };
    match store.get_run(&run.id).await {
        Ok(current) if current.fence == run.fence => {}
        Ok(_) => {
            log.line(&format!(
                "state of {parcel} not saved: another attempt holds the run now"
            ));
            return;
        }
        Err(e) => {
            log.line(&format!(
                "state of {parcel} not saved: cannot check that this attempt still holds the run: {e}"
            ));
            return;
        }
    }
    let dir = layout.state_dir(&parcel);
    match objects
        .push_state(&parcel, &dir, &layout.state_record(&parcel), &synced)
        .await
    {
        Ok(p) if p.written + p.deleted > 0 => log.line(&format!(
            "state of {parcel}: {} file(s) written, {} deleted in {}",
            p.written,
            p.deleted,
            objects.url()
        )),
        Ok(_) => {}
        Err(e) => log.line(&format!(
            "could not save the state of parcel {parcel}: {}",
            crate::objects::chain(&e)
        )),
    }
}

/// Uploads collected artifacts (stored on this machine under
/// `.dispatch/artifacts/<sha256>`) to the shared store. An artifact that
/// cannot be uploaded is named in the run's log.
pub(crate) async fn upload_artifacts(
    prepared: &Prepared,
    layout: &Layout,
    list: &[Artifact],
    log: &mut LifecycleLog,
) {
    let Some(objects) = &prepared.shared else {
        return;
    };
    for a in list {
        let path = layout.artifacts().join(&a.sha256);
        if let Err(e) = objects.put_artifact(&a.sha256, &path).await {
            log.line(&format!(
                "could not upload artifact {} ({}): {}",
                a.name,
                a.sha256,
                crate::objects::chain(&e)
            ));
        }
    }
}

/// Moves an output over [`OUTPUT_LIMIT`] to the artifact store, as the
/// artifact [`OUTPUT_ARTIFACT`]; the run's output becomes a reference
/// `{"$artifact": {name, sha256, size}}`. When that fails, the output is
/// kept as it is (and the log says why).
pub(crate) async fn spill_output<S: Store + ?Sized>(
    store: &S,
    objects: &Objects,
    layout: &Layout,
    run: &RunId,
    output: &mut Option<Value>,
    log: &mut LifecycleLog,
) {
    let Some(value) = output.as_ref() else { return };
    let bytes = serde_json::to_vec(value).expect("an output is JSON data");
    if bytes.len() <= OUTPUT_LIMIT {
        return;
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let dir = layout.artifacts();
    let path = dir.join(&sha256);
    let stored = std::fs::create_dir_all(&dir)
        .and_then(|()| match path.is_file() {
            true => Ok(()),
            false => {
                let tmp = dir.join(format!(".{sha256}.{}.tmp", std::process::id()));
                std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path))
            }
        })
        .map_err(|e| e.to_string());
    let uploaded = match stored {
        Ok(()) => objects
            .put_artifact(&sha256, &path)
            .await
            .map(drop)
            .map_err(|e| crate::objects::chain(&e)),
        Err(e) => Err(e),
    };
    let artifact = Artifact {
        name: OUTPUT_ARTIFACT.into(),
        sha256,
        size: bytes.len() as u64,
    };
    let recorded = match uploaded {
        Ok(()) => store
            .add_artifacts(run, std::slice::from_ref(&artifact))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match recorded {
        Ok(()) => {
            log.line(&format!(
                "output of {} bytes stored as artifact {} ({})",
                artifact.size, artifact.name, artifact.sha256
            ));
            *output = Some(json!({ "$artifact": artifact }));
        }
        Err(e) => log.line(&format!(
            "could not store the output of {} bytes as an artifact (kept in the run): {e}",
            artifact.size
        )),
    }
}
