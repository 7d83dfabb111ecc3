//! `NETWORK allow <host>` (issue #35) from the binary: a sandboxed agent
//! (and a native agent's LOCAL tool) reaches a listed host through the
//! runtime's egress proxy, plain HTTP and tunnelled; a host not listed gets
//! the proxy's 403; a connection that bypasses the proxy finds no route;
//! every decision is a `network` event of the run. Without the sandbox
//! the run fails at start, and bad forms are refused at build.
//!
//! The two servers listen on 127.0.0.2 and 127.0.0.3 (the host's loopback
//! network, not the run's): one address listed, the other not.

use crate::common;
use crate::native_common;

use std::io::{Read, Write};
use std::net::TcpListener;

use common::Dispatch;
use native_common::{Mock, events_of, native_agent, text};
use serde_json::{Value, json};

/// An HTTP server on `ip` answering every request with `body`, until the
/// test ends; its port.
fn server(ip: &str, body: &'static str) -> u16 {
    let listener = TcpListener::bind((ip, 0)).expect("bind a loopback address");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // One request a connection (`Connection: close`): its head is
            // all a GET sends.
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn network_events(doc: &Value) -> Vec<Value> {
    events_of(doc, "network")
}

fn decision<'a>(events: &'a [Value], host: &str, method: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["host"] == host && e["method"] == method)
        .unwrap_or_else(|| panic!("a {method} decision on {host}: {events:#?}"))
}

#[test]
fn an_agent_reaches_a_listed_host_only_through_the_proxy() {
    let (allowed, denied) = (
        server("127.0.0.2", "HELLO-A"),
        server("127.0.0.3", "HELLO-B"),
    );
    let d = Dispatch::sandboxed();
    let script = format!(
        "curl -sS -m 20 http://127.0.0.2:{allowed}/; echo \" plain=$?\"\n\
         curl -sS -m 20 --proxytunnel http://127.0.0.2:{allowed}/; echo \" tunnel=$?\"\n\
         curl -sS -m 20 -o /dev/null -w '%{{http_code}}' http://127.0.0.3:{denied}/; echo \" refused=$?\"\n\
         curl -sS -m 20 --proxytunnel http://127.0.0.3:{denied}/; echo \" refused-tunnel=$?\"\n\
         curl -sS -m 20 --noproxy '*' http://127.0.0.2:{allowed}/; echo \" direct=$?\"\n\
         echo \"proxy=$HTTPS_PROXY no_proxy=$NO_PROXY\"\n"
    );
    let dir = d.agent_with("caller", &script, "NETWORK allow 127.0.0.2\n");
    let id = d.detach(&dir, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let log = d.ok(&["logs", &id]);
    assert!(log.contains("HELLO-A plain=0"), "{log}");
    assert!(log.contains("HELLO-A tunnel=0"), "{log}");
    assert!(log.contains("403 refused=0"), "{log}");
    assert!(!log.contains("HELLO-B"), "{log}");
    // curl: 56, the tunnel's CONNECT answered 403; 7, no connection.
    assert!(log.contains("refused-tunnel=56"), "{log}");
    assert!(log.contains("direct=7"), "{log}");
    assert!(log.contains("proxy=http://127.0.0.1:"), "{log}");
    assert!(log.contains("no_proxy=localhost,127.0.0.1,::1"), "{log}");
    assert!(
        log.contains("net ns (egress through the NETWORK allow proxy)"),
        "{log}"
    );

    let events = network_events(&doc);
    let get = decision(&events, "127.0.0.2", "GET");
    assert_eq!(get["allowed"], true, "{get}");
    assert_eq!(get["port"], allowed);
    assert_eq!(decision(&events, "127.0.0.2", "CONNECT")["allowed"], true);
    assert_eq!(decision(&events, "127.0.0.3", "GET")["allowed"], false);
    assert_eq!(decision(&events, "127.0.0.3", "CONNECT")["allowed"], false);
    assert_eq!(
        events.len(),
        4,
        "the direct connection never reached the proxy: {events:#?}"
    );
    // inspect-run shows them.
    let shown = d.ok(&["inspect-run", &id]);
    assert!(
        shown
            .lines()
            .any(|l| l.contains(" network ") && l.contains("\"allowed\":false")),
        "{shown}"
    );
}

#[test]
fn network_allow_without_the_sandbox_fails_the_run_at_start() {
    let d = Dispatch::new(); // DISPATCH_SANDBOX=off
    let dir = d.agent_with(
        "unfiltered",
        "echo RAN\n",
        "NETWORK allow api.example.com\n",
    );
    let id = d.detach(&dir, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("NETWORK allow needs a network namespace")
            && reason.contains("DISPATCH_SANDBOX=off"),
        "{reason}"
    );
    assert_eq!(reason.lines().count(), 1, "{reason}");
    assert!(!d.ok(&["logs", &id]).contains("RAN"));
}

#[test]
fn bad_network_allow_forms_are_refused_at_build_naming_the_line() {
    let d = Dispatch::new();
    for (i, (head, line, needle)) in [
        (
            "FROM process\n",
            "NETWORK allow api.example.com:443",
            "not `api.example.com:443`",
        ),
        (
            "FROM process\n",
            "NETWORK allow https://api.example.com",
            "takes a host name",
        ),
        ("FROM process\n", "NETWORK allow", "needs a host"),
        (
            "FROM process\n",
            "NETWORK allow a.example via-egress",
            "`via-egress` is not supported",
        ),
        (
            "FROM image localhost/agent:1\n",
            "NETWORK allow a.example",
            "not a container",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = common::checks::agent(
            d.dir.path(),
            &format!("bad{i}"),
            head,
            "true\n",
            &format!("{line}\n"),
        );
        let err = d.fails(&["build", dir.to_str().expect("utf-8")], 125);
        assert_eq!(err.trim().lines().count(), 1, "{line}: one line: {err}");
        assert!(err.contains("line 5: "), "{line}: {err}");
        assert!(err.contains(needle), "{line}: {err}");
    }
}

#[test]
fn a_native_agents_local_tool_goes_out_through_the_proxy() {
    let (allowed, denied) = (
        server("127.0.0.2", "HELLO-TOOL"),
        server("127.0.0.3", "NOPE"),
    );
    let d = Dispatch::sandboxed();
    // The model (called by the runtime, outside the namespace) is not filtered.
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "fetch", "arguments": {}, "id": "c0"}]},
        text("done", 5, 1),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "fetcher",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n\
             TOOL LOCAL tools/fetch.sh AS fetch DESCRIPTION \"Fetch\"\n\
             NETWORK allow 127.0.0.2",
            mock.url()
        ),
    );
    let tool = format!(
        "curl -sS -m 20 http://127.0.0.2:{allowed}/; echo \" ok=$?\"\n\
         curl -sS -m 20 -o /dev/null -w '%{{http_code}}' http://127.0.0.3:{denied}/; echo \" refused\"\n"
    );
    let tools = dir.join("tools");
    std::fs::create_dir_all(&tools).expect("tools dir");
    std::fs::write(tools.join("fetch.sh"), tool).expect("tool");
    let out = d
        .command()
        .args(["run", dir.to_str().expect("utf-8"), "--job", "\"go\""])
        .output()
        .expect("dispatch run");
    let id = d.ok(&["ps", "-a", "-q"]);
    let doc = d.inspect(
        id.lines()
            .next()
            .unwrap_or_else(|| panic!("a run: {out:?}")),
    );
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let calls = events_of(&doc, "tool_call");
    let output = calls[0]["output"].as_str().expect("the tool's output");
    assert!(output.contains("HELLO-TOOL ok=0"), "{output}");
    assert!(output.contains("403 refused"), "{output}");
    let events = network_events(&doc);
    assert_eq!(decision(&events, "127.0.0.2", "GET")["allowed"], true);
    assert_eq!(decision(&events, "127.0.0.3", "GET")["allowed"], false);
}
