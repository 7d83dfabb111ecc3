//! The mock over TLS ([`super::MockServer::start_tls_on`]): each connection's
//! handshake in a task of its own (a slow client holds up no other), then
//! HTTP/2 or HTTP/1.1 as the client chose by ALPN, until the mock stops.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Accepts on `listener` until `stopping` resolves; every connection also
/// ends then.
pub(super) async fn serve(
    listener: TcpListener,
    config: rustls::ServerConfig,
    app: Router,
    stopping: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let accepting = async {
        while let Ok((tcp, _)) = listener.accept().await {
            // Small writes (one event each) leave at once, not after Nagle's wait.
            let _ = tcp.set_nodelay(true);
            let (acceptor, app) = (acceptor.clone(), app.clone());
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut builder = Builder::new(TokioExecutor::new());
                // A worker multiplexes all its calls on one connection: no
                // cap on them (hyper's default is 200).
                builder.http2().max_concurrent_streams(None);
                let service = TowerToHyperService::new(app);
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                tokio::select! {
                    _ = conn => {}
                    _ = stop.changed() => {}
                }
            });
        }
    };
    tokio::select! {
        _ = accepting => {}
        _ = stopping => {}
    }
    drop(stop_tx);
}
