//! A run in review on the dashboard, in a real browser (headless Chromium
//! over chromedriver, a real `dispatch server`): listed as `review` with
//! its reason, its page says why and offers the decision, and approving it
//! from the approvals page runs it.

use crate::dashboard_common;
use crate::remote_common;

use dashboard_common::browser;
use remote_common::{Client, Server};
use serde_json::{Value, json};

const POLICY: &str = r#"package dispatch

review contains "deploys need a person" if {
    input.action == "create_run"
    input.parcel.name == "deploy"
}
"#;

#[test]
fn the_dashboard_shows_a_run_in_review_and_approving_it_runs_it() {
    let Some(b) = browser() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.rego");
    std::fs::write(&file, POLICY).expect("policy");
    let server = Server::start_with_env(
        None,
        &[],
        &[("DISPATCH_POLICY", file.to_str().expect("utf-8"))],
    );
    let client = Client::new(&server);
    let deploy = client.agent("deploy", "echo deployed\n");
    let id = client.ok(&["run", "-d", &deploy]);
    let ui = format!("http://{}/ui", server.host);

    // The runs table: status `review`, the reason as its title.
    b.goto(&format!("{ui}/runs?status=review"));
    let row = b.js(
        "const r = document.querySelector(`tr[data-id=\"${arguments[0]}\"]`); \
         return r ? [r.dataset.status, r.querySelector('td[title]').title] : null;",
        json!([id]),
    );
    assert_eq!(row, json!(["review", "deploys need a person"]));

    // The run page: the state and its reason, and the decision to take.
    b.goto(&format!("{ui}/runs/{id}"));
    let header = b.js(
        "return document.querySelector('#run-header .reason').textContent",
        json!([]),
    );
    let header = header.as_str().unwrap_or("");
    assert!(
        header.contains("review") && header.contains("deploys need a person"),
        "{header}"
    );
    let offered = b.js(
        "return document.querySelector('#run-approvals [data-approval=\"policy-review\"] button[value=approve]') !== null",
        json!([]),
    );
    assert_eq!(offered, json!(true), "the run page offers the decision");

    // Approved from the approvals page: the server's workers run it.
    b.goto(&format!("{ui}/approvals"));
    b.wait_js(
        "the review",
        "return document.querySelector('[data-approval=\"policy-review\"]') !== null",
    );
    b.click("[data-approval=\"policy-review\"] button[value=approve]");
    assert_eq!(client.ok(&["wait", &id]), "0");
    let all: Value =
        serde_json::from_str(&client.ok(&["approvals", "ls", "-a", "--format", "json"]))
            .expect("JSON");
    assert_eq!(
        (&all[0]["id"], &all[0]["decision"], &all[0]["decided_by"]),
        (
            &json!("policy-review"),
            &json!("approve"),
            &json!("dashboard")
        ),
        "{all}"
    );
}
