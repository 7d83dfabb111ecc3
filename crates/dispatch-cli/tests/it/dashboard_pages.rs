//! The dashboard's workflow, services, workers and run-detail pages in a
//! real browser: headless Chromium (over chromedriver) against a real
//! `dispatch server` process with real runs. Screenshots go to
//! `docs/screenshots/` (the README shows them).

use crate::dashboard_common;
use crate::native_common;
use crate::remote_common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use dashboard_common::browser;
use native_common::{Mock, text};
use remote_common::{Client, Server, Worker};
use serde_json::{Value, json};

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn the_workflow_page_draws_the_newsroom_graph_and_links_agents_and_edges() {
    let Some(b) = browser() else { return };
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let ui = format!("http://{}/ui", server.host);
    let newsroom = examples().join("newsroom");
    let id = client.ok(&[
        "run",
        "-d",
        newsroom.to_str().expect("utf-8"),
        "--job",
        r#"{"topic":"tides"}"#,
    ]);
    assert_eq!(client.ok(&["wait", &id]), "0");

    // The run page links to its workflow page.
    b.goto(&format!("{ui}/runs/{id}"));
    b.click("#workflow-link");
    b.wait_js(
        "the workflow page",
        "return location.pathname.endsWith('/workflow') && document.querySelector('#workflow-graph')",
    );
    let nodes: BTreeSet<String> = serde_json::from_value(b.js(
        "return [...document.querySelectorAll('#workflow-graph a.node')].map(a => a.dataset.node)",
        json!([]),
    ))
    .expect("names");
    let want: BTreeSet<String> = ["__start__", "researcher", "analyst", "writer", "__end__"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(nodes, want);
    let edges: BTreeSet<(String, String, u64)> = serde_json::from_value::<Vec<Value>>(b.js(
        "return [...document.querySelectorAll('#workflow-graph a.edge')].map(a => [a.dataset.from, a.dataset.to, +a.dataset.count])",
        json!([]),
    ))
    .expect("edges")
    .into_iter()
    .map(|e| {
        (
            e[0].as_str().unwrap_or("").to_string(),
            e[1].as_str().unwrap_or("").to_string(),
            e[2].as_u64().unwrap_or(0),
        )
    })
    .collect();
    let want: BTreeSet<(String, String, u64)> = [
        ("__start__", "researcher", 1),
        ("researcher", "analyst", 1),
        ("researcher", "writer", 1),
        ("analyst", "writer", 2),
        ("writer", "analyst", 1),
        ("writer", "__end__", 1),
    ]
    .iter()
    .map(|(a, b, n)| (a.to_string(), b.to_string(), *n))
    .collect();
    assert_eq!(edges, want);
    b.screenshot(&shots().join("workflow.png"));

    // Every node and edge takes the keyboard focus (links in the SVG).
    let focusable = b.js(
        "return [...document.querySelectorAll('#workflow-graph a')].every(a => { a.focus(); return document.activeElement === a; })",
        json!([]),
    );
    assert_eq!(focusable, json!(true));

    // A node leads to that agent's child runs, an edge to its messages.
    b.click("#workflow-graph a.node[data-node=analyst]");
    b.wait_js(
        "the agent's row",
        "return location.hash === '#agent-analyst'",
    );
    let runs = b.js(
        "return document.querySelectorAll('#agent-analyst .agent-run a').length",
        json!([]),
    );
    assert_eq!(runs, json!(2), "the analyst took two turns");
    let kids = client.ok(&["ps", "-a", "-q", "--filter", &format!("parent={id}")]);
    let analyst_run = b.js(
        "return document.querySelector('#agent-analyst .agent-run a').title",
        json!([]),
    );
    assert!(
        kids.lines().any(|k| Some(k) == analyst_run.as_str()),
        "{analyst_run} among {kids}"
    );
    b.click("#workflow-graph a.edge[data-from=writer][data-to=analyst] text.edge-count");
    let section = b.wait_js(
        "the edge's messages",
        "const s = document.querySelector(location.hash); return s && s.dataset.from === 'writer' && s.dataset.to === 'analyst' && s.querySelectorAll('details.message').length",
    );
    assert_eq!(section, json!(1));
    let kind = b.js(
        "return document.querySelector(location.hash + ' details.message').dataset.kind",
        json!([]),
    );
    assert_eq!(kind, json!("VALIDATION"));
    b.goto("about:blank");
}

/// Logs a line every 50 ms until `gate` exists.
fn gated(gate: &std::path::Path) -> String {
    format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done\necho finished\n",
        gate.display()
    )
}

#[test]
fn services_show_their_schedule_and_wake_and_workers_show_their_slots_on_postgres() {
    let Some(db) = remote_common::postgres() else {
        return;
    };
    let Some(b) = browser() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let _worker = Worker::start(
        db.url(),
        "ui-gpu-1",
        &["--slots", "3", "--labels", "gpu,eu"],
    );
    let client = Client::new(&server);
    let ui = format!("http://{}/ui", server.host);

    // A worker holding one run: 1 of its 3 slots.
    let gate = client.dir.path().join("gate");
    let slow = client.agent("slow", &gated(&gate));
    let held = client.ok(&["run", "-d", &slow]);
    server.wait_for(&format!("/v1/runs/{held}"), |r| r["status"] == "running");
    b.goto(&format!("{ui}/workers"));
    b.wait_js(
        "the worker holding the run",
        "const r = document.querySelector('tr[data-worker=\"ui-gpu-1\"]'); if (!r || r.querySelector('[data-used]').dataset.used !== '1') { location.reload(); return false; } return true;",
    );
    let row = b.js(
        "const r = document.querySelector('tr[data-worker=\"ui-gpu-1\"]'); return [r.dataset.state, r.querySelector('[data-slots]').dataset.slots, r.textContent]",
        json!([]),
    );
    assert_eq!(row[0], "working", "{row}");
    assert_eq!(row[1], "3", "{row}");
    assert!(row[2].as_str().unwrap_or("").contains("gpu, eu"), "{row}");
    b.screenshot(&shots().join("workers.png"));
    // The API lists the same workers.
    let (status, listed) = server.call("GET", "/v1/workers", None);
    assert_eq!(status, 200, "{listed}");
    let me = listed["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["name"] == "ui-gpu-1")
        .cloned()
        .unwrap_or_else(|| panic!("ui-gpu-1 is listed: {listed}"));
    assert_eq!(me["state"], "working", "{me}");
    assert_eq!(
        (me["used"].as_u64(), me["slots"].as_u64()),
        (Some(1), Some(3)),
        "{me}"
    );
    assert_eq!(me["labels"], json!(["gpu", "eu"]), "{me}");
    std::fs::write(&gate, "").expect("open the gate");
    assert_eq!(client.ok(&["wait", &held]), "0");

    // A cluster service: its schedule with the next fire; wake it now.
    let svc = client.agent("ticker", "cat > /dev/null\necho tick\n");
    let id = client.ok(&[
        "serve",
        &svc,
        "--schedule",
        "0 0 0 1 1 *",
        "--listen",
        "127.0.0.1:0",
        "--listen-path",
        "/in",
        "--public",
    ]);
    b.goto(&format!("{ui}/services"));
    let schedule = b.wait_js(
        "the service's schedule",
        &format!(
            "const a = document.querySelector('article[data-service=\"{id}\"]'); return a && a.querySelector('table.schedules td code').textContent"
        ),
    );
    assert_eq!(schedule, json!("0 0 0 1 1 *"));
    let next = b.js(
        &format!(
            "return document.querySelector('article[data-service=\"{id}\"] table.schedules time').getAttribute('datetime')"
        ),
        json!([]),
    );
    assert!(
        next.as_str().unwrap_or("").contains("-01-01T00:00:00"),
        "next fire on 1 January: {next}"
    );
    let hook = b.js(
        &format!(
            "return document.querySelector('article[data-service=\"{id}\"] table.listeners').textContent"
        ),
        json!([]),
    );
    assert!(
        hook.as_str().unwrap_or("").contains("/hooks/ticker"),
        "{hook}"
    );
    b.screenshot(&shots().join("services.png"));
    b.click(&format!("article[data-service=\"{id}\"] form button"));
    b.wait_js(
        "the wake's run page",
        &format!("return location.pathname.startsWith('/ui/runs/') && !location.pathname.endsWith('{id}')"),
    );
    let wake = b.url().rsplit('/').next().unwrap_or("").to_string();
    let woke = server.wait_for(&format!("/v1/runs/{wake}"), |r| {
        r["status"] == "succeeded" || r["status"] == "failed"
    });
    assert_eq!(woke["status"], "succeeded", "{woke}");
    assert_eq!(woke["operation"], "heartbeat", "{woke}");
    client.ok(&["stop", &id]);
    b.goto("about:blank");
}

#[test]
fn the_run_page_shows_a_conversation_escaped_the_bom_and_artifact_links_and_runs_filter_by_trigger()
{
    let Some(b) = browser() else { return };
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let ui = format!("http://{}/ui", server.host);
    let mock = Mock::start(json!([text(
        "<img src=x onerror=\"window.pwnedAnswer=1\">all good",
        11,
        6
    )]));
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
        r#"{"ticket":"<script>window.pwnedAsk=1</script>charged twice"}"#,
    ]);
    assert_eq!(client.ok(&["wait", &id]), "0");

    b.goto(&format!("{ui}/runs/{id}"));
    b.click("details.model-call summary");
    let turns = b.wait_js(
        "the conversation",
        "const c = document.querySelector('details.model-call .conversation'); return c && [...c.querySelectorAll('[data-role]')].map(m => [m.dataset.role, m.textContent])",
    );
    let turns = turns.as_array().expect("turns").clone();
    let said = |role: &str| {
        turns
            .iter()
            .filter(|t| t[0] == role)
            .map(|t| t[1].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        said("user").contains("<script>window.pwnedAsk=1</script>charged twice"),
        "the payload went in as text: {turns:?}"
    );
    assert!(
        said("answer").contains("<img src=x onerror=\"window.pwnedAnswer=1\">all good"),
        "the answer came out as text: {turns:?}"
    );
    assert!(said("system").contains("Answer the ticket."), "{turns:?}");
    let ran = b.js(
        "return [window.pwnedAsk, window.pwnedAnswer].filter(x => x !== undefined).length + document.querySelectorAll('main img').length",
        json!([]),
    );
    assert_eq!(ran, json!(0), "no markup from the model or the payload ran");
    let bom = b.js(
        "const s = document.querySelector('#bom'); return s && s.textContent",
        json!([]),
    );
    assert!(bom.as_str().unwrap_or("").contains("gpt-4o-mini"), "{bom}");
    b.js(
        "document.querySelector('#models-title').scrollIntoView()",
        json!([]),
    );
    b.screenshot(&shots().join("run-conversation.png"));

    // Artifacts: a link that downloads the bytes.
    let maker = client.agent(
        "maker",
        "printf 'hello artifact' > \"$DISPATCH_ARTIFACTS/report.txt\"\n",
    );
    let made = client.ok(&["run", "-d", &maker]);
    assert_eq!(client.ok(&["wait", &made]), "0");
    b.goto(&format!("{ui}/runs/{made}"));
    let fetched = b.wait_js(
        "the artifact's bytes",
        "const a = document.querySelector('a.artifact'); if (!a) return false; if (!window.got) { window.got = 'pending'; fetch(a.href).then(r => r.text()).then(t => window.got = t); } return window.got !== 'pending' && [a.getAttribute('download'), window.got]",
    );
    assert_eq!(fetched, json!(["report.txt", "hello artifact"]));

    // The trigger filter: a replay shows under `replay`, not under `manual`.
    let again = client.ok(&["replay", &made, "--allow-side-effects"]);
    let again = again.lines().last().unwrap_or("").trim().to_string();
    b.goto(&format!("{ui}/runs"));
    b.js(
        "const s = document.querySelector('#f-trigger'); s.value = 'replay'; s.form.submit();",
        json!([]),
    );
    b.wait_js(
        "the filtered page",
        "return location.search.includes('trigger=replay') && document.readyState === 'complete'",
    );
    let ids = b.js(
        "return [...document.querySelectorAll('#runs tbody tr[data-id]')].map(r => r.dataset.id)",
        json!([]),
    );
    let ids: Vec<String> = serde_json::from_value(ids).expect("ids");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(
        ids[0].starts_with(&again) || again.starts_with(&ids[0][..12]),
        "{ids:?} vs {again}"
    );
    b.goto("about:blank");
}

#[test]
fn the_workflow_page_follows_a_running_workflow_live() {
    let Some(b) = browser() else { return };
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let ui = format!("http://{}/ui", server.host);
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = dir.path().join("live");
    let gate = dir.path().join("gate");
    // The first member waits for the gate; the second ends the workflow.
    remote_common::checks::agent(&flow, "first", "FROM process\n", &gated(&gate), "");
    remote_common::checks::agent(&flow, "second", "FROM process\n", "cat > /dev/null\n", "");
    std::fs::write(
        flow.join("Agentfile"),
        "FROM workflow\nNAME live\nCOORDINATOR chain\nAGENT first ./first\nAGENT second ./second\n",
    )
    .expect("write Agentfile");
    let id = client.ok(&["run", "-d", flow.to_str().expect("utf-8")]);
    server.wait_for(&format!("/v1/runs/{id}/graph"), |g| {
        g["nodes"].as_array().is_some_and(|n| !n.is_empty())
    });
    b.goto(&format!("{ui}/runs/{id}/workflow"));
    b.wait_js(
        "the graph with the first member",
        "return document.querySelector('#workflow-graph a.node[data-node=first]')",
    );
    let second =
        "return document.querySelector('#workflow-graph a.node[data-node=second]') !== null";
    assert_eq!(
        b.js(second, json!([])),
        json!(false),
        "the second has no turn yet"
    );
    // A mark that a reload would lose.
    b.js("window.notReloaded = true; return true", json!([]));
    // The first member ends: the second's turn and the end appear without a reload.
    std::fs::write(&gate, "").expect("open the gate");
    b.wait_js(
        "the second member's node, live",
        "return document.querySelector('#workflow-graph a.node[data-node=second]') && document.querySelector('#workflow-graph a.node[data-node=__end__]')",
    );
    b.wait_js(
        "the workflow's status, live",
        "return document.querySelector('#workflow-live .status')?.textContent.includes('succeeded')",
    );
    assert_eq!(
        b.js("return window.notReloaded === true", json!([])),
        json!(true),
        "no reload"
    );
    b.goto("about:blank");
}
