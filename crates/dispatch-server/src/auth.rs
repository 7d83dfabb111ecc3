//! Bearer tokens: `dsp_<id>_<secret>`, stored as the SHA-256 of the whole
//! token. Required on every route but `/healthz` when the server listens on a
//! non-loopback address (or with `--require-auth`).
//!
//! Each token has a scope ([`TokenScope`]: `read` < `run` < `approve` <
//! `admin`, each allowing what the ones before it do) and may expire. What a
//! request needs is [`needed_scope`]: `read` for GET; `run` to create, start,
//! stop, replay, signal and wake runs, serve services, upload parcels and
//! evals; `approve` to decide approvals; `admin` for the rest (prune,
//! deleting runs, and any route not named here). A token short of it gets
//! 403 `forbidden` naming the scope needed; an expired one 401
//! `token_expired`.
//!
//! A token may be bound to projects with a role in each (`viewer`,
//! `runner`, `approver`, `admin`: the scopes by other names). Bound to
//! none, its scope holds in every project (every token made before
//! projects). Bound to some, it may do in a project what its role there
//! allows, and nothing in the others: a request on a run (`/v1/runs/{id}/…`,
//! `/v1/dead-letters/{id}/…`) is checked here against the run's project
//! ([`project_check`]), a request that creates runs by its handler against
//! the project it names ([`may`]), and listings show only its projects
//! ([`visible`]). What belongs to no project and needs `admin` (pruning
//! runs or parcels, removing a parcel) needs a token bound to none.

use std::io::Read;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dispatch_core::{Ts, now_ms};
use dispatch_store::{ProjectRole, StoreResult, TokenRecord, TokenScope};
use sha2::{Digest, Sha256};

use crate::SharedStore;
use crate::api::{ApiError, AppState, codes};

/// The hash stored for `token`.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}

/// Creates a token named `name` with `scope`, expiring at `expires_at`
/// (never when `None`), bound to `projects` (every project when empty);
/// returns the record and the token itself, which is shown once and never
/// stored.
pub async fn create(
    store: &SharedStore,
    name: &str,
    scope: TokenScope,
    expires_at: Option<Ts>,
    projects: Vec<ProjectRole>,
) -> StoreResult<(TokenRecord, String)> {
    let random = |n| {
        random_hex(n).map_err(|e| dispatch_store::StoreError::Unavailable {
            path: "/dev/urandom".into(),
            message: e.to_string(),
        })
    };
    let id = random(6)?;
    let token = format!("dsp_{id}_{}", random(24)?);
    let record = TokenRecord {
        id,
        name: name.to_string(),
        created_at: now_ms(),
        revoked_at: None,
        scope,
        expires_at,
        projects,
    };
    store.create_token(&record, &hash(&token)).await?;
    Ok((record, token))
}

/// Lets a request through when auth is off, for `/healthz`, or with a live token.
pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Webhooks check the service's own shared secret instead.
    let open = request.uri().path() == "/healthz" || request.uri().path().starts_with("/hooks/");
    if !state.require_auth || open {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let Some(token) = presented else {
        return unauthorized(
            "this server needs a token: `Authorization: Bearer <token>` (hint: `dispatch token create`, then DISPATCH_TOKEN)",
        );
    };
    let record = match state.store.find_token(&hash(token)).await {
        Ok(Some(record)) => record,
        Ok(None) => return unauthorized("the token is unknown or revoked"),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let needed = needed_scope(request.method(), request.uri().path());
    if let Err(refused) = admit(&record, needed, request.method(), request.uri().path()) {
        return refused.into_response();
    }
    if let Err(refused) = project_check(
        &state.store,
        &record,
        needed,
        request.method(),
        request.uri().path(),
    )
    .await
    {
        return refused.into_response();
    }
    let mut request = request;
    request.extensions_mut().insert(record);
    next.run(request).await
}

/// Whether `record` may do what `needed` allows now: the 401 (expired) or
/// 403 (scope) to answer otherwise.
pub(crate) fn admit(
    record: &TokenRecord,
    needed: TokenScope,
    method: &Method,
    path: &str,
) -> Result<(), ApiError> {
    let now = now_ms();
    if let Some(at) = record.expires_at.filter(|_| record.expired(now)) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::TOKEN_EXPIRED,
            format!(
                "the token `{}` expired {} (hint: `dispatch token create --scope {} --expires 30d`)",
                record.name,
                dispatch_core::time::human_ago(at, now),
                record.scope
            ),
        ));
    }
    // A token bound to projects: its role in the project the request is
    // about decides ([`project_check`], [`may`]), not its scope.
    let by_role = !record.projects.is_empty() && project_route(path);
    if !by_role && !record.scope.allows(needed) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            codes::FORBIDDEN,
            format!(
                "the token `{}` has scope `{}`; {method} {path} needs scope `{needed}` (hint: `dispatch token create --scope {needed}`)",
                record.name, record.scope
            ),
        ));
    }
    Ok(())
}

/// A token bound to projects: the request on a run (or a dead letter) is
/// refused unless its role in the run's project allows `needed`; a request
/// that needs `admin` and names no run (a prune, a parcel's removal)
/// touches every project and is refused. A token bound to none, and a run
/// that is not found (the handler says so), pass.
pub(crate) async fn project_check(
    store: &SharedStore,
    record: &TokenRecord,
    needed: TokenScope,
    method: &Method,
    path: &str,
) -> Result<(), ApiError> {
    if record.projects.is_empty() {
        return Ok(());
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let run = match parts.as_slice() {
        ["v1" | "ui", "runs", "prune" | "batch"] => None,
        ["v1" | "ui", "runs" | "dead-letters", id, ..]
        | ["ui", "services", id, ..]
        | ["ui", "live", "runs" | "workflow", id, ..] => Some(*id),
        _ => None,
    };
    let Some(prefix) = run else {
        if needed == TokenScope::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                codes::FORBIDDEN,
                format!(
                    "token {} may not {method} {path}: it is bound to projects ({}) and this touches every project (hint: a token bound to no project: `dispatch token create --scope admin`)",
                    record.name,
                    bound_names(record)
                ),
            ));
        }
        return Ok(());
    };
    let found = match store.resolve_prefix(&prefix.to_ascii_lowercase()).await {
        Ok(id) => store.get_run(&id).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(run) => may(Some(record), &run.project, needed),
        // The handler answers a missing or ambiguous run.
        Err(_) => Ok(()),
    }
}

/// Whether a request on `path` is about one project: a run's (or a dead
/// letter's), or one that creates runs in the project its body names.
pub(crate) fn project_route(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1" | "ui", "runs", "prune"] => false,
        ["v1", "runs" | "services"] | ["v1", "runs", "batch"] => true,
        ["v1" | "ui", "runs" | "dead-letters", _, ..]
        | ["ui", "services", _, ..]
        | ["ui", "live", "runs" | "workflow", _, ..] => true,
        _ => false,
    }
}

/// The projects a token is bound to, for a message.
fn bound_names(record: &TokenRecord) -> String {
    let names: Vec<&str> = record.projects.iter().map(|p| p.project.as_str()).collect();
    names.join(", ")
}

/// Whether `token` (none: auth is off) may do what `needed` allows in
/// `project`: the 403 naming the project and what is missing otherwise.
pub(crate) fn may(
    token: Option<&TokenRecord>,
    project: &str,
    needed: TokenScope,
) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Ok(());
    };
    let why = match token.role_in(project) {
        Some(role) if role.allows(needed) => return Ok(()),
        Some(role) => format!("it is {} {} there", article(role.role()), role.role()),
        None => format!("it is bound to {} only", bound_names(token)),
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        codes::FORBIDDEN,
        format!(
            "token {} may not {} in project {project}: {why} (hint: a token with role {} there: `dispatch token create --project {project} --role {}`)",
            token.name,
            needed.verb(),
            needed.role(),
            needed.role()
        ),
    ))
}

fn article(word: &str) -> &'static str {
    match word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        true => "an",
        false => "a",
    }
}

/// The projects a listing shows: `asked` (`?project=`), which `token` must
/// be bound to (403 otherwise), else every project the token may see
/// (empty: all).
pub(crate) fn visible(
    token: Option<&TokenRecord>,
    asked: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    match asked {
        Some(project) => {
            dispatch_core::project::check_project(project).map_err(ApiError::bad_request)?;
            may(token, project, TokenScope::Read)?;
            Ok(vec![project.to_string()])
        }
        None => Ok(token
            .and_then(TokenRecord::visible_projects)
            .unwrap_or_default()),
    }
}

/// The scope a request needs (see the module's documentation). `path` is
/// the API's (`/v1/…`) or the dashboard's (`/ui/…`).
pub fn needed_scope(method: &Method, path: &str) -> TokenScope {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return TokenScope::Read;
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["v1" | "ui", "runs", _, "approvals", _]) => TokenScope::Approve,
        ("POST", ["v1", "runs", "prune"]) => TokenScope::Admin,
        ("POST", ["v1", "runs" | "services" | "parcels" | "evals"])
        | ("POST", ["v1", "runs", "batch"])
        | (
            "POST",
            [
                "v1" | "ui",
                "runs",
                _,
                "start" | "replay" | "cancel" | "signal" | "wake",
            ],
        )
        | ("POST", ["ui", "runs", _, "stop" | "restart"])
        | ("POST", ["ui", "services", _, "wake"])
        | ("POST", ["v1" | "ui", "dead-letters", _, "replay"]) => TokenScope::Run,
        ("POST", ["ui", "logout"]) => TokenScope::Read,
        _ => TokenScope::Admin,
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn unauthorized(message: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::{Method, TokenScope, bearer, may, needed_scope, project_route, visible};
    use dispatch_store::{ProjectRole, TokenRecord};

    fn bound(projects: &[(&str, TokenScope)]) -> TokenRecord {
        TokenRecord {
            id: "t".into(),
            name: "ci".into(),
            created_at: 0,
            revoked_at: None,
            scope: TokenScope::Admin,
            expires_at: None,
            projects: projects
                .iter()
                .map(|(p, r)| ProjectRole {
                    project: p.to_string(),
                    role: *r,
                })
                .collect(),
        }
    }

    #[test]
    fn a_refusal_names_the_token_the_project_and_what_is_missing() {
        let ci = bound(&[("payments", TokenScope::Run), ("search", TokenScope::Read)]);
        assert!(may(Some(&ci), "payments", TokenScope::Run).is_ok());
        assert!(may(None, "anything", TokenScope::Admin).is_ok(), "auth off");
        let e = may(Some(&ci), "search", TokenScope::Run).expect_err("a viewer there");
        assert_eq!(e.status, 403);
        assert!(
            e.message
                .starts_with("token ci may not run in project search: it is a viewer there"),
            "{}",
            e.message
        );
        let e = may(Some(&ci), "payments", TokenScope::Admin).expect_err("a runner there");
        assert!(
            e.message
                .contains("may not administer in project payments: it is a runner there"),
            "{}",
            e.message
        );
        let e = may(Some(&ci), "hr", TokenScope::Read).expect_err("not bound");
        assert!(
            e.message
                .contains("may not read in project hr: it is bound to payments, search only"),
            "{}",
            e.message
        );
        let free = bound(&[]);
        assert!(
            may(Some(&free), "hr", TokenScope::Admin).is_ok(),
            "bound to none"
        );
    }

    #[test]
    fn listings_show_a_bound_tokens_projects_or_the_one_asked_for() {
        let ci = bound(&[("payments", TokenScope::Run), ("search", TokenScope::Read)]);
        let all = visible(Some(&ci), None).expect("its projects");
        assert_eq!(all, vec!["payments".to_string(), "search".to_string()]);
        assert_eq!(
            visible(Some(&ci), Some("search")).expect("one"),
            vec!["search"]
        );
        assert_eq!(
            visible(Some(&ci), Some("hr"))
                .expect_err("not bound")
                .status,
            403
        );
        assert_eq!(
            visible(None, Some("Bad Name")).expect_err("bad").status,
            400
        );
        assert!(visible(Some(&bound(&[])), None).expect("all").is_empty());
    }

    #[test]
    fn project_routes_are_those_about_a_run_or_creating_runs() {
        for path in [
            "/v1/runs",
            "/v1/runs/batch",
            "/v1/services",
            "/v1/runs/abc/cancel",
            "/v1/dead-letters/abc/replay",
            "/ui/runs/abc/stop",
            "/ui/services/abc/wake",
            "/ui/live/runs/abc/log",
        ] {
            assert!(project_route(path), "{path}");
        }
        for path in ["/v1/runs/prune", "/v1/parcels/x", "/v1/workers", "/ui/runs"] {
            assert!(!project_route(path), "{path}");
        }
    }

    #[test]
    fn each_route_needs_the_least_scope_that_does_it() {
        let cases = [
            ("GET", "/v1/runs", TokenScope::Read),
            ("GET", "/ui/approvals", TokenScope::Read),
            ("POST", "/v1/runs", TokenScope::Run),
            ("POST", "/v1/runs/batch", TokenScope::Run),
            ("POST", "/v1/runs/abc/cancel", TokenScope::Run),
            ("POST", "/v1/runs/abc/signal", TokenScope::Run),
            ("POST", "/v1/runs/abc/wake", TokenScope::Run),
            ("POST", "/v1/services", TokenScope::Run),
            ("POST", "/v1/parcels", TokenScope::Run),
            ("POST", "/ui/runs/abc/stop", TokenScope::Run),
            ("POST", "/ui/runs/abc/restart", TokenScope::Run),
            ("POST", "/v1/runs/abc/approvals/ap1", TokenScope::Approve),
            ("POST", "/ui/runs/abc/approvals/ap1", TokenScope::Approve),
            ("POST", "/v1/runs/prune", TokenScope::Admin),
            ("DELETE", "/v1/runs/abc", TokenScope::Admin),
            ("POST", "/v1/something-new", TokenScope::Admin),
            ("POST", "/ui/logout", TokenScope::Read),
        ];
        for (method, path, want) in cases {
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            assert_eq!(needed_scope(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for v in [
            "Bearer dsp_a_b",
            "bearer dsp_a_b",
            "BEARER  dsp_a_b ",
            "  bEaReR\tdsp_a_b",
        ] {
            assert_eq!(bearer(v), Some("dsp_a_b"), "{v:?}");
        }
        for v in [
            "Basic dsp_a_b",
            "Bearer",
            "Bearer   ",
            "dsp_a_b",
            "Bearerdsp_a_b",
        ] {
            assert_eq!(bearer(v), None, "{v:?}");
        }
    }
}
