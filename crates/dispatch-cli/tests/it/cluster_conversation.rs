//! A native run's model-call records reach the dashboard of a server on
//! another machine: the worker uploads them to the cluster's artifact store
//! when the attempt ends, and the server's run page fetches them from there.

use crate::native_common;
use crate::remote_common;

use native_common::{Mock, text};
use remote_common::{Client, Server, Worker, postgres};
use serde_json::json;

fn page(server: &Server, path: &str) -> String {
    let base = format!("http://{}", server.host);
    let r = dispatch_server::client::request(&base, "GET", path, &[], None)
        .expect("the server answers");
    assert_eq!(r.status, 200, "{path}");
    r.text().expect("a page")
}

#[test]
fn the_run_page_of_a_server_shows_a_conversation_held_on_a_worker() {
    let Some(db) = postgres() else { return };
    let store = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", store.path().display());
    let server = Server::start_on(Some(db.url()), &["--workers", "0", "--artifacts", &url]);
    let _worker = Worker::start(db.url(), "w1", &["--artifacts", &url]);
    let client = Client::new(&server);
    let mock = Mock::start(json!([text("refund issued, all good", 11, 6)]));
    let dir = client.dir.path().join("native");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM agent\nNAME native\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nPROMPT Answer the ticket.\n",
            mock.url()
        ),
    )
    .expect("Agentfile");
    let id = client.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--detach",
        "--job",
        r#"{"ticket":"charged twice"}"#,
    ]);
    assert_eq!(client.ok(&["wait", &id]), "0");
    // The server never ran it: nothing of it on the server's disk.
    let calls = server
        .state
        .path()
        .join(".dispatch/runs")
        .join(&id)
        .join("calls.jsonl");
    assert!(!calls.exists(), "{}", calls.display());
    // The worker uploaded the run's records as one object.
    let uploaded: Vec<String> = walk(store.path())
        .into_iter()
        .filter(|p| p.contains(&format!("calls/{id}/")))
        .collect();
    assert_eq!(uploaded.len(), 1, "{uploaded:?}");
    assert!(uploaded[0].ends_with("pack.json"), "{uploaded:?}");
    let html = page(&server, &format!("/ui/runs/{id}"));
    assert!(
        !html.contains("has no record of the call"),
        "the record was found"
    );
    assert!(
        html.contains("refund issued, all good"),
        "the answer is shown"
    );
    assert!(html.contains("charged twice"), "the question is shown");
    assert!(
        calls.is_file(),
        "fetched once into the server's run directory"
    );
    // `dispatch rm` removes the records from the store too.
    client.ok(&["rm", &id]);
    let left = walk(store.path());
    assert!(
        !left.iter().any(|p| p.contains(&format!("calls/{id}"))),
        "{left:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
