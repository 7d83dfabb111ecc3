//! A worker with a shared artifact store (`--artifacts URL`): the parcel's
//! state is pulled from it before the agent starts and pushed back after
//! it exits, before the run's terminal state is saved (so the next run,
//! on any worker, sees it); artifacts are uploaded there as they are
//! collected. See [`crate::objects`] for the store and the semantics.

use dispatch_store::Artifact;

use super::{LifecycleLog, Prepared};
use crate::layout::Layout;
use crate::objects::state::Synced;

/// The parcel's state as pulled at the attempt's start.
pub(super) struct Pulled {
    parcel: String,
    synced: Synced,
}

/// Pulls the parcel's state into this machine's state directory. `Err`
/// is why the attempt cannot start (it is retried: the store may answer later).
pub(super) async fn pull_state(
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
pub(super) async fn push_state(
    prepared: &Prepared,
    layout: &Layout,
    pulled: Option<Pulled>,
    log: &mut LifecycleLog,
) {
    let (Some(objects), Some(Pulled { parcel, synced })) = (&prepared.shared, pulled) else {
        return;
    };
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
pub(super) async fn upload_artifacts(
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
