use dispatch_core::RunId;

/// The store's own errors. A driver error never crosses the trait.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no run matches `{0}` (hint: `dispatch ps -a` lists runs)")]
    NotFound(String),
    #[error("`{prefix}` matches {count} runs ({examples}); give more characters of the id")]
    Ambiguous {
        prefix: String,
        count: usize,
        examples: String,
    },
    #[error("run {id} changed while we were updating it (expected version {expected})")]
    Conflict { id: RunId, expected: i64 },
    /// A worker wrote with a fencing token that is no longer the run's: its
    /// lease expired and the run was returned to the queue or claimed again.
    #[error(
        "run {id} is no longer held by this worker (fencing token {fence} is stale); the write was refused"
    )]
    Fenced { id: RunId, fence: i64 },
    /// A claim of a run whose concurrency key has no slot free (it stays
    /// queued and waits its turn).
    #[error(
        "run {id} waits for a slot of concurrency key `{key}` (at most {max} live at once, oldest first)"
    )]
    ConcurrencyLimited { id: RunId, key: String, max: u32 },
    /// A claim of a run whose project is at its live-run cap (it stays
    /// queued until a live run of the project ends or the cap is raised).
    #[error("run {id} waits: project quota, {why} in project `{project}` (hint: {hint})")]
    QuotaLimited {
        id: RunId,
        project: String,
        /// `10/10 live runs`, `tokens_per_day 2000000/2000000 …`.
        why: String,
        hint: String,
    },
    /// A new run refused: its project is over a hard limit whose action
    /// is `refuse`.
    #[error("project `{project}` is over its quota {limit}: {used} used of {value} (hint: {hint})")]
    QuotaExceeded {
        project: String,
        limit: dispatch_core::quota::QuotaLimit,
        /// With its unit: `2100000 tokens today (UTC)`.
        used: String,
        value: String,
        hint: String,
    },
    #[error("run {id} is {status}; {hint}")]
    InvalidState {
        id: RunId,
        status: dispatch_core::Status,
        hint: &'static str,
    },
    #[error(
        "the run database {path} is locked by another process (hint: retry, or raise DISPATCH_BUSY_TIMEOUT_MS)"
    )]
    Locked { path: String },
    #[error(
        "session `{session}` is in use by run {run} (hint: wait for that run to end, or bind another --session)"
    )]
    SessionBusy { session: String, run: RunId },
    #[error("session `{key}` changed while this turn ran (expected version {expected})")]
    SessionConflict { key: String, expected: i64 },
    #[error(
        "invalid session key `{key}` (hint: a session key is 1 to 512 characters, without NUL)"
    )]
    InvalidSession { key: String },
    #[error(
        "run {run} has no approval `{id}` (hint: `dispatch approvals ls` lists pending approvals)"
    )]
    ApprovalNotFound { run: RunId, id: String },
    #[error("{}", already_decided(run, id, decision))]
    AlreadyDecided {
        run: RunId,
        id: String,
        decision: String,
    },
    /// An append to a run's stored log was not at its end: another writer
    /// (a worker that took the run over) appended in between.
    #[error(
        "the stored log of run {id} is {length} bytes long, not {offset}; another worker appended to it"
    )]
    LogMoved { id: RunId, offset: u64, length: u64 },
    /// A cluster service is already served under this name (`/hooks/<name>/…`).
    #[error(
        "service `{name}` is already running in the cluster as run {run} (hint: `dispatch stop {run}` first, or pick another name with --name)"
    )]
    ServiceNameTaken { name: String, run: RunId },
    /// An object kept in the database would be larger than it takes
    /// ([`crate::MAX_BLOB`]).
    #[error(
        "an object of {size} bytes or more is over the {limit}-byte limit of objects kept in the run database (upload {upload}) (hint: give every server and worker an object store of its own with --artifacts URL for large volumes)"
    )]
    BlobTooLarge {
        upload: String,
        size: u64,
        limit: u64,
    },
    /// A part or a commit of an upload that is not (or no longer) there:
    /// never begun, committed already, aborted, or expired as abandoned.
    #[error(
        "upload {upload} of an object is not in the run database (it was committed, aborted or expired as abandoned); start the upload again"
    )]
    UploadGone { upload: String },
    /// The database cannot be reached or lost the connection (a restart, a
    /// network cut, no connection to be had): the same call may succeed later.
    #[error("the run database {path} is unavailable: {message}")]
    Unavailable { path: String, message: String },
    /// The database answered and refused the statement (a constraint it
    /// enforces): the same call fails the same way, so it is not retried and
    /// does not mean the database is out of reach.
    #[error("the run database {path} refused the change: {message}")]
    Refused { path: String, message: String },
    #[error("the run database {path} holds data this version cannot read: {message}")]
    Corrupt { path: String, message: String },
    /// SQLite found the file itself damaged (not a value it cannot decode):
    /// what it still holds can be recovered into a new file.
    #[error(
        "the run database {path} is damaged: {message} (hint: stop every dispatch that uses it and keep a copy of it and its -wal file; `sqlite3 {path} .dump | sqlite3 <new file>` rebuilds what it still holds, `.recover` where `.dump` stops; then put the new file in its place)"
    )]
    Damaged { path: String, message: String },
    #[error(
        "the run database {path} was written by a newer dispatch (schema version {found}, this dispatch knows up to {supported}) (hint: upgrade dispatch)"
    )]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// `approval … was already decided: approve`; one that ended with its run
/// says it was cancelled, and why nothing can decide it.
fn already_decided(run: &RunId, id: &str, decision: &str) -> String {
    match decision {
        crate::reliability::ENDED_DECISION => format!(
            "approval `{id}` of run {run} was cancelled: the run ended before a decision, so there is nothing left to approve or deny"
        ),
        _ => format!("approval `{id}` of run {run} was already decided: {decision}"),
    }
}
