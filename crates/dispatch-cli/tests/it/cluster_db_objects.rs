//! A cluster on PostgreSQL with no `--artifacts`: the database is the
//! object store. Two `dispatch server --workers 0` and two `dispatch
//! worker`s, each with a state directory of its own, on one fresh
//! database: an artifact a run leaves on worker A downloads byte for byte
//! through both servers (HTTP and `dispatch artifacts --host`), the
//! finished run's log (archived into the database) reads through both,
//! the parcel's state written on A is read on B, and `dispatch prune
//! --host` deletes the artifacts and log archives no remaining run has.
//!
//! Then downloads that cannot lie: a stored copy damaged in place (one
//! byte flipped, same size; or cut short) is never delivered whole with a
//! success, by a real HTTP client or the CLI, in the database store and in
//! a server's own directory (SQLite).
//!
//! PostgreSQL is 127.0.0.1:5432 (or `DISPATCH_TEST_PG`); without it these
//! tests fail under `CI=true` and are skipped otherwise.

use crate::remote_common;

use std::io::Read;
use std::time::{Duration, Instant};

use dispatch_store::{BlobExpect, BlobStore, MAX_PART, PgStore};
use dispatch_test_support::http;
use remote_common::{Client, Server, Worker, postgres};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Counts its runs in the parcel's state; leaves a 6 MB artifact (more
/// than one database row) that differs per run; logs over 64 KiB (so the
/// finished run's log is archived into the object store).
const MAKER: &str = r#"set -e
s="$DISPATCH_STATE_DIR"
n=$(cat "$s/count" 2>/dev/null || echo 0)
echo $((n+1)) > "$s/count"
mkdir -p "$DISPATCH_ARTIFACTS/out"
head -c 6000000 /dev/urandom > "$DISPATCH_ARTIFACTS/out/report.bin"
echo "$DISPATCH_RUN_ID" >> "$DISPATCH_ARTIFACTS/out/report.bin"
seq 1 20000
printf '{"seen":%s}' "$n" > "$DISPATCH_OUTPUT"
"#;

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The objects under `prefix` in the database's object store.
fn objects_under(db_url: &str, prefix: &str) -> Vec<String> {
    runtime().block_on(async {
        let store = PgStore::connect(db_url, 1).await.expect("the database");
        store
            .list_blobs(prefix, None, 1000)
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.key)
            .collect()
    })
}

/// Replaces the stored object at `key` with `bytes` (what a damaged disk
/// or a bad restore would leave).
fn store_object(db_url: &str, key: &str, bytes: &[u8]) {
    runtime().block_on(async {
        let store = PgStore::connect(db_url, 1).await.expect("the database");
        // A fresh upload id each time, as any writer makes.
        let upload = format!(
            "damage-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_nanos()
        );
        store.begin_blob_upload(&upload, 1).await.expect("begin");
        for (seq, part) in bytes.chunks(MAX_PART).enumerate() {
            store
                .put_blob_part(&upload, seq as i64, part)
                .await
                .expect("part");
        }
        store
            .commit_blob(key, &upload, &BlobExpect::Any, 2)
            .await
            .expect("commit")
            .expect("committed");
    });
}

fn finished(server: &Server, id: &str) -> Value {
    server.wait_for(&format!("/v1/runs/{id}"), |r| {
        r["status"]
            .as_str()
            .is_some_and(|s| !matches!(s, "queued" | "starting" | "running" | "created"))
    })
}

fn run_on(client: &Client, server: &Server, agent: &str, extra: &[&str]) -> Value {
    let mut args = vec!["run", agent, "-d"];
    args.extend_from_slice(extra);
    let id = client.ok(&args);
    let run = finished(server, &id);
    assert_eq!(run["status"], "succeeded", "{run}");
    run
}

/// `GET` with a real HTTP client: the status, `Content-Length`, and the
/// body as far as it came (`Err` when the transfer broke).
fn get(host: &str, path: &str) -> (u16, Option<u64>, Result<Vec<u8>, String>) {
    let response = match http::get(&format!("http://{host}{path}")).call() {
        Ok(r) => r,
        Err(http::Error::Status(_, r)) => r,
        Err(e) => return (0, None, Err(e.to_string())),
    };
    let status = response.status();
    let length = response
        .header("content-length")
        .and_then(|v| v.parse().ok());
    let mut body = Vec::new();
    let read = response
        .into_reader()
        .read_to_end(&mut body)
        .map(|_| body)
        .map_err(|e| e.to_string());
    (status, length, read)
}

fn head(host: &str, path: &str) -> (u16, Option<u64>) {
    let response = match http::head(&format!("http://{host}{path}")).call() {
        Ok(r) => r,
        Err(http::Error::Status(_, r)) => r,
        Err(e) => panic!("HEAD {path}: {e}"),
    };
    let length = response
        .header("content-length")
        .and_then(|v| v.parse().ok());
    (response.status(), length)
}

#[test]
fn without_artifacts_the_database_carries_artifacts_logs_and_state_between_machines() {
    let Some(db) = postgres() else { return };
    let server_a = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let server_b = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let worker = |name: &str, label: &str| {
        Worker::start(db.url(), name, &["--labels", label, "--slots", "1"])
    };
    let (_a, _b) = (worker("worker-a", "a"), worker("worker-b", "b"));
    let (via_a, via_b) = (Client::new(&server_a), Client::new(&server_b));
    let maker = via_a.agent("maker", MAKER);

    // Run 1 on worker A.
    let first = run_on(&via_a, &server_a, &maker, &["--label", "a"]);
    assert_eq!(first["output"], serde_json::json!({"seen": 0}));
    let id = first["id"].as_str().expect("an id").to_string();
    let (status, listed) = server_b.call("GET", &format!("/v1/runs/{id}/artifacts"), None);
    assert_eq!(status, 200, "{listed}");
    let artifact = listed["artifacts"][0].clone();
    assert_eq!(artifact["name"], "out/report.bin", "{listed}");
    let sha = artifact["sha256"].as_str().expect("a digest").to_string();
    let size = artifact["size"].as_u64().expect("a size");
    assert!(size > MAX_PART as u64, "more than one row: {size}");

    // Byte for byte through both servers, neither of which ran it.
    let path = format!("/v1/runs/{id}/artifacts/{sha}");
    let mut copies = Vec::new();
    for server in [&server_a, &server_b] {
        let (status, length, body) = get(&server.host, &path);
        let body = body.expect("the whole body");
        assert_eq!((status, length), (200, Some(size)));
        assert_eq!(sha256(&body), sha);
        assert!(body.ends_with(format!("{id}\n").as_bytes()));
        assert_eq!(head(&server.host, &path), (200, Some(size)));
        copies.push(body);
    }
    // And through the CLI, by name, into a file (checked by the CLI too).
    for client in [&via_a, &via_b] {
        let dest = client.dir.path().join("report.bin");
        let dest_arg = dest.to_string_lossy().to_string();
        client.ok(&["artifacts", &id, "out/report.bin", "-o", &dest_arg]);
        assert_eq!(std::fs::read(&dest).expect("downloaded"), copies[0]);
    }
    assert!(
        objects_under(db.url(), "artifacts/").contains(&format!("artifacts/{sha}")),
        "the artifact is in the database"
    );

    // The finished run's log moves into the database as an archive; both
    // servers read it back whole.
    let deadline = Instant::now() + Duration::from_secs(30);
    while objects_under(db.url(), "logs/").is_empty() {
        assert!(Instant::now() < deadline, "the log was never archived");
        std::thread::sleep(Duration::from_millis(50));
    }
    for client in [&via_a, &via_b] {
        let log = client.ok(&["logs", &id]);
        assert!(
            log.contains("starting job") && log.contains("\n1\n2\n3\n"),
            "{}",
            &log[..log.len().min(400)]
        );
        assert!(log.contains("\n19999\n20000"), "the whole log");
    }

    // Run 2 on worker B sees run 1's state.
    let second = run_on(&via_b, &server_b, &maker, &["--label", "b"]);
    assert_eq!(second["output"], serde_json::json!({"seen": 1}));

    // Prune: an artifact two runs share stays until neither has it.
    let same = "printf 'the same bytes\\n' > \"$DISPATCH_ARTIFACTS/same.txt\"\n";
    let (same_a, same_b) = (via_a.agent("same-a", same), via_a.agent("same-b", same));
    run_on(&via_a, &server_a, &same_a, &[]);
    run_on(&via_a, &server_a, &same_b, &[]);
    let shared = format!("artifacts/{}", sha256(b"the same bytes\n"));
    assert!(objects_under(db.url(), "artifacts/").contains(&shared));
    via_b.ok(&["prune", "-f", "--filter", "parcel=same-a"]);
    assert!(
        objects_under(db.url(), "artifacts/").contains(&shared),
        "run same-b still records it"
    );
    via_b.ok(&["prune", "-f", "--filter", "parcel=same-b"]);
    assert!(!objects_under(db.url(), "artifacts/").contains(&shared));
    // Everything else: no artifact and no log archive is left behind.
    via_b.ok(&["prune", "-f"]);
    assert_eq!(objects_under(db.url(), "artifacts/"), Vec::<String>::new());
    assert_eq!(objects_under(db.url(), "logs/"), Vec::<String>::new());
    assert_eq!(
        objects_under(db.url(), "state/"),
        ["state/maker/count"],
        "the parcel's state is not a run's to prune"
    );
}

/// Leaves a 6 MB artifact (more than one row, many file chunks).
const BIG: &str = "head -c 6000000 /dev/urandom > \"$DISPATCH_ARTIFACTS/big.bin\"\n";

/// Damages the stored copy of `good` (one byte flipped, then cut short)
/// with `damage`, and checks that no client gets it whole with a success.
fn never_served_whole(server: &Server, damage: &dyn Fn(&[u8])) {
    let client = Client::new(server);
    let maker = client.agent("big", BIG);
    let run = run_on(&client, server, &maker, &[]);
    let id = run["id"].as_str().expect("an id").to_string();
    let (_, listed) = server.call("GET", &format!("/v1/runs/{id}/artifacts"), None);
    let sha = listed["artifacts"][0]["sha256"]
        .as_str()
        .expect("a digest")
        .to_string();
    let path = format!("/v1/runs/{id}/artifacts/{sha}");
    let (status, _, good) = get(&server.host, &path);
    let good = good.expect("the good copy downloads");
    assert_eq!((status, sha256(&good)), (200, sha.clone()));

    let mut flipped = good.clone();
    flipped[100] ^= 0x01;
    let cut = &good[..good.len() - 1000];
    for (what, bytes) in [("a flipped byte", &flipped[..]), ("a cut copy", cut)] {
        damage(bytes);
        let (status, length, body) = get(&server.host, &path);
        match (status, &body) {
            (200, Ok(body)) => assert!(
                body.len() < good.len(),
                "{what}: a complete 200 of a damaged copy ({} bytes, Content-Length {length:?})",
                body.len()
            ),
            (200, Err(_)) => assert_eq!(length, Some(good.len() as u64), "{what}"),
            (502, Ok(body)) => {
                let answer: Value = serde_json::from_slice(body).expect("a JSON error");
                assert_eq!(answer["code"], "artifact_corrupt", "{what}: {answer}");
                assert!(
                    answer["message"].as_str().is_some_and(|m| m.contains(&sha)),
                    "{answer}"
                );
            }
            other => panic!("{what}: {other:?}"),
        }
        if bytes.len() != good.len() {
            assert_eq!(status, 502, "{what}: refused before any byte");
        }
        // HEAD reads the whole copy before it answers.
        assert_eq!(head(&server.host, &path).0, 502, "{what}");
        // The CLI refuses it and leaves no file.
        let dest = client.dir.path().join("big.bin");
        let dest_arg = dest.to_string_lossy().to_string();
        let out = client.run(&["artifacts", &id, "big.bin", "-o", &dest_arg]);
        assert!(!out.status.success(), "{what}: the CLI took a damaged copy");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(!dest.exists(), "{what}: a damaged copy landed");
    }
    // Repaired, it is served again.
    damage(&good);
    let (status, _, body) = get(&server.host, &path);
    assert_eq!((status, body.map(|b| sha256(&b))), (200, Ok(sha)));
}

#[test]
fn a_damaged_artifact_in_the_database_is_never_served_whole() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "1"]);
    let url = db.url().to_string();
    let key = std::cell::RefCell::new(String::new());
    never_served_whole(&server, &|bytes| {
        if key.borrow().is_empty() {
            let found = objects_under(&url, "artifacts/");
            *key.borrow_mut() = found.into_iter().next().expect("the stored artifact");
        }
        store_object(&url, &key.borrow(), bytes);
    });
}

#[test]
fn a_damaged_artifact_in_a_servers_directory_is_never_served_whole() {
    let server = Server::start(&["--workers", "1"]);
    let dir = server.state.path().join(".dispatch").join("artifacts");
    never_served_whole(&server, &|bytes| {
        let file = std::fs::read_dir(&dir)
            .expect("the artifacts directory")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.len() == 64))
            .expect("the stored artifact");
        std::fs::write(file, bytes).expect("damage it");
    });
}
