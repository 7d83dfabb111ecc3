//! `dispatch serve` options merged with the Agentfile's SCHEDULE and LISTEN
//! directives, and checked before anything starts: every mistake is one
//! clear line.

use std::net::{SocketAddr, TcpListener};

use dispatch_core::parcel::Manifest;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ServiceError;
use super::model::{IngressPolicy, Overlap, ScheduleState, ServiceConfig, Trigger};
use super::schedule::parse_cron;

/// The plain heartbeat interval when a service has no schedule and no listener.
pub const DEFAULT_INTERVAL_MS: u64 = 30_000;
/// The default body limit of an HTTP listener (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// The default header-section limit of an HTTP listener (16 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 16 * 1024;
/// The environment variable `dispatch serve` also reads the shared secret from.
pub const SHARED_SECRET_ENV: &str = "DISPATCH_LISTEN_SHARED_SECRET";
/// Methods a listener may be restricted to.
pub const METHODS: [&str; 7] = dispatch_core::agentfile::HTTP_METHODS;

/// What `dispatch serve` was asked on the command line.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Cron expressions, added to the Agentfile's SCHEDULE lines.
    pub schedules: Vec<String>,
    /// The plain interval; `Some(0)` turns it off. When `None`, a service
    /// with no schedule and no listener wakes every [`DEFAULT_INTERVAL_MS`].
    pub interval_ms: Option<u64>,
    pub overlap: Overlap,
    pub max_concurrent: u32,
    pub max_pending: u32,
    /// The payload timer and manual wakes carry by default.
    pub payload: Value,
    pub listen: Option<String>,
    pub listen_path: Option<String>,
    /// Added to the Agentfile's LISTEN_METHOD list.
    pub listen_methods: Vec<String>,
    /// The shared secret itself; only its SHA-256 is kept.
    pub listen_shared_secret: Option<String>,
    pub listen_max_body_bytes: Option<u64>,
    pub listen_max_header_bytes: Option<u64>,
    /// Serve a listener that has no secret nor signature (otherwise refused).
    pub public: bool,
    /// `--a2a`: the listener is an A2A agent.
    pub a2a: bool,
    /// `--a2a-url`: the endpoint URL its card announces.
    pub a2a_url: Option<String>,
    /// `--session-ttl`: an A2A context's session unused this long is removed.
    pub a2a_session_ttl_ms: Option<u64>,
    /// The project the service (and so each of its turns) belongs to;
    /// `default` when `None`.
    pub project: Option<String>,
}

/// Merges `opts` over the Agentfile and checks everything. Returns the
/// configuration and the timers to persist.
pub fn resolve(
    manifest: &Manifest,
    opts: &ServeOptions,
) -> Result<(ServiceConfig, Vec<ScheduleState>), ServiceError> {
    let resolved = resolve_unchecked(manifest, opts)?;
    if let Some(p) = &resolved.0.listen {
        check_not_open(p, &format!("`LISTEN {}`", p.addr))?;
    }
    Ok(resolved)
}

/// Refuses a listener anyone who reaches it could wake, unless it was
/// asked for (`--public`). `which` names the listener.
pub fn check_not_open(policy: &IngressPolicy, which: &str) -> Result<(), ServiceError> {
    if policy.public || policy.secret_sha256.is_some() || policy.signature.is_some() {
        return Ok(());
    }
    Err(ServiceError::new(format!(
        "the webhook of {which} has no secret: anyone who reaches it could wake this service (hint: add `LISTEN_SIGNATURE github|stripe|hmac-sha256 NAME` with `SECRET NAME` to the Agentfile, or `LISTEN_SECRET NAME`, or --listen-shared-secret; or pass --public to serve it open)"
    )))
}

/// Checks that the signing key a restarted service needs is still in the
/// environment (it is never stored).
pub fn check_signature_key(policy: &IngressPolicy) -> Result<(), ServiceError> {
    match &policy.signature {
        Some(sig) => super::signature::Verifier::from_env(sig)
            .map(drop)
            .map_err(ServiceError::new),
        None => Ok(()),
    }
}

fn resolve_unchecked(
    manifest: &Manifest,
    opts: &ServeOptions,
) -> Result<(ServiceConfig, Vec<ScheduleState>), ServiceError> {
    let mut exprs: Vec<String> = Vec::new();
    for e in manifest.schedules.iter().chain(&opts.schedules) {
        let e = e.trim().to_string();
        parse_cron(&e)?;
        if !exprs.contains(&e) {
            exprs.push(e);
        }
    }
    let listen = ingress_policy(manifest, opts)?;
    if let Some(policy) = &listen {
        check_port_free(&policy.addr)?;
    }
    let a2a = a2a_serve(opts, listen.as_ref())?;
    let interval_ms = match opts.interval_ms {
        Some(0) => None,
        Some(ms) => Some(ms),
        None if exprs.is_empty() && listen.is_none() => Some(DEFAULT_INTERVAL_MS),
        None => None,
    };
    let mut timers: Vec<ScheduleState> = exprs
        .into_iter()
        .map(|expr| ScheduleState::new(Trigger::Cron { expr }, opts.payload.clone()))
        .collect();
    if let Some(every_ms) = interval_ms {
        timers.push(ScheduleState::new(
            Trigger::Interval { every_ms },
            opts.payload.clone(),
        ));
    }
    if opts.overlap == Overlap::Concurrent && opts.max_concurrent == 0 {
        return Err(ServiceError::new(
            "--max-concurrent must be at least 1 (hint: --max-concurrent 4)",
        ));
    }
    let config = ServiceConfig {
        interval_ms,
        overlap: opts.overlap,
        max_concurrent: match opts.overlap {
            Overlap::Concurrent => opts.max_concurrent,
            Overlap::Queue | Overlap::Skip => 1,
        },
        max_pending: opts.max_pending,
        listen,
        a2a,
    };
    Ok((config, timers))
}

/// `--a2a` checked against the listener it needs.
fn a2a_serve(
    opts: &ServeOptions,
    listen: Option<&IngressPolicy>,
) -> Result<Option<super::model::A2aServe>, ServiceError> {
    if !opts.a2a {
        if opts.a2a_url.is_some() {
            return Err(ServiceError::new("--a2a-url needs --a2a"));
        }
        if opts.a2a_session_ttl_ms.is_some() {
            return Err(ServiceError::new(
                "--session-ttl needs --a2a: it expires the sessions of A2A contexts (hint: `dispatch session prune --until 24h` for other sessions)",
            ));
        }
        return Ok(None);
    }
    if opts.a2a_session_ttl_ms == Some(0) {
        return Err(ServiceError::new(
            "--session-ttl must be longer than zero (hint: --session-ttl 24h)",
        ));
    }
    let Some(policy) = listen else {
        return Err(ServiceError::new(
            "--a2a needs an address to listen on (hint: add --listen 127.0.0.1:8080, or LISTEN in the Agentfile)",
        ));
    };
    if policy.signature.is_some() {
        return Err(ServiceError::new(
            "--a2a cannot take LISTEN_SIGNATURE: A2A clients do not sign their requests (hint: use LISTEN_SECRET or --listen-shared-secret, which A2A clients send as `Authorization: Bearer`)",
        ));
    }
    if !policy.methods.is_empty() {
        return Err(ServiceError::new(
            "--a2a serves GET (the agent card) and POST (JSON-RPC) itself (hint: drop LISTEN_METHOD / --listen-method)",
        ));
    }
    if let Some(url) = &opts.a2a_url {
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(ServiceError::new(format!(
                    "--a2a-url `{url}` is not an http(s) URL (hint: --a2a-url https://agents.example.com/planner)"
                )));
            }
        }
    }
    Ok(Some(super::model::A2aServe {
        url: opts.a2a_url.clone(),
        session_ttl_ms: opts.a2a_session_ttl_ms,
    }))
}

/// The hex SHA-256 of a shared secret: all that is ever stored of it.
pub fn secret_sha256(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Where a cluster service's webhook is served: `/hooks/<name>`, followed by
/// the listen path (any path when it has none).
pub fn hook_base(name: &str) -> String {
    format!("/hooks/{name}")
}

/// Checks a cluster service's name: it is part of its webhook's URL.
pub fn check_service_name(name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if ok {
        return Ok(());
    }
    Err(ServiceError::new(format!(
        "service name `{name}` is not usable in a URL (hint: 1 to 64 letters, digits, `-`, `_` or `.`, e.g. --name monitor-eu)"
    )))
}

/// As [`resolve`], for a service the cluster runs under `name`: its webhook
/// (when the Agentfile has LISTEN, or `--listen` / `--listen-path` is given)
/// is served by every server at [`hook_base`] (the listen address is not
/// used), and its shared secret is the SHA-256 `secret_sha256` the client
/// sent (the secret itself never leaves the client), else the one LISTEN_SECRET
/// names in the server's environment.
pub fn resolve_cluster(
    manifest: &Manifest,
    opts: &ServeOptions,
    name: &str,
    secret_sha256: Option<String>,
) -> Result<(ServiceConfig, Vec<ScheduleState>), ServiceError> {
    check_service_name(name)?;
    if let Some(d) = secret_sha256
        .as_deref()
        .filter(|d| d.len() != 64 || hex::decode(d).is_err())
    {
        return Err(ServiceError::new(format!(
            "listen_secret_sha256 `{d}` is not a hex SHA-256 (hint: 64 hex digits)"
        )));
    }
    let mut opts = opts.clone();
    let mut manifest = manifest.clone();
    let listens = opts.listen.is_some()
        || manifest.listen.is_some()
        || opts.listen_path.is_some()
        || secret_sha256.is_some();
    if listens {
        opts.listen = Some("127.0.0.1:0".into());
    }
    if secret_sha256.is_some() {
        opts.listen_shared_secret = None;
        if let Some(l) = manifest.listen.as_mut() {
            l.secret = None;
        }
    }
    let (mut config, timers) = resolve_unchecked(&manifest, &opts)?;
    if let Some(p) = config.listen.as_mut() {
        p.addr = hook_base(name);
        if let Some(d) = secret_sha256 {
            p.secret_sha256 = Some(d.to_ascii_lowercase());
            p.secret_source = Some("--listen-shared-secret".into());
        }
        check_not_open(p, &format!("`{}`", p.addr))?;
    }
    Ok((config, timers))
}

fn ingress_policy(
    manifest: &Manifest,
    opts: &ServeOptions,
) -> Result<Option<IngressPolicy>, ServiceError> {
    let file = manifest.listen.clone().unwrap_or_default();
    let addr = opts.listen.clone().or(file.addr.clone());
    let Some(addr) = addr else {
        let stray = opts.listen_path.is_some()
            || !opts.listen_methods.is_empty()
            || opts.listen_shared_secret.is_some()
            || opts.listen_max_body_bytes.is_some()
            || opts.listen_max_header_bytes.is_some()
            || opts.public;
        if stray {
            return Err(ServiceError::new(
                "--listen-* options need an address to listen on (hint: add --listen 127.0.0.1:8080, or LISTEN in the Agentfile)",
            ));
        }
        return Ok(None);
    };
    parse_listen_addr(&addr)?;
    let path = opts.listen_path.clone().or(file.path.clone());
    if let Some(p) = path.as_deref().filter(|p| !p.starts_with('/')) {
        return Err(ServiceError::new(format!(
            "listen path `{p}` must start with `/` (hint: --listen-path /{p})"
        )));
    }
    let mut methods: Vec<String> = Vec::new();
    for m in file.methods.iter().chain(&opts.listen_methods) {
        for m in m.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let upper = m.to_ascii_uppercase();
            if !METHODS.contains(&upper.as_str()) {
                return Err(ServiceError::new(format!(
                    "unknown HTTP method `{m}` (hint: one of {})",
                    METHODS.join(", ")
                )));
            }
            if !methods.contains(&upper) {
                methods.push(upper);
            }
        }
    }
    let (secret, source) = match (&opts.listen_shared_secret, &file.secret) {
        (Some(s), _) if s.is_empty() => {
            return Err(ServiceError::new(
                "--listen-shared-secret is empty (hint: pass a long random value, e.g. from `openssl rand -hex 32`)",
            ));
        }
        (Some(s), _) => (Some(s.clone()), Some("--listen-shared-secret".to_string())),
        (None, Some(name)) => {
            if !manifest.secrets.contains(name) {
                return Err(ServiceError::new(format!(
                    "LISTEN_SECRET names `{name}`, which is not a declared SECRET (hint: add `SECRET {name}` to the Agentfile)"
                )));
            }
            match std::env::var(name).ok().filter(|v| !v.is_empty()) {
                Some(v) => (Some(v), Some(format!("SECRET {name}"))),
                None => {
                    return Err(ServiceError::new(format!(
                        "LISTEN_SECRET names `{name}`, which is not set (hint: export {name}=... before `dispatch serve`)"
                    )));
                }
            }
        }
        (None, None) => (None, None),
    };
    if let Some(sig) = &file.signature {
        if !manifest.secrets.contains(&sig.secret) {
            return Err(ServiceError::new(format!(
                "LISTEN_SIGNATURE names `{}`, which is not a declared SECRET (hint: add `SECRET {}` to the Agentfile)",
                sig.secret, sig.secret
            )));
        }
        super::signature::Verifier::from_env(sig).map_err(ServiceError::new)?;
    }
    Ok(Some(IngressPolicy {
        addr,
        path,
        methods,
        secret_sha256: secret.map(|s| hex::encode(Sha256::digest(s.as_bytes()))),
        secret_source: source,
        signature: file.signature.clone(),
        public: opts.public,
        max_body_bytes: opts
            .listen_max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(DEFAULT_MAX_BODY_BYTES),
        max_header_bytes: opts
            .listen_max_header_bytes
            .or(file.max_header_bytes)
            .unwrap_or(DEFAULT_MAX_HEADER_BYTES),
    }))
}

/// An IP address with a port; `localhost:<port>` means 127.0.0.1.
pub fn parse_listen_addr(addr: &str) -> Result<SocketAddr, ServiceError> {
    let bad = || {
        ServiceError::new(format!(
            "cannot listen on `{addr}`: expected an IP address with a port (hint: --listen 127.0.0.1:8080, or port 0 for any free port)"
        ))
    };
    if let Some(port) = addr.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    addr.parse().map_err(|_| bad())
}

/// Refuses an address another process already listens on (port 0 always
/// finds a free port).
pub(super) fn check_port_free(addr: &str) -> Result<(), ServiceError> {
    let sock = parse_listen_addr(addr)?;
    if sock.port() == 0 {
        return Ok(());
    }
    TcpListener::bind(sock).map(drop).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::AddrInUse {
            "address already in use".to_string()
        } else {
            e.to_string()
        };
        ServiceError::new(format!(
            "cannot listen on {addr}: {why} (hint: pick another port, or port 0 for any free port)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: Value) -> Manifest {
        let mut m = serde_json::json!({
            "schema": 1, "courier": "process", "name": "svc", "entrypoint": "heartbeat",
            "command": ["true"], "files": [], "secrets": ["HOOK"]
        });
        if let (Some(o), Some(e)) = (m.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(m).expect("a valid manifest")
    }

    fn opts() -> ServeOptions {
        ServeOptions {
            max_concurrent: 4,
            max_pending: 10,
            ..ServeOptions::default()
        }
    }

    #[test]
    fn the_plain_interval_applies_only_without_schedules_and_listeners() {
        let (c, t) = resolve(&manifest(Value::Null), &opts()).expect("ok");
        assert_eq!(c.interval_ms, Some(DEFAULT_INTERVAL_MS));
        assert_eq!(t.len(), 1);
        let cron = manifest(serde_json::json!({"schedules": ["*/5 * * * * *"]}));
        let (c, t) = resolve(&cron, &opts()).expect("ok");
        assert_eq!((c.interval_ms, t.len()), (None, 1));
        let both = ServeOptions {
            interval_ms: Some(250),
            schedules: vec!["*/5 * * * * *".into(), "0 0 * * *".into()],
            ..opts()
        };
        let (c, t) = resolve(&cron, &both).expect("ok");
        assert_eq!(c.interval_ms, Some(250));
        assert_eq!(t.len(), 3, "duplicates merged, interval added: {t:?}");
        let off = ServeOptions {
            interval_ms: Some(0),
            ..opts()
        };
        let (c, t) = resolve(&manifest(Value::Null), &off).expect("ok");
        assert_eq!((c.interval_ms, t.len()), (None, 0));
    }

    #[test]
    fn flags_override_the_agentfile_listen_policy_and_methods_merge() {
        let m = manifest(serde_json::json!({"listen": {
            "addr": "127.0.0.1:0", "path": "/a", "methods": ["POST"],
            "max_body_bytes": 10
        }}));
        let o = ServeOptions {
            listen_path: Some("/b".into()),
            listen_methods: vec!["post".into(), "put,PATCH".into()],
            listen_shared_secret: Some("s3cret".into()),
            ..opts()
        };
        let (c, _) = resolve(&m, &o).expect("ok");
        let p = c.listen.clone().expect("a listener");
        assert_eq!(p.path.as_deref(), Some("/b"));
        assert_eq!(p.methods, vec!["POST", "PUT", "PATCH"]);
        assert_eq!(p.max_body_bytes, 10);
        assert_eq!(p.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
        let digest = p.secret_sha256.expect("a digest");
        assert_eq!(digest, hex::encode(Sha256::digest(b"s3cret")));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "never the secret itself"
        );
        assert_eq!(c.max_concurrent, 1, "queue runs one at a time");
    }
}
