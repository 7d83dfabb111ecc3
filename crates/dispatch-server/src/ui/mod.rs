//! The web dashboard under `/ui`: pages rendered by the server (maud
//! templates, checked at compile time), a little plain JavaScript for the
//! live parts, and static assets embedded in the binary.
//!
//! It reads and acts only through the functions the `/v1` handlers use
//! (`api::runs::list_page`, `api::logs::LogTail`, the cancel, replay and
//! decide handlers themselves), so the two cannot drift apart.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /ui`, `/ui/runs` | runs, filtered, a page at a time, live |
//! | `GET /ui/runs/{id}` | one run: header, timeline, log, events, tool calls, approvals, artifacts, output, children |
//! | `GET /ui/runs/{id}/artifacts/{sha256}` | an artifact's bytes |
//! | `GET /ui/runs/{id}/workflow` | a workflow run: its communication graph, agents' usage and runs, messages |
//! | `GET /ui/approvals` | approvals waiting across runs |
//! | `GET /ui/dead-letters` | dead letters, with replay |
//! | `GET /ui/services` | running services: schedules with next fire, listeners with counters, wake now |
//! | `GET /ui/workers` | workers: labels, slots used of total, lease age, last seen |
//! | `GET /ui/usage` | tokens and cost per parcel and per day, runs by state |
//! | `GET /ui/live/runs`, `/ui/live/runs/{id}`, `/ui/live/runs/{id}/log` | SSE for the live parts |
//! | `POST /ui/runs/{id}/{stop,restart,replay}`, `/ui/runs/{id}/approvals/{aid}`, `/ui/dead-letters/{id}/replay`, `/ui/services/{id}/wake` | buttons (CSRF-checked) |
//! | `GET/POST /ui/login`, `POST /ui/logout` | the token form (when the API needs tokens) |

mod actions;
mod approvals;
mod assets;
mod charts;
mod conversation;
mod dead_letters;
mod fmt;
mod graph;
mod live;
mod log;
mod logins;
mod notifications;
mod page;
mod run;
mod run_parts;
mod runs;
mod services;
mod session;
mod timeline;
mod usage;
mod workers;
mod workflow;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{Redirect, Response};
use axum::routing::{get, post};

use crate::api::AppState;

/// The dashboard's settings and the key its CSRF tokens are made with.
#[derive(Clone)]
pub struct UiConfig {
    /// Runs may be held by local helpers: stop signals their process group.
    pub local_runs: bool,
    /// A random key of this install: a CSRF token is a MAC of the session under it.
    key: Arc<Vec<u8>>,
    /// The dashboard's login sessions (in memory).
    pub logins: logins::Logins,
}

/// The bytes of a CSRF key.
const KEY_BYTES: usize = 32;

impl UiConfig {
    /// The settings, with the key kept in `key_file` (made on first use,
    /// readable by its owner only); a key of this process alone when the
    /// file cannot be read or made.
    pub fn new(local_runs: bool, key_file: &std::path::Path) -> std::io::Result<UiConfig> {
        let key = match install_key(key_file) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(
                    "[ui] no CSRF key in {} ({e}); this process makes its own, so forms open elsewhere go stale on restart",
                    key_file.display()
                );
                hex::decode(crate::auth::random_hex(KEY_BYTES)?).map_err(std::io::Error::other)?
            }
        };
        Ok(UiConfig {
            local_runs,
            key: Arc::new(key),
            logins: logins::Logins::default(),
        })
    }
}

/// Reads the install's key, or makes it (0600, never overwritten).
fn install_key(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read(path) {
        Ok(key) if key.len() == KEY_BYTES => return Ok(key),
        Ok(_) => return Err(std::io::Error::other("the key file is not 32 bytes")),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let key = hex::decode(crate::auth::random_hex(KEY_BYTES)?).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match made {
        Ok(mut file) => {
            file.write_all(&key)?;
            file.sync_all()?;
            Ok(key)
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path),
        Err(e) => Err(e),
    }
}

impl std::fmt::Debug for UiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiConfig")
            .field("local_runs", &self.local_runs)
            .finish_non_exhaustive()
    }
}

/// The dashboard's routes.
pub fn router(state: AppState) -> Router {
    let pages = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/runs") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/runs") }))
        .route("/ui/runs", get(runs::page))
        .route("/ui/runs/{id}", get(run::page))
        .route("/ui/runs/{id}/workflow", get(workflow::page))
        .route("/ui/runs/{id}/artifacts/{sha256}", get(run::artifact))
        .route("/ui/approvals", get(approvals::page))
        .route("/ui/dead-letters", get(dead_letters::page))
        .route("/ui/usage", get(usage::page))
        .route("/ui/services", get(services::page))
        .route("/ui/services/{id}/wake", post(services::wake))
        .route("/ui/workers", get(workers::page))
        .route("/ui/live/runs", get(live::runs))
        .route("/ui/live/runs/{id}", get(live::run))
        .route("/ui/live/workflow/{id}", get(live::workflow))
        .route("/ui/live/runs/{id}/log", get(log::live))
        .route("/ui/runs/{id}/stop", post(actions::stop))
        .route("/ui/runs/{id}/restart", post(actions::restart))
        .route("/ui/runs/{id}/replay", post(actions::replay))
        .route(
            "/ui/runs/{id}/approvals/{approval_id}",
            post(actions::decide),
        )
        .route("/ui/dead-letters/{id}/replay", post(actions::replay_dead))
        .route("/ui/logout", post(session::logout))
        .route("/ui/{*rest}", get(page::not_found))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            session::require,
        ));
    Router::new()
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/assets/{name}", get(assets::serve))
        .merge(pages)
        .layer(middleware::from_fn(session::ensure))
        .layer(middleware::from_fn(headers))
        .with_state(state)
}

/// What every dashboard answer carries: no inline script may run, no
/// framing, no sniffing, no referrer to other sites (the same origin gets
/// one, so forms carry a real `Origin`); pages are never cached.
async fn headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/ui/assets/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::install_key;

    #[test]
    fn the_csrf_key_is_made_once_per_install_and_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".dispatch/ui.key");
        let made = install_key(&path).expect("a key");
        assert_eq!(made.len(), 32);
        let mode = std::fs::metadata(&path)
            .expect("the file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(install_key(&path).expect("the same key"), made);
        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(
            install_key(&other.path().join("ui.key")).expect("a key"),
            made,
            "random per install"
        );
        std::fs::write(&path, b"short").expect("a broken key");
        assert!(install_key(&path).is_err(), "a broken key is not used");
    }
}
