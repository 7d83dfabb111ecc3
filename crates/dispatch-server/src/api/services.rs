//! `POST /v1/services` (`DISPATCH_HOST=… dispatch serve`): a service owned by
//! the cluster (see [`crate::services`]); `POST /v1/runs/{id}/wake`
//! (`dispatch wake`): a manual turn of one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dispatch_api::{CreateService, WakeRequest};
use dispatch_core::parcel::Parcel;
use dispatch_core::{Operation, Transition, now_ms};
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_runtime::service::config::{hook_base, resolve_cluster};
use dispatch_runtime::service::schedule::Timers;
use dispatch_runtime::service::{
    ListenerState, Overlap, ScheduleState, ServeOptions, ServiceConfig, ServiceDoc,
};
use dispatch_store::{Run, StoreError};
use serde_json::{Value, json};

use super::parcels::find_parcel;
use super::runs::resolve;
use super::wire;
use super::{ApiError, ApiResult, AppState, codes, schemas};
use crate::services::{NO_PROCESS, WakeError, WakeSpec, transition, transitions};

#[utoipa::path(
    post,
    path = "/v1/services",
    operation_id = "createService",
    tag = "services",
    summary = "Start a service owned by the cluster: its timers fire and its webhook answers on any server",
    request_body = CreateService,
    responses(
        (status = 201, description = "the service is running", body = schemas::ServiceCreated),
        (status = 400, description = "`bad_request`: a bad body, schedule, name or listen option; `missing_secret`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the token may not run in the project", body = schemas::Error),
        (status = 404, description = "`parcel_not_found`", body = schemas::Error),
        (status = 409, description = "`service_exists`: a running service has that name", body = schemas::Error),
        (status = 413, description = "`payload_too_large`: the body is over 2 MiB", body = schemas::Error),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    token: Option<axum::Extension<dispatch_store::TokenRecord>>,
    body: Bytes,
) -> ApiResult<Response> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("bad service request: {e}")))?;
    super::runs::reject_nul(&value, "")?;
    let req: CreateService = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("bad service request: {e}")))?;
    if let Some(project) = &req.project {
        dispatch_core::project::check_project(project).map_err(ApiError::bad_request)?;
    }
    let plan = match &req.restart_of {
        Some(old) => restart_plan(&state, old).await?,
        None => new_plan(&state, &req).await?,
    };
    let project = match &plan.origin {
        Some(old) => old.project.clone(),
        None => req
            .project
            .clone()
            .unwrap_or_else(|| dispatch_core::project::DEFAULT_PROJECT.to_string()),
    };
    crate::auth::may(token.as_deref(), &project, dispatch_store::TokenScope::Run)?;
    let Plan {
        parcel,
        name,
        payload,
        config,
        schedules,
        origin,
    } = plan;
    // Said before anything is created; the store decides races.
    if let Some(holder) = state.store.service_named(&name).await? {
        return Err(StoreError::ServiceNameTaken {
            name,
            run: holder.run_id,
        }
        .into());
    }
    let request = LaunchRequest {
        source: parcel.digest.clone(),
        operation: Some(Operation::Service),
        payload,
        parent_id: None,
        origin_id: origin.as_ref().map(|o| o.id.clone()),
        project,
    };
    let mut new = super::publish::new_run(&state, &parcel, &request, Operation::Service).await?;
    // Out of the queue, then `running` with no process in one write: no
    // worker ever claims it.
    new.created = true;
    let run = state.store.create_run(&new).await?;
    let at = now_ms();
    let run = transitions(
        &*state.store,
        run,
        &[
            Transition::Start { at },
            Transition::Claim {
                helper: NO_PROCESS,
                at,
            },
            Transition::AgentStarted {
                agent: NO_PROCESS,
                at,
            },
        ],
    )
    .await?;
    let mut timers = Timers::new(schedules).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let missed = timers.start(at);
    let hook = config.listen.as_ref().map(|p| {
        format!(
            "{}{}",
            hook_base(&name),
            p.path.as_deref().filter(|p| *p != "/").unwrap_or("")
        )
    });
    let listeners = config
        .listen
        .as_ref()
        .map(|p| ListenerState {
            addr: p.addr.clone(),
            bound_addr: Some(p.addr.clone()),
            ..ListenerState::default()
        })
        .into_iter()
        .collect();
    let labels: Vec<String> = timers.states().iter().map(|s| s.label()).collect();
    let doc = ServiceDoc {
        config,
        schedules: timers.states(),
        listeners,
    };
    let mut saved = doc.encode(&run.id, at);
    saved.name = Some(name.clone());
    if let Err(e) = state.store.put_service_state(&saved).await {
        // Lost the name to another server: this service ends at once.
        let why = format!("not started: {e}");
        let _ = transition(
            &*state.store,
            run,
            Transition::Cancel {
                reason: why,
                exit_code: None,
                at: now_ms(),
            },
        )
        .await;
        return Err(e.into());
    }
    state.services_registered.notify_one();
    if let Some(old) = origin.filter(|_| !missed.is_empty()) {
        // As locally: the timers it missed while it was down wake it once.
        let missed: Vec<Value> = missed
            .iter()
            .map(|(label, due)| json!({"schedule": label, "missed_since": due}))
            .collect();
        let spec = WakeSpec {
            session: None,
            reason: "recovery",
            detail: json!({
                "previous_run_id": old.id,
                "previous_status": old.status(),
                "previous_reason": old.state.reason(),
                "missed": missed,
            }),
            payload: run.payload.clone(),
            request: None,
        };
        if let Err(e) = state.services().wake(&run.id, spec).await {
            tracing::warn!("[dispatch] service {}: no recovery wake: {e}", run.id);
        }
    }
    let answer = dispatch_api::ServiceCreated {
        hook,
        name,
        run: wire::run(&run),
        schedules: labels,
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// What a service is started with.
struct Plan {
    parcel: Parcel,
    name: String,
    payload: Value,
    config: ServiceConfig,
    schedules: Vec<ScheduleState>,
    /// The ended service this one restarts.
    origin: Option<Run>,
}

/// A new service from the request's options merged over the Agentfile.
async fn new_plan(state: &AppState, req: &CreateService) -> ApiResult<Plan> {
    let parcel = find_parcel(state, &req.parcel).await?;
    launch::check_secrets(&parcel)?;
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| parcel.manifest.name.clone());
    let payload = req.payload.clone().unwrap_or_else(|| json!({}));
    let overlap = match req.overlap.as_deref() {
        None | Some("queue") => Overlap::Queue,
        Some("skip") => Overlap::Skip,
        Some("concurrent") => Overlap::Concurrent,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "overlap `{other}` is not one of queue, skip, concurrent"
            )));
        }
    };
    let opts = ServeOptions {
        schedules: req.schedules.clone(),
        interval_ms: req.interval_ms,
        overlap,
        max_concurrent: req.max_concurrent.unwrap_or(4),
        max_pending: req.max_pending.unwrap_or(100),
        payload: payload.clone(),
        listen: req.listen.clone(),
        listen_path: req.listen_path.clone(),
        listen_methods: req.listen_methods.clone(),
        listen_max_body_bytes: req.listen_max_body_bytes,
        listen_max_header_bytes: req.listen_max_header_bytes,
        public: req.public,
        a2a: req.a2a,
        a2a_url: req.a2a_url.clone(),
        a2a_session_ttl_ms: req.session_ttl_ms,
        ..ServeOptions::default()
    };
    let (config, schedules) = resolve_cluster(
        &parcel.manifest,
        &opts,
        &name,
        req.listen_secret_sha256.clone(),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Plan {
        parcel,
        name,
        payload,
        config,
        schedules,
        origin: None,
    })
}

/// The service that restarts the ended cluster service `old`.
async fn restart_plan(state: &AppState, old: &str) -> ApiResult<Plan> {
    let id = resolve(state, old).await?;
    let old = state.store.get_run(&id).await?;
    let saved = state
        .store
        .get_service_state(&id)
        .await?
        .filter(|s| s.name.is_some() && old.operation == Operation::Service)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "run {id} is not a cluster service (hint: `dispatch serve` starts one)"
            ))
        })?;
    if !old.state.is_terminal() {
        return Err(StoreError::InvalidState {
            id,
            status: old.status(),
            hint: "stop it first (`dispatch restart` does)",
        }
        .into());
    }
    let doc = ServiceDoc::decode(&saved)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, e))?;
    let parcel = find_parcel(state, &old.parcel_digest).await?;
    Ok(Plan {
        parcel,
        name: saved.name.clone().unwrap_or_default(),
        payload: old.payload.clone(),
        config: doc.config,
        schedules: doc.schedules,
        origin: Some(old),
    })
}

#[utoipa::path(
    post,
    path = "/v1/runs/{id}/wake",
    operation_id = "wakeService",
    tag = "services",
    summary = "A manual turn of a cluster service: a heartbeat run, queued for the workers",
    params(("id" = String, Path, description = "the service's run id or unique prefix")),
    request_body(content = WakeRequest, description = "optional; `{}` by default"),
    responses(
        (status = 202, description = "the wake's heartbeat run", body = schemas::Run),
        (status = 400, description = "`bad_request`: a bad body; `ambiguous_id`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`", body = schemas::Error),
        (status = 409, description = "`invalid_state`: not a running cluster service; `conflict`: its overlap policy dropped the wake", body = schemas::Error),
        (status = 413, description = "`payload_too_large`: the body is over 2 MiB", body = schemas::Error),
    )
)]
pub async fn wake(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: WakeRequest = super::runs::optional_body(&body, "wake request")?;
    let heartbeat = wake_cluster(&state, &id, req.payload.unwrap_or_else(|| json!({}))).await?;
    Ok((StatusCode::ACCEPTED, Json(wire::run(&heartbeat))).into_response())
}

/// A manual turn of the cluster service `id` (a prefix is enough): its
/// heartbeat run, queued. The API's and the dashboard's wake.
pub(crate) async fn wake_cluster(state: &AppState, id: &str, payload: Value) -> ApiResult<Run> {
    let id = resolve(state, id).await?;
    let run = state.store.get_run(&id).await?;
    let not_a_service = |hint| StoreError::InvalidState {
        id: id.clone(),
        status: run.status(),
        hint,
    };
    if !crate::services::is_cluster_service(&state.store, &run).await? {
        return Err(not_a_service(
            "only a running service the cluster owns takes wakes (hint: `DISPATCH_HOST=… dispatch serve` starts one)",
        )
        .into());
    }
    let spec = WakeSpec {
        session: None,
        reason: "manual",
        detail: json!({}),
        payload,
        request: None,
    };
    match state.services().wake(&id, spec).await {
        Ok(heartbeat) => Ok(heartbeat),
        Err(WakeError::NotRunning(_)) => Err(not_a_service("it stopped meanwhile").into()),
        Err(WakeError::Busy(why)) => Err(ApiError::new(StatusCode::CONFLICT, codes::CONFLICT, why)),
        Err(WakeError::Store(e)) => Err(e.into()),
        Err(WakeError::Parcel(why)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            why,
        )),
    }
}

#[utoipa::path(
    get,
    path = "/v1/runs/{id}/service",
    operation_id = "getServiceState",
    tag = "services",
    summary = "A service's stored state: its name, configuration, timers and listeners",
    params(("id" = String, Path, description = "the service's run id or unique prefix")),
    responses(
        (status = 200, description = "the service state (`inspect-run`)", body = schemas::ServiceState),
        (status = 400, description = "`ambiguous_id`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`", body = schemas::Error),
        (status = 409, description = "`invalid_state`: the run is not a service", body = schemas::Error),
    )
)]
pub async fn service_state(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<schemas::ServiceState>> {
    let id = resolve(&state, &id).await?;
    let run = state.store.get_run(&id).await?;
    let Some(saved) = state.store.get_service_state(&id).await? else {
        return Err(StoreError::InvalidState {
            id,
            status: run.status(),
            hint: "only a service has a service state",
        }
        .into());
    };
    Ok(Json(super::wire_ops::service_state(&saved)))
}
