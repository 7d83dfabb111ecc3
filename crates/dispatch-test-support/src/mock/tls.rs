//! The mock over TLS ([`super::MockServer::start_tls_on`]): each connection's
//! handshake in a task of its own (a slow client holds up no other), then
//! HTTP/2 or HTTP/1.1 as the client chose by ALPN, until the mock stops.

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::server::Inner;

/// Accepts on `listener` until the mock stops ([`Inner::stopping`]); every
/// connection also ends then. Each allows `streams` at once (`None`: any).
pub(super) async fn serve(
    listener: TcpListener,
    config: rustls::ServerConfig,
    app: Router,
    inner: Arc<Inner>,
    streams: Option<u32>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let accepting = async {
        while let Ok((tcp, _)) = listener.accept().await {
            // Small writes (one event each) leave at once, not after Nagle's wait.
            let _ = tcp.set_nodelay(true);
            let (acceptor, app) = (acceptor.clone(), app.clone());
            let stopping = inner.stopping();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut builder = Builder::new(TokioExecutor::new());
                // A worker multiplexes its calls on a connection: no cap on
                // them unless one was asked for (hyper's default is 200).
                builder.http2().max_concurrent_streams(streams);
                let service = TowerToHyperService::new(app);
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                tokio::select! {
                    _ = conn => {}
                    _ = stopping => {}
                }
            });
        }
    };
    tokio::select! {
        _ = accepting => {}
        _ = inner.stopping() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use dispatch_http::{ExtraCa, reqwest};
    use serde_json::json;

    use crate::mock::{MockServer, Script, Step};

    /// Over TLS the mock speaks HTTP/2 to the workspace's client (which
    /// offers `h2` by ALPN, as to the providers), and the client trusts it
    /// only with its CA.
    #[tokio::test]
    async fn serves_http2_by_alpn_to_a_client_trusting_its_ca() {
        let steps = vec![Step::text("over h2")];
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let mock = MockServer::start_tls_on(addr, Script::with_steps(steps))
            .await
            .expect("the mock listens");
        assert!(mock.base_url().starts_with("https://127.0.0.1:"));
        let ca = mock.ca_pem().expect("a TLS mock has a CA");
        let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
        let url = format!("{}/chat/completions", mock.base_url());
        // Without the CA, the certificate is refused.
        let plain = dispatch_http::builder_with("test", ExtraCa::File(None))
            .expect("builds")
            .build()
            .expect("builds");
        assert!(plain.post(&url).json(&body).send().await.is_err());
        let client = dispatch_http::builder_with("test", ExtraCa::File(Some(&ca)))
            .expect("builds")
            .build()
            .expect("builds");
        let response = client
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        let answer = response.text().await.expect("a body");
        assert!(answer.contains("over h2"), "{answer}");
        assert_eq!(mock.request_count(), 1);
    }
}
