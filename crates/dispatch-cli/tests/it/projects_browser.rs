//! Two projects and the four roles on the dashboard, in a real browser
//! (headless Chromium over chromedriver, a real `dispatch server
//! --require-auth`): each token logs in through the form and sees only its
//! projects' runs and approvals; the buttons its role lacks there are not
//! shown (roles include the ones below them: viewer, runner, approver,
//! admin), and those it has work when clicked — a runner stops its run, an
//! approver's approval lets the run finish, an admin restarts a run.

use crate::dashboard_common;
use crate::projects_dashboard::token;
use crate::remote_common;

use dashboard_common::{Browser, browser};
use remote_common::{Client, Server};
use serde_json::{Value, json};

/// Logs `b` in with `token` through the login form, landing on `next`.
fn login(b: &Browser, ui: &str, token: &str, next: &str) {
    b.goto(&format!("{ui}/runs"));
    b.clear_cookies();
    b.goto(&format!("{ui}/login?next={next}"));
    b.wait_js(
        "the login form",
        "return document.querySelector('input#token') !== null",
    );
    b.type_into("#token", token);
    b.click("section.login button[type=submit]");
    b.wait_js(
        "the page after the login",
        "return document.querySelector('input#token') === null && document.readyState === 'complete'",
    );
}

/// The run ids the runs table lists.
fn listed(b: &Browser) -> Vec<String> {
    let ids = b.js(
        "return [...document.querySelectorAll('table#runs tr[data-id]')].map(r => r.dataset.id)",
        json!([]),
    );
    serde_json::from_value(ids).unwrap_or_default()
}

/// Whether the page has a form posting to `action`.
fn has_form(b: &Browser, action: &str) -> bool {
    b.js(
        "return document.querySelector(`form[action=\"${arguments[0]}\"]`) !== null",
        json!([action]),
    ) == json!(true)
}

fn body_text(b: &Browser) -> String {
    b.js("return document.body.innerText", json!([]))
        .as_str()
        .unwrap_or_default()
        .to_string()
}

const ASKING: &str = "echo '{\"type\":\"approval\",\"id\":\"send\",\"summary\":\"Send?\",\"timeout_s\":3600}' >> \"$DISPATCH_EVENTS\"\n\
while [ ! -e \"$DISPATCH_APPROVALS/send.json\" ]; do sleep 0.02; done\n";

#[test]
fn four_roles_in_two_projects_see_and_do_only_what_their_role_allows() {
    let Some(b) = browser() else { return };
    let server = Server::start(&["--require-auth"]);
    let ui = format!("http://{}/ui", server.host);
    let root = token(&server, &["--name", "root"]);
    let bound = |name: &str, grants: &[(&str, &str)]| {
        let mut args = vec!["--name", name];
        for (project, role) in grants {
            args.extend(["--project", project, "--role", role]);
        }
        token(&server, &args)
    };
    let viewer = bound("watch", &[("payments", "viewer")]);
    let runner = bound("ci", &[("payments", "runner"), ("search", "viewer")]);
    let approver = bound("lead", &[("search", "approver")]);
    let admin = bound("owner", &[("search", "admin")]);

    let client = Client::new(&server);
    let run = |project: &str, agent: &str| {
        let out = client
            .command()
            .env("DISPATCH_TOKEN", &root)
            .args(["run", agent, "--detach", "--project", project])
            .output()
            .expect("dispatch run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // The quick run first: the two that stay hold the worker's slots.
    let finished = run("search", &client.agent("quick", "echo done\n"));
    let status = |id: &str| -> String {
        let out = client
            .command()
            .env("DISPATCH_TOKEN", &root)
            .args(["inspect-run", id, "--format", "json"])
            .output()
            .expect("inspect");
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        doc[0]["status"].as_str().unwrap_or_default().to_string()
    };
    dispatch_test_support::eventually(30, "the quick run ends", || {
        status(&finished) == "succeeded"
    });

    let paid = run("payments", &client.agent("hello", "sleep 600\n"));
    let searched = run("search", &client.agent("careful", ASKING));
    dispatch_test_support::eventually(30, "the approval is asked", || {
        let out = client
            .command()
            .env("DISPATCH_TOKEN", &root)
            .args(["approvals", "ls", "--format", "json"])
            .output()
            .expect("approvals");
        String::from_utf8_lossy(&out.stdout).contains("\"send\"")
    });

    // viewer of payments: its project's run, no button, nothing of search.
    login(&b, &ui, &viewer, "/ui/runs");
    b.wait_js(
        "the runs table",
        "return document.querySelector('table#runs') !== null",
    );
    let ids = listed(&b);
    assert!(ids.contains(&paid) && !ids.contains(&searched), "{ids:?}");
    assert!(
        !has_form(&b, &format!("/ui/runs/{paid}/stop")),
        "a viewer has no stop"
    );
    b.goto(&format!("{ui}/runs/{searched}"));
    let text = body_text(&b);
    assert!(text.contains("may not read in project search"), "{text}");
    b.goto(&format!("{ui}/approvals"));
    assert!(
        !body_text(&b).contains("Send?"),
        "not its project's approval"
    );

    // runner of payments and viewer of search: both listed, one stop button,
    // which stops its run when clicked.
    login(&b, &ui, &runner, "/ui/runs");
    b.wait_js(
        "the runs table",
        "return document.querySelector('table#runs') !== null",
    );
    let ids = listed(&b);
    assert!(ids.contains(&paid) && ids.contains(&searched), "{ids:?}");
    assert!(has_form(&b, &format!("/ui/runs/{paid}/stop")));
    assert!(
        !has_form(&b, &format!("/ui/runs/{searched}/stop")),
        "a viewer in search"
    );
    b.goto(&format!("{ui}/approvals"));
    assert!(
        body_text(&b).contains("Send?"),
        "a viewer of search sees its approval"
    );
    assert!(
        !has_form(&b, &format!("/ui/runs/{searched}/approvals/send")),
        "but may not decide it"
    );
    b.goto(&format!("{ui}/runs/{paid}"));
    b.click(&format!("form[action=\"/ui/runs/{paid}/stop\"] button"));
    dispatch_test_support::eventually(30, "the runner's click stops its run", || {
        status(&paid) == "cancelled"
    });

    // approver of search: decides the approval; the run finishes.
    login(&b, &ui, &approver, "/ui/approvals");
    b.wait_js(
        "the approval",
        "return document.querySelector('[data-approval=\"send\"]') !== null",
    );
    b.goto(&format!("{ui}/runs"));
    let ids = listed(&b);
    assert!(ids.contains(&searched) && !ids.contains(&paid), "{ids:?}");
    assert!(
        has_form(&b, &format!("/ui/runs/{searched}/stop")),
        "an approver may also run (roles include the ones below them)"
    );
    b.goto(&format!("{ui}/approvals"));
    b.click("[data-approval=\"send\"] button[value=approve]");
    dispatch_test_support::eventually(30, "the approved run finishes", || {
        status(&searched) == "succeeded"
    });

    // admin of search: restarts a finished run of search; payments is not its.
    login(&b, &ui, &admin, "/ui/runs");
    b.wait_js(
        "the runs table",
        "return document.querySelector('table#runs') !== null",
    );
    let ids = listed(&b);
    assert!(ids.contains(&finished) && !ids.contains(&paid), "{ids:?}");
    b.goto(&format!("{ui}/runs/{finished}"));
    let restart = format!("/ui/runs/{finished}/restart");
    assert!(
        has_form(&b, &restart),
        "an admin may restart: {}",
        body_text(&b)
    );
    b.click(&format!("form[action=\"{restart}\"] button"));
    dispatch_test_support::eventually(30, "the restart made a run of search", || {
        let out = client
            .command()
            .env("DISPATCH_TOKEN", &root)
            .args(["ps", "-a", "--project", "search", "--format", "json"])
            .output()
            .expect("ps");
        let runs: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        runs.as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["origin_id"] == json!(finished) && r["project"] == "search")
        })
    });
    b.goto(&format!("{ui}/runs/{paid}"));
    assert!(
        body_text(&b).contains("may not read in project payments"),
        "{}",
        body_text(&b)
    );
}
