//! `GET /v1/services`: the running services (runs of operation `service`,
//! live) with their stored state, as `GET /v1/runs/{id}/service` shows one
//! — the list the dashboard's services page shows too.

use axum::Json;
use axum::extract::State;
use dispatch_store::{Run, ServiceState, TokenRecord};

use super::runs::list_page;
use super::schemas;
use super::{ApiResult, AppState, wire_ops};

/// The most services listed.
pub const MAX: usize = 200;

/// The running services, newest first, each with its stored state (none
/// yet for one whose helper has not saved it): of `project` when given,
/// and of the projects `token` may see.
pub async fn running(
    state: &AppState,
    token: Option<&TokenRecord>,
    project: Option<&str>,
) -> ApiResult<Vec<(Run, Option<ServiceState>)>> {
    let mut pairs = vec![
        ("operation".to_string(), "service".to_string()),
        ("status".to_string(), "running,starting,paused".to_string()),
        ("limit".to_string(), MAX.to_string()),
    ];
    if let Some(p) = project {
        pairs.push(("project".to_string(), p.to_string()));
    }
    let (runs, _) = list_page(state, pairs, true, token).await?;
    let mut services = Vec::with_capacity(runs.len());
    for run in runs {
        let saved = state.store.get_service_state(&run.id).await?;
        services.push((run, saved));
    }
    Ok(services)
}

/// The running services.
#[utoipa::path(
    get,
    path = "/v1/services",
    operation_id = "listServices",
    tag = "services",
    summary = "The running services with their schedules and listeners",
    params(("project" = Option<String>, Query, description = "only this project's services (the token must be bound to it)")),
    responses(
        (status = 200, description = "every running service (at most 200), newest first", body = schemas::ServiceList),
        (status = 400, description = "`bad_request`: a bad parameter or project name", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the token is not bound to `project`", body = schemas::Error),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    token: Option<axum::Extension<TokenRecord>>,
    query: super::runs::Params,
) -> ApiResult<Json<schemas::ServiceList>> {
    let params = super::runs::params(query)?;
    super::runs::only_known(params.keys(), &["project"])?;
    let project = params.get("project").map(String::as_str);
    let services = running(&state, token.as_deref(), project)
        .await?
        .iter()
        .map(|(run, saved)| wire_ops::service(run, saved.as_ref()))
        .collect();
    Ok(Json(schemas::ServiceList { services }))
}
