//! `dispatch server --tls-cert PEM --tls-key PEM`: HTTPS with rustls (the
//! other way is a TLS-terminating proxy in front of a plain server). This
//! module reads the certificate and key; [`crate::limits::serve`] runs each
//! connection's handshake on its own task under the header timeout, inside
//! the connection cap, so a client that connects and says nothing holds up
//! no one else. Failed handshakes (a plain HTTP client, an untrusted
//! certificate on the client's side) are logged at debug level and dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
