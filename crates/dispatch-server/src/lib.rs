//! The Dispatch cluster: an HTTP API over a shared store, and workers that
//! claim queued runs under a lease and run them with the runtime's couriers.
//!
//! - [`worker`]: the claim / run / renew / sweep loop, with graceful drain.
//! - [`api`]: the JSON HTTP API under `/v1`, SSE events, logs, health,
//!   Prometheus metrics, and its OpenAPI document.
//! - [`ui`]: the web dashboard under `/ui`, server-rendered over the same
//!   functions the API handlers use.
//! - [`serve`]: `dispatch server` — the API plus in-process workers, on
//!   PostgreSQL or on the embedded SQLite database.
//! - [`guard`] and [`limits`]: what no web page may do to the server, and
//!   what it takes from its clients (timeouts, a connection cap, rates).
//!
//! The store is shared as a [`SharedStore`]: any backend with the
//! [`QueueStore`] capability.

pub mod a2a;
pub mod api;
pub mod auth;
pub mod bus;
pub mod callback;
pub mod callback_guard;
mod claimed;
pub mod client;
pub mod deltas;
mod error;
pub mod fenced;
mod fetch;
pub mod guard;
pub mod limits;
pub mod metrics;
mod noop;
pub mod otel;
pub mod presence;
pub mod queue_timeout;
pub mod rates;
pub mod retention;
pub mod self_fence;
pub mod serve;
pub mod services;
pub mod ship;
pub mod stopping;
pub mod timers;
pub mod tls;
pub mod ui;
mod upstream;
pub mod wake;
pub mod worker;
mod worker_timers;
mod writer;

use std::sync::Arc;

use dispatch_store::{
    BatchStore, BlobStore, CallbackStore, EvalStore, FencedArtifactStore, ParcelCatalog,
    ParcelStore, QueueStore, RetentionStore, RunLogStore, ServiceStore, Store, TokenStore,
    TraceStore, UsageStore, WorkerStore,
};

pub use error::{ServerError, ServerResult};

/// A store a cluster can run on: the base traits plus the queue (and the
/// noop courier's batch finish), fenced
/// artifact, token, callback, parcel, run-log, service, eval, retention,
/// worker, object (blob) and notification outbox capabilities.
pub trait ClusterStore:
    Store
    + QueueStore
    + dispatch_store::NoopStore
    + BatchStore
    + FencedArtifactStore
    + TokenStore
    + CallbackStore
    + ParcelStore
    + ParcelCatalog
    + RunLogStore
    + EvalStore
    + ServiceStore
    + RetentionStore
    + TraceStore
    + WorkerStore
    + BlobStore
    + UsageStore
    + dispatch_store::NotificationStore
    + dispatch_store::QuotaStore
{
}
impl<
    T: Store
        + QueueStore
        + dispatch_store::NoopStore
        + BatchStore
        + FencedArtifactStore
        + TokenStore
        + CallbackStore
        + ParcelStore
        + ParcelCatalog
        + RunLogStore
        + EvalStore
        + ServiceStore
        + RetentionStore
        + TraceStore
        + WorkerStore
        + BlobStore
        + UsageStore
        + dispatch_store::NotificationStore
        + dispatch_store::QuotaStore,
> ClusterStore for T
{
}

/// The store, shared by the API and the workers of one process.
pub type SharedStore = Arc<dyn ClusterStore>;
