//! Who is looking: the dashboard takes the API's bearer tokens. When the API
//! needs one (off loopback, or `--require-auth`), the login form checks it
//! and exchanges it for a random session id kept server-side
//! ([`super::logins`]), which is all the HttpOnly, SameSite=Strict cookie
//! holds (Secure behind https); the session has its token's scope,
//! projects and expiry, and each request is held to them as the API's are
//! (a page hides the buttons the token's role in a run's project lacks). Every
//! browser also gets a random id in another such cookie (`dispatch_browser`)
//! on its first page, with or without tokens. Every form that changes
//! something carries a CSRF token: a MAC of the browser's id and its login
//! session under a random key of this install (`.dispatch/ui.key`), checked
//! on POST — so no two browsers share one, and a page that could not read
//! the dashboard cannot guess it.

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

use super::logins::{Login, MAX_SESSION_MS};
use super::page;
use crate::api::AppState;

/// The cookie that holds the session id.
const COOKIE: &str = "dispatch_session";

/// The cookie that holds the browser's random id.
const BROWSER_COOKIE: &str = "dispatch_browser";

/// The browser's id, set by [`ensure`] for every dashboard route.
#[derive(Clone, Debug)]
pub struct BrowserId(String);

/// The viewer of a page, set by [`require`] for every page handler.
#[derive(Clone, Debug)]
pub struct Session {
    /// The token's name, when tokens are required.
    pub who: Option<String>,
    /// The CSRF token every form carries.
    pub csrf: String,
    /// Whether there is a session to log out of.
    pub logged_in: bool,
    /// The session's token, when tokens are required: the projects it may
    /// see and its role in each.
    pub token: Option<dispatch_store::TokenRecord>,
}

impl Session {
    /// Whether this session may do what `needed` allows in `project` (a
    /// page hides what it may not).
    pub fn can(&self, project: &str, needed: dispatch_store::TokenScope) -> bool {
        match &self.token {
            None => true,
            Some(t) => t.role_in(project).is_some_and(|role| role.allows(needed)),
        }
    }

    /// Who decides an approval from this session.
    pub fn by(&self) -> String {
        match &self.who {
            Some(name) => format!("{name} (dashboard)"),
            None => "dashboard".to_string(),
        }
    }
}

/// The MAC of a browser's id and its login session ("" without tokens).
fn csrf_mac(state: &AppState, browser: &str, session: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&state.ui.key).expect("HMAC takes a key of any length");
    mac.update(b"dispatch-ui-csrf\0");
    mac.update(browser.as_bytes());
    mac.update(b"\0");
    mac.update(session.as_bytes());
    mac
}

/// The CSRF token of browser `browser` in login session `session`.
fn csrf_of(state: &AppState, browser: &str, session: &str) -> String {
    hex::encode(csrf_mac(state, browser, session).finalize().into_bytes())
}

/// Whether `presented` is the CSRF token of `browser` and `session` (constant time).
fn csrf_ok(state: &AppState, browser: &str, session: &str, presented: &str) -> bool {
    let Ok(presented) = hex::decode(presented) else {
        return false;
    };
    !browser.is_empty()
        && csrf_mac(state, browser, session)
            .verify_slice(&presented)
            .is_ok()
}

/// The session id in the request's cookie, if any.
fn cookie_session(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

/// Gives a browser without an id a new random one, in a cookie.
pub async fn ensure(mut request: Request, next: Next) -> Response {
    let known = cookie(request.headers(), BROWSER_COOKIE)
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    let (id, new) = match known {
        Some(id) => (id, false),
        None => match crate::auth::random_hex(16) {
            Ok(id) => (id, true),
            Err(e) => {
                tracing::error!("[ui] no randomness for a browser id: {e}");
                return page::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the server could not start a session",
                );
            }
        },
    };
    let secure = is_https(request.headers());
    request.extensions_mut().insert(BrowserId(id.clone()));
    let mut response = next.run(request).await;
    if new {
        let cookie = format!(
            "{BROWSER_COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict{}",
            if secure { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// The browser id [`ensure`] set (empty outside the dashboard's routes).
fn browser_id(request: &Request) -> String {
    request
        .extensions()
        .get::<BrowserId>()
        .map(|s| s.0.clone())
        .unwrap_or_default()
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

/// Lets a request through with a live session in the cookie (or when tokens
/// are not required), with its [`Session`]; a page request without one
/// goes to the login form, anything else gets 401; a request beyond the
/// session's scope gets 403. A POST must carry the
/// session's CSRF token (checked by the action, which reads the form) and,
/// when the browser says where it comes from, come from this origin.
pub async fn require(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let sid = cookie_session(request.headers());
    let bid = browser_id(&request);
    let session = if state.require_auth {
        let now = dispatch_core::now_ms();
        let Some((sid, login)) =
            sid.and_then(|sid| state.ui.logins.get(&sid, now).map(|l| (sid, l)))
        else {
            return unauthenticated(&request, "Log in with a token to see this dashboard.");
        };
        let record = match state.store.find_token(&login.token_hash).await {
            Ok(Some(record)) if !record.expired(now) => record,
            Ok(_) => {
                state.ui.logins.close(&sid);
                return unauthenticated(&request, "The session's token expired or was revoked.");
            }
            Err(e) => {
                return page::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &crate::api::store_message(&e),
                );
            }
        };
        let needed = crate::auth::needed_scope(request.method(), request.uri().path());
        // A token bound to projects: its role in the run's project decides.
        let by_role =
            !record.projects.is_empty() && crate::auth::project_route(request.uri().path());
        if !by_role && !login.scope.allows(needed) {
            return page::error(
                StatusCode::FORBIDDEN,
                &format!(
                    "this session's token `{}` has scope `{}`; this needs scope `{needed}` (hint: log in with a token made by `dispatch token create --scope {needed}`)",
                    login.name, login.scope
                ),
            );
        }
        if let Err(refused) = crate::auth::project_check(
            &state.store,
            &record,
            needed,
            request.method(),
            request.uri().path(),
        )
        .await
        {
            return page::error(refused.status, &refused.message);
        }
        Session {
            who: Some(login.name),
            csrf: csrf_of(&state, &bid, &sid),
            logged_in: true,
            token: Some(record),
        }
    } else {
        Session {
            who: None,
            csrf: csrf_of(&state, &bid, ""),
            logged_in: false,
            token: None,
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
        cookie_session(headers).unwrap_or_default()
    } else {
        String::new()
    };
    let browser = cookie(headers, BROWSER_COOKIE).unwrap_or_default();
    (!csrf_ok(state, &browser, &session, presented)).then(|| {
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
    Extension(browser): Extension<BrowserId>,
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
                input type="hidden" name="csrf" value=(csrf_of(&state, &browser.0, ""));
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

/// `POST /ui/login`: checks the token and starts a session for it: the
/// cookie holds the session's id, never the token.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let browser = cookie(&headers, BROWSER_COOKIE).unwrap_or_default();
    if !csrf_ok(&state, &browser, "", &form.csrf) || !same_origin(&headers) {
        return page::error(
            StatusCode::FORBIDDEN,
            "the login form's CSRF token is missing or stale (hint: reload the page)",
        );
    }
    let token = form.token.trim();
    let now = dispatch_core::now_ms();
    let hash = crate::auth::hash(token);
    let record = match state.store.find_token(&hash).await {
        Ok(Some(r)) if !token.is_empty() => r,
        Ok(_) => return login_again(&next, "That token is unknown or revoked."),
        Err(e) => {
            return page::error(
                StatusCode::SERVICE_UNAVAILABLE,
                &crate::api::store_message(&e),
            );
        }
    };
    if record.expired(now) {
        return login_again(&next, "That token has expired.");
    }
    let login = Login {
        token_hash: hash,
        name: record.name,
        scope: record.scope,
        expires_at: record
            .expires_at
            .unwrap_or(i64::MAX)
            .min(now + MAX_SESSION_MS),
    };
    let max_age = (login.expires_at - now) / 1000;
    let sid = match state.ui.logins.open(login, now) {
        Ok(sid) => sid,
        Err(e) => return page::error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let secure = is_https(&headers);
    let cookie = format!(
        "{COOKIE}={sid}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// Back to the login form, saying why.
fn login_again(next: &str, why: &str) -> Response {
    let target = format!("/ui/login?next={}&error={}", encode(next), encode(why));
    Redirect::to(&target).into_response()
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

/// `POST /ui/logout`: ends the session and forgets the cookie.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = check_csrf(&state, &headers, &form.csrf) {
        return refused;
    }
    if let Some(sid) = cookie_session(&headers) {
        state.ui.logins.close(&sid);
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "dispatch_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}
