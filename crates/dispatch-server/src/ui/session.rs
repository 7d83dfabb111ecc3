//! Who is looking: the dashboard takes the API's bearer tokens. When the API
//! needs one (off loopback, or `--require-auth`), the login form checks it
//! and keeps it in an HttpOnly, SameSite=Strict cookie (Secure behind
//! https). Every form that changes something carries a CSRF token: a MAC of
//! the session under a key of this process, checked on POST.

use axum::Form;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::Sha256;

use super::page;
use crate::api::AppState;

/// The cookie that holds the token.
const COOKIE: &str = "dispatch_token";

/// The viewer of a page, set by [`require`] for every page handler.
#[derive(Clone, Debug)]
pub struct Session {
    /// The token's name, when tokens are required.
    pub who: Option<String>,
    /// The CSRF token every form carries.
    pub csrf: String,
    /// Whether there is a session to log out of.
    pub logged_in: bool,
}

impl Session {
    /// Who decides an approval from this session.
    pub fn by(&self) -> String {
        match &self.who {
            Some(name) => format!("{name} (dashboard)"),
            None => "dashboard".to_string(),
        }
    }
}

/// The CSRF token of `session` (the token, or "" without tokens).
fn csrf_of(state: &AppState, session: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&state.ui.key).expect("HMAC takes a key of any length");
    mac.update(b"dispatch-ui-csrf\0");
    mac.update(session.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `presented` is the CSRF token of `session` (constant time).
fn csrf_ok(state: &AppState, session: &str, presented: &str) -> bool {
    let Ok(presented) = hex::decode(presented) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&state.ui.key).expect("HMAC takes a key of any length");
    mac.update(b"dispatch-ui-csrf\0");
    mac.update(session.as_bytes());
    mac.verify_slice(&presented).is_ok()
}

/// The token in the request's cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// Lets a request through with a live token in the cookie (or when tokens
/// are not required), with its [`Session`]; a page request without one
/// goes to the login form, anything else gets 401. A POST must carry the
/// session's CSRF token (checked by the action, which reads the form) and,
/// when the browser says where it comes from, come from this origin.
pub async fn require(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let token = cookie_token(request.headers());
    let session = if state.require_auth {
        let Some(token) = token else {
            return unauthenticated(&request, "Log in with a token to see this dashboard.");
        };
        match state.store.find_token(&crate::auth::hash(&token)).await {
            Ok(Some(record)) => Session {
                who: Some(record.name),
                csrf: csrf_of(&state, &token),
                logged_in: true,
            },
            Ok(None) => {
                return unauthenticated(&request, "That token is unknown or revoked.");
            }
            Err(e) => {
                return page::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &crate::api::store_message(&e),
                );
            }
        }
    } else {
        Session {
            who: None,
            csrf: csrf_of(&state, ""),
            logged_in: false,
        }
    };
    if request.method() == Method::POST && !same_origin(request.headers()) {
        return page::error(
            StatusCode::FORBIDDEN,
            "this form was sent from another site (refused: cross-site request)",
        );
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// Whether the `Origin` header, when the browser sends one, names this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

fn unauthenticated(request: &Request, why: &str) -> Response {
    if request.method() == Method::GET && !request.uri().path().starts_with("/ui/live/") {
        let next = request
            .uri()
            .path_and_query()
            .map_or("/ui/runs", |p| p.as_str());
        let target = format!("/ui/login?next={}", encode(next));
        return Redirect::to(&target).into_response();
    }
    page::error(StatusCode::UNAUTHORIZED, why)
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Checks the form's CSRF token against the session's: the refusal, if any.
pub fn check_csrf(state: &AppState, headers: &HeaderMap, presented: &str) -> Option<Response> {
    let session = if state.require_auth {
        cookie_token(headers).unwrap_or_default()
    } else {
        String::new()
    };
    (!csrf_ok(state, &session, presented)).then(|| {
        page::error(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or stale (hint: reload the page and try again)",
        )
    })
}

/// A hidden field with the session's CSRF token.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
    error: Option<String>,
}

/// Where to go after logging in: only a dashboard path.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_string()
        }
        _ => "/ui/runs".to_string(),
    }
}

/// `GET /ui/login`: the token form.
pub async fn login_form(State(state): State<AppState>, Query(q): Query<NextQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    if !state.require_auth {
        return Redirect::to(&next).into_response();
    }
    let body = html! {
        section.login aria-labelledby="login-title" {
            h1 #login-title { "Log in" }
            p { "This server needs a token, like the API. Create one with "
                code { "dispatch token create <name>" } "." }
            @if let Some(e) = &q.error {
                p.notice.error role="alert" { (e) }
            }
            form method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(csrf_of(&state, ""));
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password"
                    required autofocus spellcheck="false";
                button type="submit" { "Log in" }
            }
        }
    };
    page::bare("Log in", body)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/login`: checks the token and keeps it in the session cookie.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    if !csrf_ok(&state, "", &form.csrf) || !same_origin(&headers) {
        return page::error(
            StatusCode::FORBIDDEN,
            "the login form's CSRF token is missing or stale (hint: reload the page)",
        );
    }
    let token = form.token.trim();
    let known = !token.is_empty()
        && matches!(
            state.store.find_token(&crate::auth::hash(token)).await,
            Ok(Some(_))
        );
    if !known {
        let target = format!(
            "/ui/login?next={}&error={}",
            encode(&next),
            encode("That token is unknown or revoked.")
        );
        return Redirect::to(&target).into_response();
    }
    let secure = is_https(&headers);
    let cookie = format!(
        "{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// Whether the browser reached us over https (through a proxy that says so).
fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// `POST /ui/logout`: forgets the cookie.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = check_csrf(&state, &headers, &form.csrf) {
        return refused;
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("dispatch_token=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}
