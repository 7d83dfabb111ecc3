//! `dispatch server` and `dispatch worker`: the cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use dispatch_runtime::objects::{self, Objects};
use dispatch_runtime::retention::RetentionSpec;
use dispatch_server::bus::BusConfig;
use dispatch_server::otel::{Tracer, traces_url};
use dispatch_server::retention::Retention;
use dispatch_server::serve::{Backend, DEFAULT_LISTEN, Server, shutdown_signal, work_as};
use dispatch_server::tls::TlsFiles;
use dispatch_server::worker::{WorkerConfig, default_name};

use super::http_args::HttpArgs;
use super::server_log::LogArgs;
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult, chain};

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The address to serve the API on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// A PostgreSQL URL (postgres://user@host:port/db); default: the local database.
    #[arg(long, env = "DISPATCH_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// In-process worker slots (0: only serve the API).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub workers: usize,
    /// Labels of the in-process workers, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// CPU cores the in-process workers offer to runs' `RESOURCES CPUS` (default: the machine's).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Memory the in-process workers offer to runs' `RESOURCES MEMORY`, like 8G (default: the machine's).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Signs completion callbacks (HMAC-SHA256); runs may ask for a callback only when set.
    #[arg(
        long,
        env = "DISPATCH_CALLBACK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub callback_secret: Option<String>,
    /// Let runs' callback_url name loopback, link-local (169.254.0.0/16, fe80::/10),
    /// unspecified and cloud metadata addresses; refused by default (SSRF).
    #[arg(long, env = "DISPATCH_ALLOW_PRIVATE_CALLBACKS")]
    pub allow_private_callbacks: bool,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); default: plain
    /// HTTP (put a TLS-terminating proxy in front, or use this).
    #[arg(
        long,
        env = "DISPATCH_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "DISPATCH_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// Bus mode: announce new runs on this Redis (redis://host:port) stream.
    #[arg(long, env = "DISPATCH_BUS_URL", value_name = "URL")]
    pub bus: Option<String>,
    /// Keep model rate buckets (RATE_LIMIT) in this Redis (redis://host:port)
    /// instead of the database; every worker of the cluster must use the same.
    #[arg(long, env = "DISPATCH_RATE_LIMIT_STORE", value_name = "URL")]
    pub rate_limit_store: Option<String>,
    /// Require a bearer token (`dispatch token create`) even on a loopback address;
    /// always required on other addresses.
    #[arg(long)]
    pub require_auth: bool,
    /// Delete old finished runs: KEY=AGE, comma-separated, where KEY is a
    /// finished status (succeeded, failed, timed_out, cancelled, stopped),
    /// `finished` (every one not named) or `events` (only the events of runs
    /// finished that long ago), e.g. succeeded=7d,failed=30d,events=90d.
    /// Default: nothing is deleted.
    #[arg(long, env = "DISPATCH_RETENTION", value_name = "SPEC")]
    pub retention: Option<String>,
    /// How often retention looks for what to delete, like 10m or 1h.
    #[arg(long, value_name = "AGE", default_value = "10m")]
    pub retention_interval: String,
    /// How long a request that creates a run (POST /v1/runs, replays) waits
    /// out a database it lost (a restart, a cut connection) before it
    /// answers 503 with Retry-After, like 10s or 1m; 0s answers at once.
    #[arg(long, value_name = "AGE", default_value = "10s")]
    pub enqueue_retry: String,
    /// How long a run the policy sends to review waits for a person, like
    /// 24h: nobody decided by then, it is cancelled, saying so, and the
    /// approvers are notified (`review.expired`). Default: until decided.
    #[arg(long, env = "DISPATCH_REVIEW_TIMEOUT", value_name = "AGE")]
    pub review_timeout: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub otel: OtelArgs,
    #[command(flatten)]
    pub artifacts: ArtifactsArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args)]
pub struct OtelArgs {
    /// Export a trace of every finished run (run → attempts → steps, model
    /// and tool calls) over OTLP HTTP/protobuf to this base URL
    /// (`/v1/traces` is appended), e.g. http://127.0.0.1:4318. Default: off.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

impl OtelArgs {
    /// The traces URL, checked before anything starts (one line on error).
    fn url(&self) -> CliResult<Option<String>> {
        self.otlp_endpoint
            .as_deref()
            .filter(|e| !e.trim().is_empty())
            .map(|e| traces_url(e).map_err(|e| CliError::input(format!("--otlp-endpoint: {e}"))))
            .transpose()
    }

    fn tracer(
        url: Option<&str>,
        store: &dispatch_server::SharedStore,
        service: &'static str,
    ) -> CliResult<Option<Tracer>> {
        url.map(|u| Tracer::start(store.clone(), u, service).map_err(CliError::input))
            .transpose()
    }
}

#[derive(Debug, Args)]
pub struct ArtifactsArgs {
    /// The cluster's object store: file:///shared/dir, s3://bucket/prefix
    /// (credentials and endpoint from AWS_* variables), gs://bucket/prefix or
    /// az://container/prefix. Artifacts, finished runs' log archives, model-call
    /// records and parcels' DISPATCH_STATE_DIR go there; give every server and
    /// worker the same URL. Default on PostgreSQL: the database itself (every
    /// server serves what any worker wrote; at most 2 GiB an object: use a URL
    /// for big volumes). On SQLite: this process's .dispatch/.
    #[arg(long = "artifacts", env = "DISPATCH_ARTIFACTS_URL", value_name = "URL")]
    pub url: Option<String>,
}

impl ArtifactsArgs {
    /// Opens the store and checks it can be written (an object put and
    /// deleted): a store that cannot be used refuses the start.
    async fn open(&self) -> CliResult<Option<Arc<Objects>>> {
        let Some(url) = self.url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let objects = Objects::open(url).map_err(|e| CliError::input(chain(&e)))?;
        objects.probe().await.map_err(|e| {
            CliError::input(format!(
                "cannot use the artifact store {url}: {} (hint: check the URL, the credentials in AWS_* variables, and that the bucket or directory exists and is writable)",
                objects::chain(&e)
            ))
        })?;
        Ok(Some(Arc::new(objects)))
    }
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// A PostgreSQL URL (postgres://user@host:port/db); default: the local database.
    #[arg(long, env = "DISPATCH_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// How many runs at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub slots: usize,
    /// Affinity labels, comma-separated: runs that need labels go only to
    /// workers with all of them.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Bus mode: wake on this Redis (redis://host:port) stream's consumer group.
    #[arg(long, env = "DISPATCH_BUS_URL", value_name = "URL")]
    pub bus: Option<String>,
    /// Keep model rate buckets (RATE_LIMIT) in this Redis (redis://host:port)
    /// instead of the database; every worker of the cluster must use the same.
    #[arg(long, env = "DISPATCH_RATE_LIMIT_STORE", value_name = "URL")]
    pub rate_limit_store: Option<String>,
    /// CPU cores this worker offers to runs' `RESOURCES CPUS` (default: the machine's).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Memory this worker offers to runs' `RESOURCES MEMORY`, like 8G (default: the machine's).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// The worker's name, unique in the cluster (default: <host>-<pid>).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Admission control: claim no more runs while the worker's runtime is
    /// this far behind (0: off); the rest stay queued for other workers.
    #[arg(long, value_name = "MS", default_value_t = 250)]
    pub max_lag_ms: u64,
    #[command(flatten)]
    pub otel: OtelArgs,
    #[command(flatten)]
    pub artifacts: ArtifactsArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// How long a claim lasts without renewal (renewed every sixth of it).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub lease_ms: u64,
    /// On SIGTERM, how long runs in hand may take to finish before they go back to the queue.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub grace_period_ms: u64,
}

fn config(ctx: &Ctx, slots: usize, lease: &LeaseArgs) -> WorkerConfig {
    let mut config = WorkerConfig::new(ctx.layout.clone());
    config.slots = slots;
    config.lease = Duration::from_millis(lease.lease_ms.max(100));
    config.grace = Duration::from_millis(lease.grace_period_ms);
    config
}

/// What a worker offers (`dispatch worker`, or a server's in-process
/// workers): `--cpus` and `--memory`, else the machine's.
fn capacity(cpus: Option<f64>, memory: Option<&str>) -> CliResult<dispatch_store::Capacity> {
    use dispatch_runtime::limits::machine;
    let cpus = match cpus {
        Some(c) if c.is_finite() && c > 0.0 => c,
        Some(c) => {
            return Err(CliError::input(format!(
                "--cpus {c} is not a positive number of cores (hint: --cpus 2 or --cpus 0.5)"
            )));
        }
        None => machine::cores() as f64,
    };
    let memory_bytes = match memory {
        Some(m) => dispatch_core::units::parse_size(m).map_err(|_| {
            CliError::input(format!(
                "--memory `{m}` is not a size (hint: --memory 512M or --memory 8G)"
            ))
        })?,
        None => machine::memory_bytes().unwrap_or(u64::MAX),
    };
    Ok(dispatch_store::Capacity {
        cpus_milli: (cpus * 1000.0).round() as u64,
        memory_bytes,
    })
}

fn bus_config(url: Option<&str>) -> CliResult<Option<BusConfig>> {
    url.filter(|u| !u.is_empty())
        .map(BusConfig::from_url)
        .transpose()
        .map_err(fail)
}

/// `--rate-limit-store`: connected (and pinged) before anything starts.
async fn rate_store(
    url: Option<&str>,
) -> CliResult<Option<std::sync::Arc<dispatch_server::rates::RedisRates>>> {
    match url.filter(|u| !u.is_empty()) {
        None => Ok(None),
        Some(url) => dispatch_server::rates::RedisRates::connect(url)
            .await
            .map(|r| Some(std::sync::Arc::new(r)))
            .map_err(CliError::input),
    }
}

fn fail(e: impl std::error::Error) -> CliError {
    CliError::input(chain(&e))
}

/// `--retention` and `--retention-interval`, checked before anything starts.
fn retention(args: &ServerArgs) -> CliResult<Option<Retention>> {
    let Some(text) = args.retention.as_deref() else {
        return Ok(None);
    };
    let spec: RetentionSpec = text
        .parse()
        .map_err(|e| CliError::input(format!("--retention: {e}")))?;
    let interval = dispatch_core::time::parse_age(&args.retention_interval)
        .ok()
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            CliError::input(format!(
                "--retention-interval `{}` is not a positive duration (hint: 30s, 10m or 1h)",
                args.retention_interval
            ))
        })?;
    Ok(Some(Retention {
        spec,
        interval: Duration::from_millis(interval as u64),
    }))
}

/// `--enqueue-retry`, checked before anything starts.
fn enqueue_retry(args: &ServerArgs) -> CliResult<Duration> {
    dispatch_core::time::parse_age(&args.enqueue_retry)
        .ok()
        .and_then(|ms| u64::try_from(ms).ok())
        .map(Duration::from_millis)
        .ok_or_else(|| {
            CliError::input(format!(
                "--enqueue-retry `{}` is not a duration (hint: 10s, 1m, or 0s to answer 503 at once)",
                args.enqueue_retry
            ))
        })
}

/// `--review-timeout`, checked before anything starts.
fn review_timeout(args: &ServerArgs) -> CliResult<Option<Duration>> {
    let Some(text) = args
        .review_timeout
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    else {
        return Ok(None);
    };
    let ms = dispatch_runtime::review::parse_timeout("--review-timeout", text.trim())
        .map_err(CliError::input)?;
    Ok(Some(Duration::from_millis(ms.unsigned_abs())))
}

pub async fn server(ctx: &Ctx, args: &ServerArgs) -> CliResult {
    args.log.init()?;
    let retention = retention(args)?;
    let enqueue_retry = enqueue_retry(args)?;
    let review_timeout = review_timeout(args)?;
    // A notification file that does not load keeps the server from starting.
    let notifier = dispatch_notify::configured(ctx.layout.root()).map_err(CliError::input)?;
    let allowed_hosts = args.http.allowed_hosts()?;
    let limits = args.http.limits()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }
            .config()
            .map_err(|e| CliError::input(e.to_string()))?,
        ),
        _ => None,
    };
    let capacity = capacity(args.cpus, args.memory.as_deref())?;
    let traces = args.otel.url()?;
    let artifacts = args.artifacts.open().await?;
    let rates = rate_store(args.rate_limit_store.as_deref()).await?;
    let backend = Backend::open(&ctx.layout, args.database_url.as_deref(), 16)
        .await
        .map_err(fail)?;
    let shutdown = shutdown_signal().map_err(fail)?;
    let mut config = config(ctx, args.workers, &args.lease);
    config.labels = args.labels.clone();
    config.rates = rates;
    // In-process workers claim only runs that fit, like `dispatch worker`.
    config.capacity = Some(capacity);
    config.tracer = OtelArgs::tracer(traces.as_deref(), &backend.store, "dispatch-server")?;
    let server = Server::bind(args.listen, backend, ctx.layout.clone(), config)
        .await
        .map_err(fail)?
        .with_callback_secret(args.callback_secret.clone())
        .with_private_callbacks(args.allow_private_callbacks)
        .with_tls(tls)
        .with_required_auth(args.require_auth)
        .with_allowed_hosts(allowed_hosts.clone())
        .with_limits(limits)
        .with_bus(bus_config(args.bus.as_deref())?)
        .with_retention(retention.clone())
        .with_enqueue_retry(enqueue_retry)
        .with_review_timeout(review_timeout)
        .with_artifacts(artifacts.clone())
        .with_notifier(notifier.clone());
    let database = args.database_url.as_deref().map_or_else(
        || ctx.layout.db().display().to_string(),
        |_| "PostgreSQL".to_string(),
    );
    let auth = if server.requires_auth() {
        ", tokens required"
    } else {
        ""
    };
    let store = server
        .artifacts()
        .map_or_else(String::new, |o| format!(", artifacts in {}", o.url()));
    tracing::info!(
        addr = %server.addr(),
        "dispatch server listening on {}://{} ({database}, {} worker slot(s), capacity {} CPUs, {} memory{auth}{store})",
        server.scheme(),
        server.addr(),
        args.workers,
        capacity.cpus_milli as f64 / 1000.0,
        dispatch_core::units::format_size(capacity.memory_bytes)
    );
    if let Some(n) = &notifier {
        tracing::info!("notifications from {}", n.config().path.display());
    }
    if !server.addr().ip().is_loopback() && allowed_hosts.is_empty() {
        tracing::info!(
            "clients reach this server by IP address or localhost; name others with --allowed-host (or --allowed-host '*')"
        );
    }
    if let Some(url) = &traces {
        tracing::info!("traces: exporting finished runs to {url}");
    }
    if let Some(r) = &retention {
        tracing::info!(
            "retention: deleting {} (every {})",
            r.spec,
            dispatch_core::time::human_duration(r.interval.as_millis() as i64)
        );
    }
    let summary = server.run(shutdown).await.map_err(fail)?;
    if let Some(s) = summary {
        tracing::info!(
            "dispatch server stopped: {} run(s) finished, {} released to the queue",
            s.finished,
            s.released
        );
    }
    Ok(0)
}

/// The most database connections one `dispatch worker`'s pool opens; its
/// writer has 3 of its own on PostgreSQL (see `dispatch_server::writer`),
/// and its lease renewals 2.
const MAX_WORKER_CONNECTIONS: usize = 13;

pub async fn worker(ctx: &Ctx, args: &WorkerArgs) -> CliResult {
    args.log.init()?;
    let traces = args.otel.url()?;
    let artifacts = args.artifacts.open().await?;
    let rates = rate_store(args.rate_limit_store.as_deref()).await?;
    // Writes are short and batched: a few connections serve many slots, and
    // PostgreSQL's default max_connections (100) is shared by every worker.
    let connections = (args.slots + 2).min(MAX_WORKER_CONNECTIONS);
    let backend = Backend::open(&ctx.layout, args.database_url.as_deref(), connections)
        .await
        .map_err(fail)?;
    let shutdown = shutdown_signal().map_err(fail)?;
    let mut config = config(ctx, args.slots, &args.lease);
    config.name = args.name.clone().unwrap_or_else(default_name);
    config.tracer = OtelArgs::tracer(traces.as_deref(), &backend.store, "dispatch-worker")?;
    config.labels = args.labels.clone();
    config.rates = rates;
    config.max_lag = Duration::from_millis(args.max_lag_ms);
    config.stall = dispatch_server::worker::stall::Stall::from_env().map_err(CliError::input)?;
    let capacity = capacity(args.cpus, args.memory.as_deref())?;
    config.capacity = Some(capacity);
    config.shared = backend.objects(artifacts);
    let store = config
        .shared
        .as_ref()
        .map_or_else(String::new, |o| format!(", artifacts in {}", o.url()));
    let beat = dispatch_server::presence::claim(&backend.store, &config)
        .await
        .map_err(fail)?;
    tracing::info!(
        worker = %config.name,
        "dispatch worker {} started ({} slot(s), capacity {} CPUs, {} memory{store})",
        config.name,
        config.slots,
        capacity.cpus_milli as f64 / 1000.0,
        dispatch_core::units::format_size(capacity.memory_bytes)
    );
    let bus = bus_config(args.bus.as_deref())?;
    let summary = work_as(backend, config, bus, beat, shutdown)
        .await
        .map_err(fail)?;
    tracing::info!(
        "dispatch worker stopped: {} claimed, {} finished, {} released to the queue, {} lost, claims held back {} time(s)",
        summary.claimed,
        summary.finished,
        summary.released,
        summary.lost,
        summary.held_back
    );
    Ok(0)
}
