//! `dispatch serve --a2a` and `TOOL A2A` from the real binary, over
//! loopback: the card, JSON-RPC from the runs it makes, streaming, cancel,
//! bad input, a native agent calling a served parcel, and the trust policy.

use crate::common;
use crate::native_common;
use crate::service_common;
use crate::service_ingress::send;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Dispatch, eventually};
use dispatch_test_support::http;
use serde_json::Value;
use service_common::{ECHO_AGENT, Service};

pub const A2A_TOKEN: &str = "a2a-tok-51c9e07d";

/// A JSON-RPC call to `url` with the bearer token; the status and the answer.
pub fn a2a_rpc(url: &str, method: &str, params: Value) -> (u16, Value) {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    send(
        http::post(url).set("authorization", &format!("Bearer {A2A_TOKEN}")),
        Some(&body.to_string()),
    )
}

pub fn a2a_message(text: &str) -> Value {
    serde_json::json!({"message": {"kind": "message", "role": "user", "messageId": "m-1",
        "parts": [{"kind": "text", "text": text}]}})
}

/// The `data:` payloads of a `message/stream` answer, read to its end.
fn a2a_stream(url: &str, method: &str, params: Value) -> Vec<Value> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": "s", "method": method, "params": params});
    let resp = http::post(url)
        .set("authorization", &format!("Bearer {A2A_TOKEN}"))
        .set("accept", "text/event-stream")
        .timeout(Duration::from_secs(30))
        .send_string(&body.to_string())
        .expect("the stream answers");
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let text = resp.into_string().expect("the stream ends");
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("each event is JSON"))
        .collect()
}

/// A served process agent: echoes its input as its output, and sleeps
/// first when the input says `slow`.
fn a2a_echo_service<'a>(d: &'a Dispatch) -> Service<'a> {
    let agent = d.agent_with(
        "echo",
        "cat > \"$DISPATCH_OUTPUT\"\ncase \"$(cat \"$DISPATCH_OUTPUT\")\" in *slow*) sleep 60;; esac\n",
        "SECRET A2A_TOKEN\nLISTEN 127.0.0.1:0\nLISTEN_SECRET A2A_TOKEN\nLABEL description=\"Echoes what it is told.\"\n",
    );
    Service::start(d, &agent, &["--a2a", "--overlap", "concurrent"])
}

#[test]
fn serve_a2a_answers_json_rpc_from_the_runs_it_makes() {
    let d = Dispatch::with_env(&[("A2A_TOKEN", A2A_TOKEN)]);
    let svc = a2a_echo_service(&d);
    let url = svc.url("/");

    // The card needs no token; it says where to call and how to authenticate.
    let (code, card) = send(http::get(&svc.url("/.well-known/agent-card.json")), None);
    assert_eq!(code, 200, "{card}");
    assert_eq!(card["name"], "echo");
    assert_eq!(card["description"], "Echoes what it is told.");
    assert_eq!(card["url"], url.as_str());
    assert_eq!(card["capabilities"]["streaming"], true);
    assert_eq!(card["skills"][0]["id"], "echo");
    assert_eq!(card["securitySchemes"]["bearer"]["scheme"], "bearer");
    let (_, old) = send(http::get(&svc.url("/.well-known/agent.json")), None);
    assert_eq!(old, card, "the older card path serves the same card");

    // message/send: a run of the parcel, its id the task's.
    let (code, body) = a2a_rpc(&url, "message/send", a2a_message("hello there"));
    assert_eq!(code, 200, "{body}");
    let task = &body["result"];
    assert_eq!(body["id"], 7);
    assert_eq!(task["kind"], "task");
    assert_eq!(task["status"]["state"], "completed", "{task:#}");
    assert_eq!(task["artifacts"][0]["parts"][0]["text"], "hello there");
    let run_id = task["id"].as_str().expect("a task id").to_string();
    assert_eq!(task["metadata"]["dispatch"]["run_id"], run_id.as_str());
    let run = d.inspect(&run_id);
    assert_eq!(run["parent_id"], svc.id.as_str(), "{run:#}");
    assert_eq!(run["status"], "succeeded");
    let (_, got) = a2a_rpc(&url, "tasks/get", serde_json::json!({"id": run_id}));
    assert_eq!(got["result"]["status"]["state"], "completed", "{got}");
    assert_eq!(got["result"]["id"], run_id.as_str());
    // Where upstream Dispatch's client calls an agent it found no card for,
    // with its spelling of the task id.
    let (_, got) = a2a_rpc(
        &svc.url("/a2a"),
        "tasks/get",
        serde_json::json!({"taskId": run_id}),
    );
    assert_eq!(got["result"]["id"], run_id.as_str(), "{got}");

    // message/stream: the task, then its output and the final status.
    let events = a2a_stream(&url, "message/stream", a2a_message("streamed"));
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["result"]["kind"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds.first(), Some(&"task"), "{events:#?}");
    assert_eq!(
        &kinds[kinds.len() - 2..],
        ["artifact-update", "status-update"]
    );
    let last = &events[events.len() - 1]["result"];
    assert_eq!(
        (last["final"].as_bool(), last["status"]["state"].as_str()),
        (Some(true), Some("completed"))
    );
    assert_eq!(
        events[kinds.len() - 2]["result"]["artifact"]["parts"][0]["text"],
        "streamed"
    );

    // tasks/cancel stops a run that is still going.
    let mut slow = a2a_message("slow please");
    slow["configuration"] = serde_json::json!({"blocking": false});
    let (_, body) = a2a_rpc(&url, "message/send", slow);
    let slow_id = body["result"]["id"]
        .as_str()
        .expect("a task id")
        .to_string();
    assert!(
        matches!(
            body["result"]["status"]["state"].as_str(),
            Some("submitted" | "working")
        ),
        "{body}"
    );
    eventually(10, "the slow run is running", || {
        d.status(&slow_id) == "running"
    });
    let (_, body) = a2a_rpc(&url, "tasks/cancel", serde_json::json!({"id": slow_id}));
    assert_eq!(body["result"]["status"]["state"], "canceled", "{body}");
    assert_eq!(d.status(&slow_id), "cancelled");
    let (_, again) = a2a_rpc(&url, "tasks/cancel", serde_json::json!({"id": slow_id}));
    assert_eq!(again["error"]["code"], -32002, "{again}");

    // What a client gets wrong is a JSON-RPC error, or a plain 4xx.
    let (_, e) = a2a_rpc(&url, "tasks/get", serde_json::json!({"id": "nope"}));
    assert_eq!(e["error"]["code"], -32001, "{e}");
    let (_, e) = a2a_rpc(&url, "agents/dance", serde_json::json!({}));
    assert_eq!(e["error"]["code"], -32601, "{e}");
    let (_, e) = a2a_rpc(&url, "message/send", serde_json::json!({"message": 3}));
    assert_eq!(e["error"]["code"], -32602, "{e}");
    let (code, e) = send(
        http::post(&url).set("authorization", &format!("Bearer {A2A_TOKEN}")),
        Some("{not json"),
    );
    assert_eq!((code, e["error"]["code"].as_i64()), (200, Some(-32700)));
    let (code, _) = send(http::post(&url), Some("{}"));
    assert_eq!(code, 401, "JSON-RPC needs the token");
    assert_eq!(send(http::get(&svc.url("/elsewhere")), None).0, 404);
    svc.stop(5_000);
}

#[test]
fn serve_a2a_refuses_what_cannot_work_in_one_line() {
    let d = Dispatch::new();
    let agent = d.agent("plain", ECHO_AGENT);
    let dir = agent.to_str().expect("utf-8");
    for (args, needle) in [
        (
            vec!["serve", dir, "--a2a"],
            "--a2a needs an address to listen on",
        ),
        (
            vec!["serve", dir, "--a2a-url", "http://x/"],
            "--a2a-url needs --a2a",
        ),
        (
            vec!["serve", dir, "--a2a", "--listen", "127.0.0.1:0"],
            "has no secret",
        ),
        (
            vec![
                "serve",
                dir,
                "--a2a",
                "--listen",
                "127.0.0.1:0",
                "--public",
                "--listen-method",
                "post",
            ],
            "drop LISTEN_METHOD",
        ),
        (
            vec![
                "serve",
                dir,
                "--a2a",
                "--listen",
                "127.0.0.1:0",
                "--public",
                "--a2a-url",
                "ftp://x",
            ],
            "not an http(s) URL",
        ),
    ] {
        let err = d.fails(&args, 125);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

pub fn a2a_model_line(mock: &native_common::Mock) -> String {
    format!(
        "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
        mock.url()
    )
}

#[test]
fn a_native_agent_calls_a_served_parcel_over_a2a_through_the_real_binary() {
    use native_common::{Mock, events_of, message_texts, native_agent, text};
    let d = Dispatch::with_env(&[("A2A_TOKEN", A2A_TOKEN)]);
    // The remote agent: a native agent with its own model, served as A2A.
    let planner_model = Mock::start(serde_json::json!([text("Take the 9:40 train.", 7, 5)]));
    let planner = native_agent(
        d.dir.path(),
        "planner",
        &format!(
            "{}\nSECRET A2A_TOKEN\nLISTEN 127.0.0.1:0\nLISTEN_SECRET A2A_TOKEN\nIDENTITY \"Plans trips.\"",
            a2a_model_line(&planner_model)
        ),
    );
    let svc = Service::start(&d, &planner, &["--a2a"]);
    let base = svc.url("/");
    // The caller: a native agent whose model calls the planner once.
    let model = Mock::start(serde_json::json!([
        {"kind": "tool_calls", "calls": [{"name": "planner", "id": "c0",
            "arguments": {"message": "How do I get to Lyon by noon?"}}]},
        text("Take the 9:40.", 20, 4),
    ]));
    let caller = native_agent(
        d.dir.path(),
        "triage",
        &format!(
            "{}\nSECRET A2A_TOKEN\nTOOL A2A planner URL {base} DISCOVERY card AUTH bearer A2A_TOKEN EXPECT_AGENT_NAME planner",
            a2a_model_line(&model)
        ),
    );
    let out = d.run(&["run", caller.to_str().expect("utf-8"), "--job", "\"trip\""]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Value =
        serde_json::from_str(&d.ok(&["ps", "-a", "--format", "json"])).expect("ps JSON");
    let triage = runs
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["parcel_name"] == "triage" || r["name"] == "triage")
        .unwrap_or_else(|| panic!("the caller's run: {runs:#}"))["id"]
        .as_str()
        .expect("id")
        .to_string();
    let doc = d.inspect(&triage);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let calls = events_of(&doc, "tool_call");
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = &calls[0];
    assert_eq!(call["kind"], "a2a");
    assert_eq!(call["ok"], true, "{call:#}");
    assert_eq!(call["output"], "Take the 9:40 train.");
    assert_eq!(call["streamed"], true, "the card says it streams");
    assert_eq!(call["agent"], "planner");
    let bom = &events_of(&doc, "bom")[0]["tools"][0];
    assert_eq!(bom["kind"], "a2a");
    assert_eq!(bom["a2a"]["url"], base.as_str());
    assert_eq!(bom["a2a"]["discovery"], "card");
    assert_eq!(
        bom["a2a"]["auth"],
        serde_json::json!({"scheme": "bearer", "secret": "A2A_TOKEN"}),
        "the secret by name, never its value"
    );
    // The remote side: one durable run of the planner, the task's id.
    let task = call["task_id"].as_str().expect("the task id").to_string();
    let remote = d.inspect(&task);
    assert_eq!(remote["parent_id"], svc.id.as_str());
    assert_eq!(remote["status"], "succeeded", "{remote:#}");
    let asked = planner_model.requests();
    assert!(
        message_texts(&asked[0].body).contains(&"How do I get to Lyon by noon?"),
        "the planner's model got the message as it was sent: {:#}",
        asked[0].body
    );
    // The caller's model saw the remote answer as the tool's result.
    let reqs = model.requests();
    assert!(
        message_texts(&reqs[1].body)
            .iter()
            .any(|t| t.contains("Take the 9:40 train.")),
        "{:#}",
        reqs[1].body
    );
    svc.stop(5_000);
}

/// A loopback HTTP server that is not an A2A agent: it answers HTML to everything.
fn not_an_agent() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let mut buf = [0u8; 8192];
            let _ = s.read(&mut buf);
            let body = "<html><body>Welcome to nginx!</body></html>";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/")
}

#[test]
fn a2a_calls_that_fail_the_trust_policy_or_reach_no_agent_say_why_in_one_line() {
    use native_common::{Mock, events_of, native_agent, text};
    let d = Dispatch::with_env(&[("A2A_TOKEN", A2A_TOKEN)]);
    let svc = a2a_echo_service(&d);
    let base = svc.url("/");
    let port = svc
        .bound_addr()
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let web = not_an_agent();
    let tools = [
        (
            "impostor",
            format!("URL {base} EXPECT_AGENT_NAME planner"),
            "names `echo`, not the expected `planner`",
        ),
        (
            "pinned",
            format!("URL {base} EXPECT_CARD_SHA256 {}", "0".repeat(64)),
            "not the expected 0000",
        ),
        (
            "offlist",
            format!("URL http://localhost:{port}/"),
            "not in DISPATCH_A2A_ALLOWED_ORIGINS",
        ),
        (
            "gone",
            format!("URL http://127.0.0.1:{closed}/"),
            "cannot reach the A2A agent",
        ),
        ("web", format!("URL {web}"), "is not an A2A agent"),
        (
            "cardless",
            format!("URL {web} DISCOVERY card"),
            "is not an A2A agent card",
        ),
        (
            "slow",
            format!("URL {base} TIMEOUT 1s"),
            "did not finish within 1000 ms",
        ),
        (
            "badauth",
            format!("URL {base} AUTH bearer WRONG_TOKEN"),
            "refused the credentials",
        ),
        // Not a failure: no card read, `message/send` to `<url>/a2a`.
        ("direct", format!("URL {base} DISCOVERY direct"), ""),
    ];
    let lines: Vec<String> = tools
        .iter()
        .map(|(name, rest, _)| {
            let auth = if rest.contains("AUTH") {
                ""
            } else {
                " AUTH bearer A2A_TOKEN"
            };
            format!("TOOL A2A {name} {rest}{auth}")
        })
        .collect();
    let calls: Vec<Value> = tools
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| {
            let message = if *name == "slow" { "slow please" } else { "hi" };
            serde_json::json!({"name": name, "id": format!("c{i}"), "arguments": {"message": message}})
        })
        .collect();
    let model = Mock::start(serde_json::json!([
        {"kind": "tool_calls", "calls": calls},
        text("none of them answered", 5, 5),
    ]));
    let caller = native_agent(
        d.dir.path(),
        "caller",
        &format!(
            "{}\nSECRET A2A_TOKEN\nSECRET WRONG_TOKEN\n{}",
            a2a_model_line(&model),
            lines.join("\n")
        ),
    );
    let out = d
        .command()
        .args(["run", caller.to_str().expect("utf-8"), "--job", "\"go\""])
        .env("WRONG_TOKEN", "not-the-token")
        .env(
            "DISPATCH_A2A_ALLOWED_ORIGINS",
            format!("127.0.0.1, {}", web.trim_end_matches('/')),
        )
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Value =
        serde_json::from_str(&d.ok(&["ps", "-a", "--format", "json"])).expect("ps JSON");
    let id = runs
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["parcel_name"] == "caller" || r["name"] == "caller")
        .unwrap_or_else(|| panic!("the caller's run: {runs:#}"))["id"]
        .as_str()
        .expect("id")
        .to_string();
    let doc = d.inspect(&id);
    let events = events_of(&doc, "tool_call");
    assert_eq!(events.len(), tools.len(), "{events:#?}");
    for (name, _, needle) in tools {
        let e = events
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {events:#?}"));
        let text = e["output"].as_str().expect("output");
        if needle.is_empty() {
            assert_eq!((e["ok"].as_bool(), text), (Some(true), "hi"), "{name}: {e}");
            assert_eq!(e["streamed"], false, "{e}");
            assert_eq!(e["endpoint"], format!("{base}a2a"), "{e}");
            continue;
        }
        assert_eq!(e["ok"], false, "{name}: {e}");
        assert!(
            text.starts_with(&format!("error: A2A {name}: ")),
            "{name}: {text}"
        );
        assert!(text.contains(needle), "{name}: {text}");
        assert_eq!(text.lines().count(), 1, "{name}: {text}");
        assert!(!text.contains(A2A_TOKEN), "{name}: {text}");
    }
    // Only the slow and direct calls reached the agent; the slow one's task was cancelled when
    // the call ran out of time.
    let slow = events.iter().find(|e| e["name"] == "slow").expect("slow");
    assert_eq!(slow["canceled"], true, "{slow}");
    let task = slow["task_id"].as_str().expect("a task id").to_string();
    let beats = svc.heartbeats();
    assert_eq!(beats.len(), 2, "the slow and the direct calls: {beats:#?}");
    assert!(beats.iter().any(|b| b["id"] == task.as_str()), "{beats:#?}");
    eventually(10, "the remote run is cancelled", || {
        d.status(&task) == "cancelled"
    });

    // The operator's trust policy file: a rule for this host requires
    // another agent's identity, so the call is refused before any message.
    let policy = d.dir.path().join("a2a-policy.toml");
    std::fs::write(
        &policy,
        "[[rules]]\nhostname = \"127.0.0.1\"\nexpected_agent_name = \"planner\"\n",
    )
    .expect("policy");
    let strict_model = Mock::start(serde_json::json!([
        {"kind": "tool_calls", "calls": [{"name": "trusted", "id": "c0", "arguments": {"message": "hi"}}]},
        text("refused", 5, 5),
    ]));
    let strict = native_agent(
        d.dir.path(),
        "strict",
        &format!(
            "{}\nSECRET A2A_TOKEN\nTOOL A2A trusted URL {base} AUTH bearer A2A_TOKEN",
            a2a_model_line(&strict_model)
        ),
    );
    let out = d
        .command()
        .args(["run", strict.to_str().expect("utf-8"), "--job", "\"go\""])
        .env("DISPATCH_A2A_TRUST_POLICY", &policy)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Value =
        serde_json::from_str(&d.ok(&["ps", "-a", "--format", "json"])).expect("ps JSON");
    let strict_id = runs
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["parcel_name"] == "strict")
        .expect("the strict run")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let refused = &events_of(&d.inspect(&strict_id), "tool_call")[0];
    let text = refused["output"].as_str().expect("output");
    assert!(
        text.starts_with("error: A2A trusted: ") && text.contains("not the expected `planner`"),
        "{text}"
    );
    assert_eq!(svc.heartbeats().len(), 2, "no new task reached the agent");

    // A URL the policy could never allow is refused at build, by line.
    let bad = native_agent(
        d.dir.path(),
        "bad",
        &format!(
            "{}\nTOOL A2A far URL http://planner.example.com/",
            a2a_model_line(&model)
        ),
    );
    let err = d.fails(&["build", bad.to_str().expect("utf-8")], 125);
    assert!(
        err.contains("not loopback") && err.contains("line"),
        "{err}"
    );
    svc.stop(5_000);
}
