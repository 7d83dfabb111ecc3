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

use crate::layout::Layout;

/// The worker a workflow's coordinator runs on, seen from the coordinator.
pub trait RunHere: Send + Sync {
    /// Creates, of `batch`, the runs this worker has room for, claimed by
    /// it, with their briefs stored for other machines (one transaction),
    /// and starts them; returns their ids. On an error none of them was
    /// created (one existed already, or the store failed): the caller
    /// creates them the usual way.
    fn create_and_start<'a>(
        &'a self,
        batch: &'a [MemberRun],
    ) -> Pin<Box<dyn Future<Output = StoreResult<Vec<RunId>>> + Send + 'a>>;
}

/// A member run to create: the run, its extras and its brief's bytes.
#[derive(Clone)]
pub struct MemberRun {
    pub new: NewRun,
    pub extras: RunExtras,
    pub brief: Vec<u8>,
}

/// What a cluster worker lends the coordinator of a workflow it holds.
#[derive(Clone, Default)]
pub struct Members {
    /// Where the member runs' briefs go for workers on other machines.
    pub briefs: Option<std::sync::Arc<dyn super::BriefSink>>,
    /// The worker itself, which runs the members it has room for.
    pub here: Option<std::sync::Arc<dyn RunHere>>,
}

/// Creates the planned runs: on a worker, those it takes claimed by it
/// (see [`RunHere`]); the others queued (see [`super::turns::create`]),
/// their briefs stored first for the workers that claim them. Whether
/// each was created in this call (`false`: it existed, so its message was
/// delivered). On an error, the run it is about.
pub(super) async fn deliver<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    host: super::Where<'_>,
    planned: &[(NewRun, RunExtras)],
) -> Result<Vec<bool>, (usize, crate::RuntimeError)> {
    if planned.is_empty() {
        return Ok(Vec::new());
    }
    let mut taken: HashSet<RunId> = HashSet::new();
    // Each brief read once: for the worker's batch, then for the store.
    let mut batch = Vec::new();
    if let Some(here) = host.here.filter(|_| !host.local) {
        batch.reserve(planned.len());
        for (i, (new, extras)) in planned.iter().enumerate() {
            let brief = super::turns::brief_of(layout, new).map_err(|e| (i, e))?;
            let (new, extras) = (new.clone(), extras.clone());
            batch.push(MemberRun { new, extras, brief });
        }
        if let Ok(ids) = here.create_and_start(&batch).await {
            taken = ids.into_iter().collect();
        }
    }
    let left = |(_, (new, _)): &(usize, &(NewRun, RunExtras))| !taken.contains(&new.id);
    if let Some(sink) = host.briefs {
        for (i, (new, _)) in planned.iter().enumerate().filter(left) {
            let brief = match batch.get_mut(i) {
                Some(m) => std::mem::take(&mut m.brief),
                None => super::turns::brief_of(layout, new).map_err(|e| (i, e))?,
            };
            super::turns::put_brief(layout, sink, new, brief)
                .await
                .map_err(|e| (i, e))?;
        }
    }
    let rest: Vec<(NewRun, RunExtras)> = planned
        .iter()
        .enumerate()
        .filter(left)
        .map(|(_, run)| run.clone())
        .collect();
    let created = super::turns::create(store, &rest).await;
    let mut queued = created.map_err(|e| (0, e))?.into_iter();
    Ok(planned
        .iter()
        .map(|(new, _)| taken.contains(&new.id) || queued.next().unwrap_or(false))
        .collect())
}
