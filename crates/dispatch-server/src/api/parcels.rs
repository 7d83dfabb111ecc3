//! Parcels: list the built ones; upload an Agentfile directory to build
//! (and to store, for workers on other machines).

use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use dispatch_core::parcel;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::schemas;
use super::{ApiError, ApiResult, AppState, codes};

/// `POST /v1/parcels`: the files of an Agentfile directory, as text.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ParcelUpload)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// Relative path → UTF-8 content. Must include `Agentfile`.
    pub files: BTreeMap<String, String>,
    /// The files (of `files`) that are executable: they keep their mode,
    /// so the parcel and its digest are those of a local build.
    #[serde(default)]
    pub executable: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/v1/parcels",
    operation_id = "listParcels",
    tag = "parcels",
    summary = "List built parcels",
    responses(
        (status = 200, description = "the parcels", body = schemas::ParcelList),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
    )
)]
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let parcels: Vec<Value> = parcel::list(&state.layout.parcels())
        .iter()
        .map(|p| {
            json!({
                "digest": p.digest,
                "name": p.manifest.name,
                "version": p.manifest.version,
                "courier": p.manifest.courier,
                "entrypoint": p.manifest.entrypoint,
            })
        })
        .collect();
    Json(json!({ "parcels": parcels }))
}

/// Builds the uploaded files into a parcel; answers its digest and name.
#[utoipa::path(
    post,
    path = "/v1/parcels",
    operation_id = "uploadParcel",
    tag = "parcels",
    summary = "Upload an Agentfile directory and build it",
    request_body = Upload,
    responses(
        (status = 201, description = "built", body = schemas::ParcelBuilt),
        (status = 400, description = "`bad_request`: a bad body (no Agentfile, a path that is not plain); `invalid_parcel`: it does not build", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 413, description = "`payload_too_large`: the body is over 2 MiB", body = schemas::Error),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let upload: Upload = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("bad parcel upload: {e}")))?;
    if !upload.files.contains_key("Agentfile") {
        return Err(ApiError::bad_request("the upload has no `Agentfile`"));
    }
    if let Some(name) = upload
        .executable
        .iter()
        .find(|n| !upload.files.contains_key(*n))
    {
        return Err(ApiError::bad_request(format!(
            "`executable` names `{name}`, which is not among the uploaded files"
        )));
    }
    for name in upload.files.keys() {
        let path = Path::new(name);
        let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
        if name.is_empty() || !plain {
            return Err(ApiError::bad_request(format!(
                "`{name}` is not a plain relative path"
            )));
        }
    }
    static UPLOADS: AtomicU64 = AtomicU64::new(0);
    let dir = state.layout.root().join(format!(
        "upload-{}-{}",
        std::process::id(),
        UPLOADS.fetch_add(1, Ordering::Relaxed)
    ));
    let built = (|| {
        for (name, content) in &upload.files {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&path, content).map_err(|e| e.to_string())?;
            if upload.executable.contains(name) {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::Permissions::from_mode(0o755);
                std::fs::set_permissions(&path, mode).map_err(|e| e.to_string())?;
            }
        }
        parcel::build(&dir, &state.layout.parcels()).map_err(|e| e.to_string())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    // The upload's own names, not where the server put them.
    let built = built.map_err(|e| {
        let e = e.replace(&format!("{}/", dir.display()), "");
        let e = e.replace(&dir.display().to_string(), "the upload");
        ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_PARCEL, e)
    })?;
    // Workers on other machines fetch it from the store.
    super::publish::put_parcel(&state, &built).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"digest": built.digest, "name": built.manifest.name})),
    ))
}
