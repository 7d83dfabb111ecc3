//! An in-process server on an ephemeral loopback port, on a fresh SQLite
//! directory or a fresh PostgreSQL database, and a small blocking HTTP client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use dispatch_runtime::Layout;
use dispatch_server::bus::BusConfig;
use dispatch_server::client;
use dispatch_server::serve::{Backend, Server};
use dispatch_server::worker::WorkerConfig;
use dispatch_test_support::testdb::TestDatabase;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The secret test servers sign callbacks with.
pub const CALLBACK_SECRET: &str = "test-secret";

/// Which database a test server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// The state directory's parent.
    pub root: std::path::PathBuf,
    _dir: Option<tempfile::TempDir>,
    pub db: Option<TestDatabase>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A runtime for the test's own async work (store access).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

impl TestServer {
    /// Starts a server with `slots` in-process worker slots. `None` when
    /// PostgreSQL is wanted but unavailable outside CI (the test is skipped).
    pub fn start(db: Db, slots: usize) -> Option<TestServer> {
        TestServer::start_with(db, slots, None)
    }

    /// As [`TestServer::start`], in bus mode when `bus` is given.
    pub fn start_with(db: Db, slots: usize, bus: Option<BusConfig>) -> Option<TestServer> {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(block_on(TestDatabase::create())?),
        };
        let url = database.as_ref().map(|d| d.url().to_string());
        let mut server = TestServer::start_on(dir.path().to_path_buf(), url, slots, bus);
        server._dir = Some(dir);
        server.db = database;
        Some(server)
    }

    /// A server on SQLite that requires a bearer token on every route but
    /// `/healthz`.
    pub fn start_with_required_auth() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = TestServer::start_full(
            dir.path().to_path_buf(),
            None,
            0,
            None,
            true,
            Box::new(|s| s),
        );
        server._dir = Some(dir);
        server
    }

    /// A server on SQLite without workers, as `configure` sets it up
    /// (allowed hosts, limits, tokens).
    pub fn start_configured(
        configure: impl FnOnce(Server) -> Server + Send + 'static,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = TestServer::start_full(
            dir.path().to_path_buf(),
            None,
            0,
            None,
            false,
            Box::new(configure),
        );
        server._dir = Some(dir);
        server
    }

    /// A server on an existing state directory (under `root`) and database.
    pub fn start_on(
        root: std::path::PathBuf,
        url: Option<String>,
        slots: usize,
        bus: Option<BusConfig>,
    ) -> TestServer {
        TestServer::start_full(root, url, slots, bus, false, Box::new(|s| s))
    }

    /// A server on an existing state directory (under `root`) and database,
    /// as `configure` sets it up.
    pub fn start_on_configured(
        root: std::path::PathBuf,
        url: Option<String>,
        slots: usize,
        configure: impl FnOnce(Server) -> Server + Send + 'static,
    ) -> TestServer {
        TestServer::start_full(root, url, slots, None, false, Box::new(configure))
    }

    /// As [`TestServer::start`], with callbacks allowed to go to loopback
    /// receivers (`--allow-private-callbacks`) when `private` is set.
    pub fn start_with_callbacks(db: Db, slots: usize, private: bool) -> Option<TestServer> {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(block_on(TestDatabase::create())?),
        };
        let url = database.as_ref().map(|d| d.url().to_string());
        let root = dir.path().to_path_buf();
        let mut server =
            TestServer::start_opts(root, url, slots, None, false, private, Box::new(|s| s));
        server._dir = Some(dir);
        server.db = database;
        Some(server)
    }

    /// A server on SQLite under `root`, as [`TestServer::start_with_callbacks`].
    pub fn start_on_with_callbacks(
        root: std::path::PathBuf,
        slots: usize,
        private: bool,
    ) -> TestServer {
        TestServer::start_opts(root, None, slots, None, false, private, Box::new(|s| s))
    }

    fn start_full(
        root: std::path::PathBuf,
        url: Option<String>,
        slots: usize,
        bus: Option<BusConfig>,
        required_auth: bool,
        configure: Box<dyn FnOnce(Server) -> Server + Send>,
    ) -> TestServer {
        TestServer::start_opts(root, url, slots, bus, required_auth, false, configure)
    }

    fn start_opts(
        root: std::path::PathBuf,
        url: Option<String>,
        slots: usize,
        bus: Option<BusConfig>,
        required_auth: bool,
        private_callbacks: bool,
        configure: Box<dyn FnOnce(Server) -> Server + Send>,
    ) -> TestServer {
        let layout = Layout::new(root.join(".dispatch"));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            block_on(async move {
                let backend = Backend::open(&layout, url.as_deref(), 8)
                    .await
                    .expect("the test database opens");
                let mut config = WorkerConfig::new(layout.clone());
                config.slots = slots;
                config.lease = Duration::from_secs(5);
                config.grace = Duration::from_secs(5);
                config.poll = Duration::from_millis(200);
                let listen: SocketAddr = "127.0.0.1:0".parse().expect("an address");
                let server = Server::bind(listen, backend, layout, config)
                    .await
                    .expect("binds an ephemeral port")
                    .with_callback_secret(Some(CALLBACK_SECRET.into()))
                    .with_private_callbacks(private_callbacks)
                    .with_bus(bus)
                    .with_required_auth(required_auth);
                let server = configure(server);
                ready_tx.send(server.addr()).expect("the test waits");
                server
                    .run(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("the server runs and stops cleanly");
            })
        });
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server starts");
        TestServer {
            addr,
            root,
            _dir: None,
            db: None,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn layout(&self) -> Layout {
        Layout::new(self.root.join(".dispatch"))
    }

    /// Uploads a parcel from `(path, content)` pairs; returns its name.
    pub fn upload(&self, files: &[(&str, &str)]) -> String {
        let files: serde_json::Map<String, Value> = files
            .iter()
            .map(|(p, c)| (p.to_string(), json!(c)))
            .collect();
        let (status, body) = self.post("/v1/parcels", &json!({ "files": files }));
        assert_eq!(status, 201, "parcel upload: {body}");
        body["name"].as_str().expect("a name").to_string()
    }

    pub fn noop_parcel(&self) -> String {
        self.upload(&[("Agentfile", "FROM noop\nNAME bench\n")])
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, &[], Some(body.to_string().as_bytes()))
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, &[], None)
    }

    pub fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        self.call("POST", path, &[], Some(body.as_bytes()))
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (u16, Value) {
        let (status, text) = self.raw(method, path, headers, body);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (u16, String) {
        let base = format!("http://{}", self.addr);
        let response =
            client::request(&base, method, path, headers, body).expect("the server answers");
        let status = response.status;
        (status, response.text().expect("a text body"))
    }

    /// GET as text, with extra headers.
    pub fn text(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        self.raw("GET", path, headers, None)
    }

    /// Polls `GET path` until `done` holds (deadline 30 s).
    pub fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = self.get(path);
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {path}: {body}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Parses an SSE body into `(id, event, data)` triples.
pub fn sse(body: &str) -> Vec<(i64, String, Value)> {
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if let Some(id) = id {
            out.push((
                id,
                event,
                serde_json::from_str(&data).expect("SSE data is JSON"),
            ));
        }
    }
    out
}

/// A shell agent that records `n` step events and prints a line.
pub fn chatty_agent(n: usize) -> Vec<(&'static str, String)> {
    let script = format!(
        "i=0\nwhile [ $i -lt {n} ]; do\n  echo \"{{\\\"type\\\":\\\"step\\\",\\\"name\\\":\\\"s$i\\\"}}\" >> \"$DISPATCH_EVENTS\"\n  i=$((i+1))\ndone\necho hello from the agent\n"
    );
    vec![
        (
            "Agentfile",
            "FROM process\nNAME chatty\nCOPY agent.sh\nCOMMAND sh agent.sh\n".to_string(),
        ),
        ("agent.sh", script),
    ]
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
