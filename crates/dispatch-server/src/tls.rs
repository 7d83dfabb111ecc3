//! `dispatch server --tls-cert PEM --tls-key PEM`: HTTPS with rustls, as a
//! layer over whatever listener accepts the TCP connections (the other way
//! is a TLS-terminating proxy in front of a plain server).
//!
//! Handshakes run concurrently, each on its own task with a deadline, so a
//! client that connects and says nothing holds up no one else; only
//! finished handshakes reach the HTTP server. Failed handshakes (a plain
//! HTTP client, an untrusted certificate on the client's side) are logged
//! at debug level and dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the HTTP server to take them.
const READY: usize = 64;

/// Why the certificate or key cannot be used (one line).
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot use {path} as the server's TLS {what}: {reason} (hint: --tls-cert takes a PEM certificate chain, --tls-key its PEM private key)"
)]
pub struct TlsError {
    what: &'static str,
    path: PathBuf,
    reason: String,
}

/// The server's certificate chain and key, as PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads both files into a rustls configuration (ring, TLS 1.2 and 1.3,
    /// HTTP/1.1 by ALPN).
    pub fn config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let bad = |what, path: &Path, reason: String| TlsError {
            what,
            path: path.to_path_buf(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad("certificate", &self.cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(bad(
                "certificate",
                &self.cert,
                "it holds no CERTIFICATE block".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| bad("key", &self.key, e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("certificate", &self.cert, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad("key", &self.key, e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A listener whose connections have finished a TLS handshake.
pub struct TlsListener<L: Listener> {
    ready: mpsc::Receiver<(TlsStream<L::Io>, L::Addr)>,
    local: L::Addr,
    accepting: JoinHandle<()>,
}

impl<L> TlsListener<L>
where
    L: Listener,
    L::Addr: Clone + Sync + std::fmt::Debug + 'static,
{
    /// TLS over `inner`'s connections.
    pub fn new(mut inner: L, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = inner.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(READY);
        let accepting = tokio::spawn(async move {
            loop {
                let (io, addr) = inner.accept().await;
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(io)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {addr:?} failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {addr:?} timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl<L: Listener> Drop for TlsListener<L> {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl<L> Listener for TlsListener<L>
where
    L: Listener,
    L::Addr: Clone + Sync + 'static,
{
    type Io = TlsStream<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accepting task ended (it only does when aborted, or if it
            // panicked): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local.clone())
    }
}

/// The API and dashboard, as `axum::serve` takes them.
pub type App =
    axum::extract::connect_info::IntoMakeServiceWithConnectInfo<axum::Router, std::net::SocketAddr>;

/// Serves `app` on `listener` until `stop` completes: over TLS when `tls`
/// is set, else plain HTTP.
pub fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: App,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<futures_util::future::BoxFuture<'static, std::io::Result<()>>> {
    use axum::serve::ListenerExt;
    use futures_util::FutureExt;
    Ok(match tls {
        None => axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .into_future()
            .boxed(),
        Some(config) => {
            // `tap_io`: axum hands a connection's address to the handlers
            // (ConnectInfo) for any listener wrapped in it.
            let listener = TlsListener::new(listener, config)?.tap_io(|_| {});
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .into_future()
                .boxed()
        }
    })
}
