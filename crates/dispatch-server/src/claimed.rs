//! One claimed run on a worker, around what the runtime does with it: fetch
//! its parcel and brief when they are not on this machine, ship its log into
//! the store while it is in hand, and fail it with the reason when its
//! inputs cannot be had or fail verification (it never runs then).

use std::sync::Arc;

use dispatch_core::parcel::{Courier, Parcel};
use dispatch_runtime::helper::{Holding, InWorker, fail_claimed, run_in_worker};
use dispatch_runtime::{Layout, RuntimeError, RuntimeResult};
use dispatch_store::Run;

use crate::SharedStore;
use crate::fenced::FencedStore;
use crate::fetch::{self, FetchError};
use crate::ship::{LogShipper, QUIET_LOOK_EVERY};

/// Where a run's outputs go beyond this machine.
pub(crate) struct Sharing {
    /// Ship its log into the store.
    pub ship_logs: bool,
    /// The cluster's artifact store: artifacts and the parcel's state.
    pub objects: Option<Arc<dispatch_runtime::objects::Objects>>,
    /// Bus mode: where the runs it hands off to are announced.
    pub announce: Option<Arc<crate::bus::Publisher>>,
    /// This worker, for the workflows it coordinates: it runs the member
    /// runs it has room for itself.
    pub here: Option<Arc<dyn dispatch_runtime::workflow::RunHere>>,
}

/// Runs the claimed (`starting`) `run` to its end on this worker; `store`
/// fences its writes; `parcel` is the worker's loaded copy, when it has one. With `sharing.ship_logs`, its log goes into `shared` too;
/// with `sharing.objects`, its artifacts and its parcel's state go to that artifact store.
/// Returns the run's exit status. The run comes boxed: moved by value down
/// the layers of futures, it would be laid out in each of them (issue #38).
///
/// When the store cannot be reached for its inputs, the run is left as it
/// is: its lease runs out and it goes back to the queue without consuming
/// an attempt.
pub(crate) async fn run(
    shared: &SharedStore,
    store: &Arc<FencedStore>,
    layout: &Layout,
    run: Box<Run>,
    parcel: Option<Arc<Parcel>>,
    sharing: Sharing,
    who: &str,
) -> RuntimeResult<i32> {
    let Sharing {
        ship_logs,
        objects,
        announce,
        here,
    } = sharing;
    let (id, objects_for_logs) = (run.id.clone(), objects.clone());
    let holder = store.clone();
    let holding: Holding = Arc::new(move || holder.lease().current());
    // At version 2 the run was created, then claimed by us: nobody held it
    // before, so nobody shipped any of its log.
    let fresh = run.version == 2;
    let courier = parcel.as_ref().map(|p| p.manifest.courier);
    let shipper = ship_logs.then(|| {
        let mut shipper = LogShipper::new(shared.clone(), layout, &run.id, store.fence());
        if let Some(writer) = store.writer() {
            shipper = shipper.with_writer(writer.clone());
        }
        // A native agent's log is written by this process only, and its
        // text goes out live as deltas: no need to look at it five times a
        // second while the run waits on its model.
        if courier == Some(Courier::Agent) {
            shipper = shipper.quiet_looks(QUIET_LOOK_EVERY);
        }
        Arc::new(match fresh {
            true => shipper.stored_from(0),
            false => shipper,
        })
    });
    if let Some(shipper) = &shipper {
        store.ship_log_with(shipper.clone());
    }
    // On the heap once: `ship_while` takes it, or it is awaited here (as a
    // local it would take its size twice in this function's state).
    let work = Box::pin(async {
        let workflow = courier.is_none_or(|c| c == Courier::Workflow);
        let archives = objects.as_deref();
        let inputs = match fetch::inputs(&**shared, archives, layout, &run).await {
            Ok(()) if workflow => {
                fetch::members(&**shared, archives, layout, &run.parcel_digest).await
            }
            other => other,
        };
        let briefs: Arc<dyn dispatch_runtime::workflow::BriefSink> =
            Arc::new(fetch::StoreBriefs(shared.clone()));
        match inputs {
            Ok(()) => {
                let upstream =
                    crate::upstream::ClusterUpstream::new(shared.clone(), layout.clone())
                        .announcing(announce)
                        .with_archives(objects.clone());
                let id = run.id.clone();
                let shared = objects.clone();
                let worker = InWorker {
                    upstream: Arc::new(upstream),
                    members: dispatch_runtime::workflow::Members {
                        briefs: Some(briefs),
                        here,
                    },
                    shared: objects,
                    holding,
                };
                let ended = run_in_worker(&**store, layout, run, parcel, worker).await;
                // A native run's model-call records, for the dashboard of any server.
                if let Some(objects) = shared
                    && let Err(e) = objects.put_calls(&id, &layout.run_dir(&id)).await
                {
                    tracing::warn!(
                        "{who} run {id}: model-call records stay on this machine: {}",
                        dispatch_runtime::objects::chain(&e)
                    );
                }
                ended
            }
            Err(FetchError::Refused(reason)) => {
                fail_claimed(&**store, layout, *run, reason, holding).await
            }
            Err(FetchError::Store(e)) => Err(RuntimeError::Store(e)),
        }
    });
    let code = match &shipper {
        Some(shipper) => shipper.ship_while(who, work).await,
        None => work.await,
    };
    if let (Some(shipper), Some(objects)) = (&shipper, &objects_for_logs) {
        // What this worker shipped says whether the log can be long enough:
        // short logs cost no query here.
        let long = shipper
            .stored_length()
            .await
            .is_some_and(|n| n > dispatch_runtime::objects::logs::ARCHIVE_OVER);
        if long {
            // Boxed: awaited inline, its state would be held by every run
            // for its whole life (issue #38).
            Box::pin(archive_log(shared, objects, layout, &id, who)).await;
        }
    }
    code
}

/// Moves the finished run's log from the database to the artifact store
/// (see [`dispatch_runtime::objects::logs`]); a failure is a warning: the
/// log stays in the database, whole.
async fn archive_log(
    shared: &SharedStore,
    objects: &dispatch_runtime::objects::Objects,
    layout: &Layout,
    id: &dispatch_core::RunId,
    who: &str,
) {
    match shared.get_run(id).await {
        Ok(run) if run.state.is_terminal() => {}
        _ => return,
    }
    let dir = layout.log_archives();
    match dispatch_runtime::objects::logs::archive_run_log(&**shared, objects, id, &dir).await {
        Ok(Some(a)) => tracing::debug!(
            "{who}: the log of run {id} ({} bytes) is archived as logs/{} in {}",
            a.size,
            a.sha256,
            objects.url()
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(
            "{who}: the log of run {id} stays in the database (cannot archive it in {}): {e}",
            objects.url()
        ),
    }
}
