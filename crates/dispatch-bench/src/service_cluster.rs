//! `dispatch-bench service-cluster [--dispatch PATH] [--fires N]`: a
//! cluster service's schedule on two `dispatch server`s (no in-process
//! workers) and one `dispatch worker`, on a fresh PostgreSQL database
//! (`DISPATCH_TEST_PG`, else 127.0.0.1:5432): due time → heartbeat agent
//! executing on the worker (the agent prints `date +%s%N` as it starts;
//! read from its shipped log), over N per-second fires (default 30). The
//! baseline, measured in the same run: `POST /v1/runs` of the same parcel →
//! its agent executing (the queue path alone).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dispatch_server::client;
use dispatch_test_support::testdb::TestDatabase;
use serde_json::{Value, json};

use crate::{flag_value, median, pct};

pub fn main(dispatch: &Path, args: &[String]) {
    let fires: usize = flag_value(args, "--fires")
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
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
    let mut children = vec![
        server(dispatch, db.url(), &dir.path().join("a")),
        server(dispatch, db.url(), &dir.path().join("b")),
    ];
    let hosts: Vec<String> = children.iter_mut().map(host_of).collect();
    children.push(worker(dispatch, db.url(), &dir.path().join("w")));
    let base = format!("http://{}", hosts[0]);

    let agent = dir.path().join("probe");
    std::fs::create_dir_all(&agent).expect("mkdir");
    std::fs::write(
        agent.join("Agentfile"),
        "NAME probe\nENTRYPOINT heartbeat\nCOMMAND [\"date\", \"+%s%N\"]\nENV LC_ALL=C\n",
    )
    .expect("Agentfile");
    let cli = |args: &[&str]| {
        let out = Command::new(dispatch)
            .args(args)
            .env("DISPATCH_HOST", &hosts[0])
            .env("DISPATCH_ROOT", dir.path().join("client"))
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

    // Baseline: the queue path alone, one run at a time.
    let digest = {
        let id = cli(&["run", "-d", agent.to_str().expect("utf-8")]);
        started_ns(&base, &id);
        get(&base, &format!("/v1/runs/{id}"))["parcel_digest"]
            .as_str()
            .expect("digest")
            .to_string()
    };
    let mut queue = Vec::new();
    for _ in 0..fires {
        let t0 = now_ns();
        let (status, run) = call(
            &base,
            "POST",
            "/v1/runs",
            Some(&json!({"parcel": digest, "operation": "heartbeat"})),
        );
        assert_eq!(status, 201, "{run}");
        let id = run["id"].as_str().expect("id");
        queue.push((started_ns(&base, id) - t0) as f64 / 1e6);
    }

    let service = cli(&[
        "serve",
        agent.to_str().expect("utf-8"),
        "--schedule",
        "* * * * * *",
    ]);
    let deadline = Instant::now() + Duration::from_secs(fires as u64 * 2 + 30);
    let mut fired = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while fired.len() < fires {
        assert!(Instant::now() < deadline, "the schedule stopped firing");
        let page = get(&base, &format!("/v1/runs?parent={service}&limit=1000"));
        for w in page["runs"].as_array().into_iter().flatten() {
            let id = w["id"].as_str().unwrap_or_default().to_string();
            if w["status"] != "succeeded" || !seen.insert(id.clone()) {
                continue;
            }
            let due = w["payload"]["wake"]["scheduled_for"].as_i64().expect("due");
            fired.push((started_ns(&base, &id) - due as i128 * 1_000_000) as f64 / 1e6);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (sp50, qp50) = (median(fired.clone()), median(queue.clone()));
    println!("| measurement | result | target |\n|---|---|---|");
    println!(
        "| `POST /v1/runs` → agent executing on a worker, baseline (n={fires}) | p50 {qp50:.1} ms, p99 {:.1} ms | — |",
        pct(queue, 0.99)
    );
    println!(
        "| schedule due time → heartbeat agent executing on a worker, two servers (n={}) | p50 {sp50:.1} ms, p99 {:.1} ms ({:.2}× the baseline) | ≤ 50 ms p50 |",
        fired.len(),
        pct(fired, 0.99),
        sp50 / qp50
    );
    for mut c in children {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = c.wait();
    }
    drop(db);
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i128
}

fn server(dispatch: &Path, url: &str, root: &Path) -> Child {
    Command::new(dispatch)
        .args(["server", "--listen", "127.0.0.1:0", "--workers", "0"])
        .args(["--database-url", url])
        .env("DISPATCH_ROOT", root)
        .env_remove("DISPATCH_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts")
}

fn worker(dispatch: &Path, url: &str, root: &Path) -> Child {
    Command::new(dispatch)
        .args([
            "worker",
            "--database-url",
            url,
            "--name",
            "w",
            "--slots",
            "4",
        ])
        .env("DISPATCH_ROOT", root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker starts")
}

/// Reads the server's address from its first line; keeps draining stderr.
pub(crate) fn host_of(child: &mut Child) -> String {
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

pub(crate) fn call(base: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let r = client::request(base, method, path, &[], body.as_deref().map(str::as_bytes))
        .expect("the server answers");
    let status = r.status;
    (
        status,
        serde_json::from_str(&r.text().unwrap_or_default()).unwrap_or(Value::Null),
    )
}

fn get(base: &str, path: &str) -> Value {
    call(base, "GET", path, None).1
}

/// When the run's agent started: the first number in its shipped log.
fn started_ns(base: &str, id: &str) -> i128 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client::request(base, "GET", &format!("/v1/runs/{id}/logs"), &[], None)
            .expect("the server answers");
        let text = r.text().unwrap_or_default();
        if let Some(ns) = text
            .lines()
            .filter(|l| !l.starts_with("[dispatch]"))
            .find_map(|l| l.trim().parse().ok())
        {
            return ns;
        }
        assert!(Instant::now() < deadline, "the agent of {id} never started");
        std::thread::sleep(Duration::from_millis(2));
    }
}
