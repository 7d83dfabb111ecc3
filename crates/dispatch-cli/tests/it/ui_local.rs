//! `dispatch ui` over a `.dispatch/` where local runs are live: its
//! in-process worker reclaims only what no live process holds, so the
//! runs keep running (it once killed them as "a previous process's runs"),
//! and the dashboard says why a run held by its project's quota waits, as
//! local `ps` does.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Dispatch, alive};

/// `dispatch ui --port 0` on `d`'s directory, and the URL it serves.
fn start_ui(d: &Dispatch) -> (Child, String) {
    let mut child = d
        .command()
        .args(["ui", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dispatch ui starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut url = String::new();
    BufReader::new(stdout)
        .read_line(&mut url)
        .expect("dispatch ui prints its URL");
    (child, url.trim().trim_end_matches("/ui/").to_string())
}

/// `method path` on `base`: the status and the body.
fn call(base: &str, method: &str, path: &str) -> (u16, String) {
    let response =
        dispatch_server::client::request(base, method, path, &[], None).expect("it answers");
    let status = response.status;
    (status, response.text().expect("a text body"))
}

fn get(base: &str, path: &str) -> String {
    let (status, body) = call(base, "GET", path);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

#[test]
fn the_dashboard_leaves_live_local_runs_running_and_says_why_a_run_waits() {
    let d = Dispatch::new();
    let agent = d.agent("sleeper", "echo $$ > \"$DISPATCH_OUTPUT.pid\"; sleep 60");
    let agent = agent.to_str().expect("utf-8");
    d.ok(&[
        "quota",
        "set",
        "team",
        "--max-live-runs",
        "1",
        "--on-hard",
        "wait",
    ]);
    let first = d.ok(&["run", agent, "--project", "team", "--detach"]);
    let held = d.ok(&["run", agent, "--project", "team", "--detach"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.status(&first) != "running" {
        assert!(Instant::now() < deadline, "{:#}", d.inspect(&first));
        std::thread::sleep(Duration::from_millis(50));
    }
    let agent_pid = d.inspect(&first)["state"]["agent"]["pid"]
        .as_u64()
        .expect("the running agent's pid") as u32;

    let quick = d.agent("quick", "echo quick");
    let created = d.ok(&["create", quick.to_str().expect("utf-8")]);

    let (mut ui, base) = start_ui(&d);
    // Its worker looks for what a previous process left before it claims
    // anything: once it ran the run started through its API, it has looked.
    let (status, body) = call(&base, "POST", &format!("/v1/runs/{created}/start"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(d.wait_terminal(&created)["status"], "succeeded");
    let doc: serde_json::Value =
        serde_json::from_str(&get(&base, &format!("/v1/runs/{held}"))).expect("JSON");
    assert_eq!(doc["status"], "queued", "{doc:#}");
    assert_eq!(doc["waiting"], "project quota, 1/1 live runs", "{doc:#}");
    let page = get(&base, &format!("/ui/runs/{held}"));
    assert!(
        page.contains("project quota, 1/1 live runs"),
        "the run page says why it waits"
    );
    assert_eq!(d.status(&first), "running", "{:#}", d.inspect(&first));
    assert!(alive(agent_pid), "the first run's agent was killed");

    d.ok(&["stop", &first]);
    let _ = ui.kill();
    let _ = ui.wait();
    d.ok(&["stop", &held]);
}
