//! `GET /v1/runs/{id}/artifacts/{sha256}`: one artifact's bytes, streamed
//! from the artifact store (the cluster's shared one, `--artifacts URL`,
//! else this server's `.dispatch/`), whichever worker ran the run.
//!
//! The bytes are hashed as they stream: when they do not hash to the
//! digest, the response is cut off before its end (its `Content-Length` is
//! never reached), so no client takes a bad copy for a good one.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dispatch_runtime::objects::{ObjectsError, chain};

use super::runs::resolve;
use super::schemas;
use super::{ApiError, ApiResult, AppState, codes};

#[utoipa::path(
    get,
    path = "/v1/runs/{id}/artifacts/{sha256}",
    operation_id = "getArtifact",
    tag = "runs",
    summary = "One artifact's bytes, from any server (checked against the digest as they stream)",
    params(
        ("id" = String, Path, description = "run id or unique prefix"),
        ("sha256" = String, Path, description = "the artifact's digest, as the run's artifact list gives it"),
    ),
    responses(
        (status = 200, description = "the artifact's bytes; `ETag` is the digest", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "`bad_request`, `ambiguous_id`: not a digest, or a bad id prefix", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`; `artifact_not_found`: the run has no artifact of that digest, or the artifact store lacks it", body = schemas::Error),
        (status = 503, description = "`unavailable`: the artifact store cannot be read; retry later", body = schemas::Error),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    Path((id, sha256)): Path<(String, String)>,
) -> ApiResult<Response> {
    let sha256 = sha256.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "`{}` is not a sha256 digest (hint: 64 hex digits, as `GET /v1/runs/{{id}}/artifacts` lists them)",
            dispatch_core::event::shorten(&sha256, 80)
        )));
    }
    let id = resolve(&state, &id).await?;
    let listed = state.store.list_artifacts(&id).await?;
    let Some(artifact) = listed.iter().find(|a| a.sha256 == sha256) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::ARTIFACT_NOT_FOUND,
            format!(
                "run {id} has no artifact {sha256} (hint: `GET /v1/runs/{id}/artifacts` lists them)"
            ),
        ));
    };
    let (size, bytes) = match state.artifacts.get_artifact(&sha256).await {
        Ok(found) => found,
        Err(ObjectsError::NotFound { url, .. }) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                codes::ARTIFACT_NOT_FOUND,
                format!(
                    "artifact {sha256} of run {id} is not in {url} (hint: give every server and worker of the cluster the same --artifacts URL)"
                ),
            ));
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::UNAVAILABLE,
                chain(&e),
            ));
        }
    };
    let file_name = artifact
        .name
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .replace(|c: char| c == '"' || c == '\\' || c.is_control(), "_");
    let mut response = Body::from_stream(bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{sha256}\"")) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
