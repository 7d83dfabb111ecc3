//! A real `dispatch server` process on an ephemeral loopback port (SQLite
//! under its own state directory, or a PostgreSQL database), and a client
//! directory with no local state that talks to it through `DISPATCH_HOST`.
#![allow(dead_code)]

pub mod balancer;
pub mod moto;
pub use crate::common::{checks, mounts};

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dispatch_server::client;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

pub struct Server {
    child: Child,
    pub host: String,
    pub state: tempfile::TempDir,
}

impl Server {
    /// A server on its own SQLite database, with two worker slots.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_on(None, extra)
    }

    /// A server on the PostgreSQL database at `database_url` (else SQLite).
    pub fn start_on(database_url: Option<&str>, extra: &[&str]) -> Server {
        Server::start_with_env(database_url, extra, &[])
    }

    /// As [`Server::start_on`], with these variables in the server's environment.
    pub fn start_with_env(
        database_url: Option<&str>,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Server {
        let state = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_dispatch"));
        // Agents signal the tests through files in their temporary
        // directories, which a sandboxed agent does not see: the sandbox is
        // off unless `vars` turn it on (as tests/common's `Dispatch::new`).
        command.env("DISPATCH_SANDBOX", "off");
        command.envs(vars.iter().copied());
        command
            .args(["server", "--listen", "127.0.0.1:0"])
            .args(if extra.contains(&"--workers") {
                &[][..]
            } else {
                &["--workers", "2"][..]
            })
            .args(extra)
            .env("DISPATCH_ROOT", state.path().join(".dispatch"))
            .env_remove("DISPATCH_DATABASE_URL")
            .env_remove("DISPATCH_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let mut child = command.spawn().expect("the server starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let first = lines
            .next()
            .expect("the server says where it listens")
            .expect("a line");
        // `https://host:port` when serving TLS, else `host:port`.
        let (scheme, rest) = match first.split_once("https://") {
            Some((_, rest)) => ("https://", Some(rest)),
            None => ("", first.split_once("http://").map(|(_, rest)| rest)),
        };
        let host = rest
            .and_then(|rest| rest.split_whitespace().next())
            .map(|addr| format!("{scheme}{addr}"))
            .unwrap_or_else(|| panic!("no address in `{first}`"));
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server { child, host, state }
    }

    /// One HTTP request; the status and the JSON answer (`Null` if not JSON).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let response = client::request(
            &format!("http://{}", self.host),
            method,
            path,
            &[],
            body.as_deref().map(str::as_bytes),
        )
        .expect("the server answers");
        let status = response.status;
        let text = response.text().expect("a text body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Polls `GET path` until `done` holds (deadline 90 s: a loaded CI
    /// host has stalled PostgreSQL's commits long enough for a worker to
    /// fence itself and its run to wait out a lease before it gets there).
    pub fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (_, body) = self.call("GET", path, None);
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

impl Server {
    /// SIGKILL: the server dies mid-whatever, leaving nothing behind but
    /// what it committed.
    pub fn kill(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Server {
    /// SIGTERM, then waits up to `limit` for the process to exit: whether it did.
    pub fn terminate_within(&mut self, limit: Duration) -> bool {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
        mounts::unmount_under(self.state.path());
    }
}

pub struct Client {
    pub host: String,
    pub dir: tempfile::TempDir,
}

impl Client {
    pub fn new(server: &Server) -> Client {
        Client::to(&server.host)
    }

    /// A client of `host:port` (a server, or a balancer in front of several).
    pub fn to(host: &str) -> Client {
        Client {
            host: host.to_string(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, None)
    }

    pub fn run_with(&self, args: &[&str], token: Option<&str>) -> Output {
        let mut command = self.command();
        if let Some(token) = token {
            command.env("DISPATCH_TOKEN", token);
        }
        command.args(args).output().expect("dispatch runs")
    }

    /// `dispatch` pointed at the server, with no arguments yet.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dispatch"));
        command
            .env("DISPATCH_HOST", &self.host)
            .env("DISPATCH_ROOT", self.dir.path().join(".dispatch"))
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        command
    }

    /// Runs `dispatch <args>`, asserts success, returns trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        checks::ok(args, &self.run(args))
    }

    /// Runs `dispatch <args>`, asserts it failed with `code`, returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        checks::fails(args, &self.run(args), code)
    }

    /// An Agentfile directory whose agent runs `script` (plus `extra` directives).
    pub fn agent(&self, name: &str, script: &str) -> String {
        self.agent_with(name, script, "")
    }

    pub fn agent_with(&self, name: &str, script: &str, extra: &str) -> String {
        let dir = checks::agent(self.dir.path(), name, "", script, extra);
        dir.to_string_lossy().to_string()
    }

    /// `inspect-run --format json` of one run.
    pub fn inspect(&self, id: &str) -> Value {
        let doc: Value = serde_json::from_str(&self.ok(&["inspect-run", id, "--format", "json"]))
            .expect("inspect prints JSON");
        doc[0].clone()
    }
}

/// A fresh PostgreSQL database for a server; `None` (the test is skipped)
/// when PostgreSQL is unreachable outside CI; under `CI=true` it fails.
pub fn postgres() -> Option<dispatch_test_support::testdb::TestDatabase> {
    dispatch_test_support::testdb::TestDatabase::create_blocking()
}

/// A `dispatch worker` process on `db_url` with a state directory of its
/// own (no shared disk), killed when dropped so a failing test leaves none
/// behind.
pub struct Worker {
    pub child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Worker {
    /// `dispatch worker --database-url <db_url> --name <name> <args…>`.
    pub fn start(db_url: &str, name: &str, args: &[&str]) -> Worker {
        Worker::start_with_env(db_url, name, args, &[])
    }

    /// As [`Worker::start`], with these variables in the worker's environment.
    pub fn start_with_env(
        db_url: &str,
        name: &str,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> Worker {
        let state = tempfile::tempdir().expect("tempdir");
        let child = Command::new(env!("CARGO_BIN_EXE_dispatch"))
            // Off unless `vars` turn it on, as for the server above.
            .env("DISPATCH_SANDBOX", "off")
            .envs(vars.iter().copied())
            .args(["worker", "--database-url", db_url, "--name", name])
            .args(args)
            .env("DISPATCH_ROOT", state.path().join(".dispatch"))
            .env_remove("DISPATCH_HOST")
            .env_remove("DISPATCH_APPROVAL_WAIT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_to(name))
            .spawn()
            .expect("the worker starts");
        Worker { child, _dir: state }
    }

    /// A one-slot worker with short leases: a suspended run must hold none,
    /// or it would be swept.
    pub fn one_slot(db_url: &str, name: &str) -> Worker {
        Worker::start(db_url, name, &["--slots", "1", "--lease-ms", "1000"])
    }
}

/// Where a worker's stderr goes: a file `<name>.<pid>.log` under
/// `DISPATCH_TEST_WORKER_LOGS` when that names a directory (to read what a
/// worker did in a failing test), else nowhere.
fn log_to(name: &str) -> Stdio {
    let Some(dir) = std::env::var_os("DISPATCH_TEST_WORKER_LOGS") else {
        return Stdio::null();
    };
    let path = std::path::Path::new(&dir).join(format!(
        "{name}.{}.{}.log",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::File::create(&path).map_or_else(|_| Stdio::null(), Stdio::from)
}

/// Killed with SIGKILL: the overlay workspaces of the runs it held stay
/// mounted (until a worker starts on its directory again), so they go here.
impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        mounts::unmount_under(self._dir.path());
    }
}
