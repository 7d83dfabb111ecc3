//! `GET /v1/runs/{id}/artifacts/{sha256}`: one artifact's bytes, streamed
//! from the cluster's object store (`--artifacts URL`; on PostgreSQL
//! without one, the database; on SQLite this server's `.dispatch/`),
//! whichever worker ran the run.
//!
//! An answer cannot lie about the bytes:
//! - `Content-Length` is the size the run recorded for the artifact; a
//!   stored copy of another size is refused before any byte, with 502
//!   `artifact_corrupt`;
//! - the bytes are hashed as they stream and the last chunk is held back
//!   until the digest is checked (see `dispatch_runtime::objects::Verified`):
//!   a copy of the right size with other bytes is cut off before its
//!   `Content-Length` is reached, so no client takes it for a whole one;
//! - `HEAD` reads and checks the whole copy before it answers 200.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dispatch_core::RunId;
use dispatch_runtime::objects::{ObjectsError, chain};

use super::runs::resolve;
use super::schemas;
use super::{ApiError, ApiResult, AppState, codes};

#[utoipa::path(
    get,
    path = "/v1/runs/{id}/artifacts/{sha256}",
    operation_id = "getArtifact",
    tag = "runs",
    summary = "One artifact's bytes, from any server (checked against the digest as they stream; HEAD checks the whole copy first)",
    description = "`Content-Length` is the size the run recorded. The bytes are checked against the digest as they stream, the last chunk held back until it is checked: a damaged copy is cut off before `Content-Length` is reached, never delivered whole. `HEAD` reads and checks the whole stored copy before it answers (200, or the error a `GET` would end in).",
    params(
        ("id" = String, Path, description = "run id or unique prefix"),
        ("sha256" = String, Path, description = "the artifact's digest, as the run's artifact list gives it"),
    ),
    responses(
        (status = 200, description = "the artifact's bytes; `ETag` is the digest", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "`bad_request`, `ambiguous_id`: not a digest, or a bad id prefix", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`; `artifact_not_found`: the run has no artifact of that digest, or the artifact store lacks it", body = schemas::Error),
        (status = 502, description = "`artifact_corrupt`: the stored copy's size (or, for HEAD, its digest) is not what the run recorded; nothing of it is served", body = schemas::Error),
        (status = 503, description = "`unavailable`: the artifact store cannot be read; retry later", body = schemas::Error),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    method: Method,
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
    let (stored, bytes) = state
        .artifacts
        .get_artifact(&sha256)
        .await
        .map_err(|e| failed(&id, &sha256, e))?;
    if stored != artifact.size {
        return Err(corrupt(
            &id,
            &sha256,
            format!(
                "is {stored} bytes in {}, not the {} bytes the run recorded",
                state.artifacts.url(),
                artifact.size
            ),
        ));
    }
    let body = if method == Method::HEAD {
        drop(bytes);
        // The whole copy, checked, before the answer says it is good.
        let read = state
            .artifacts
            .verify_artifact(&sha256)
            .await
            .map_err(|e| failed(&id, &sha256, e))?;
        if read != artifact.size {
            return Err(corrupt(
                &id,
                &sha256,
                format!("read {read} bytes, not the {} recorded", artifact.size),
            ));
        }
        Body::empty()
    } else {
        Body::from_stream(bytes)
    };
    let file_name = artifact
        .name
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .replace(|c: char| c == '"' || c == '\\' || c.is_control(), "_");
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(artifact.size));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{sha256}\"")) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// 502 `artifact_corrupt`: the stored copy is not the artifact.
fn corrupt(id: &RunId, sha256: &str, what: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        codes::ARTIFACT_CORRUPT,
        format!(
            "the stored copy of artifact {sha256} of run {id} is damaged: it {what} (hint: nothing of it was served; run the run again, or restore the object from a backup)"
        ),
    )
}

/// The answer to a store that cannot hand the artifact over.
fn failed(id: &RunId, sha256: &str, e: ObjectsError) -> ApiError {
    match e {
        ObjectsError::NotFound { url, .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            codes::ARTIFACT_NOT_FOUND,
            format!(
                "artifact {sha256} of run {id} is not in {url} (hint: give every server and worker of the cluster the same --artifacts URL, or none on PostgreSQL)"
            ),
        ),
        ObjectsError::Corrupt { got, url, .. } => corrupt(
            id,
            sha256,
            format!("hashes to {got} in {url}, not to its digest"),
        ),
        e => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            chain(&e),
        ),
    }
}
