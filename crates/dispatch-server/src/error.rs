use std::net::SocketAddr;

use dispatch_store::StoreError;

/// What stops a server or worker from running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr} (hint: is another server running there? pass --listen)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    /// The artifact store cannot be used (the line says why).
    #[error("{0}")]
    Artifacts(String),
    /// Another live worker holds the name (the line says which).
    #[error("{0}")]
    NameTaken(String),
    /// An HTTP client cannot be built (`DISPATCH_CACERT`; the line says why).
    #[error(transparent)]
    Http(#[from] dispatch_http::HttpError),
    #[error("cannot handle signals")]
    Signals(#[source] std::io::Error),
}

pub type ServerResult<T> = Result<T, ServerError>;
