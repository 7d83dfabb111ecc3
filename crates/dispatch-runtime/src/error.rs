use std::path::PathBuf;

use dispatch_core::parcel::ParcelError;
use dispatch_store::StoreError;

/// What can go wrong in the runtime, said so the user knows what to do.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Parcel(#[from] ParcelError),
    #[error(
        "`{0}` is neither a directory with an Agentfile nor a built parcel (hint: `dispatch images` lists parcels)"
    )]
    UnknownParcel(String),
    #[error("`{reference}` matches {count} parcels; give more characters of the digest")]
    AmbiguousParcel { reference: String, count: usize },
    #[error(
        "secret {0} is declared by the Agentfile but not set (hint: export {0}=... before dispatching)"
    )]
    MissingSecret(String),
    /// `RESOURCES` the machine cannot give (the line says which).
    #[error("{0}")]
    Resources(String),
    #[error("cannot dispatch this native agent: {0}")]
    Agent(String),
    #[error("run {id} is already {status}; there is nothing to stop")]
    AlreadyFinished {
        id: String,
        status: dispatch_core::Status,
    },
    #[error("run {id} is already {status}; a signal goes only to a run that has not ended")]
    Ended {
        id: String,
        status: dispatch_core::Status,
    },
    #[error(transparent)]
    Dependency(#[from] crate::probe::ProbeError),
    #[error(
        "invalid session name `{0}` (hint: use letters, digits, `.`, `_` or `-`, e.g. --session support-42)"
    )]
    BadSession(String),
    /// A concurrency key that cannot be had (a payload without the
    /// CONCURRENCY KEY path, a bad override).
    #[error("{0}")]
    Concurrency(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Service(#[from] crate::service::ServiceError),
    #[error("could not start the helper process ({0}): {1}")]
    Spawn(PathBuf, #[source] std::io::Error),
    /// A decision that cannot be taken (edited arguments that fail the
    /// tool's schema, or given with a denial); nothing was recorded.
    #[error("{0}")]
    BadDecision(String),
    /// The policy refused the run, or could not be loaded (fail closed).
    #[error("{0}")]
    Policy(String),
}

pub type RuntimeResult<T> = Result<T, RuntimeError>;

/// Wraps an I/O error with what we were doing and where.
pub(crate) fn io(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.into();
    move |source| RuntimeError::Io { what, path, source }
}
