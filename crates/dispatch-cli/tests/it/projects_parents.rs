//! A run and its parent share one project: `parent_id` naming a run of
//! another project is refused with one line naming both projects (or, for a
//! token that may not read the parent's project, as if there were no such
//! run), through the API of a real `dispatch server --require-auth`.

use crate::projects::{call, token};
use crate::remote_common::{Client, Server};
use serde_json::json;

#[test]
fn a_parent_in_another_project_is_refused_naming_both() {
    let server = Server::start(&["--require-auth"]);
    let root = token(&server, None, &["--name", "root"]);
    let searcher = token(
        &server,
        None,
        &[
            "--name",
            "searcher",
            "--project",
            "search",
            "--role",
            "runner",
        ],
    );
    let client = Client::new(&server);
    let hello = client.agent("hello", "echo hi\n");
    let out = client.run_with(
        &["run", &hello, "--detach", "--project", "payments"],
        Some(&root),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parent = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let child =
        |project: &str| Some(json!({"parcel": "hello", "project": project, "parent_id": parent}));

    let (status, doc) = call(&server, &root, "POST", "/v1/runs", child("search"));
    assert_eq!(
        (status, doc["code"].as_str()),
        (400, Some("bad_request")),
        "{doc}"
    );
    let message = doc["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "parent run {parent} is in project payments, not in project search"
        )),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    let (_, page) = call(&server, &root, "GET", "/v1/runs?project=search", None);
    assert_eq!(page["runs"], json!([]), "nothing was created: {page}");

    // A token that cannot see the parent's project learns nothing of it.
    let (status, doc) = call(&server, &searcher, "POST", "/v1/runs", child("search"));
    assert_eq!(
        (status, doc["code"].as_str()),
        (404, Some("run_not_found")),
        "{doc}"
    );
    assert!(!doc.to_string().contains("payments"), "{doc}");

    // In the parent's own project, the child is created under it.
    let (status, doc) = call(&server, &root, "POST", "/v1/runs", child("payments"));
    assert_eq!(status, 201, "{doc}");
    assert_eq!(doc["parent_id"], parent.as_str(), "{doc}");
    assert_eq!(doc["project"], "payments", "{doc}");
}
