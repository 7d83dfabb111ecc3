//! `GET /v1/runs/{id}/logs`: a run's log, from wherever it is.
//!
//! A run executed on this machine has its log file here. A run executed by a
//! worker on another machine has its log in the store, shipped by that
//! worker in batches (and completely before each state write, so a run seen
//! finished has its whole log stored). The store is read when it holds any
//! of the run's log (it then holds every attempt's, wherever they ran);
//! otherwise the local file. A follower that finds neither yet keeps looking
//! at both, and stays with the first that has something. A finished run's
//! long log may have moved to the artifact store (see
//! `dispatch_runtime::objects::logs`): its archived part is read from a
//! checked copy on this server, the rest from the store.

use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path as FsPath, PathBuf};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use dispatch_core::RunId;
use dispatch_runtime::objects::chain;
use dispatch_store::LogArchive;
use futures_util::stream::unfold;

use super::runs::{Params, params, resolve};
use super::schemas;
use super::stream::POLL;
use super::{ApiError, ApiResult, AppState, codes};

/// The most bytes read at once.
const READ: usize = 1 << 20;

/// Where a run's log is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Not known yet: neither has anything.
    Unknown,
    /// This machine's log file.
    Local,
    /// The store, as workers shipped it (its start maybe archived in the
    /// object store, see `dispatch_runtime::objects::logs`).
    Stored,
}

/// `GET /v1/runs/{id}/logs`: the log as text; `?follow=true` keeps the
/// response open, sending what is appended until the run has finished.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/logs",
    operation_id = "getRunLogs",
    tag = "runs",
    summary = "The run's log as text (shipped by the worker that ran it, or this server's own file)",
    params(("id" = String, Path, description = "run id or unique prefix"), schemas::LogsQuery),
    responses(
        (status = 200, description = "the log", body = String, content_type = "text/plain"),
        (status = 400, description = "`bad_request`, `ambiguous_id`: a bad parameter or id prefix", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 404, description = "`run_not_found`: no run matches the id", body = schemas::Error),
        (status = 503, description = "`unavailable`: the log's archive cannot be read from the artifact store, or does not match its digest", body = schemas::Error),
    )
)]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Params,
) -> ApiResult<Response> {
    let params = params(query)?;
    super::runs::only_known(params.keys(), &["follow"])?;
    let follow = super::runs::flag(&params, "follow")?;
    let id = resolve(&state, &id).await?;
    let text_plain = |mut r: Response| {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    let stopping = state.stopping.clone();
    let mut tail = LogTail::new(state, id);
    if !follow {
        let mut all = Vec::new();
        loop {
            let chunk = tail.read().await?;
            if chunk.is_empty() {
                break;
            }
            all.extend(chunk);
        }
        return Ok(text_plain(all.into_response()));
    }
    let stream = unfold(tail, |mut t| async move {
        loop {
            if t.done {
                return None;
            }
            // The status first: a run that was finished before this read
            // has its whole log in the read.
            let finished = match t.state.store.get_run(&t.id).await {
                Ok(run) => run.state.is_terminal(),
                Err(_) => true,
            };
            match t.read().await {
                Ok(chunk) if !chunk.is_empty() => {
                    return Some((Ok::<_, Infallible>(Bytes::from(chunk)), t));
                }
                Ok(_) if !finished => tokio::time::sleep(POLL).await,
                _ => t.done = true,
            }
        }
    });
    Ok(text_plain(
        Body::from_stream(stopping.bound(stream)).into_response(),
    ))
}

/// A reader of one run's log, from wherever it is: the API and the
/// dashboard read logs through this.
pub(crate) struct LogTail {
    state: AppState,
    id: RunId,
    path: PathBuf,
    source: Source,
    /// The stored log's archive, once seen, and this server's checked copy.
    archive: Option<(LogArchive, PathBuf)>,
    /// Whether the archive was looked up once.
    looked: bool,
    offset: u64,
    done: bool,
}

impl LogTail {
    /// A reader at the start of `id`'s log.
    pub(crate) fn new(state: AppState, id: RunId) -> LogTail {
        let path = state.layout.log(&id);
        LogTail {
            state,
            id,
            path,
            source: Source::Unknown,
            archive: None,
            looked: false,
            offset: 0,
            done: false,
        }
    }

    /// Moves to byte `offset`.
    pub(crate) fn seek(&mut self, offset: u64) {
        self.offset = offset;
    }

    /// How many bytes the log holds now.
    pub(crate) async fn length(&mut self) -> ApiResult<u64> {
        self.pick_source().await?;
        Ok(match self.source {
            Source::Unknown => 0,
            Source::Local => std::fs::metadata(&self.path).map_or(0, |m| m.len()),
            Source::Stored => self.state.store.log_length(&self.id).await?,
        })
    }

    /// Settles where the log is read from, once either place has some.
    async fn pick_source(&mut self) -> ApiResult<()> {
        if self.source == Source::Unknown {
            if self.state.store.log_length(&self.id).await? > 0 {
                self.source = Source::Stored;
            } else if std::fs::metadata(&self.path).is_ok_and(|m| m.len() > 0) {
                self.source = Source::Local;
            }
        }
        Ok(())
    }

    /// What the log holds past what was read (empty at its end for now),
    /// at most `max` bytes.
    pub(crate) async fn read_at_most(&mut self, max: usize) -> ApiResult<Vec<u8>> {
        self.pick_source().await?;
        let chunk = match self.source {
            Source::Unknown => return Ok(Vec::new()),
            Source::Local => read_from(&self.path, self.offset, max),
            Source::Stored => {
                let first = !std::mem::replace(&mut self.looked, true);
                let mut chunk = self.read_archive(max, first).await?;
                if chunk.is_empty() {
                    chunk = self
                        .state
                        .store
                        .read_log(&self.id, self.offset, max)
                        .await?;
                }
                if chunk.is_empty() && self.archive.is_none() {
                    // Archived since the last look?
                    chunk = self.read_archive(max, true).await?;
                }
                chunk
            }
        };
        self.offset += chunk.len() as u64;
        Ok(chunk)
    }

    /// From the archive, when the stored log has one and the offset is in
    /// it (looked up when `look` while none was seen; downloaded once, checked).
    async fn read_archive(&mut self, max: usize, look: bool) -> ApiResult<Vec<u8>> {
        if look
            && self.archive.is_none()
            && let Some(archive) = self.state.store.log_archive(&self.id).await?
        {
            let copy = self
                .state
                .artifacts
                .cached_log(&archive.sha256, &self.state.layout.log_archives())
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        codes::UNAVAILABLE,
                        format!(
                            "the log of run {} is archived and cannot be read: {} (hint: give every server and worker of the cluster the same --artifacts URL)",
                            self.id,
                            chain(&e)
                        ),
                    )
                })?;
            self.archive = Some((archive, copy));
        }
        match &self.archive {
            Some((archive, copy)) if self.offset < archive.size => {
                let left = usize::try_from(archive.size - self.offset).unwrap_or(usize::MAX);
                Ok(read_from(copy, self.offset, max.min(left)))
            }
            _ => Ok(Vec::new()),
        }
    }

    /// What the log holds past what was read (empty at its end for now).
    pub(crate) async fn read(&mut self) -> ApiResult<Vec<u8>> {
        self.read_at_most(READ).await
    }
}

/// What the file holds past `offset` (nothing when it does not exist yet).
fn read_from(path: &FsPath, offset: u64, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.by_ref().take(max as u64).read_to_end(&mut out);
    }
    out
}
