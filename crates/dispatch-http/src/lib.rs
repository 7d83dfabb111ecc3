//! Dispatch's one HTTP client: every outbound request of the workspace —
//! model providers, MCP servers, A2A and HTTP tools, callbacks, dependency
//! probes, the OTLP exporter, the CLI's remote mode — goes through a
//! `reqwest` client built here (the object store builds its own `reqwest`
//! client from its options; it is the same `reqwest`, with [`install_ring`]).
//!
//! What every client gets from [`builder`]:
//! - TLS through rustls with the ring provider (no aws-lc, no OpenSSL);
//! - the Mozilla roots compiled in (webpki-roots: the same in a container
//!   without `/etc/ssl`), plus the PEM certificates of `SSL_CERT_FILE`
//!   when it is set and readable, plus those of [`CA_ENV`]
//!   (`DISPATCH_CACERT`) — a file that cannot be used there is an error;
//! - ALPN `h2` and `http/1.1`;
//! - a user agent and a connect timeout ([`CONNECT_TIMEOUT`]);
//! - proxies from `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`, as reqwest
//!   reads them (a caller may turn them off: callbacks do).
//!
//! The caller adds what is its own (redirect policy, read timeouts, a DNS
//! resolver) on the returned builder. [`blocking`] runs requests for callers
//! that are plain functions, whatever runtime they are in. [`h2`] holds the
//! direct HTTP/2 connections model calls use, with the same TLS (a call
//! waiting on its answer then holds its stream's, not reqwest's futures).
//!
//! A crate of its own rather than a module of the lowest crate every user
//! depends on (that would be `dispatch-agent`, which the API client and the
//! CLI's remote mode have no use for; `dispatch-core` stays free of I/O):
//! a leaf that depends on no dispatch crate, so `dispatch-test-support` —
//! which may depend on no production crate — builds its requests here too.

pub mod blocking;
pub mod h2;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use reqwest;

/// The environment variable naming a PEM file of CA certificates trusted
/// beside the built-in roots, by every client of the process (the CLI's
/// `--cacert` is the same for its server client).
pub const CA_ENV: &str = "DISPATCH_CACERT";

/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a client cannot be built (one line).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "cannot use the CA certificates in {path}: {reason} (hint: {CA_ENV} and --cacert take a PEM file)"
    )]
    CaFile { path: PathBuf, reason: String },
    #[error("the HTTP client cannot be built: {0}")]
    Build(#[source] reqwest::Error),
    #[error("TLS cannot be set up: {0}")]
    Tls(#[source] rustls::Error),
}

/// Where the extra CA certificates come from.
#[derive(Clone, Copy, Debug)]
pub enum ExtraCa<'a> {
    /// [`CA_ENV`], when set and not empty.
    FromEnv,
    /// This file (the CLI's `--cacert`, which clap already took from the
    /// environment when the flag is absent), or none.
    File(Option<&'a Path>),
}

impl ExtraCa<'_> {
    fn path(self) -> Option<PathBuf> {
        match self {
            ExtraCa::FromEnv => std::env::var_os(CA_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            ExtraCa::File(path) => path.map(Path::to_path_buf),
        }
    }
}

/// A client builder with the workspace's TLS, user agent (`dispatch/VERSION`
/// or `dispatch-PURPOSE/VERSION`), connect timeout and proxies; extra CAs
/// from [`CA_ENV`].
pub fn builder(purpose: &str) -> Result<reqwest::ClientBuilder, HttpError> {
    builder_with(purpose, ExtraCa::FromEnv)
}

/// [`builder`] with the extra CAs from `ca`.
pub fn builder_with(purpose: &str, ca: ExtraCa<'_>) -> Result<reqwest::ClientBuilder, HttpError> {
    let tls = tls_config(ca)?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(user_agent(purpose))
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true))
}

/// A client as [`builder`] makes it, with nothing added.
pub fn client(purpose: &str) -> Result<reqwest::Client, HttpError> {
    builder(purpose)?.build().map_err(HttpError::Build)
}

/// A client that always builds: [`builder`]'s without the extra CA file
/// (for a request that is only looked at, not sent, and as the fallback of
/// a caller that reports the CA file's problem its own way).
pub fn fallback() -> reqwest::Client {
    install_ring();
    builder_with("", ExtraCa::File(None))
        .and_then(|b| b.build().map_err(HttpError::Build))
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// `dispatch/0.1.0`, or `dispatch-callback/0.1.0` for purpose `callback`.
pub fn user_agent(purpose: &str) -> String {
    let version = env!("CARGO_PKG_VERSION");
    match purpose {
        "" => format!("dispatch/{version}"),
        p => format!("dispatch-{p}/{version}"),
    }
}

/// Installs ring as the process's rustls provider (once; later calls and a
/// provider installed before are left alone), for `reqwest` clients built
/// elsewhere (the object store's) with reqwest's own TLS setup.
pub fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The rustls client configuration of [`builder`]: ring, TLS 1.2 and 1.3,
/// the built-in roots, `SSL_CERT_FILE`'s and `ca`'s.
pub fn tls_config(ca: ExtraCa<'_>) -> Result<rustls::ClientConfig, HttpError> {
    install_ring();
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // The OpenSSL convention some hosts set for a corporate CA: honoured
    // when usable, never fatal (it may name a bundle of another format).
    if let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty())
        && let Ok(certs) = read_pem(Path::new(&file))
    {
        roots.add_parsable_certificates(certs);
    }
    if let Some(path) = ca.path() {
        let certs = read_pem(&path).map_err(|reason| HttpError::CaFile {
            path: path.clone(),
            reason,
        })?;
        for cert in certs {
            roots.add(cert).map_err(|e| HttpError::CaFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(HttpError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates of a PEM file; at least one.
fn read_pem(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("it holds no CERTIFICATE block".into());
    }
    Ok(certs)
}

/// The rustls error somewhere in `e`'s sources (a refused certificate, a
/// failed handshake). hyper wraps it in an I/O error inside an I/O error,
/// and an I/O error's `source` skips the error it holds: those are looked
/// into.
pub fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner: Option<&(dyn std::error::Error + 'static)> =
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                io.get_ref().map(|i| i as _)
            } else {
                None
            };
        if let Some(tls) = inner.and_then(rustls_error) {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_builds_without_a_provider_installed_by_the_caller() {
        client("test").expect("the built-in roots always build");
        assert_eq!(
            user_agent(""),
            format!("dispatch/{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn a_bad_ca_file_is_one_line_naming_it_and_the_variable() {
        let dir = std::env::temp_dir().join(format!("dispatch-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        for path in [junk.clone(), dir.join("missing.pem")] {
            let e = builder_with("", ExtraCa::File(Some(&path))).expect_err("refused");
            let line = e.to_string();
            assert!(line.contains(&path.display().to_string()), "{line}");
            assert!(line.contains(CA_ENV) && !line.contains('\n'), "{line}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
