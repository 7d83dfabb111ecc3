//! The cluster's parcel catalog: what `dispatch images --host` lists and
//! `dispatch rmi --host` removes (an opt-in capability beside
//! [`crate::ParcelStore`], which stores and fetches them).

use async_trait::async_trait;
use dispatch_core::Ts;

use crate::StoreResult;

/// A stored parcel, without its archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParcelEntry {
    pub digest: String,
    pub name: String,
    /// The canonical manifest JSON.
    pub manifest: String,
    pub created_at: Ts,
}

/// What removing a parcel from the store did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParcelRemoval {
    Removed,
    /// No parcel has that digest.
    NotFound,
    /// Runs that have not ended (services included) use it: nothing removed.
    InUse(Vec<String>),
}

/// Lists and removes the parcels of the store.
#[async_trait]
pub trait ParcelCatalog: Send + Sync {
    /// Every stored parcel, newest first (no archives read).
    async fn list_parcels(&self) -> StoreResult<Vec<ParcelEntry>>;

    /// Removes parcel `digest`, unless a run that has not ended uses it
    /// (checked in the same transaction). Finished runs keep their record;
    /// replaying one needs the parcel uploaded again.
    async fn remove_parcel(&self, digest: &str) -> StoreResult<ParcelRemoval>;

    /// Removes every parcel that is superseded (a newer parcel has its
    /// name) and that no run references, whatever its state; returns their
    /// digests. The newest parcel of each name always stays.
    async fn prune_parcels(&self) -> StoreResult<Vec<String>>;
}
