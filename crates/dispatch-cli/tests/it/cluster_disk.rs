//! A cluster with no shared filesystem, with the real binary: a `dispatch
//! server --workers 0` with its own state directory, `dispatch worker`s each
//! with another (empty) one, one fresh PostgreSQL database, and the remote
//! CLI (`DISPATCH_HOST`) from a third directory. Parcels and briefs reach the
//! worker through the database, verified; its run logs come back the same way.
//!
//! PostgreSQL is 127.0.0.1:5432 (or `DISPATCH_TEST_PG`); without it these
//! tests fail under `CI=true` and are skipped otherwise.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dispatch_core::{RunId, Status};
use dispatch_store::{ParcelStore, PgStore, Run, RunLogStore, RunStore, SqliteStore};
use dispatch_test_support::testdb::TestDatabase;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A `dispatch` process, stopped with SIGTERM when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

fn hello() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/hello")
        .to_string_lossy()
        .into_owned()
}

/// `dispatch server --listen 127.0.0.1:0` with `root` as its state
/// directory; returns the process and its `host:port`.
fn server(root: &Path, database_url: Option<&str>, workers: usize) -> (Process, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dispatch"));
    command
        .args(["server", "--listen", "127.0.0.1:0"])
        .args(["--workers", &workers.to_string()])
        .env("DISPATCH_ROOT", root)
        .env_remove("DISPATCH_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    let mut child = command.spawn().expect("the server starts");
    let stderr = child.stderr.take().expect("stderr");
    let process = Process(child);
    let mut lines = BufReader::new(stderr).lines();
    let first = lines
        .next()
        .expect("the server says where it listens")
        .expect("a line");
    let host = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in `{first}`"))
        .to_string();
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("[server] {line}");
        }
    });
    (process, host)
}

/// The remote CLI against `host`, from a directory of its own.
struct Client {
    host: String,
    dir: tempfile::TempDir,
}

impl Client {
    fn new(host: &str) -> Client {
        Client {
            host: host.to_string(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dispatch"));
        command
            .args(args)
            .env("DISPATCH_HOST", format!("http://{}", self.host))
            .env("DISPATCH_ROOT", self.dir.path().join(".dispatch"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("dispatch runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "dispatch {args:?}: {:?}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `dispatch run <dir> --detach`, uploading the parcel; the run's id.
    fn detach(&self, dir: &str, job: &str) -> RunId {
        self.ok(&["run", dir, "--detach", "--job", job])
            .parse()
            .expect("a run id")
    }

    /// An agent directory whose `agent.sh` is `script`.
    fn agent(&self, name: &str, script: &str) -> String {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("agent dir");
        std::fs::write(
            dir.join("Agentfile"),
            format!("NAME {name}\nCOPY agent.sh\nCOMMAND sh agent.sh\n"),
        )
        .expect("Agentfile");
        std::fs::write(dir.join("agent.sh"), script).expect("agent.sh");
        dir.to_string_lossy().into_owned()
    }
}

/// The server (no workers), its database and directories. Fields drop in
/// order: the processes stop before their database and directories go.
struct Cluster {
    workers: Vec<Process>,
    _server: Process,
    client: Client,
    rt: tokio::runtime::Runtime,
    store: PgStore,
    db: TestDatabase,
    dirs: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (db, store) = rt.block_on(async {
            let db = TestDatabase::create().await?;
            let store = PgStore::connect(db.url(), 2).await.expect("connects");
            Some((db, store))
        })?;
        let dirs = tempfile::tempdir().expect("tempdir");
        let (server, host) = server(&dirs.path().join("server"), Some(db.url()), 0);
        Some(Cluster {
            workers: Vec::new(),
            _server: server,
            client: Client::new(&host),
            rt,
            store,
            db,
            dirs,
        })
    }

    fn server_root(&self) -> PathBuf {
        self.dirs.path().join("server")
    }

    /// Starts `dispatch worker` with an empty state directory of its own;
    /// returns that directory.
    fn worker(&mut self, name: &str) -> PathBuf {
        let root = self.dirs.path().join(name);
        std::fs::create_dir_all(&root).expect("an empty directory");
        let child = Command::new(env!("CARGO_BIN_EXE_dispatch"))
            .args(["worker", "--database-url", self.db.url(), "--name", name])
            .env("DISPATCH_ROOT", &root)
            .env_remove("DISPATCH_DATABASE_URL")
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the worker starts");
        self.workers.push(Process(child));
        root
    }

    fn get(&self, id: &RunId) -> Run {
        self.rt
            .block_on(self.store.get_run(id))
            .expect("the run reads")
    }

    /// Polls the run until it has finished (deadline 30 s).
    fn finished(&self, id: &RunId) -> Run {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let run = self.get(id);
            if run.state.is_terminal() {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} did not finish: {run:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn an_uploaded_parcel_runs_on_a_worker_with_an_empty_disk_and_its_log_reads_through_the_server() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let worker = cluster.worker("worker");
    let client = &cluster.client;
    let id = client.detach(&hello(), r#"{"name":"Ada"}"#);
    assert_eq!(client.ok(&["wait", id.as_str()]), "0", "it succeeded");
    let run = cluster.get(&id);
    assert_eq!(run.status(), Status::Succeeded, "{run:?}");

    let log = client.ok(&["logs", id.as_str()]);
    assert!(log.contains("Hello, Ada!"), "the agent's output: {log}");
    assert!(
        log.contains(&format!("[dispatch] run {id} succeeded")),
        "the worker's lifecycle lines: {log}"
    );
    assert_eq!(
        client.ok(&["logs", "-f", id.as_str()]),
        log,
        "following a finished run gives the same log"
    );

    // Where everything is: the worker fetched parcel and brief into its own
    // directory; the server never had the log file.
    let parcel = worker.join("parcels").join(&run.parcel_digest);
    assert!(
        parcel.join("manifest.json").is_file(),
        "the parcel was fetched"
    );
    assert!(parcel.join("files/agent.sh").is_file());
    // (`.lower` holds the overlay workspaces' per-parcel templates.)
    let parcels: Vec<String> = entries(&worker.join("parcels"))
        .into_iter()
        .filter(|e| e != ".lower")
        .collect();
    assert_eq!(
        parcels,
        vec![run.parcel_digest.clone()],
        "nothing else (no temporary directory) is left"
    );
    let brief = worker
        .join("briefs")
        .join(format!("{}.json", run.brief_sha256));
    assert!(brief.is_file(), "the brief was fetched");
    assert!(
        !cluster
            .server_root()
            .join("runs")
            .join(format!("{id}.log"))
            .exists(),
        "the server has no log file of its own"
    );
    let stored = cluster
        .rt
        .block_on(cluster.store.log_length(&id))
        .expect("length");
    assert_eq!(stored, log.len() as u64 + 1, "the whole log is stored");

    // A second run of the same parcel uses the worker's copy.
    let again = client.detach(&hello(), r#"{"name":"Bob"}"#);
    assert_eq!(client.ok(&["wait", again.as_str()]), "0");
    assert!(client.ok(&["logs", again.as_str()]).contains("Hello, Bob!"));
}

#[test]
fn following_a_remote_runs_log_streams_it_while_it_runs_and_ends_when_it_ends() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let worker = cluster.worker("worker");
    let client = &cluster.client;
    // Prints a line, waits for the test's go, then more than one batch (64 KiB).
    let agent = client.agent(
        "chatty",
        "echo first\nwhile [ ! -f \"$DISPATCH_STATE_DIR/go\" ]; do sleep 0.02; done\n\
         seq 1 30000\necho last\n",
    );
    let id = client.detach(&agent, "{}");
    // Stopped if the test fails (a follower of a run that never ends never ends).
    let mut follower = Process(
        client
            .command(&["logs", "-f", id.as_str()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dispatch logs -f starts"),
    );
    let stdout = follower.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    while !lines.iter().any(|l| l == "first") {
        let left = deadline.saturating_duration_since(Instant::now());
        lines.push(
            rx.recv_timeout(left)
                .expect("the first line arrives while the run is still running"),
        );
    }
    // The agent waits for the test's go: the run cannot have ended (its
    // `running` state may still be on its way: the log is shipped first).
    let now = cluster.get(&id);
    assert!(!now.state.is_terminal(), "streamed before the end: {now:?}");
    let state = worker.join("state").join("chatty");
    std::fs::write(state.join("go"), "").expect("let the agent go on");
    let status = follower.0.wait().expect("the follower ends");
    reader.join().expect("reader");
    lines.extend(rx.try_iter());
    assert!(status.success(), "logs -f exits 0");
    assert_eq!(cluster.get(&id).status(), Status::Succeeded);
    let numbers: Vec<&String> = lines
        .iter()
        .filter(|l| l.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let expected: Vec<String> = (1..=30000).map(|n| n.to_string()).collect();
    assert_eq!(
        numbers,
        expected.iter().collect::<Vec<_>>(),
        "every line once, in order"
    );
    let last = lines
        .iter()
        .rposition(|l| l == "last")
        .expect("the last line");
    assert!(
        lines[last..]
            .iter()
            .any(|l| l.contains("succeeded (exit 0)")),
        "the follower got the log's end: {:?}",
        &lines[last..]
    );
    assert_eq!(
        client.ok(&["logs", id.as_str()]),
        lines.join("\n"),
        "the same log without following"
    );
}

#[test]
fn a_tampered_stored_parcel_is_refused_and_uploading_it_again_repairs_it() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    // No worker yet: the run waits in the queue while its parcel is damaged.
    let id = cluster.client.detach(&hello(), "{}");
    let digest = cluster.get(&id).parcel_digest;
    cluster.rt.block_on(async {
        let mut stored = cluster
            .store
            .get_parcel(&digest)
            .await
            .expect("get")
            .expect("the server stored the uploaded parcel");
        let at = stored
            .archive
            .windows(11)
            .position(|w| w == b"hello agent")
            .expect("agent.sh is in the archive");
        stored.archive[at] = b'j';
        cluster.store.put_parcel(&stored).await.expect("tamper");
    });
    let worker = cluster.worker("worker");
    let run = cluster.finished(&id);
    assert_eq!(run.status(), Status::Failed, "{run:?}");
    let reason = run.state.reason().unwrap_or_default().to_string();
    assert!(reason.contains("failed verification"), "{reason}");
    assert!(reason.contains("agent.sh"), "names the file: {reason}");
    assert!(run.state.agent().is_none(), "it never ran: {run:?}");
    assert!(
        entries(&worker.join("parcels")).is_empty(),
        "nothing of the parcel is on the worker: {:?}",
        entries(&worker.join("parcels"))
    );
    let log = cluster.client.ok(&["logs", id.as_str()]);
    assert!(
        log.contains("failed verification"),
        "the log says why: {log}"
    );

    // Uploading the parcel again replaces the damaged copy.
    let again = cluster.client.detach(&hello(), r#"{"name":"Ada"}"#);
    assert_eq!(cluster.finished(&again).status(), Status::Succeeded);
    assert!(
        cluster
            .client
            .ok(&["logs", again.as_str()])
            .contains("Hello, Ada!")
    );
}

#[test]
fn a_tampered_stored_brief_is_refused() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let id = cluster.client.detach(&hello(), r#"{"name":"Ada"}"#);
    let sha = cluster.get(&id).brief_sha256;
    cluster
        .rt
        .block_on(
            cluster
                .store
                .put_brief(&sha, br#"{"payload":{"name":"Eve"}}"#),
        )
        .expect("tamper");
    let worker = cluster.worker("worker");
    let run = cluster.finished(&id);
    assert_eq!(run.status(), Status::Failed, "{run:?}");
    let reason = run.state.reason().unwrap_or_default();
    assert!(reason.contains("failed verification"), "{reason}");
    assert!(
        !worker.join("briefs").join(format!("{sha}.json")).exists(),
        "the tampered brief was not written"
    );
}

#[test]
fn on_sqlite_a_server_with_in_process_workers_serves_logs_from_its_disk_and_stores_inputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("server");
    let (_server, host) = server(&root, None, 2);
    let client = Client::new(&host);
    let id = client.detach(&hello(), r#"{"name":"Ada"}"#);
    assert_eq!(client.ok(&["wait", id.as_str()]), "0");
    let log = client.ok(&["logs", id.as_str()]);
    assert!(log.contains("Hello, Ada!"), "{log}");
    assert!(root.join("runs").join(format!("{id}.log")).is_file());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let store =
        SqliteStore::open(&root.join("dispatch.db"), Duration::from_secs(5)).expect("opens");
    rt.block_on(async {
        let run = store.get_run(&id).await.expect("run");
        assert!(store.has_parcel(&run.parcel_digest).await.expect("has"));
        let brief = store.get_brief(&run.brief_sha256).await.expect("get");
        let local = std::fs::read(
            root.join("briefs")
                .join(format!("{}.json", run.brief_sha256)),
        )
        .expect("the brief on disk");
        assert_eq!(brief, Some(local), "the same brief in the store");
        assert_eq!(
            store.log_length(&id).await.expect("length"),
            0,
            "no log shipping on one machine"
        );
    });
}

#[test]
fn prune_through_the_server_removes_the_runs_rows_log_and_brief_from_the_database() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let _worker = cluster.worker("worker");
    let client = &cluster.client;
    let id = client.detach(&hello(), r#"{"name":"Ada"}"#);
    assert_eq!(client.ok(&["wait", id.as_str()]), "0");
    let sha = cluster.get(&id).brief_sha256;
    let store = &cluster.store;
    assert!(
        cluster
            .rt
            .block_on(store.get_brief(&sha))
            .expect("reads")
            .is_some()
    );
    assert!(cluster.rt.block_on(store.log_length(&id)).expect("reads") > 0);

    // No terminal and no -f: refused, nothing removed.
    let out = client.run(&["prune"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("prune would remove 1 finished run"),
        "{out:?}"
    );
    assert_eq!(cluster.get(&id).status(), Status::Succeeded);

    let removed = client.ok(&["prune", "-f", "--filter", "status=succeeded"]);
    assert_eq!(removed, id.to_string());
    assert!(
        cluster.rt.block_on(store.get_run(&id)).is_err(),
        "the row is gone"
    );
    assert_eq!(
        cluster.rt.block_on(store.log_length(&id)).expect("reads"),
        0
    );
    assert_eq!(
        cluster.rt.block_on(store.get_brief(&sha)).expect("reads"),
        None,
        "no run references the brief any more"
    );
    let out = client.run(&["inspect-run", id.as_str()]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
}
