//! Signed webhooks of a cluster service: two `dispatch server`s and a worker
//! on one fresh PostgreSQL database. A GitHub delivery signed with the
//! service's secret runs once; the same delivery sent to the other server is
//! refused as a replay (the deliveries taken are in the store), and a
//! tampered or wrongly signed one gets 401, waking nothing. A webhook with no
//! secret is refused unless `--public`.

use crate::remote_common;

use hmac::{Hmac, Mac};
use remote_common::{Client, Server, Worker, postgres};
use serde_json::Value;
use sha2::Sha256;

const GH_SECRET: &str = "gh-cluster-8c2e4a6b";

fn github_signature(key: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key");
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn post(host: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let response = dispatch_server::client::request(
        &format!("http://{host}"),
        "POST",
        path,
        headers,
        Some(body.as_bytes()),
    )
    .expect("the server answers");
    let status = response.status;
    let text = response.text().expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn a_signed_delivery_runs_once_whichever_server_it_reaches() {
    let Some(db) = postgres() else {
        return;
    };
    let url = db.url().to_string();
    let env = [("GH_SECRET", GH_SECRET)];
    let server = || Server::start_with_env(Some(&url), &["--workers", "0"], &env);
    let (a, b) = (server(), server());
    let _worker = Worker::start_with_env(&url, "w1", &["--slots", "2"], &env);
    let client = Client::new(&a);
    let dir = client.agent_with(
        "gh",
        "cat >/dev/null; echo got it\n",
        "SECRET GH_SECRET\nLISTEN 127.0.0.1:0\nLISTEN_PATH /github\nLISTEN_SIGNATURE github GH_SECRET\n",
    );
    let mut serve = client.command();
    serve
        .args(["serve", &dir, "--name", "gh-hooks"])
        .env("GH_SECRET", GH_SECRET);
    let out = serve.output().expect("dispatch serve");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let body = r#"{"action":"opened"}"#;
    let sig = github_signature(GH_SECRET, body);
    let delivery = [
        ("x-github-delivery", "d-0001"),
        ("x-hub-signature-256", sig.as_str()),
    ];
    let (status, answer) = post(&a.host, "/hooks/gh-hooks/github", &delivery, body);
    assert_eq!(status, 202, "{answer}");
    let run = answer["run_id"].as_str().expect("a run id").to_string();

    let wrong = github_signature("not-the-secret", body);
    let refused = [
        (
            "a replay on the other server",
            delivery.to_vec(),
            body,
            "replayed",
        ),
        (
            "a tampered body",
            vec![("x-github-delivery", "d-0002"), delivery[1]],
            r#"{"action":"closed"}"#,
            "bad_signature",
        ),
        (
            "a wrong secret",
            vec![
                ("x-github-delivery", "d-0003"),
                ("x-hub-signature-256", wrong.as_str()),
            ],
            body,
            "bad_signature",
        ),
    ];
    for (what, headers, body, code) in refused {
        let (status, answer) = post(&b.host, "/hooks/gh-hooks/github", &headers, body);
        assert_eq!(
            (status, answer["code"].as_str()),
            (401, Some(code)),
            "{what}: {answer}"
        );
    }
    let done = b.wait_for(&format!("/v1/runs/{run}"), |r| {
        r["status"] == "succeeded" || r["status"] == "failed"
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    let (status, page) = a.call("GET", &format!("/v1/runs?parent={id}&limit=100"), None);
    assert_eq!(status, 200);
    let runs = page["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 1, "only the signed delivery woke it: {page}");

    // No secret at all: refused with one line, unless --public.
    let open = client.agent_with("open", "cat >/dev/null\n", "LISTEN 127.0.0.1:0\n");
    let err = client.fails(&["serve", &open, "--name", "open-hooks"], 125);
    assert!(
        err.contains("`/hooks/open-hooks`") && err.contains("--public"),
        "{err}"
    );
    client.ok(&["serve", &open, "--name", "open-hooks", "--public"]);
    assert_eq!(post(&b.host, "/hooks/open-hooks", &[], "{}").0, 202);
    drop(db);
}
