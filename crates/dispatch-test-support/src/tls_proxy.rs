//! A TLS-terminating proxy on loopback: `https://127.0.0.1:PORT` in front of
//! a plain-HTTP server (a `dispatch server`, the mock model), with a CA made
//! for the test (rcgen) whose PEM file a client is handed (`--cacert`,
//! `DISPATCH_CACERT`). It proves the clients' TLS end to end without
//! touching the servers.
//!
//! Its own runtime on its own thread, so a plain test can use it; it stops
//! when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub struct TlsProxy {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl TlsProxy {
    /// Listens on an ephemeral loopback port, serves TLS with a certificate
    /// for `127.0.0.1` and `localhost` signed by a fresh CA, and forwards the
    /// decrypted bytes to `upstream`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<TlsProxy> {
        let dir = tempfile::tempdir()?;
        // The upstreams speak HTTP/1.1 (the mock model, the API server).
        let config =
            certificates(dir.path(), &[b"http/1.1".to_vec()]).map_err(std::io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("tls-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept(listener, acceptor, upstream) => {}
                    }
                });
            })?;
        Ok(TlsProxy {
            addr,
            dir,
            _stop: stop,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The PEM file of the CA that signed the proxy's certificate.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

async fn accept(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, upstream: SocketAddr) {
    while let Ok((client, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // A client that refuses the certificate ends the handshake: fine.
            let Ok(mut tls) = acceptor.accept(client).await else {
                return;
            };
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
        });
    }
}

/// Writes `ca.pem` into `dir`; the server configuration with a certificate
/// for 127.0.0.1 and localhost that the CA signed, offering `alpn`.
pub(crate) fn certificates(dir: &Path, alpn: &[Vec<u8>]) -> Result<rustls::ServerConfig, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let ca_key = KeyPair::generate().map_err(|x| e(&x))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|x| e(&x))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).map_err(|x| e(&x))?;
    let key = KeyPair::generate().map_err(|x| e(&x))?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(|x| e(&x))?;
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .map_err(|x| e(&x))?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).map_err(|x| e(&x))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|x| e(&x))?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(|x| e(&x))?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}
