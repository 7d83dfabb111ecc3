//! Handoffs of runs on a cluster worker: the parcel a handoff names is
//! looked up among the parcels in the cluster's database (as `POST
//! /v1/runs` would find it: the newest of that name, or a digest prefix),
//! fetched to this machine for its brief, and the new run is queued with
//! its brief in the store, for any worker (with the handoff's labels) to
//! claim. One run per handoff (see [`dispatch_runtime::handoff`]).

use async_trait::async_trait;
use dispatch_core::RunId;
use dispatch_core::brief::Brief;
use dispatch_core::parcel;
use dispatch_runtime::Layout;
use dispatch_runtime::handoff::{
    Handoff, HandoffError, Upstream, check_depth, unknown_parcel, upstream_run,
};
use dispatch_runtime::launch::write_brief;
use dispatch_store::{Capacity, Created, QueueOptions, RunExtras, StoreError};

use std::sync::Arc;

use crate::SharedStore;
use crate::bus::Publisher;
use crate::fetch::{self, FetchError};

/// Starts handed-off runs in the cluster's queue.
pub(crate) struct ClusterUpstream {
    store: SharedStore,
    layout: Layout,
    announce: Option<Arc<Publisher>>,
    /// The cluster's object store, where big parcels' archives are.
    archives: Option<Arc<dispatch_runtime::objects::Objects>>,
}

impl ClusterUpstream {
    pub(crate) fn new(store: SharedStore, layout: Layout) -> Self {
        ClusterUpstream {
            store,
            layout,
            announce: None,
            archives: None,
        }
    }

    /// Bus mode: each run it queues is announced on the Redis stream (the
    /// workers waiting on the bus poll the database only now and then).
    pub(crate) fn announcing(mut self, announce: Option<Arc<Publisher>>) -> Self {
        self.announce = announce;
        self
    }

    /// Big parcels' archives are fetched from `archives`.
    pub(crate) fn with_archives(
        mut self,
        archives: Option<Arc<dispatch_runtime::objects::Objects>>,
    ) -> Self {
        self.archives = archives;
        self
    }
}

fn failed(parcel: &str, e: StoreError) -> HandoffError {
    HandoffError::Failed(format!("handoff to `{parcel}`: {e}"))
}

#[async_trait]
impl Upstream for ClusterUpstream {
    async fn start(&self, from: &RunId, handoff: &Handoff) -> Result<Created, HandoffError> {
        let name = &handoff.parcel;
        let digests = self
            .store
            .find_parcels(name)
            .await
            .map_err(|e| failed(name, e))?;
        let digest = match digests.as_slice() {
            [one] => one.clone(),
            [] => return Err(unknown_parcel(name, "is in the cluster's database")),
            _ => {
                return Err(HandoffError::Refused(format!(
                    "handoff to `{name}`: it matches several parcels; give more characters of the digest"
                )));
            }
        };
        match fetch::parcel(
            &*self.store,
            self.archives.as_deref(),
            &self.layout,
            &digest,
        )
        .await
        {
            Ok(_) => {}
            Err(FetchError::Refused(why)) => {
                return Err(HandoffError::Refused(format!("handoff to `{name}`: {why}")));
            }
            Err(FetchError::Store(e)) => return Err(failed(name, e)),
        }
        let parcel = parcel::load(&self.layout.parcels().join(&digest))
            .map_err(|e| HandoffError::Refused(format!("handoff to `{name}`: {e}")))?;
        let operation = parcel.manifest.entrypoint;
        let brief = Brief::assemble(&parcel, operation, handoff.payload.clone());
        let sha256 = write_brief(&self.layout, &brief)
            .map_err(|e| HandoffError::Failed(format!("handoff to `{name}`: {e}")))?;
        let project = check_depth(&*self.store, from).await?;
        let new = upstream_run(from, &project, handoff, &parcel, sha256.clone())?;
        let (bytes, _) = brief.encode();
        self.store
            .put_brief(&sha256, &bytes)
            .await
            .map_err(|e| failed(name, e))?;
        let policy =
            dispatch_core::policy::RunPolicy::resolve(&parcel.manifest, &Default::default());
        let extras = RunExtras {
            policy: Some(serde_json::to_value(policy).expect("a policy is plain data")),
            ..RunExtras::default()
        };
        let options = QueueOptions {
            labels: handoff.labels.clone(),
            requests: Capacity::of(&parcel.manifest.resources),
            ..QueueOptions::default()
        };
        let created = self
            .store
            .enqueue_with(&new, &extras, &options, false)
            .await
            .map_err(|e| failed(name, e))?;
        if let (Some(bus), Created::New(run)) = (&self.announce, &created) {
            // The run is queued: a worker's poll finds it if this is lost.
            if let Err(e) = bus.announce(run.id.as_str()).await {
                tracing::warn!(
                    "[worker] run {}: cannot announce it on the bus: {e}",
                    run.id
                );
            }
        }
        Ok(created)
    }
}
