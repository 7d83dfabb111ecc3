//! Who is looking: the dashboard takes the API's bearer tokens. When the API
//! needs one (off loopback, or `--require-auth`), the login form checks it
//! and keeps it in an HttpOnly, SameSite=Strict cookie (Secure behind
//! https). Every browser gets a random session id in another such cookie
//! (`dispatch_session`) on its first page, with or without tokens. Every
//! form that changes something carries a CSRF token: a MAC of the session
//! id and the token under a random key of this install
//! (`.dispatch/ui.key`), checked on POST — so no two browsers share one,
//! and a page that could not read the dashboard cannot guess it.

use axum::Extension;
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

/// The cookie that holds the browser's session id.
const SESSION_COOKIE: &str = "dispatch_session";

/// The browser's session id, set by [`ensure`] for every dashboard route.
#[derive(Clone, Debug)]
pub struct SessionId(String);

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

/// The MAC of a browser's session id and its token ("" without tokens).
fn csrf_mac(state: &AppState, session: &str, token: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&state.ui.key).expect("HMAC takes a key of any length");
    mac.update(b"dispatch-ui-csrf\0");
    mac.update(session.as_bytes());
    mac.update(b"\0");
    mac.update(token.as_bytes());
    mac
}

/// The CSRF token of browser session `session` holding `token`.
fn csrf_of(state: &AppState, session: &str, token: &str) -> String {
    hex::encode(csrf_mac(state, session, token).finalize().into_bytes())
}

/// Whether `presented` is the CSRF token of `session` and `token` (constant time).
fn csrf_ok(state: &AppState, session: &str, token: &str, presented: &str) -> bool {
    let Ok(presented) = hex::decode(presented) else {
        return false;
    };
    !session.is_empty()
        && csrf_mac(state, session, token)
            .verify_slice(&presented)
            .is_ok()
}

/// The value of cookie `name`, if any.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// The token in the request's cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

/// Gives a browser without a session id a new random one, in a cookie.
pub async fn ensure(mut request: Request, next: Next) -> Response {
    let known = cookie(request.headers(), SESSION_COOKIE)
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    let (id, new) = match known {
        Some(id) => (id, false),
        None => match crate::auth::random_hex(16) {
            Ok(id) => (id, true),
            Err(e) => {
                tracing::error!("[ui] no randomness for a session id: {e}");
                return page::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the server could not start a session",
                );
            }
        },
    };
    let secure = is_https(request.headers());
    request.extensions_mut().insert(SessionId(id.clone()));
    let mut response = next.run(request).await;
    if new {
        let cookie = format!(
            "{SESSION_COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict{}",
            if secure { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// The session id [`ensure`] set (empty outside the dashboard's routes).
fn session_id(request: &Request) -> String {
    request
        .extensions()
        .get::<SessionId>()
        .map(|s| s.0.clone())
        .unwrap_or_default()
}

/// Lets a request through with a live token in the cookie (or when tokens
/// are not required), with its [`Session`]; a page request without one
/// goes to the login form, anything else gets 401. A POST must carry the
/// session's CSRF token (checked by the action, which reads the form) and,
/// when the browser says where it comes from, come from this origin.
pub async fn require(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let token = cookie_token(request.headers());
    let sid = session_id(&request);
    let session = if state.require_auth {
        let Some(token) = token else {
            return unauthenticated(&request, "Log in with a token to see this dashboard.");
        };
        match state.store.find_token(&crate::auth::hash(&token)).await {
            Ok(Some(record)) => Session {
                who: Some(record.name),
                csrf: csrf_of(&state, &sid, &token),
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
            csrf: csrf_of(&state, &sid, ""),
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
    let token = if state.require_auth {
        cookie_token(headers).unwrap_or_default()
    } else {
        String::new()
    };
    let session = cookie(headers, SESSION_COOKIE).unwrap_or_default();
    (!csrf_ok(state, &session, &token, presented)).then(|| {
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
pub async fn login_form(
    State(state): State<AppState>,
    Extension(session): Extension<SessionId>,
    Query(q): Query<NextQuery>,
) -> Response {
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
                input type="hidden" name="csrf" value=(csrf_of(&state, &session.0, ""));
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
    let session = cookie(&headers, SESSION_COOKIE).unwrap_or_default();
    if !csrf_ok(&state, &session, "", &form.csrf) || !same_origin(&headers) {
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
