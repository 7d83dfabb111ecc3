//! A parcel upload as a tar stream (`POST /v1/parcels` with
//! `Content-Type: application/x-tar`): the body is written to a file as it
//! arrives (never held in memory, capped at [`MAX_UPLOAD`]), then its
//! entries are unpacked into a directory to build from. Only regular files
//! and directories at plain relative paths are taken; a file keeps its
//! executable bit, so the parcel and its digest are those of a local build.

use std::io::{BufReader, Write};
use std::path::{Component, Path};

use axum::body::Body;
use axum::http::StatusCode;
use futures_util::StreamExt;

use super::{ApiError, ApiResult, codes};

/// The largest parcel upload taken, in bytes (2 GiB; documented in the
/// README's cluster section).
pub const MAX_UPLOAD: u64 = 2 << 30;

/// Writes `body` into the file `dest`, refusing (413) past [`MAX_UPLOAD`].
pub(super) async fn receive(body: Body, dest: &Path) -> ApiResult<u64> {
    let io = |e: std::io::Error| internal(format!("cannot store the upload: {e}"));
    let mut file = std::fs::File::create(dest).map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
        size += chunk.len() as u64;
        if size > MAX_UPLOAD {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::PAYLOAD_TOO_LARGE,
                format!(
                    "the parcel upload is larger than {} GiB, the most a server takes (hint: keep big data out of the parcel: fetch it at run time or mount it)",
                    MAX_UPLOAD >> 30
                ),
            ));
        }
        file.write_all(&chunk).map_err(io)?;
    }
    file.flush().map_err(io)?;
    Ok(size)
}

/// Unpacks the tar file `archive` into the directory `dir`.
pub(super) fn unpack(archive: &Path, dir: &Path) -> ApiResult<()> {
    // Entries that collide (`a` and `a/b`) are the upload's own fault.
    let io = |e: std::io::Error| ApiError::bad_request(format!("cannot unpack the upload: {e}"));
    let bad =
        |e: std::io::Error| ApiError::bad_request(format!("the upload is not a tar archive: {e}"));
    let file = std::fs::File::open(archive).map_err(io)?;
    let mut tar = tar::Archive::new(BufReader::new(file));
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let name = entry
            .path()
            .map_err(bad)?
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::bad_request("the upload holds a path that is not UTF-8"))?;
        let rel = Path::new(&name);
        let plain = rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if name.is_empty() || !plain {
            return Err(ApiError::bad_request(format!(
                "`{name}` is not a plain relative path"
            )));
        }
        let dest = dir.join(rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&dest).map_err(io)?;
            continue;
        }
        if !kind.is_file() {
            return Err(ApiError::bad_request(format!(
                "`{name}` is not a regular file or a directory (hint: a parcel upload takes no links or devices)"
            )));
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let executable = entry.header().mode().map_err(bad)? & 0o111 != 0;
        let mut out = std::fs::File::create(&dest).map_err(io)?;
        std::io::copy(&mut entry, &mut out).map_err(bad)?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        }
    }
    if !dir.join("Agentfile").is_file() {
        return Err(ApiError::bad_request("the upload has no `Agentfile`"));
    }
    Ok(())
}

fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, message)
}
