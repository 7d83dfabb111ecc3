//! The HTTP API: JSON under `/v1`, one error shape `{code, message}`.
//! Every run belongs to a project; a token bound to projects sees and does
//! only what its role in each allows (see [`crate::auth`]).
//!
//! | route | what |
//! | --- | --- |
//! | `POST /v1/runs` | create a run with its reliability and queue options (`?wait=true` blocks until it ends) |
//! | `GET /v1/runs` | list, filtered (project, status, parcel, operation, parent, label, creation time), newest first, with a cursor |
//! | `GET /v1/runs/{id}` | one run (an id prefix is enough) |
//! | `DELETE /v1/runs/{id}` | remove a finished run (`?force=true` cancels a live one first) |
//! | `POST /v1/runs/{id}/cancel` | cancel |
//! | `POST /v1/runs/{id}/start` | queue a run created with `"start": false` |
//! | `POST /v1/runs/{id}/replay` | the exact parcel, brief and payload again, as a new linked run |
//! | `POST /v1/runs/prune` | remove finished runs (filters as `dispatch prune`; `dry_run`) |
//! | `POST /v1/runs/{id}/signal` | send a signal (wakes a run suspended waiting for it) |
//! | `GET /v1/runs/{id}/events` | events as SSE, resumable with `Last-Event-ID` |
//! | `GET /v1/runs/{id}/logs` | the log as text (`?follow=true` streams) |
//! | `GET /v1/runs/{id}/attempts`, `.../artifacts` | attempts, artifacts |
//! | `GET /v1/runs/{id}/report` | everything about a run in one answer (what `dispatch inspect-run` prints) |
//! | `GET /v1/runs/{id}/graph` | a workflow run's communication graph (members, edges with counts, messages) |
//! | `GET /v1/runs/{id}/artifacts/{sha256}` | one artifact's bytes, checked against the digest |
//! | `GET /v1/approvals` | approvals (`?pending=false` for decided ones too, `?run=`) |
//! | `POST /v1/runs/{id}/approvals/{approval_id}` | approve or deny |
//! | `GET /v1/dead-letters` | dead-lettered runs |
//! | `POST /v1/dead-letters/{id}/replay` | replay one as a new linked run |
//! | `GET/POST /v1/parcels` | list / upload parcels |
//! | `POST /v1/evals`, `GET /v1/evals/{id}`, `GET /v1/evals/latest?parcel=` | keep and read eval reports |
//! | `GET /v1/workers` | the cluster's workers seen in the last day |
//! | `GET /v1/usage` | the cost report: calls, tokens and USD by parcel, model, label or day |
//! | `GET /v1/quotas`, `PUT/DELETE /v1/quotas/{project}` | quotas per project, with what is used of each |
//! | `GET /v1/sessions`, `GET/DELETE /v1/sessions/{parcel}/{name}`, `POST /v1/sessions/prune` | sessions runs keep between them |
//! | `GET /v1/notifications` | the notification outbox, newest first, with what became of each |
//! | `POST /v1/services` | start a service owned by the cluster |
//! | `GET /v1/services` | the running services with their state |
//! | `POST /v1/runs/{id}/wake` | a manual turn of a cluster service |
//! | `GET /v1/runs/{id}/service` | a service's stored state (timers, listeners) |
//! | `POST /hooks/{name}[/{path}]` | a cluster service's webhook (no token: its shared secret); an A2A service's JSON-RPC |
//! | `GET /hooks/{name}/.well-known/agent-card.json` | a cluster A2A service's agent card |
//! | `GET /healthz`, `GET /metrics`, `GET /v1/openapi.json` | operations |

pub(crate) mod artifact;
mod batch;
pub(crate) mod bom;
mod create;
mod error;
mod evals;
mod graph;
mod hooks;
pub(crate) mod lifecycle;
pub(crate) mod logs;
mod notifications;
pub mod openapi;
mod parcel_tar;
mod parcels;
pub mod patience;
pub(crate) mod policy;
mod prune;
pub mod publish;
mod quotas;
pub(crate) mod reliability;
pub(crate) mod report;
pub(crate) mod runs;
mod schemas;
pub(crate) mod services;
pub(crate) mod services_list;
mod sessions;
mod signal;
mod stream;
pub mod strict;
mod table;
mod usage;
pub(crate) mod waiting;
pub(crate) mod wire;
pub mod wire_ops;
pub mod wire_runs;
pub(crate) mod workers;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use dispatch_runtime::Layout;
use dispatch_store::RunFilter;
use tokio::sync::Notify;

pub(crate) use error::store_message;
pub use error::{ApiError, ApiResult, codes};

use crate::SharedStore;

use crate::metrics::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: SharedStore,
    pub layout: Layout,
    /// Wakes this process's workers when a run is created.
    pub wake: Arc<Notify>,
    /// Wakes this process's queue-timeout keeper when a run with a queue
    /// timeout is created.
    pub queue_timeouts: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// Signs completion callbacks; without it, `callback_url` is refused.
    pub callback_secret: Option<Arc<String>>,
    /// Where callbacks may go (`--allow-private-callbacks`).
    pub callback_policy: crate::callback_guard::CallbackPolicy,
    /// Every route but `/healthz` needs a bearer token.
    pub require_auth: bool,
    /// Bus mode: new runs are announced on the Redis stream.
    pub bus: Option<Arc<crate::bus::Publisher>>,
    /// The parcels this process put into the store.
    pub published: Arc<publish::Published>,
    /// Tells this server's service timers that a service was registered.
    pub services_registered: Arc<Notify>,
    /// Where artifacts are read from: the cluster's shared store
    /// (`--artifacts URL`), else this server's `.dispatch/`.
    pub artifacts: Arc<dispatch_runtime::objects::Objects>,
    /// The cluster's shared object store, when it has one: big parcels'
    /// archives go there (smaller ones in the database row).
    pub archives: Option<Arc<dispatch_runtime::objects::Objects>>,
    /// The dashboard's settings and keys.
    pub ui: crate::ui::UiConfig,
    /// Where the traces of runs this server ends go (`--otlp-endpoint`).
    pub tracer: Option<crate::otel::Tracer>,
    /// Long streams end when the server stops.
    pub stopping: crate::stopping::Stopping,
    /// Each token's request rate.
    pub token_rates: Arc<crate::limits::TokenRates>,
    /// How long a request that creates a run waits out a lost database
    /// (`--enqueue-retry`; see [`patience`]).
    pub enqueue_retry: std::time::Duration,
    /// How long a run this server creates in review waits for a person
    /// before it is cancelled (`--review-timeout`; none: until decided).
    pub review_timeout: Option<std::time::Duration>,
}

impl AppState {
    /// This request's budget for a lost database (see [`patience`]).
    pub(crate) fn patience(&self) -> patience::Patience {
        patience::Patience::new(self.enqueue_retry)
    }

    /// A review for `reason`, with this server's deadline (see
    /// [`dispatch_runtime::review`]).
    pub(crate) fn review(&self, reason: String) -> dispatch_store::Review {
        dispatch_store::Review {
            reason,
            timeout_ms: self
                .review_timeout
                .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Cluster-service work on this server's store and directory.
    pub fn services(&self) -> crate::services::Services {
        crate::services::Services {
            store: self.store.clone(),
            layout: self.layout.clone(),
            wake: self.wake.clone(),
            tracer: self.tracer.clone(),
            archives: self.archives.clone(),
        }
    }

    /// Run `id` ended here, without a worker: its trace goes too.
    pub fn traced(&self, id: &dispatch_core::RunId) {
        if let Some(tracer) = &self.tracer {
            tracer.finished(id);
        }
    }
}

/// The whole API: the route table ([`table`]) with the document it
/// describes served at `/v1/openapi.json`, the guards and the JSON errors.
pub fn router(state: AppState) -> Router {
    let (routes, doc) = table::routes().split_for_parts();
    let doc = Arc::new(openapi::finish(doc));
    routes
        .layer(axum::Extension(doc))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::limits::rate,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// Every error answer in the `{code, message}` shape, including the ones
/// axum writes itself (a body over the size limit: a plain-text 413).
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            codes::PAYLOAD_TOO_LARGE,
            "the request body is larger than the server takes (limit 2 MiB; hint: put big inputs among a parcel's files: `dispatch build DIR --host` uploads up to 2 GiB)".to_string(),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (codes::NO_SUCH_ROUTE, "this route does not take that method".to_string()),
        s if s.is_client_error() => (codes::BAD_REQUEST, s.canonical_reason().unwrap_or("bad request").to_lowercase()),
        s => (codes::INTERNAL, s.canonical_reason().unwrap_or("internal error").to_lowercase()),
    };
    ApiError::new(status, code, message).into_response()
}

/// Counts requests and error answers.
async fn count(State(state): State<AppState>, request: Request, next: Next) -> Response {
    Metrics::add(&state.metrics.http_requests, 1);
    let response = next.run(request).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        Metrics::add(&state.metrics.http_errors, 1);
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        codes::NO_SUCH_ROUTE,
        "no such route (hint: GET /v1/openapi.json lists the API)",
    )
}

/// 200 when the store answers, 503 when it does not.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "getHealth",
    tag = "operations",
    summary = "200 when the database answers, 503 when not; needs no token",
    responses(
        (status = 200, description = "the database answers", body = schemas::Health),
        (status = 503, description = "`unavailable`: the database does not answer", body = schemas::Error),
    )
)]
async fn healthz(State(state): State<AppState>) -> ApiResult<Response> {
    let probe = RunFilter {
        limit: Some(1),
        ..RunFilter::default()
    };
    state.store.list_runs(&probe).await?;
    let ok = schemas::Health {
        status: "ok".to_string(),
    };
    Ok(axum::Json(ok).into_response())
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "getMetrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "the metrics, Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
    )
)]
async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render();
    let outbox = state.store.notification_counts().await.ok();
    text.push_str(&dispatch_notify::metrics::METRICS.render(outbox));
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
