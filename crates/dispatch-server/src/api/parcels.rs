//! Parcels: the cluster's catalog (every parcel any server put into the
//! store), uploads of an Agentfile directory to build, and removal. Any
//! server answers for all of them: a parcel uploaded through one is listed,
//! run and removed through another.

use dispatch_api::{PruneParcels, Upload};
use std::path::{Component, Path};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use dispatch_core::parcel::{self, Parcel};
use dispatch_store::ParcelRemoval;

use super::schemas;
use super::{ApiError, ApiResult, AppState, codes, wire_ops};
use crate::fetch::{self, FetchError};

/// The most a JSON upload may hold.
const JSON_MAX: usize = 2 * 1024 * 1024;

#[utoipa::path(
    get,
    path = "/v1/parcels",
    operation_id = "listParcels",
    tag = "parcels",
    summary = "List the cluster's parcels (every one uploaded through any server), newest first",
    responses(
        (status = 200, description = "the parcels", body = schemas::ParcelList),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
    )
)]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<schemas::ParcelList>> {
    let stored = state.store.list_parcels().await?;
    let parcels = stored.iter().filter_map(wire_ops::parcel).collect();
    Ok(Json(schemas::ParcelList { parcels }))
}

/// Builds the uploaded files into a parcel; answers its digest and name.
#[utoipa::path(
    post,
    path = "/v1/parcels",
    operation_id = "uploadParcel",
    tag = "parcels",
    summary = "Upload an Agentfile directory (a tar stream, or text files as JSON) and build it",
    request_body(
        content(
            (Upload = "application/json"),
            (Vec<u8> = "application/x-tar"),
        ),
        description = "`application/x-tar`: the directory's regular files and directories (modes kept), up to 2 GiB, streamed; `application/json`: text files, up to 2 MiB",
    ),
    responses(
        (status = 201, description = "built", body = schemas::ParcelBuilt),
        (status = 400, description = "`bad_request`: a bad body (no Agentfile, a path that is not plain, a link); `invalid_parcel`: it does not build", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 413, description = "`payload_too_large`: over 2 GiB (tar) or 2 MiB (JSON)", body = schemas::Error),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<schemas::ParcelBuilt>)> {
    // Scratch beside the parcels: what a crash leaves is swept later.
    let parcels = state.layout.parcels();
    std::fs::create_dir_all(&parcels)
        .map_err(|e| internal(format!("cannot create {}: {e}", parcels.display())))?;
    let dir = parcel::scratch_path(&parcels);
    let tar = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/x-tar"));
    let received = match tar {
        true => receive_tar(body, &dir, &parcel::scratch_path(&parcels)).await,
        false => receive_json(body, &dir).await,
    };
    let built = match received {
        Ok(()) => {
            let (dir, parcels) = (dir.clone(), state.layout.parcels());
            tokio::task::spawn_blocking(move || {
                parcel::build(&dir, &parcels).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| internal(format!("building the parcel: {e}")))?
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    // The upload's own names, not where the server put them.
    let built = built.map_err(|e| {
        let e = e.replace(&format!("{}/", dir.display()), "");
        let e = e.replace(&dir.display().to_string(), "the upload");
        ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_PARCEL, e)
    })?;
    // Every server and worker finds it in the store.
    super::publish::put_parcel(&state, &built).await?;
    Ok((StatusCode::CREATED, Json(wire_ops::parcel_built(&built))))
}

async fn receive_tar(body: Body, dir: &Path, file: &Path) -> ApiResult<()> {
    let result = async {
        super::parcel_tar::receive(body, file).await?;
        let (file, dir) = (file.to_path_buf(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || super::parcel_tar::unpack(&file, &dir))
            .await
            .map_err(|e| internal(format!("unpacking the upload: {e}")))?
    }
    .await;
    let _ = std::fs::remove_file(file);
    result
}

async fn receive_json(body: Body, dir: &Path) -> ApiResult<()> {
    let body = axum::body::to_bytes(body, JSON_MAX).await.map_err(|e| {
        if !over_the_limit(&e) {
            // Cut off (too slow, or the client went away): not its size.
            return ApiError::bad_request(format!("reading the upload: {e}"));
        }
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            "a JSON parcel upload takes at most 2 MiB (hint: send the directory as `Content-Type: application/x-tar`, as `dispatch build --host` does)",
        )
    })?;
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
    let write = || -> std::io::Result<()> {
        for (name, content) in &upload.files {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, content)?;
            if upload.executable.contains(name) {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        Ok(())
    };
    // Paths that collide (`a` and `a/b`) are the upload's own fault.
    write().map_err(|e| ApiError::bad_request(format!("cannot store the upload's files: {e}")))
}

/// Whether reading a body failed because it was longer than the limit.
fn over_the_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

#[utoipa::path(
    delete,
    path = "/v1/parcels/{reference}",
    operation_id = "removeParcel",
    tag = "parcels",
    summary = "Remove a parcel from the cluster (refused while a run that has not ended uses it)",
    params(("reference" = String, Path, description = "a parcel name (its newest) or a digest prefix of 4 or more hex digits")),
    responses(
        (status = 200, description = "removed", body = schemas::ParcelRemoved),
        (status = 400, description = "`bad_request`: the prefix matches several parcels", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`parcel_not_found`", body = schemas::Error),
        (status = 409, description = "`conflict`: runs that have not ended use it (the message names them)", body = schemas::Error),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    UrlPath(reference): UrlPath<String>,
) -> ApiResult<Json<schemas::ParcelRemoved>> {
    let digest = find_digest(&state, &reference).await?;
    let name = state
        .store
        .get_parcel(&digest)
        .await?
        .map(|p| p.name)
        .unwrap_or_default();
    match state.store.remove_parcel(&digest).await? {
        ParcelRemoval::Removed => {}
        ParcelRemoval::NotFound => {
            return Err(dispatch_runtime::RuntimeError::UnknownParcel(reference).into());
        }
        ParcelRemoval::InUse(runs) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                codes::CONFLICT,
                format!(
                    "parcel {name} ({}) is used by runs that have not ended: {} (hint: stop them first)",
                    &digest[..12.min(digest.len())],
                    runs.join(", ")
                ),
            ));
        }
    }
    forget(&state, &digest).await;
    Ok(Json(schemas::ParcelRemoved { digest, name }))
}

#[utoipa::path(
    post,
    path = "/v1/parcels/prune",
    operation_id = "pruneParcels",
    tag = "parcels",
    summary = "Remove every parcel a newer one of the same name superseded and no run uses",
    request_body(content = PruneParcels, description = "optional: `{}` or nothing", content_type = "application/json"),
    responses(
        (status = 200, description = "the digests removed", body = schemas::ParcelsPruned),
        (status = 400, description = "`bad_request`: a body that is not `{}`", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 413, description = "`payload_too_large`", body = schemas::Error),
    )
)]
pub async fn prune(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> ApiResult<Json<schemas::ParcelsPruned>> {
    let PruneParcels {} = super::runs::optional_body(&body, "parcel prune request")?;
    let removed = state.store.prune_parcels().await?;
    for digest in &removed {
        forget(&state, digest).await;
    }
    Ok(Json(schemas::ParcelsPruned { removed }))
}

/// What stays of a parcel removed from the store: its archive in the
/// object store and this server's copy go too.
async fn forget(state: &AppState, digest: &str) {
    if let Some(objects) = &state.archives
        && let Err(e) = objects.delete_parcel_archive(digest).await
    {
        tracing::warn!(
            "parcel {digest}: its archive stays in the object store: {}",
            dispatch_runtime::objects::chain(&e)
        );
    }
    let _ = dispatch_core::parcel_seal::remove_tree(&state.layout.parcels().join(digest));
    state.published.forget(digest);
}

/// The digest a parcel reference names in the cluster's store: the newest
/// parcel of that name, else a unique digest prefix.
async fn find_digest(state: &AppState, reference: &str) -> ApiResult<String> {
    let digests = state.store.find_parcels(reference).await?;
    match digests.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(dispatch_runtime::RuntimeError::UnknownParcel(reference.to_string()).into()),
        _ => Err(ApiError::bad_request(format!(
            "`{reference}` matches several parcels; give more characters of the digest"
        ))),
    }
}

/// A parcel by exact name (the newest of that name) or digest prefix, as
/// the cluster's store knows it (fetched to this server when it lacks it).
/// Never a path, and never a copy only this server's disk has: a parcel
/// removed from the cluster stays removed.
pub(super) async fn find_parcel(state: &AppState, reference: &str) -> ApiResult<Parcel> {
    let digest = find_digest(state, reference).await?;
    load(state, &digest).await
}

/// Parcel `digest` on this server, fetched from the store when missing.
pub(super) async fn load(state: &AppState, digest: &str) -> ApiResult<Parcel> {
    fetch::parcel(
        &*state.store,
        state.archives.as_deref(),
        &state.layout,
        digest,
    )
    .await
    .map_err(|e| match e {
        FetchError::Refused(why) => internal(why),
        FetchError::Store(e) => e.into(),
    })
}

fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, message)
}
