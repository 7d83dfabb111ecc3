//! Member runs a cluster worker runs itself.
//!
//! In a cluster the worker holding a workflow run coordinates it. A member
//! run sent to the queue waits for a notification and a claim (by any
//! worker) before its agent starts. When the coordinating worker has room
//! for the member, it creates it already claimed by itself instead
//! ([`dispatch_store::QueueStore::create_claimed`]: leased and fenced like
//! any run it claims, so if the worker dies the lease runs out and another
//! worker takes the run) and starts it at once the way it starts the runs
//! it claims. The hop skips the queue's round trip.
//!
//! What a worker takes is up to it ([`RunHere`]): the members of a pass up
//! to its free slots and capacity. The rest go to the queue, so a fan-out
//! wider than this worker's free slots spreads across workers, and a worker
//! with no free slot leaves every member to the others.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use dispatch_core::RunId;
use dispatch_store::{NewRun, RunExtras, Store, StoreResult};

use crate::error::RuntimeResult;

/// The worker a workflow's coordinator runs on, seen from the coordinator.
pub trait RunHere: Send + Sync {
    /// Creates, of `batch`, the runs this worker has room for, claimed by
    /// it (one transaction), and starts them; returns their ids. On an
    /// error none of them was created (one existed already, or the store
    /// failed): the caller creates them the usual way.
    fn create_and_start<'a>(
        &'a self,
        batch: &'a [(NewRun, RunExtras)],
    ) -> Pin<Box<dyn Future<Output = StoreResult<Vec<RunId>>> + Send + 'a>>;
}

/// What a cluster worker lends the coordinator of a workflow it holds.
#[derive(Clone, Default)]
pub struct Members {
    /// Where the member runs' briefs go for workers on other machines.
    pub briefs: Option<std::sync::Arc<dyn super::BriefSink>>,
    /// The worker itself, which runs the members it has room for.
    pub here: Option<std::sync::Arc<dyn RunHere>>,
}

/// Creates the planned runs: those `here` takes claimed by this worker,
/// the others queued (see [`super::turns::create`]); whether each was
/// created in this call (`false`: it existed, so its message was delivered).
pub(super) async fn create<S: Store + ?Sized>(
    store: &S,
    here: &dyn RunHere,
    planned: &[(NewRun, RunExtras)],
) -> RuntimeResult<Vec<bool>> {
    if planned.is_empty() {
        return Ok(Vec::new());
    }
    let taken: HashSet<RunId> = match here.create_and_start(planned).await {
        Ok(ids) => ids.into_iter().collect(),
        Err(_) => HashSet::new(),
    };
    let rest: Vec<(NewRun, RunExtras)> = planned
        .iter()
        .filter(|(new, _)| !taken.contains(&new.id))
        .cloned()
        .collect();
    let mut queued = super::turns::create(store, &rest).await?.into_iter();
    Ok(planned
        .iter()
        .map(|(new, _)| taken.contains(&new.id) || queued.next().unwrap_or(false))
        .collect())
}
