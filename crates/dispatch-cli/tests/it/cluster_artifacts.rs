//! The cluster's shared artifact store (`--artifacts URL`), with the real
//! binary: two `dispatch server --workers 0` and two `dispatch worker`s,
//! each with a state directory of its own, on one fresh PostgreSQL
//! database. An artifact written on worker A is downloaded through server
//! B, bytes and sha256 equal; the parcel's state written by a run on one
//! worker is read by the next run on the other, deletions included. Once
//! with a shared directory (`file://`), once with a real S3-compatible
//! server (`moto_server`, from PyPI's `moto[server]`) started by the test.
//! A URL that does not parse or cannot be written refuses the start.
//!
//! PostgreSQL is 127.0.0.1:5432 (or `DISPATCH_TEST_PG`); `moto_server` is
//! found on PATH. Without them these tests fail under `CI=true` and are
//! skipped otherwise, saying how to get them.

use crate::remote_common;

use std::process::{Command, Stdio};

use dispatch_test_support::http;
use remote_common::moto::Moto;
use remote_common::{Client, Server, Worker, postgres};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Counts its runs in the parcel's state, creates `sub/gone` on the first
/// and deletes it on the next, and leaves an artifact (600 KiB) that
/// differs per run.
const AGENT: &str = r#"set -e
s="$DISPATCH_STATE_DIR"
n=$(cat "$s/count" 2>/dev/null || echo 0)
if [ -e "$s/sub/gone" ]; then g=yes; rm "$s/sub/gone"; else g=no; fi
if [ "$n" = 0 ]; then mkdir -p "$s/sub"; echo x > "$s/sub/gone"; fi
echo $((n+1)) > "$s/count"
mkdir -p "$DISPATCH_ARTIFACTS/out"
seq 1 100000 > "$DISPATCH_ARTIFACTS/out/report.txt"
echo "$DISPATCH_RUN_ID" >> "$DISPATCH_ARTIFACTS/out/report.txt"
printf '{"seen":%s,"gone":"%s"}' "$n" "$g" > "$DISPATCH_OUTPUT"
"#;

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Runs the counting agent on the worker with `label`, through `client`;
/// returns the finished run as the API shows it.
fn run_on(client: &Client, server: &Server, agent: &str, label: &str) -> Value {
    let id = client.ok(&["run", agent, "--label", label, "-d"]);
    server.wait_for(&format!("/v1/runs/{id}"), |r| {
        r["status"]
            .as_str()
            .is_some_and(|s| !matches!(s, "queued" | "starting" | "running" | "created"))
    })
}

/// The whole scenario against `url`, with `vars` in every process's
/// environment. The agents are sandboxed: the state pulled onto worker B
/// must be theirs to change and remove.
fn artifacts_and_state_cross_workers(db_url: &str, url: &str, vars: &[(&str, &str)]) {
    let args = ["--workers", "0", "--artifacts", url];
    let mut vars = vars.to_vec();
    vars.push(("DISPATCH_SANDBOX", "on"));
    let vars = vars.as_slice();
    let server_a = Server::start_with_env(Some(db_url), &args, vars);
    let server_b = Server::start_with_env(Some(db_url), &args, vars);
    let worker = |name: &str, label: &str| {
        Worker::start_with_env(
            db_url,
            name,
            &["--labels", label, "--slots", "1", "--artifacts", url],
            vars,
        )
    };
    let (_a, _b) = (worker("worker-a", "a"), worker("worker-b", "b"));
    let client = Client::new(&server_a);
    let agent = client.agent("counter", AGENT);

    // Run 1 on worker A: the state starts empty; it leaves an artifact.
    let first = run_on(&client, &server_a, &agent, "a");
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(
        first["output"],
        serde_json::json!({"seen": 0, "gone": "no"})
    );
    let id = first["id"].as_str().expect("an id").to_string();

    // Listed and downloaded through server B, which never saw the run.
    let (status, listed) = server_b.call("GET", &format!("/v1/runs/{id}/artifacts"), None);
    assert_eq!(status, 200, "{listed}");
    let artifact = listed["artifacts"][0].clone();
    assert_eq!(artifact["name"], "out/report.txt", "{listed}");
    let sha = artifact["sha256"].as_str().expect("a digest").to_string();
    let response = http::get(&format!(
        "http://{}/v1/runs/{id}/artifacts/{sha}",
        server_b.host
    ))
    .call()
    .expect("the artifact downloads");
    assert_eq!(response.header("etag"), Some(format!("\"{sha}\"").as_str()));
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).expect("its bytes");
    assert_eq!(sha256(&bytes), sha);
    assert_eq!(
        bytes.len() as u64,
        artifact["size"].as_u64().expect("a size")
    );
    assert!(bytes.ends_with(format!("{id}\n").as_bytes()));

    // The CLI through server B: by name, into a file, checked.
    let via_b = Client::new(&server_b);
    let dest = via_b.dir.path().join("report.txt");
    let dest_arg = dest.to_string_lossy().to_string();
    via_b.ok(&["artifacts", &id, "out/report.txt", "-o", &dest_arg]);
    assert_eq!(std::fs::read(&dest).expect("downloaded"), bytes);
    let table = via_b.ok(&["artifacts", &id]);
    assert!(
        table.contains("out/report.txt") && table.contains(&sha),
        "{table}"
    );
    let json: Value =
        serde_json::from_str(&via_b.ok(&["artifacts", &id, "--format", "json"])).expect("JSON");
    assert_eq!(json[0]["sha256"], sha.as_str());
    let err = via_b.fails(&["artifacts", &id, "nope.txt"], 125);
    assert!(err.contains("has no artifact `nope.txt`"), "{err}");

    // Run 2 on worker B sees run 1's state, and deletes a file of it.
    let second = run_on(&client, &server_a, &agent, "b");
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(
        second["output"],
        serde_json::json!({"seen": 1, "gone": "yes"})
    );
    // Run 3, back on worker A: run 2's write arrived, and so did its deletion.
    let third = run_on(&client, &server_b, &agent, "a");
    assert_eq!(third["status"], "succeeded", "{third}");
    assert_eq!(
        third["output"],
        serde_json::json!({"seen": 2, "gone": "no"})
    );

    // An output over 256 KiB goes to the store; the run keeps a reference.
    let big = client.agent(
        "big",
        "printf '{\"text\":\"' > \"$DISPATCH_OUTPUT\"\n\
         head -c 300000 /dev/zero | tr '\\0' a >> \"$DISPATCH_OUTPUT\"\n\
         printf '\"}' >> \"$DISPATCH_OUTPUT\"\n",
    );
    let run = run_on(&client, &server_a, &big, "b");
    assert_eq!(run["status"], "succeeded", "{run}");
    let reference = &run["output"]["$artifact"];
    assert_eq!(reference["name"], "run-output.json", "{}", run["output"]);
    let big_id = run["id"].as_str().expect("an id");
    let out = via_b.dir.path().join("output.json");
    let out_arg = out.to_string_lossy().to_string();
    via_b.ok(&["artifacts", big_id, "run-output.json", "-o", &out_arg]);
    let doc: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("downloaded")).expect("JSON");
    assert_eq!(doc["text"].as_str().map(str::len), Some(300_000));
    assert_eq!(
        reference["sha256"],
        sha256(&std::fs::read(&out).expect("read")).as_str()
    );

    // Bad requests for an artifact.
    let (status, body) = server_b.call(
        "GET",
        &format!("/v1/runs/{id}/artifacts/{}", "0".repeat(64)),
        None,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("artifact_not_found")),
        "{body}"
    );
    let (status, body) = server_b.call(
        "GET",
        &format!("/v1/runs/{id}/artifacts/not-a-digest"),
        None,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
}

#[test]
fn a_shared_directory_carries_artifacts_and_state_across_workers() {
    let Some(db) = postgres() else { return };
    let shared = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", shared.path().display());
    artifacts_and_state_cross_workers(db.url(), &url, &[]);
    assert!(shared.path().join("artifacts").is_dir());
    assert!(shared.path().join("state/counter/count").is_file());
}

#[test]
fn an_s3_compatible_server_carries_artifacts_and_state_across_workers() {
    let Some(db) = postgres() else { return };
    let Some(s3) = Moto::start() else { return };
    let bucket = s3.bucket("dispatch-cluster");
    let vars = s3.vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    artifacts_and_state_cross_workers(db.url(), &format!("s3://{bucket}/prefix"), &vars);
    // It all went through the S3 API: the bucket holds the artifacts and the state.
    let listing = http::get(&format!(
        "{}/{bucket}?list-type=2&prefix=prefix/",
        s3.endpoint
    ))
    .call()
    .expect("the bucket lists")
    .into_string()
    .expect("XML");
    assert!(listing.contains("<Key>prefix/artifacts/"), "{listing}");
    assert!(
        listing.contains("<Key>prefix/state/counter/count</Key>"),
        "{listing}"
    );
    assert!(
        !listing.contains("sub/gone"),
        "the deletion reached the store: {listing}"
    );
}

#[test]
fn a_store_that_cannot_be_used_refuses_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = format!("file://{}/missing", dir.path().display());
    let cases: [(&[&str], &str); 4] = [
        (
            &["--artifacts", "not a url"],
            "is not an artifact store URL",
        ),
        (
            &["--artifacts", "ftp://host/x"],
            "is not an artifact store URL",
        ),
        (&["--artifacts", &missing], "is not a directory"),
        // Nothing listens on port 1: the write probe fails.
        (
            &["--artifacts", "s3://bucket/x"],
            "cannot use the artifact store s3://bucket/x",
        ),
    ];
    for command in ["server", "worker"] {
        for (args, expected) in &cases {
            let out = Command::new(env!("CARGO_BIN_EXE_dispatch"))
                .arg(command)
                .args(if command == "server" {
                    &["--listen", "127.0.0.1:0"][..]
                } else {
                    &[][..]
                })
                .args(*args)
                .env("DISPATCH_ROOT", dir.path().join(".dispatch"))
                .env_remove("DISPATCH_DATABASE_URL")
                .env_remove("DISPATCH_HOST")
                .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
                .env("AWS_ACCESS_KEY_ID", "x")
                .env("AWS_SECRET_ACCESS_KEY", "x")
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .stdin(Stdio::null())
                .output()
                .expect("dispatch runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(125), "{command} {args:?}: {stderr}");
            assert!(stderr.contains(expected), "{command} {args:?}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        }
    }
}

/// Locally, `dispatch artifacts` lists and copies out of `.dispatch/artifacts/`,
/// and never leaves a copy that does not match its digest.
#[test]
fn artifacts_locally_list_copy_out_and_refuse_a_damaged_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join(".dispatch");
    let dispatch = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dispatch"))
            .args(args)
            .env("DISPATCH_ROOT", &root)
            .env_remove("DISPATCH_HOST")
            .env("NO_COLOR", "1")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("dispatch runs")
    };
    let agent = remote_common::checks::agent(
        dir.path(),
        "maker",
        "",
        "echo hello > \"$DISPATCH_ARTIFACTS/hello.txt\"\n",
        "",
    );
    let agent = agent.to_string_lossy().to_string();
    let id = remote_common::checks::ok(&["run"], &dispatch(&["run", &agent, "-d"]));
    remote_common::checks::ok(&["wait"], &dispatch(&["wait", &id]));
    let table = remote_common::checks::ok(&["artifacts"], &dispatch(&["artifacts", &id]));
    let sha = sha256(b"hello\n");
    assert!(
        table.contains("hello.txt") && table.contains(&sha),
        "{table}"
    );
    let copied =
        remote_common::checks::ok(&["artifacts"], &dispatch(&["artifacts", &id, &sha[..8]]));
    assert_eq!(copied, "hello");
    std::fs::write(root.join("artifacts").join(&sha), b"tampered\n").expect("write");
    let dest = dir.path().join("out.txt");
    let dest_arg = dest.to_string_lossy().to_string();
    let args = ["artifacts", &id, "hello.txt", "-o", &dest_arg];
    let err = remote_common::checks::fails(&args, &dispatch(&args), 125);
    assert!(err.contains("does not match its digest"), "{err}");
    assert!(!dest.exists(), "a damaged copy never lands");
}
