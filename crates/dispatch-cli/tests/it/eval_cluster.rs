//! `dispatch eval --host`: the cases run on the cluster's workers (a
//! `dispatch server --workers 0` and two `dispatch worker`s on one fresh
//! PostgreSQL database), the report is kept by the server and shown by
//! `GET /v1/evals/{id}`, and `--baseline` reads earlier evals from it.

use crate::remote_common;

use remote_common::{Client, Server, Worker, postgres};
use serde_json::{Value, json};

/// Reports a tool call and answers with the payload's category.
const AGENT: &str = r#"echo '{"type":"tool_call","name":"lookup_order","input":{"order_id":"12345"},"output":"ok","ok":true,"duration_ms":1}' >> "$DISPATCH_EVENTS"
echo '{"type":"usage","model":"m","input_tokens":100,"output_tokens":20,"cost_usd":0.001}' >> "$DISPATCH_EVENTS"
cat "$DISPATCH_PAYLOAD" > "$DISPATCH_OUTPUT"
"#;

const CASES: &str = r#"
[[case]]
name = "refund"
payload = { category = "refund" }
expect.status = "succeeded"
expect.output = { path = "$.category", equals = "refund" }
expect.tools = { called = ["lookup_order"], args = { lookup_order = { order_id = "12345" } } }

[[case]]
name = "wrong category"
payload = { category = "other" }
expect.output = { path = "$.category", equals = "refund" }

[[case]]
name = "no refund tool"
payload = { category = "refund" }
expect.tools = { not_called = ["lookup_order"] }
"#;

fn report(c: &Client, args: &[&str], code: i32) -> Value {
    let out = c.run(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "dispatch {args:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

#[test]
fn cases_run_on_the_workers_and_the_server_keeps_the_report() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let _a = Worker::start(db.url(), "eval-a", &["--slots", "2"]);
    let _b = Worker::start(db.url(), "eval-b", &["--slots", "2"]);
    let c = Client::new(&server);
    let agent = c.agent("triage", AGENT);
    let cases = c.dir.path().join("cases.toml");
    std::fs::write(&cases, CASES).expect("cases");
    let cases = cases.to_str().expect("utf-8");
    let args = [
        "eval", &agent, "--cases", cases, "--format", "json", "--jobs", "3",
    ];
    let first = report(&c, &args, 1);
    let passed: Vec<(Value, Value)> = first["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|o| (o["case"].clone(), o["passed"].clone()))
        .collect();
    assert_eq!(
        passed,
        vec![
            (json!("refund"), json!(true)),
            (json!("wrong category"), json!(false)),
            (json!("no refund tool"), json!(false)),
        ]
    );
    assert_eq!(first["summary"]["tokens"], 360);
    let id = first["eval"].as_str().expect("an eval id").to_string();
    // The runs are the cluster's, and ran on its workers.
    let mut workers = std::collections::BTreeSet::new();
    for o in first["results"].as_array().expect("results") {
        let run = c.inspect(o["run_id"].as_str().expect("run id"));
        assert_eq!(run["status"], "succeeded", "{run:#}");
        let (_, attempts) = server.call(
            "GET",
            &format!(
                "/v1/runs/{}/attempts",
                o["run_id"].as_str().unwrap_or_default()
            ),
            None,
        );
        workers.extend(
            attempts["attempts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["worker"].as_str().map(str::to_string)),
        );
    }
    assert!(
        !workers.is_empty() && workers.iter().all(|w| w.starts_with("eval-")),
        "{workers:?}"
    );
    // The eval's run groups the cases: their parent, ended by the server
    // with the verdict when the report arrived; no worker ever claimed it.
    let group = c.inspect(&id);
    assert_eq!(group["status"], "failed", "{group:#}");
    let reason = group["state"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("2 of 3 case run(s) failed: "),
        "{reason}"
    );
    assert_eq!(group["output"]["summary"]["passed"], 1, "{group:#}");
    assert_eq!(group["usage"]["input_tokens"], 300, "{group:#}");
    let (_, group_attempts) = server.call("GET", &format!("/v1/runs/{id}/attempts"), None);
    assert!(
        group_attempts["attempts"]
            .as_array()
            .is_none_or(|a| a.iter().all(|a| a["worker"].is_null())),
        "{group_attempts}"
    );
    for o in first["results"].as_array().expect("results") {
        let run = c.inspect(o["run_id"].as_str().expect("run id"));
        assert_eq!(run["parent_id"], id.as_str(), "{run:#}");
    }
    // The server keeps the report.
    let (status, kept) = server.call("GET", &format!("/v1/evals/{}", &id[..12]), None);
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["eval"], first["eval"]);
    assert_eq!(kept["results"], first["results"]);
    assert_eq!(kept["parcel"], first["parcel"]);

    // A later eval compares with it, by id or by the parcel's digest.
    let mut again = args.to_vec();
    again.extend(["--baseline", &id]);
    let second = report(&c, &again, 1);
    assert_eq!(second["baseline"]["baseline"], first["eval"]);
    assert_eq!(second["baseline"]["regressed"], json!([]));
    let digest = first["parcel"].as_str().expect("digest").to_string();
    let hex = digest.trim_start_matches("sha256:").to_string();
    let mut by_digest = args.to_vec();
    by_digest.extend(["--baseline", &hex[..16]]);
    let third = report(&c, &by_digest, 1);
    assert_eq!(
        third["baseline"]["baseline"], second["eval"],
        "the newest eval of the parcel"
    );

    // Bad input: no such baseline; cassettes stay local.
    let mut unknown = args.to_vec();
    unknown.extend(["--baseline", "nothing-like-it"]);
    let err = c.fails(&unknown, 125);
    assert!(err.contains("--baseline nothing-like-it"), "{err}");
    let err = c.fails(&["eval", &agent, "--cases", cases, "--record", "tape"], 125);
    assert!(err.contains("work only on the local state"), "{err}");
}

/// Sleeps when the payload says so.
const SLEEPER: &str = r#"case "$(cat "$DISPATCH_PAYLOAD")" in *long*) sleep 60 ;; esac
echo '{}' > "$DISPATCH_OUTPUT"
"#;

#[test]
fn stopping_a_cluster_eval_run_cancels_its_cases() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let _a = Worker::start(db.url(), "eval-a", &["--slots", "4"]);
    let c = Client::new(&server);
    let agent = c.agent("sleepy", SLEEPER);
    let cases = c.dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nname = \"a\"\npayload = { t = \"long\" }\n\n[[case]]\nname = \"b\"\npayload = { t = \"long\" }\n\n[[case]]\nname = \"c\"\npayload = { t = \"x\" }\n",
    )
    .expect("cases");
    let cases = cases.to_str().expect("utf-8");
    let eval = c
        .command()
        .args([
            "eval", &agent, "--cases", cases, "-j", "2", "--format", "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn eval");
    let mut id = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, runs) = server.call("GET", "/v1/runs?label=eval-run", None);
        let running: Vec<String> = runs["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .collect();
        if let Some(first) = running.first() {
            id.clone_from(first);
            let (_, kids) =
                server.call("GET", &format!("/v1/runs?parent={id}&status=running"), None);
            if kids["runs"].as_array().is_some_and(|k| k.len() == 2) {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "two cases never ran: {runs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(c.inspect(&id)["status"], "created");
    c.ok(&["stop", &id]);
    let out = eval.wait_with_output().expect("eval ends");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    let statuses: Vec<Value> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|o| o["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!("cancelled"), json!("cancelled"), json!("not_run")]
    );
    assert_eq!(c.inspect(&id)["status"], "cancelled");
}
