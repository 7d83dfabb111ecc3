//! The API's one error type: an HTTP status and a JSON body `{code, message}`
//! whose `code` is stable (see [`codes`]).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dispatch_runtime::RuntimeError;
use dispatch_store::StoreError;
use serde_json::json;

/// The stable error codes, as documented in docs/guide/http-api.md and the OpenAPI document.
pub mod codes {
    /// 400: the request is malformed (bad JSON, a bad parameter).
    pub const BAD_REQUEST: &str = "bad_request";
    /// 401: a token is required and was missing, unknown or revoked.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 401: the token has expired.
    pub const TOKEN_EXPIRED: &str = "token_expired";
    /// 403: the token's scope (or its role in the run's project) does not allow this.
    pub const FORBIDDEN: &str = "forbidden";
    /// 404: no run matches the id (prefix).
    pub const RUN_NOT_FOUND: &str = "run_not_found";
    /// 400: the id prefix matches several runs.
    pub const AMBIGUOUS_ID: &str = "ambiguous_id";
    /// 404: no parcel of that name or digest.
    pub const PARCEL_NOT_FOUND: &str = "parcel_not_found";
    /// 400: the parcel declares a secret the server does not have.
    pub const MISSING_SECRET: &str = "missing_secret";
    /// 400: the uploaded parcel does not build.
    pub const INVALID_PARCEL: &str = "invalid_parcel";
    /// 409: the run is in a state that does not allow this (e.g. finished).
    pub const INVALID_STATE: &str = "invalid_state";
    /// 409: the run changed concurrently; retry.
    pub const CONFLICT: &str = "conflict";
    /// 503: the database is unreachable or locked; retry later.
    pub const UNAVAILABLE: &str = "unavailable";
    /// 404: the run has no approval of that id.
    pub const APPROVAL_NOT_FOUND: &str = "approval_not_found";
    /// 409: a live run holds the session the request binds.
    pub const SESSION_BUSY: &str = "session_busy";
    /// 404: no session of that name keeps anything.
    pub const SESSION_NOT_FOUND: &str = "session_not_found";
    /// 409: the approval was decided before; the first decision stands.
    pub const ALREADY_DECIDED: &str = "already_decided";
    /// 404: the run is not in the dead-letter queue.
    pub const DEAD_LETTER_NOT_FOUND: &str = "dead_letter_not_found";
    /// 404: no eval matches the id (or none of the parcel).
    pub const EVAL_NOT_FOUND: &str = "eval_not_found";
    /// 404: the run has no artifact of that digest, or the store lacks it.
    pub const ARTIFACT_NOT_FOUND: &str = "artifact_not_found";
    /// 502: the stored copy of an artifact does not match what its run
    /// recorded (its size or its digest): nothing of it is served.
    pub const ARTIFACT_CORRUPT: &str = "artifact_corrupt";
    /// 404: no such route.
    pub const NO_SUCH_ROUTE: &str = "no_such_route";
    /// 500: something the server cannot explain (stored data it cannot read).
    pub const INTERNAL: &str = "internal";
    /// 413: the request body is larger than the server takes.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// 409: a running cluster service already has that name.
    pub const SERVICE_EXISTS: &str = "service_exists";
    /// 421: the `Host` is not a name this server answers to.
    pub const HOST_NOT_ALLOWED: &str = "host_not_allowed";
    /// 403: a page of another origin tried to change something.
    pub const CROSS_ORIGIN: &str = "cross_origin";
    /// 415: a request body that is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// 429: the token sent more requests than the server takes; retry after `Retry-After`.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// 429: the run's project is over a quota whose hard action is `refuse`.
    pub const QUOTA_EXCEEDED: &str = "quota_exceeded";

    /// Every code with its status and meaning, for the docs.
    pub const ALL: &[(&str, u16, &str)] = &[
        (BAD_REQUEST, 400, "the request is malformed"),
        (AMBIGUOUS_ID, 400, "the id prefix matches several runs"),
        (
            MISSING_SECRET,
            400,
            "the parcel needs a secret the server lacks",
        ),
        (INVALID_PARCEL, 400, "the uploaded parcel does not build"),
        (
            PAYLOAD_TOO_LARGE,
            413,
            "the request body is larger than the server takes",
        ),
        (
            UNSUPPORTED_MEDIA_TYPE,
            415,
            "a request body must be `Content-Type: application/json`",
        ),
        (
            UNAUTHORIZED,
            401,
            "a token is required (Authorization: Bearer)",
        ),
        (TOKEN_EXPIRED, 401, "the token has expired"),
        (
            FORBIDDEN,
            403,
            "the token's scope, or its role in the project, does not allow this (the message names the scope or role needed, and the project)",
        ),
        (
            CROSS_ORIGIN,
            403,
            "a page of another origin may not change anything",
        ),
        (RUN_NOT_FOUND, 404, "no run matches the id"),
        (PARCEL_NOT_FOUND, 404, "no parcel of that name or digest"),
        (
            APPROVAL_NOT_FOUND,
            404,
            "the run has no approval of that id",
        ),
        (
            DEAD_LETTER_NOT_FOUND,
            404,
            "the run is not in the dead-letter queue",
        ),
        (EVAL_NOT_FOUND, 404, "no eval matches the id or the parcel"),
        (
            SESSION_NOT_FOUND,
            404,
            "no session of that name keeps anything",
        ),
        (
            ARTIFACT_NOT_FOUND,
            404,
            "the run has no artifact of that digest, or the store lacks it",
        ),
        (NO_SUCH_ROUTE, 404, "no such route"),
        (
            SERVICE_EXISTS,
            409,
            "a running cluster service already has that name",
        ),
        (INVALID_STATE, 409, "the run's state does not allow this"),
        (CONFLICT, 409, "the run changed concurrently; retry"),
        (
            SESSION_BUSY,
            409,
            "a live run holds the session; retry when it has ended",
        ),
        (
            ALREADY_DECIDED,
            409,
            "the approval was decided before; the first decision stands",
        ),
        (
            HOST_NOT_ALLOWED,
            421,
            "the Host is not a name this server answers to (--allowed-host)",
        ),
        (
            RATE_LIMITED,
            429,
            "too many requests with this token; retry after Retry-After seconds",
        ),
        (
            QUOTA_EXCEEDED,
            429,
            "the project is over a quota that refuses new runs (the message names the quota, its use and its limit)",
        ),
        (INTERNAL, 500, "the server failed"),
        (
            ARTIFACT_CORRUPT,
            502,
            "the stored copy of the artifact does not match its size or digest; nothing of it is served",
        ),
        (UNAVAILABLE, 503, "the database is unavailable; retry later"),
    ];
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The store error behind a 503 `unavailable` (the database out of
    /// reach), for the server's log: written when the answer is sent, so a
    /// request that rides out an outage (see [`super::patience`]) logs once.
    pub cause: Option<String>,
    /// The database could not be reached: the same request may succeed
    /// later (never set for a refusal, a conflict or bad input).
    pub retry: bool,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            cause: None,
            retry: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
    }
}

/// How long a client is told to wait before it tries a 503 again.
const RETRY_AFTER_SECS: u32 = 1;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::warn!("[server] the database does not answer: {cause}");
        }
        let body = json!({"code": self.code, "message": self.message});
        let mut response = (self.status, Json(body)).into_response();
        // Only when the same request may succeed later (the database out
        // of reach), not for a dependency or store that is down for good:
        // clients (the CLI among them) try again after it.
        let passing = self.retry || self.cause.is_some();
        if self.status == StatusCode::SERVICE_UNAVAILABLE && passing {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = store_status(&e);
        let out_of_reach = matches!(
            e,
            StoreError::Unavailable { .. } | StoreError::Locked { .. }
        );
        let message = if out_of_reach {
            UNAVAILABLE_MESSAGE.to_string()
        } else {
            store_message(&e)
        };
        ApiError {
            cause: out_of_reach.then(|| e.to_string()),
            retry: matches!(e, StoreError::Unavailable { .. }),
            ..ApiError::new(status, code, message)
        }
    }
}

/// What a caller is told when the database is out of reach.
const UNAVAILABLE_MESSAGE: &str = "the database is unavailable; retry later";

/// Words for an API caller about a store error: the database's address,
/// user and name, and the server's paths, stay in the server's log.
pub(crate) fn store_message(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable { .. } | StoreError::Locked { .. } => {
            tracing::warn!("[server] the database does not answer: {e}");
            UNAVAILABLE_MESSAGE.to_string()
        }
        StoreError::Corrupt { .. } | StoreError::Damaged { .. } | StoreError::TooNew { .. } => {
            tracing::error!("[server] {e}");
            "the server cannot read its stored data (hint: its log says why)".to_string()
        }
        StoreError::Refused { .. } => {
            tracing::error!("[server] {e}");
            "the database refused the change (hint: the server's log says why)".to_string()
        }
        _ => e.to_string(),
    }
}

/// The status and code a store error answers with.
fn store_status(e: &StoreError) -> (StatusCode, &'static str) {
    {
        match e {
            StoreError::NotFound(_) => (StatusCode::NOT_FOUND, codes::RUN_NOT_FOUND),
            StoreError::Ambiguous { .. } => (StatusCode::BAD_REQUEST, codes::AMBIGUOUS_ID),
            StoreError::Conflict { .. }
            | StoreError::Fenced { .. }
            | StoreError::LogMoved { .. }
            | StoreError::SessionConflict { .. }
            | StoreError::ConcurrencyLimited { .. }
            | StoreError::QuotaLimited { .. } => (StatusCode::CONFLICT, codes::CONFLICT),
            StoreError::InvalidSession { .. } => (StatusCode::BAD_REQUEST, codes::BAD_REQUEST),
            StoreError::QuotaExceeded { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, codes::QUOTA_EXCEEDED)
            }
            StoreError::BlobTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, codes::PAYLOAD_TOO_LARGE)
            }
            StoreError::UploadGone { .. } => (StatusCode::CONFLICT, codes::CONFLICT),
            StoreError::InvalidState { .. } => (StatusCode::CONFLICT, codes::INVALID_STATE),
            StoreError::SessionBusy { .. } => (StatusCode::CONFLICT, codes::SESSION_BUSY),
            StoreError::ServiceNameTaken { .. } => (StatusCode::CONFLICT, codes::SERVICE_EXISTS),
            StoreError::AlreadyDecided { .. } => (StatusCode::CONFLICT, codes::ALREADY_DECIDED),
            StoreError::ApprovalNotFound { .. } => {
                (StatusCode::NOT_FOUND, codes::APPROVAL_NOT_FOUND)
            }
            StoreError::Locked { .. } | StoreError::Unavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE)
            }
            StoreError::Corrupt { .. }
            | StoreError::Damaged { .. }
            | StoreError::TooNew { .. }
            | StoreError::Refused { .. } => (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        // A store error keeps its cause and whether it may be retried.
        let e = match e {
            RuntimeError::Store(store) => return ApiError::from(store),
            other => other,
        };
        let (status, code) = match &e {
            RuntimeError::Store(store) => store_status(store),
            RuntimeError::UnknownParcel(_) => (StatusCode::NOT_FOUND, codes::PARCEL_NOT_FOUND),
            RuntimeError::AmbiguousParcel { .. } => (StatusCode::BAD_REQUEST, codes::BAD_REQUEST),
            RuntimeError::MissingSecret(_) => (StatusCode::BAD_REQUEST, codes::MISSING_SECRET),
            RuntimeError::AlreadyFinished { .. } | RuntimeError::Ended { .. } => {
                (StatusCode::CONFLICT, codes::INVALID_STATE)
            }
            RuntimeError::Parcel(_) => (StatusCode::BAD_REQUEST, codes::INVALID_PARCEL),
            RuntimeError::BadDecision(_) => (StatusCode::BAD_REQUEST, codes::BAD_REQUEST),
            RuntimeError::Policy(_) => (StatusCode::FORBIDDEN, codes::FORBIDDEN),
            RuntimeError::BadSession(_)
            | RuntimeError::Agent(_)
            | RuntimeError::Resources(_)
            | RuntimeError::Concurrency(_) => (StatusCode::BAD_REQUEST, codes::BAD_REQUEST),
            RuntimeError::Dependency(_) => (StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE),
            RuntimeError::Service(_) => (StatusCode::BAD_REQUEST, codes::BAD_REQUEST),
            RuntimeError::Io { .. } | RuntimeError::Spawn(..) => {
                (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL)
            }
        };
        // Words for an API caller: no instructions meant for the server's
        // shell, no paths of the server's disk.
        let message = match &e {
            RuntimeError::Store(store) => store_message(store),
            RuntimeError::MissingSecret(name) => format!(
                "secret {name} is declared by the Agentfile but not set on the server (hint: ask its operator to provide it)"
            ),
            RuntimeError::Io { what, .. } => format!("the server could not do its part ({what})"),
            RuntimeError::Spawn(..) => "the server could not start a helper process".to_string(),
            _ => e.to_string(),
        };
        ApiError::new(status, code, message)
    }
}
