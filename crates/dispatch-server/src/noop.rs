//! The noop courier in a worker: the run "starts" and succeeds at once, with
//! the courier's two state changes (and events) as the helper records them,
//! saved through the run's fenced store like any run's, but with no run
//! directory, log or snapshot: there is nothing to supervise, and the lease
//! covers a worker that dies in between. Used by benchmarks.

use std::collections::HashMap;
use std::sync::Arc;

use dispatch_core::parcel::{self, Parcel};
use dispatch_runtime::Layout;
use dispatch_runtime::courier::noop;
use dispatch_store::{Run, StoreResult};

use crate::fenced::FencedStore;

/// Parcels a worker has loaded, by digest: a parcel is immutable (its
/// directory is named by its manifest's hash), so each is read once.
#[derive(Debug, Default)]
pub(crate) struct Couriers {
    known: HashMap<String, Arc<Parcel>>,
}

impl Couriers {
    /// The parcel; `None` when it cannot be loaded (not remembered: the run
    /// path fetches it from the store, or reports why not; once fetched, the
    /// parcel's next run finds it).
    pub(crate) fn parcel(&mut self, layout: &Layout, digest: &str) -> Option<Arc<Parcel>> {
        if let Some(p) = self.known.get(digest) {
            return Some(p.clone());
        }
        let loaded = Arc::new(parcel::load(&layout.parcels().join(digest)).ok()?);
        self.known.insert(digest.to_string(), loaded.clone());
        Some(loaded)
    }
}

/// Runs a claimed noop run to `succeeded` (or `cancelled` when a stop was
/// already requested): the noop courier's attempt
/// ([`dispatch_runtime::courier::noop::finish`]) saved through the run's
/// fenced store, whose writer batches it with other runs' writes.
pub(crate) async fn run(store: &FencedStore, run: Run) -> StoreResult<()> {
    noop::finish(store, run).await
}
