//! `dispatch-bench workflow-cluster [--dispatch PATH] [--hops N] [--rounds R]`:
//! the per-hop coordination overhead of `workflow` on PostgreSQL:
//! `dispatch server --workers 0` and one `dispatch worker` (4 slots) on a
//! fresh database (`DISPATCH_TEST_PG`, else 127.0.0.1:5432). The worker
//! holding the chain's run coordinates it and, with a slot free, runs each
//! member's turn itself (created claimed by it; before that change every
//! turn went through the queue). Per hop = the receiver's first clock read − the sender's clock
//! read just before it wrote its message (the agents are POSIX sh on this
//! machine, so they share the marks directory). Baseline in the same run:
//! `POST /v1/runs` of the member alone → its agent executing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dispatch_server::client;
use dispatch_test_support::testdb::TestDatabase;
use serde_json::{Value, json};

use crate::workflow::{HOP, write};
use crate::{flag_value, median, pct};

/// Runs of the member alone per round (the baseline's samples).
const BASELINE_PER_ROUND: usize = 4;

pub fn main(dispatch: &Path, args: &[String]) {
    let num = |flag: &str, default: usize| {
        flag_value(args, flag)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (hops, rounds) = (num("--hops", 20), num("--rounds", 3));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = rt.block_on(TestDatabase::create()) else {
        eprintln!(
            "PostgreSQL is not reachable (see docs/guide/contributing.md: PostgreSQL for development and tests)"
        );
        std::process::exit(2);
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).expect("marks");
    let mut server = spawn(
        dispatch,
        &["server", "--listen", "127.0.0.1:0", "--workers", "0"],
        db.url(),
        &dir.path().join("server"),
        true,
    );
    let host = host_of(&mut server);
    let worker = spawn(
        dispatch,
        &["worker", "--name", "w", "--slots", "4"],
        db.url(),
        &dir.path().join("worker"),
        false,
    );
    let base = format!("http://{host}");

    let member = dir.path().join("chain/hop");
    write(
        &member.join("Agentfile"),
        &format!(
            "FROM process\nNAME hop\nCOPY agent.sh\nCOMMAND sh agent.sh\nENV MARKS={}\n",
            marks.display()
        ),
    );
    write(&member.join("agent.sh"), HOP);
    let names: Vec<String> = (0..hops).map(|i| format!("m{i}")).collect();
    let mut af = String::from("FROM workflow\nNAME chain\nCOORDINATOR chain\n");
    for n in &names {
        af.push_str(&format!("AGENT {n} ./hop\n"));
    }
    write(&dir.path().join("chain/Agentfile"), &af);
    let cli = |args: &[&str]| {
        let out = Command::new(dispatch)
            .args(args)
            .env("DISPATCH_HOST", &host)
            .env("DISPATCH_ROOT", dir.path().join("client"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("dispatch runs");
        assert!(
            out.status.success(),
            "dispatch {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let chain = dir.path().join("chain");
    let (mut overhead, mut baseline) = (Vec::new(), Vec::new());
    let mut hop_digest = None;
    for _ in 0..rounds {
        // The marks of the round before go first; the last member's mark
        // says the chain is through (looking at files, not asking the
        // server, keeps the harness off the path it measures).
        for n in &names {
            let _ = std::fs::remove_file(marks.join(format!("sent.{n}")));
        }
        let id = cli(&["run", "--detach", chain.to_str().expect("utf-8")]);
        let last = names.last().expect("a member");
        await_mark(&marks.join(format!("sent.{last}")));
        wait(&base, &id);
        for w in names.windows(2) {
            let sent = read_ns(&marks.join(format!("sent.{}", w[0])));
            let start = read_ns(&marks.join(format!("start.{}", w[1])));
            overhead.push((start - sent) as f64 / 1e6);
        }
        // Baseline: the member alone through the queue, a few times a round.
        let digest = hop_digest.get_or_insert_with(|| member_digest(&base, &id));
        for _ in 0..BASELINE_PER_ROUND {
            let _ = std::fs::remove_file(marks.join("sent.alone"));
            let t0 = now_ns();
            let body = json!({"parcel": digest, "payload": {"workflow": {"agent": "alone"}}});
            let (status, run) = call(&base, "POST", "/v1/runs", Some(&body));
            assert_eq!(status, 201, "{run}");
            await_mark(&marks.join("sent.alone"));
            wait(&base, run["id"].as_str().expect("id"));
            baseline.push((read_ns(&marks.join("start.alone")) - t0) as f64 / 1e6);
        }
    }
    let base_ms = median(baseline.clone());
    println!(
        "| measurement (PostgreSQL: server + 1 worker) | median | p95 | ratio to baseline |\n|---|---|---|---|"
    );
    println!(
        "| baseline: `POST /v1/runs` → agent executing on the worker, the member alone (n={}) | {base_ms:.1} ms | {:.1} ms | 1.00 |",
        baseline.len(),
        pct(baseline, 0.95)
    );
    let m = median(overhead.clone());
    println!(
        "| per hop: message written → receiver executing, chain of {hops} (n={}) | {m:.1} ms | {:.1} ms | {:.2} |",
        overhead.len(),
        pct(overhead, 0.95),
        m / base_ms
    );
    for mut c in [server, worker] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = c.wait();
    }
    drop(db);
}

/// The digest of the chain's member parcel: its first child's.
fn member_digest(base: &str, parent: &str) -> String {
    let page = call(
        base,
        "GET",
        &format!("/v1/runs?parent={parent}&limit=1"),
        None,
    )
    .1;
    page["runs"][0]["parcel_digest"]
        .as_str()
        .expect("a member run")
        .to_string()
}

fn spawn(dispatch: &Path, args: &[&str], url: &str, root: &Path, piped: bool) -> Child {
    Command::new(dispatch)
        .args(args)
        .args(["--database-url", url])
        .env("DISPATCH_ROOT", root)
        .env_remove("DISPATCH_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if piped { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .expect("dispatch starts")
}

/// Reads the server's address from its first line; keeps draining stderr.
fn host_of(child: &mut Child) -> String {
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    std::thread::spawn(move || for _ in lines {});
    first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in `{first}`"))
        .to_string()
}

fn call(base: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let r = client::request(base, method, path, &[], body.as_deref().map(str::as_bytes))
        .expect("the server answers");
    let status = r.status;
    (
        status,
        serde_json::from_str(&r.text().unwrap_or_default()).unwrap_or(Value::Null),
    )
}

/// Waits until run `id` ends; it must succeed.
fn wait(base: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = call(base, "GET", &format!("/v1/runs/{id}"), None).1;
        match run["status"].as_str() {
            Some("succeeded") => return,
            Some("failed" | "cancelled" | "timed_out") => panic!("run {id} ended: {run}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "run {id} did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for an agent to write the mark `path` (its last act).
fn await_mark(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} was never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i128
}

fn read_ns(path: &Path) -> i128 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a clock reading")
}
