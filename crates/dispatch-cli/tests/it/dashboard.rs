//! The web dashboard in a real browser: headless Chromium (over
//! chromedriver) against a real `dispatch server` process on a loopback
//! port, with real runs. Screenshots of each page go to `docs/screenshots/`
//! (the README shows them).

use crate::dashboard_common;
use crate::remote_common;

use std::path::PathBuf;
use std::process::Command;

use dashboard_common::{Browser, browser};
use dispatch_test_support::http;
use remote_common::{Client, Server};
use serde_json::{Value, json};

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
}

/// Logs a line every 50 ms until `gate` exists.
fn gated(gate: &std::path::Path) -> String {
    format!(
        "i=0\nwhile [ ! -e '{}' ]; do i=$((i+1)); echo \"tick $i\"; sleep 0.05; done\necho finished\n",
        gate.display()
    )
}

/// Attempt 1 calls a tool and fails; attempt 2 calls it and succeeds.
const RETRYING: &str = "echo \"attempt $DISPATCH_ATTEMPT\"\n\
echo '{\"type\":\"step\",\"name\":\"fetch\",\"phase\":\"start\"}' >> \"$DISPATCH_EVENTS\"\n\
sleep 0.1\n\
echo '{\"type\":\"tool_call\",\"name\":\"search\",\"input\":{\"q\":\"refunds\"},\"output\":\"3 results\",\"ok\":true,\"duration_ms\":80}' >> \"$DISPATCH_EVENTS\"\n\
echo '{\"type\":\"usage\",\"model\":\"gpt-4o\",\"input_tokens\":1200,\"output_tokens\":300,\"cost_usd\":0.0123}' >> \"$DISPATCH_EVENTS\"\n\
[ \"$DISPATCH_ATTEMPT\" = 2 ] || exit 1\n\
echo '{\"type\":\"output\",\"value\":{\"answer\":\"done\"}}' >> \"$DISPATCH_EVENTS\"\n";

/// Asks for approval `send-email`; succeeds only when approved.
const ASKING: &str = "echo '{\"type\":\"approval\",\"id\":\"send-email\",\"summary\":\"Send refund email?\",\"timeout_s\":3600}' >> \"$DISPATCH_EVENTS\"\n\
while [ ! -e \"$DISPATCH_APPROVALS/send-email.json\" ]; do sleep 0.02; done\n\
grep -q '\"decision\":\"approve\"' \"$DISPATCH_APPROVALS/send-email.json\"\n";

/// Writes markup into its log and its output.
const EVIL: &str = "echo '<script>window.pwned=1</script><img src=x onerror=\"window.pwned3=1\">'\n\
echo '{\"type\":\"output\",\"value\":\"<script>window.pwned2=1</script><img src=x onerror=window.pwned4=1>\"}' >> \"$DISPATCH_EVENTS\"\n";

fn status_of(client: &Client, id: &str) -> String {
    client.inspect(id)["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The status the runs table shows for `id` (empty when it is not there).
fn row_status(b: &Browser, id: &str) -> String {
    b.js(
        "const r = document.querySelector(`tr[data-id=\"${arguments[0]}\"]`); return r ? r.dataset.status : '';",
        json!([id]),
    )
    .as_str()
    .unwrap_or("")
    .to_string()
}

fn wait_row(b: &Browser, id: &str, status: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while row_status(b, id) != status {
        assert!(
            std::time::Instant::now() < deadline,
            "the runs table never showed {id} as {status} (shows `{}`)",
            row_status(b, id)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_dashboard_follows_runs_live_and_acts_on_them() {
    let Some(b) = browser() else { return };
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let ui = format!("http://{}/ui", server.host);

    // The runs list shows a new run, then its end, without a reload.
    b.goto(&format!("{ui}/runs"));
    b.wait_js(
        "the live rows",
        "return document.querySelector('.live-dot.on') !== null",
    );
    b.js("window.notReloaded = true;", json!([]));
    let gate = client.dir.path().join("gate");
    let slow = client.agent("slow", &gated(&gate));
    let id = client.ok(&["run", "-d", &slow]);
    b.wait_js(
        "the new run's row",
        &format!("return document.querySelector('tr[data-id=\"{id}\"]') !== null"),
    );
    wait_row(&b, &id, "running");

    // Its page: the log grows while the run writes.
    b.goto(&format!("{ui}/runs/{id}"));
    let first = b.wait_js(
        "some log",
        "const t = document.querySelector('#log').textContent; return t.includes('tick') && t.length",
    );
    let first = first.as_u64().expect("a length");
    b.wait_js(
        "the log to grow",
        &format!("return document.querySelector('#log').textContent.length > {first} + 40"),
    );
    b.screenshot(&shots().join("run-live.png"));

    // Back on the list, the run's end arrives live.
    b.goto(&format!("{ui}/runs"));
    b.wait_js(
        "the live rows",
        "return document.querySelector('.live-dot.on') !== null",
    );
    b.js("window.notReloaded = true;", json!([]));
    std::fs::write(&gate, "").expect("open the gate");
    wait_row(&b, &id, "succeeded");
    assert_eq!(
        b.js("return window.notReloaded === true", json!([])),
        json!(true)
    );

    // Two attempts and a tool call on the timeline.
    let retrying = client.agent("retrying", RETRYING);
    let twice = client.ok(&[
        "run",
        "-d",
        &retrying,
        "--retries",
        "1",
        "--backoff",
        "20ms..20ms",
    ]);
    assert_eq!(client.ok(&["wait", &twice]), "0");
    b.goto(&format!("{ui}/runs/{twice}"));
    let attempts = b.js(
        "return document.querySelectorAll('#run-timeline rect[data-kind=attempt]').length",
        json!([]),
    );
    assert_eq!(attempts, json!(2));
    let tools = b.js(
        "return document.querySelectorAll('#run-timeline rect[data-kind=tool_call]').length",
        json!([]),
    );
    assert!(tools.as_u64().unwrap_or(0) >= 1, "{tools}");
    let output = b.js(
        "return document.querySelector('#output').textContent",
        json!([]),
    );
    assert!(
        output
            .as_str()
            .unwrap_or("")
            .contains("\"answer\": \"done\""),
        "{output}"
    );
    b.screenshot(&shots().join("run.png"));

    // Filters: by status, and by parcel through the form.
    let doomed = client.agent("doomed", "echo failing\nexit 3\n");
    let dead = client.ok(&[
        "run",
        "-d",
        &doomed,
        "--retries",
        "1",
        "--backoff",
        "20ms..20ms",
    ]);
    client.fails(&["wait", &dead], 3);
    b.goto(&format!("{ui}/runs?status=failed"));
    let statuses = b.js(
        "return [...document.querySelectorAll('#runs tbody tr[data-id]')].map(r => r.dataset.status)",
        json!([]),
    );
    assert_eq!(statuses, json!(["failed"]), "only the failed run");
    b.goto(&format!("{ui}/runs"));
    b.type_into("#f-parcel", "retrying");
    b.click("form.filters button[type=submit]");
    b.wait_js(
        "the filtered page",
        "return location.search.includes('parcel=retrying')",
    );
    let ids = b.js(
        "return [...document.querySelectorAll('#runs tbody tr[data-id]')].map(r => r.dataset.id)",
        json!([]),
    );
    assert_eq!(ids, json!([twice]));
    b.goto(&format!("{ui}/runs"));
    b.screenshot(&shots().join("runs.png"));

    // Dead letters, replayed from the browser.
    b.goto(&format!("{ui}/dead-letters"));
    b.wait_js(
        "the dead letter",
        &format!(
            "return document.body.textContent.includes('{}')",
            &dead[..12]
        ),
    );
    b.screenshot(&shots().join("dead-letters.png"));
    b.click("#dead-letters form button");
    b.wait_js("the replayed run's page", &format!(
        "return location.pathname.startsWith('/ui/runs/') && !location.pathname.endsWith('{dead}')"
    ));
    let replayed = b.url().rsplit('/').next().unwrap_or("").to_string();
    assert_eq!(client.inspect(&replayed)["origin_id"], dead.as_str());

    // Approve from the browser: the paused run resumes and succeeds.
    let careful = client.agent("careful", ASKING);
    let asking = client.ok(&["run", "-d", &careful]);
    b.goto(&format!("{ui}/approvals"));
    b.wait_js(
        "the approval",
        "if (!document.querySelector('[data-approval=\"send-email\"]')) { location.reload(); return false; } return true;",
    );
    b.screenshot(&shots().join("approvals.png"));
    b.click("[data-approval=\"send-email\"] button[value=approve]");
    assert_eq!(client.ok(&["wait", &asking]), "0");
    let all: Value =
        serde_json::from_str(&client.ok(&["approvals", "ls", "-a", "--format", "json"]))
            .expect("JSON");
    assert_eq!(all[0]["decision"], "approve", "{all}");
    assert_eq!(all[0]["decided_by"], "dashboard", "{all}");

    // Stop from the browser.
    let never = client.dir.path().join("never");
    let forever = client.agent("forever", &gated(&never));
    let stopping = client.ok(&["run", "-d", &forever]);
    b.goto(&format!("{ui}/runs/{stopping}"));
    b.wait_js(
        "the run to be running",
        "return document.querySelector('#run-header .s-running') !== null",
    );
    b.click("#stop");
    let _ = client.run(&["wait", &stopping]);
    assert_eq!(status_of(&client, &stopping), "cancelled");

    // Restart from the runs list: the stopped run runs again, as a new run.
    b.goto(&format!("{ui}/runs?parcel=forever"));
    b.click(&format!(
        "tr[data-id=\"{stopping}\"] button[aria-label^=Restart]"
    ));
    let page = b.wait_js(
        "the restarted run's page",
        &format!("return location.pathname.startsWith('/ui/runs/') && !location.pathname.includes('{stopping}') && location.pathname"),
    );
    let again = page
        .as_str()
        .and_then(|p| p.rsplit('/').next())
        .expect("a run id")
        .to_string();
    assert_eq!(
        client.inspect(&again)["origin_id"],
        json!(stopping),
        "run again from the stopped one"
    );
    std::fs::write(&never, "").expect("let it end");
    assert_eq!(client.ok(&["wait", &again]), "0");

    // Agent-written markup stays text, in the log and in the output.
    let evil = client.agent("evil", EVIL);
    let bad = client.ok(&["run", "-d", &evil]);
    client.ok(&["wait", &bad]);
    b.goto(&format!("{ui}/runs/{bad}"));
    b.wait_js(
        "the page",
        "return document.querySelector('#output') !== null",
    );
    let ran = b.js(
        "return [window.pwned, window.pwned2, window.pwned3, window.pwned4].filter(x => x !== undefined).length",
        json!([]),
    );
    assert_eq!(ran, json!(0), "no injected script ran");
    let shown = b.js(
        "return [document.querySelector('#log').textContent, document.querySelector('#output').textContent]",
        json!([]),
    );
    assert!(
        shown[0]
            .as_str()
            .unwrap_or("")
            .contains("<script>window.pwned=1</script>"),
        "{shown}"
    );
    assert!(
        shown[1]
            .as_str()
            .unwrap_or("")
            .contains("<script>window.pwned2=1</script>"),
        "{shown}"
    );

    b.goto(&format!("{ui}/usage"));
    b.wait_js(
        "the charts",
        "return document.querySelectorAll('.chart svg').length >= 5",
    );
    // Runs per minute by state, and each parcel's duration percentiles.
    let usage = b.js(
        "const head = [...document.querySelectorAll('#per-parcel thead th')].map(t => t.textContent); const row = [...document.querySelectorAll('#per-parcel tbody tr')][0]; return [document.querySelectorAll('.chart rect.stack-succeeded').length > 0, head.includes('Duration p50'), row ? row.children[4].textContent : '']",
        json!([]),
    );
    assert_eq!(usage[0], json!(true), "{usage}");
    assert_eq!(usage[1], json!(true), "{usage}");
    assert_ne!(
        usage[2],
        json!("-"),
        "a p50 for the busiest parcel: {usage}"
    );
    b.screenshot(&shots().join("usage.png"));
    b.resize(390, 844);
    b.goto(&format!("{ui}/runs/{twice}"));
    b.screenshot(&shots().join("run-phone.png"));
    // Close the live streams before the server drains its connections.
    b.goto("about:blank");
    drop(b);
}

#[test]
fn without_a_token_the_dashboard_asks_for_one_and_the_api_answers_401() {
    let Some(b) = browser() else { return };
    let server = Server::start(&["--require-auth"]);
    let ui = format!("http://{}/ui", server.host);
    let (status, body) = server.call("GET", "/v1/runs", None);
    assert_eq!(status, 401, "{body}");

    b.goto(&format!("{ui}/runs?status=failed"));
    b.wait_js(
        "the login form",
        "return document.querySelector('input#token') !== null",
    );
    assert!(b.url().contains("/ui/login?next="), "{}", b.url());
    b.screenshot(&shots().join("login.png"));

    // A wrong token is refused with one line.
    b.type_into("#token", "dsp_nope_nope");
    b.click("section.login button[type=submit]");
    b.wait_js(
        "the refusal",
        "return document.querySelector('[role=alert]') !== null",
    );

    let created = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["token", "create", "--name", "ada"])
        .env("DISPATCH_ROOT", server.state.path().join(".dispatch"))
        .env_remove("DISPATCH_HOST")
        .output()
        .expect("dispatch token");
    let token = String::from_utf8_lossy(&created.stdout).trim().to_string();
    assert!(token.starts_with("dsp_"), "{token}");
    b.type_into("#token", &token);
    b.click("section.login button[type=submit]");
    b.wait_js(
        "the runs page",
        "return document.querySelector('table#runs') !== null",
    );
    assert!(
        b.url().ends_with("/ui/runs?status=failed"),
        "back where it was: {}",
        b.url()
    );
    let cookies = b.cookies();
    let cookie = cookies
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "dispatch_session"))
        .expect("the session cookie")
        .clone();
    assert_ne!(
        cookie["value"],
        token.as_str(),
        "a session id, not the token"
    );
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    let text = b.js("return document.body.textContent", json!([]));
    assert!(
        !text.as_str().unwrap_or("").contains(&token),
        "the token is never shown"
    );
    // Close the live streams before the server drains its connections.
    b.goto("about:blank");
    drop(b);

    // A form without the session's CSRF token is refused.
    let refused = http::post(&format!("{ui}/runs/0123/stop"))
        .timeout(std::time::Duration::from_secs(10))
        .set(
            "cookie",
            &format!(
                "dispatch_session={}",
                cookie["value"].as_str().unwrap_or_default()
            ),
        )
        .set("content-type", "application/x-www-form-urlencoded")
        .send_string("csrf=nope");
    match refused {
        Err(http::Error::Status(code, _)) => assert_eq!(code, 403),
        other => panic!("expected 403, got {other:?}"),
    }
}
