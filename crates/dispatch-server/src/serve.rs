//! `dispatch server` and `dispatch worker`: open the store, then serve the API
//! (with in-process workers), or only work.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dispatch_runtime::Layout;
use dispatch_runtime::objects::{self, Objects};
use dispatch_store::{PgStore, SqliteStore};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::api::{self, AppState};
use crate::bus::{BusConfig, Publisher};
use crate::callback_guard::CallbackPolicy;
use crate::guard::AllowedHosts;
use crate::limits::{HttpLimits, TokenRates};
use crate::metrics::Metrics;
use crate::queue_timeout::Keeper;
use crate::retention::Retention;
use crate::wake::Wake;
use crate::worker::renewer::LeaseDb;
use crate::worker::{Worker, WorkerConfig, WorkerSummary};
use crate::{ServerError, ServerResult, SharedStore};

/// The default address of `dispatch server`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8077";

/// The store a cluster process works on.
#[derive(Clone)]
pub struct Backend {
    pub store: SharedStore,
    /// Set on PostgreSQL: workers listen for queue notifications.
    pub pg: Option<PgStore>,
    /// Where a worker's lease renewal thread opens its own connection.
    pub lease_db: LeaseDb,
}

impl Backend {
    /// PostgreSQL at `database_url`, else the embedded SQLite database of `layout`.
    pub async fn open(
        layout: &Layout,
        database_url: Option<&str>,
        connections: usize,
    ) -> ServerResult<Backend> {
        match database_url {
            Some(url) => {
                let pg = PgStore::connect(url, connections).await?;
                Ok(Backend {
                    store: Arc::new(pg.clone()),
                    pg: Some(pg),
                    lease_db: LeaseDb::Postgres(url.to_string()),
                })
            }
            None => {
                let sqlite = SqliteStore::open(&layout.db(), Duration::from_secs(5))?;
                Ok(Backend {
                    store: Arc::new(sqlite),
                    pg: None,
                    lease_db: LeaseDb::Sqlite(layout.db()),
                })
            }
        }
    }

    /// Whether workers on other machines can share this store (PostgreSQL):
    /// only then do workers ship their run logs into it. On the embedded
    /// SQLite database, every worker is on the server's machine and the
    /// API reads their log files.
    pub fn shares_logs(&self) -> bool {
        self.pg.is_some()
    }

    /// The cluster's object store: `given` (`--artifacts URL`) when there
    /// is one, else on PostgreSQL the database itself (see
    /// [`dispatch_runtime::objects::db`]), so that every server hands back
    /// what any worker wrote. `None` on SQLite: each process's `.dispatch/`.
    pub fn objects(&self, given: Option<Arc<Objects>>) -> Option<Arc<Objects>> {
        given.or_else(|| {
            self.pg
                .as_ref()
                .map(|pg| Arc::new(Objects::database(Arc::new(pg.clone()), DATABASE_OBJECTS)))
        })
    }

    /// Wake-ups for a worker of this process.
    pub fn wake(&self, local: Arc<Notify>) -> Wake {
        match &self.pg {
            Some(pg) => Wake::postgres(local, pg.clone()),
            None => Wake::local(local),
        }
    }
}

/// How messages name the objects kept in the cluster's database.
pub const DATABASE_OBJECTS: &str = "postgresql (the cluster's database)";

/// `dispatch server`: the API on `listen`, and `worker.slots` in-process
/// worker slots (none when 0).
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    backend: Backend,
    layout: Layout,
    worker: WorkerConfig,
    metrics: Arc<Metrics>,
    callback_secret: Option<Arc<String>>,
    require_auth: bool,
    bus: Option<BusConfig>,
    retention: Option<Retention>,
    local_runs: bool,
    allowed_hosts: AllowedHosts,
    http: HttpLimits,
    callback_policy: CallbackPolicy,
    tls: Option<Arc<rustls::ServerConfig>>,
    enqueue_retry: Duration,
    review_timeout: Option<Duration>,
    notifier: Option<dispatch_notify::Notifier>,
}

impl Server {
    /// Binds the address (port 0 picks a free one; see [`Server::addr`]).
    pub async fn bind(
        listen: SocketAddr,
        backend: Backend,
        layout: Layout,
        worker: WorkerConfig,
    ) -> ServerResult<Server> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(ServerError::Serve)?;
        let mut worker = worker;
        worker.shared = backend.objects(worker.shared.take());
        Ok(Server {
            listener,
            addr,
            backend,
            layout,
            worker,
            metrics: Arc::new(Metrics::default()),
            callback_secret: None,
            // Tokens are required as soon as others can reach the server.
            require_auth: !addr.ip().is_loopback(),
            bus: None,
            retention: None,
            local_runs: false,
            allowed_hosts: AllowedHosts::default(),
            http: HttpLimits::default(),
            callback_policy: CallbackPolicy::default(),
            tls: None,
            enqueue_retry: crate::api::patience::DEFAULT_ENQUEUE_RETRY,
            review_timeout: None,
            notifier: None,
        })
    }

    /// Notifications (`notifications.toml`): this server drains the
    /// store's outbox, as every server of the cluster configured so does.
    pub fn with_notifier(mut self, notifier: Option<dispatch_notify::Notifier>) -> Self {
        self.notifier = notifier;
        self
    }

    /// Bus mode: announce new runs on this Redis stream, and let the
    /// in-process workers read it.
    pub fn with_bus(mut self, bus: Option<BusConfig>) -> Self {
        self.bus = bus;
        self
    }

    /// Deletes old finished runs and events as `retention` says (none: nothing is deleted).
    pub fn with_retention(mut self, retention: Option<Retention>) -> Self {
        self.retention = retention;
        self
    }

    /// Runs on this store may be held by local helpers (`dispatch ui` on a
    /// `.dispatch/`): the dashboard's stop button signals their process
    /// group like `dispatch stop`, instead of asking a worker to.
    pub fn with_local_runs(mut self, local: bool) -> Self {
        self.local_runs = local;
        self
    }

    /// The names besides IP addresses and `localhost` that requests may
    /// be for (`--allowed-host`; see [`crate::guard`]).
    pub fn with_allowed_hosts(mut self, hosts: AllowedHosts) -> Self {
        self.allowed_hosts = hosts;
        self
    }

    /// Timeouts, the connection cap and token rates (see [`crate::limits`]).
    pub fn with_limits(mut self, http: HttpLimits) -> Self {
        self.http = http;
        self
    }

    /// Requires tokens even on a loopback address.
    pub fn with_required_auth(mut self, required: bool) -> Self {
        self.require_auth |= required;
        self
    }

    /// The cluster's shared artifact store, for the API's downloads and
    /// the in-process workers (`None`: on PostgreSQL the database, see
    /// [`Backend::objects`]; on SQLite this server's `.dispatch/`).
    pub fn with_artifacts(mut self, shared: Option<Arc<Objects>>) -> Self {
        self.worker.shared = self.backend.objects(shared);
        self
    }

    /// The object store in use, when it is not this server's `.dispatch/`.
    pub fn artifacts(&self) -> Option<&Arc<Objects>> {
        self.worker.shared.as_ref()
    }

    /// Whether requests need a bearer token.
    pub fn requires_auth(&self) -> bool {
        self.require_auth
    }

    /// Signs completion callbacks with `secret` (none: `callback_url` is refused).
    pub fn with_callback_secret(mut self, secret: Option<String>) -> Self {
        self.callback_secret = secret.filter(|s| !s.is_empty()).map(Arc::new);
        self
    }

    /// Lets callbacks go to loopback, link-local and metadata addresses
    /// (see [`crate::callback_guard`]).
    pub fn with_private_callbacks(mut self, allow: bool) -> Self {
        self.callback_policy.allow_private = allow;
        self
    }

    /// How long a request that creates a run waits out a lost database
    /// before it answers 503 (see [`crate::api::patience`]; zero: at once).
    pub fn with_enqueue_retry(mut self, budget: Duration) -> Self {
        self.enqueue_retry = budget;
        self
    }

    /// How long a run created here in review waits for a person before it
    /// is cancelled (none: until someone decides; see
    /// [`dispatch_runtime::review`]).
    pub fn with_review_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.review_timeout = timeout;
        self
    }

    /// Serves HTTPS with this configuration (see [`crate::tls`]).
    pub fn with_tls(mut self, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        self.tls = tls;
        self
    }

    /// `https` when serving TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes; then stops accepting requests and
    /// drains the in-process worker.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> ServerResult<Option<WorkerSummary>> {
        let wake = Arc::new(Notify::new());
        let queue_timeouts = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = AppState {
            store: self.backend.store.clone(),
            layout: self.layout.clone(),
            wake: wake.clone(),
            queue_timeouts: queue_timeouts.clone(),
            metrics: self.metrics.clone(),
            callback_secret: self.callback_secret.clone(),
            callback_policy: self.callback_policy,
            require_auth: self.require_auth,
            bus: self.bus.clone().map(|b| Arc::new(Publisher::new(b))),
            published: Arc::default(),
            services_registered: Arc::new(Notify::new()),
            artifacts: match &self.worker.shared {
                Some(shared) => shared.clone(),
                None => Arc::new(
                    Objects::local(self.layout.root())
                        .map_err(|e| ServerError::Artifacts(objects::chain(&e)))?,
                ),
            },
            archives: self.worker.shared.clone(),
            ui: crate::ui::UiConfig::new(self.local_runs, &self.layout.root().join("ui.key"))
                .map_err(ServerError::Serve)?,
            tracer: self.worker.tracer.clone(),
            stopping: crate::stopping::Stopping::new(stop_rx.clone()),
            token_rates: Arc::new(TokenRates::new(self.http.token_rate)),
            enqueue_retry: self.enqueue_retry,
            review_timeout: self.review_timeout,
        };
        let beat = match self.worker.slots > 0 {
            true => Some(crate::presence::claim(&self.backend.store, &self.worker).await?),
            false => None,
        };
        let worker = beat.map(|beat| {
            let wake = self
                .backend
                .wake(wake.clone())
                .with_bus(self.bus.clone(), &self.worker.name);
            let mut config = self.worker.clone();
            config.ship_logs &= self.backend.shares_logs();
            config
                .lease_db
                .get_or_insert_with(|| self.backend.lease_db.clone());
            config.announce = self.bus.clone().map(|b| Arc::new(Publisher::new(b)));
            let store = self.backend.store.clone();
            let worker = Worker::new(store.clone(), wake, config.clone(), self.metrics.clone());
            let stop = stopped(stop_rx.clone());
            let work = move |lost| worker.run(either(stop, lost));
            tokio::spawn(async move { crate::presence::beating(store, beat, work).await })
        });
        let callbacks = match self.callback_secret.clone() {
            Some(secret) => {
                let http = crate::callback_guard::client(self.callback_policy)?;
                Some(tokio::spawn(crate::callback::dispatcher(
                    self.backend.store.clone(),
                    self.backend.pg.clone(),
                    secret.to_string(),
                    http,
                    self.callback_policy,
                    stopped(stop_rx.clone()),
                )))
            }
            None => None,
        };
        let notifications = self.notifier.clone().map(|notifier| {
            let store = self.backend.store.clone();
            let stop = stopped(stop_rx.clone());
            tokio::spawn(async move { notifier.run_until(&*store, stop).await })
        });
        // Native agents held by worker processes: their live text, for SSE.
        let relay = self.backend.pg.clone().map(crate::deltas::relay_in);
        let keeper = Keeper {
            store: self.backend.store.clone(),
            wake: self.backend.wake(queue_timeouts),
            poll: self.worker.poll,
            metrics: self.metrics.clone(),
            tracer: self.worker.tracer.clone(),
        };
        let keeper = tokio::spawn(keeper.run(stopped(stop_rx.clone())));
        let timers = tokio::spawn(crate::timers::keep(
            self.backend.store.clone(),
            stopped(stop_rx.clone()),
        ));
        let service_timers = {
            let (services, registered) = (state.services(), state.services_registered.clone());
            let stop = stopped(stop_rx.clone());
            tokio::spawn(
                async move { crate::services::timers::keep(services, &registered, stop).await },
            )
        };
        // Uploads into the database's object store a dead writer left.
        let uploads = self.retention.is_none().then(|| {
            tokio::spawn(crate::retention::sweep_uploads(
                self.backend.store.clone(),
                stopped(stop_rx.clone()),
            ))
        });
        let retention = self.retention.clone().map(|retention| {
            tokio::spawn(crate::retention::keep(
                self.backend.store.clone(),
                self.layout.clone(),
                self.worker.shared.clone(),
                retention,
                stopped(stop_rx.clone()),
            ))
        });
        let app = api::router(state.clone())
            .merge(crate::ui::router(state))
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(self.allowed_hosts.clone()),
                crate::guard::check,
            ));
        let server = crate::limits::serve(
            self.listener,
            app,
            self.http.clone(),
            self.tls,
            stopped(stop_rx),
        );
        let trigger = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let (served, ()) = tokio::join!(server, trigger);
        served.map_err(ServerError::Serve)?;
        if let Some(callbacks) = callbacks {
            let _ = callbacks.await;
        }
        if let Some(notifications) = notifications {
            let _ = notifications.await;
        }
        let _ = keeper.await;
        let _ = timers.await;
        let _ = service_timers.await;
        if let Some(retention) = retention {
            let _ = retention.await;
        }
        if let Some(uploads) = uploads {
            let _ = uploads.await;
        }
        if let Some(relay) = relay {
            relay.abort();
        }
        match worker {
            Some(handle) => match handle.await {
                Ok(summary) => summary.and_then(|s| s).map(Some),
                Err(e) => Err(ServerError::Serve(std::io::Error::other(e.to_string()))),
            },
            None => Ok(None),
        }
    }
}

/// Completes when `a` or `b` does.
async fn either(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
    tokio::select! {
        () = a => {}
        () = b => {}
    }
}

/// Completes once the watch says stop.
async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// `dispatch worker`: take its name, work until `shutdown`, then drain.
pub async fn work(
    backend: Backend,
    config: WorkerConfig,
    bus: Option<BusConfig>,
    shutdown: impl Future<Output = ()>,
) -> ServerResult<WorkerSummary> {
    let beat = crate::presence::claim(&backend.store, &config).await?;
    work_as(backend, config, bus, beat, shutdown).await
}

/// [`work`] with its name taken already ([`crate::presence::claim`]: a
/// second live worker of a name is refused before it touches anything).
pub async fn work_as(
    backend: Backend,
    mut config: WorkerConfig,
    bus: Option<BusConfig>,
    beat: dispatch_store::WorkerBeat,
    shutdown: impl Future<Output = ()>,
) -> ServerResult<WorkerSummary> {
    config.ship_logs &= backend.shares_logs();
    config
        .lease_db
        .get_or_insert_with(|| backend.lease_db.clone());
    config.shared = backend.objects(config.shared.take());
    config.announce = bus.clone().map(|b| Arc::new(Publisher::new(b)));
    // Native agents' live text goes to the servers through the database.
    let relay = backend.pg.clone().map(crate::deltas::relay_out);
    let wake = backend
        .wake(Arc::new(Notify::new()))
        .with_bus(bus, &config.name);
    let worker = Worker::new(
        backend.store.clone(),
        wake,
        config.clone(),
        Arc::new(Metrics::default()),
    );
    let work = move |lost| worker.run(either(shutdown, lost));
    let summary = crate::presence::beating(backend.store, beat, work)
        .await
        .and_then(|s| s);
    if let Some(relay) = relay {
        relay.abort();
    }
    summary
}

/// Completes on the first SIGTERM or SIGINT.
pub fn shutdown_signal() -> ServerResult<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
