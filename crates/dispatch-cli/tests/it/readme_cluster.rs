//! The README, on a cluster: the commands of "Using it", "Reliability" and
//! "Durable waits", typed through the remote CLI (`DISPATCH_HOST`) against
//! two `dispatch server --workers 0` behind a round-robin TCP load balancer
//! (each command's connections alternate between them) and two `dispatch
//! worker`s, each process with its own state directory (no shared disk, no
//! `--artifacts`), on one fresh PostgreSQL database. Every
//! promise the README makes for those commands is checked here as a user
//! would see it: outputs, exit codes, and what travels through the store
//! (approval decisions, sessions, checkpoints, usage counted once, file modes).
//!
//! PostgreSQL is 127.0.0.1:5432 (or `DISPATCH_TEST_PG`); without it these
//! tests fail under `CI=true` and are skipped otherwise.

use crate::common;
use crate::remote_common;

use std::path::Path;

use common::eventually;
use remote_common::balancer::Balancer;
use remote_common::{Client, Server, Worker, postgres};
use serde_json::Value;

/// A two-slot worker.
fn worker(db_url: &str, name: &str) -> Worker {
    Worker::start(db_url, name, &["--slots", "2"])
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Two servers behind a balancer and two workers on a fresh database, and
/// a client directory whose commands go through the balancer.
struct Cluster {
    client: Client,
    _workers: [Worker; 2],
    balancer: Balancer,
    server: Server,
    _other: Server,
    _db: dispatch_test_support::testdb::TestDatabase,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(
                self.balancer.sent_to(0) > 0 && self.balancer.sent_to(1) > 0,
                "both servers answered commands"
            );
        }
    }
}

fn cluster() -> Option<Cluster> {
    let db = postgres()?;
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let other = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let balancer = Balancer::start(&[server.host.clone(), other.host.clone()]);
    let workers = [worker(db.url(), "w1"), worker(db.url(), "w2")];
    let client = Client::to(&balancer.host);
    Some(Cluster {
        client,
        _workers: workers,
        balancer,
        server,
        _other: other,
        _db: db,
    })
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The newest run's id (`ps -a -q -n 1`).
fn newest(client: &Client) -> String {
    client.ok(&["ps", "-a", "-q", "-n", "1"])
}

fn status(client: &Client, id: &str) -> String {
    client.inspect(id)["state"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn using_it_on_a_cluster() {
    let Some(c) = cluster() else { return };
    let client = &c.client;
    let hello = example("hello");

    // dispatch run examples/hello --job '{"name":"ada"}': output, then a summary.
    let out = client.run(&["run", &hello, "--job", r#"{"name":"ada"}"#]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("Hello, ada!"), "{out:?}");
    let first = newest(client);

    // id=$(dispatch run … --detach) returns the id at once; wait prints the exit code.
    let id = client.ok(&["run", &hello, "--detach", "--job", r#"{"name":"bo"}"#]);
    assert_eq!(id.len(), 32, "a run id: {id}");
    assert_eq!(client.ok(&["wait", &id, "--timeout-ms", "30000"]), "0");
    let logs = client.ok(&["logs", "-f", &id]);
    assert!(logs.contains("Hello, bo!"), "{logs}");

    // ps -a, with filters, -q and --format json.
    let ps = client.ok(&["ps", "-a"]);
    assert!(ps.contains(&id[..12]) && ps.contains(&first[..12]), "{ps}");
    let q = client.ok(&["ps", "-a", "-q", "--filter", "status=succeeded"]);
    assert!(q.lines().any(|l| l == id), "{q}");
    let json: Value =
        serde_json::from_str(&client.ok(&["ps", "-a", "--format", "json"])).expect("JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json:#}");
    let labelled = client.ok(&["ps", "-a", "-q", "--filter", "parcel=hello"]);
    assert_eq!(labelled.lines().count(), 2, "{labelled}");

    // inspect-run: state, attempts, usage, artifacts, output; counted once.
    let doc = client.inspect(&id);
    assert_eq!(doc["state"]["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"]["greeting"], "Hello, bo!", "{doc:#}");
    assert_eq!(
        doc["usage"]["input_tokens"], 1200,
        "usage counted once: {doc:#}"
    );
    let human = client.ok(&["inspect-run", &id[..16]]);
    assert!(human.contains("succeeded"), "{human}");

    // stop -t seconds: a sleeping agent is cancelled.
    let sleeper = client.agent("sleeper", "echo started; sleep 30");
    let id = client.ok(&["run", &sleeper, "--detach"]);
    eventually(20, "the sleeper runs", || status(client, &id) == "running");
    client.ok(&["stop", &id, "-t", "1"]);
    assert_eq!(status(client, &id), "cancelled");
    let code = client.run(&["wait", &id]);
    assert_ne!(code.status.code(), Some(0), "{code:?}");

    // A parcel's executable bit travels: COMMAND ["./agent.sh"] runs on a worker.
    let exe = client.dir.path().join("exe");
    std::fs::create_dir_all(&exe).expect("mkdir");
    std::fs::write(exe.join("agent.sh"), "#!/bin/sh\necho executable ok\n").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        let p = exe.join("agent.sh");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::write(
        exe.join("Agentfile"),
        "FROM process\nNAME exe\nCOPY agent.sh\nCOMMAND [\"./agent.sh\"]\n",
    )
    .expect("write");
    let exe = exe.to_string_lossy().into_owned();
    let out = client.run(&["run", &exe]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("executable ok"), "{out:?}");

    // create / start, replay, restart and rm (README "Using it").
    let created = client.ok(&["create", &hello, "--job", "{}"]);
    assert_eq!(status(client, &created), "created");
    client.ok(&["start", &created]);
    assert_eq!(client.ok(&["wait", &created]), "0");
    let err = client.fails(&["replay", &created], 125);
    assert!(err.contains("--allow-side-effects"), "{err}");
    let replayed = client.ok(&["replay", &created, "--allow-side-effects"]);
    assert_eq!(client.ok(&["wait", &replayed]), "0");
    assert_eq!(client.inspect(&replayed)["origin_id"], created.as_str());
    let restarted = client.ok(&["restart", &replayed]);
    assert_eq!(client.ok(&["wait", &restarted]), "0");
    assert_eq!(client.ok(&["rm", &created]), created);
    client.fails(&["inspect-run", &created], 125);
    // Waking a job (only cluster services take wakes) is one line (exit 125).
    let err = client.fails(&["wake", &id], 125);
    assert!(err.contains("only a running service"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // An unknown prefix is one line, exit 125.
    let err = client.fails(&["inspect-run", "zzzz"], 125);
    assert!(err.contains("zzzz"), "{err}");
}

#[test]
fn reliability_on_a_cluster() {
    let Some(c) = cluster() else { return };
    let client = &c.client;
    let reliable = example("reliable");

    // 1 + 4. Attempts and checkpoints: attempt 2 resumes at step 3.
    let out = client.run(&[
        "run",
        &reliable,
        "--job",
        r#"{"fail_first":true}"#,
        "--backoff",
        "100ms..1s",
    ]);
    assert!(out.status.success(), "{out:?}");
    let id = newest(client);
    let doc = client.inspect(&id);
    let attempts = doc["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{doc:#}");
    assert_eq!(attempts[0]["exit_code"], 1, "{doc:#}");
    let second = client.ok(&["logs", &id, "--attempt", "2"]);
    assert!(second.contains("resuming at step 3"), "{second}");
    assert!(!second.contains("attempt 1: step 1"), "{second}");
    // 12. Telemetry: 3 steps of 120 tokens, each counted once.
    let usage = &doc["usage_by_model"];
    assert!(
        usage.to_string().contains("demo-model"),
        "usage by model: {doc:#}"
    );
    let tokens = doc["usage"]["input_tokens"].as_u64().unwrap_or(0)
        + doc["usage"]["output_tokens"].as_u64().unwrap_or(0);
    assert_eq!(
        tokens, 360,
        "two steps in attempt 1, one in attempt 2: {doc:#}"
    );

    // 3. Step timeouts name the step.
    let out = client.run(&[
        "run",
        &reliable,
        "--job",
        r#"{"sleep":10}"#,
        "--step-timeout",
        "1s",
        "--retries",
        "0",
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("step `work` timed out"),
        "{}",
        stderr(&out)
    );

    // 5. Dead letters, and their replay with a new payload.
    let out = client.run(&[
        "run",
        &reliable,
        "--job",
        r#"{"fail":true}"#,
        "--retries",
        "1",
        "--backoff",
        "100ms..1s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let dead = newest(client);
    let dlq = client.ok(&["dlq", "ls"]);
    assert!(dlq.contains(&dead[..12]), "{dlq}");
    let replayed = client.ok(&["dlq", "replay", &dead, "--payload", r#"{"fixed":true}"#]);
    assert_eq!(client.ok(&["wait", &replayed]), "0");

    // 6. Deduplication: the same key answers the same run.
    let a = client.ok(&[
        "run",
        &reliable,
        "--detach",
        "--idempotency-key",
        "order-42",
        "--job",
        r#"{"ask":true}"#,
    ]);
    let b = client.ok(&[
        "run",
        &reliable,
        "--detach",
        "--idempotency-key",
        "order-42",
        "--job",
        r#"{"ask":true}"#,
    ]);
    assert_eq!(a, b);

    // 8. Approvals: the decision reaches the agent on its worker.
    eventually(20, "the run pauses for its approval", || {
        status(client, &a) == "paused"
    });
    let ps = client.ok(&["ps"]);
    assert!(ps.contains("approval `send-email`"), "{ps}");
    let pending = client.ok(&["approvals", "ls"]);
    assert!(pending.contains("send-email"), "{pending}");
    client.ok(&[
        "approve",
        &a,
        "send-email",
        "--by",
        "ada",
        "--rationale",
        "customer verified",
    ]);
    assert_eq!(client.ok(&["wait", &a, "--timeout-ms", "30000"]), "0");
    let log = client.ok(&["logs", &a]);
    assert!(log.contains("email sent"), "{log}");

    // 7. Budgets stop the run with the reason.
    let out = client.run(&[
        "run",
        &reliable,
        "--job",
        r#"{"tokens":5000}"#,
        "--max-tokens",
        "1000",
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("budget_exceeded"), "{}", stderr(&out));

    // 10. Sessions follow the run to whichever worker claims it.
    for turn in 1..=4 {
        let out = client.run(&["run", &reliable, "--session", "alice"]);
        assert!(out.status.success(), "{out:?}");
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            text.contains(&format!("session turn {turn}")),
            "turn {turn}: {text}"
        );
    }
}

#[test]
fn durable_waits_on_a_cluster() {
    let Some(c) = cluster() else { return };
    let client = &c.client;
    let dir = client.agent(
        "waiter",
        "if [ -z \"$DISPATCH_RESUME\" ]; then\n\
           echo '{\"type\":\"wait\",\"for\":\"signal\",\"name\":\"paid\"}' >> \"$DISPATCH_EVENTS\"\n\
           exit 0\n\
         fi\n\
         cp \"$DISPATCH_RESUME\" \"$DISPATCH_OUTPUT\"\n",
    );
    let id = client.ok(&["run", &dir, "--detach"]);
    c.server.wait_for(&format!("/v1/runs/{id}"), |r| {
        r["state"]["status"] == "suspended"
    });
    let ps = client.ok(&["ps"]);
    assert!(ps.contains("paused: waiting for signal `paid`"), "{ps}");
    client.ok(&["signal", &id, "paid", "--value", r#"{"amount":12}"#]);
    assert_eq!(client.ok(&["wait", &id]), "0");
    assert_eq!(client.inspect(&id)["output"]["value"]["amount"], 12);
    // A signal to a finished run: exit 125, one line.
    let err = client.fails(&["signal", &id, "paid"], 125);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn parcels_on_a_cluster() {
    let Some(c) = cluster() else { return };
    let client = &c.client;
    // A binary file of every byte value, bigger than what a parcel's
    // database row keeps (8 MiB), and an executable agent.
    let dir = client.dir.path().join("blobby-src");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(10 * 1024 * 1024 + 7).collect();
    std::fs::write(dir.join("data.bin"), &bytes).expect("write");
    let script = dir.join("agent.sh");
    std::fs::write(&script, "#!/bin/sh\nsha256sum data.bin | cut -c1-64\n").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::write(
        dir.join("Agentfile"),
        "FROM process\nNAME blobby\nCOPY agent.sh\nCOPY data.bin\nCOMMAND [\"./agent.sh\"]\n",
    )
    .expect("write");
    // A link back to the directory is not followed round and round.
    std::os::unix::fs::symlink(".", dir.join("loop")).expect("symlink");
    let path = dir.to_string_lossy().into_owned();

    // dispatch build --host: the digest of a local build of the same directory.
    let local = tempfile::tempdir().expect("tempdir");
    let expected = dispatch_core::parcel::build(&dir, local.path()).expect("local build");
    let out = client.run(&["build", &path]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), expected.digest);
    assert!(stderr(&out).contains("built parcel blobby"), "{out:?}");

    // images --host: the cluster's parcels, whichever server answers.
    for _ in 0..2 {
        let listed: Value =
            serde_json::from_str(&client.ok(&["images", "--format", "json"])).expect("JSON");
        let found = listed
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["digest"] == expected.digest.as_str());
        let found = found.unwrap_or_else(|| panic!("blobby listed: {listed:#}"));
        assert_eq!(found["name"], "blobby");
        assert_eq!(found["files"], 2, "agent.sh and data.bin: {found:#}");
        let table = client.ok(&["images"]);
        assert!(
            table.contains("blobby") && table.contains(&expected.digest[..12]),
            "{table}"
        );
    }
    // Its archive (over the 8 MiB a row keeps) is in the database's object
    // store, not in the row.
    let sql = |q: &str| {
        let out = std::process::Command::new("psql")
            .args([c._db.url(), "-tAc", q])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "{q}: {out:?}");
        stdout(&out).trim().to_string()
    };
    let row = format!(
        "SELECT octet_length(archive) FROM parcels WHERE digest = '{}'",
        expected.digest
    );
    assert_eq!(sql(&row), "0");
    let object = format!(
        "SELECT size > 10485760 FROM blobs WHERE key = 'parcels/{}.tar'",
        expected.digest
    );
    assert_eq!(sql(&object), "t");
    let err = client.fails(&["images", "--verify"], 125);
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Run by name through either server: a worker with its own disk
    // fetches it, binary bytes and mode intact.
    let sum = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    for _ in 0..2 {
        let out = client.run(&["run", "blobby"]);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout(&out).contains(&sum), "{out:?}");
    }

    // rmi --host: refused while a run that has not ended uses the parcel.
    let sleeper = client.agent("sleepy", "echo started; sleep 30");
    let id = client.ok(&["run", &sleeper, "--detach"]);
    eventually(20, "the sleeper runs", || status(client, &id) == "running");
    let err = client.fails(&["rmi", "sleepy"], 125);
    assert!(err.contains("have not ended") && err.contains(&id), "{err}");
    client.ok(&["stop", &id, "-t", "1"]);
    assert_eq!(client.ok(&["rmi", "sleepy"]).len(), 64);
    assert_eq!(client.ok(&["rmi", &expected.digest[..12]]), expected.digest);
    let left = format!(
        "SELECT count(*) FROM blobs WHERE key = 'parcels/{}.tar'",
        expected.digest
    );
    assert_eq!(sql(&left), "0", "its archive went with it");
    for _ in 0..2 {
        let table = client.ok(&["images"]);
        assert!(!table.contains("blobby"), "{table}");
        let err = client.fails(&["run", "blobby"], 125);
        assert!(err.contains("blobby"), "{err}");
    }
    let err = client.fails(&["rmi", "blobby"], 125);
    assert!(err.contains("blobby"), "{err}");

    // rmi --prune --host: of three builds of `twice`, the newest and the
    // one a run used stay.
    let twice = client.dir.path().join("twice-src");
    std::fs::create_dir_all(&twice).expect("mkdir");
    let twice_path = twice.to_string_lossy().into_owned();
    let mut digests = Vec::new();
    for n in 1..=3 {
        std::fs::write(
            twice.join("Agentfile"),
            format!("FROM process\nNAME twice\nCOMMAND [\"echo\", \"version {n}\"]\n"),
        )
        .expect("write");
        digests.push(client.ok(&["build", &twice_path, "-q"]));
    }
    let out = client.run(&["run", &digests[0]]);
    assert!(stdout(&out).contains("version 1"), "{out:?}");
    assert_eq!(client.ok(&["rmi", "--prune"]), digests[1]);
    let table = client.ok(&["images"]);
    assert!(
        table.contains(&digests[0][..12])
            && table.contains(&digests[2][..12])
            && !table.contains(&digests[1][..12]),
        "{table}"
    );
    assert_eq!(client.ok(&["rmi", "--prune"]), "");
}
