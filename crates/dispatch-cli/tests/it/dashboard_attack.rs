//! The attacks of the security report, from a real headless Chromium
//! against a real `dispatch server` on loopback without `--require-auth`
//! (the developer's setup): a page of another origin (served by a second
//! HTTP server on another loopback port) and a DNS-rebinding page (a name
//! the browser resolves to 127.0.0.1) change nothing and read nothing.

use crate::dashboard_common;
use crate::remote_common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use dashboard_common::browser_with;
use dispatch_test_support::http;
use remote_common::{Client, Server};
use serde_json::json;

/// The name the browser resolves to 127.0.0.1, as a rebinding DNS server would.
const REBOUND: &str = "rebind.test";

/// The attacker's page: simple requests (text/plain, untyped blobs, no
/// body), a JSON request that needs a preflight, a read, and a classic
/// form; `window.results` says what happened to each.
fn attack_page(target: &str, marker: &Path) -> String {
    let upload = json!({"files": {
        "Agentfile": "NAME pwn\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        "agent.sh": format!("id > {}\n", marker.display()),
    }})
    .to_string();
    let run = json!({"parcel": "pwn"}).to_string();
    format!(
        r#"<!doctype html><html><body>
<iframe name="sink" id="sink"></iframe>
<form id="f" method="post" enctype="text/plain" action="{target}/v1/runs" target="sink">
<input name='{{"parcel":"pwn","x":"' value='"}}'></form>
<script>
const T = {target:?}, up = {upload:?}, run = {run:?}, out = {{}};
async function attempt(name, f) {{
  try {{ const r = await f(); out[name] = r.type + ':' + r.status; }}
  catch (e) {{ out[name] = 'error:' + e.name; }}
}}
const simple = (path, body, type) => () => fetch(T + path, {{method: 'POST', mode: 'no-cors',
  headers: type ? {{'Content-Type': type}} : {{}}, body}});
(async () => {{
  await attempt('upload_text', simple('/v1/parcels', up, 'text/plain'));
  await attempt('run_text', simple('/v1/runs', run, 'text/plain'));
  await attempt('upload_blob', simple('/v1/parcels', new Blob([up])));
  await attempt('run_blob', simple('/v1/runs', new Blob([run])));
  await attempt('prune', simple('/v1/runs/prune'));
  await attempt('prune_text', simple('/v1/runs/prune', '{{}}', 'text/plain'));
  await attempt('upload_json', () => fetch(T + '/v1/parcels', {{method: 'POST',
    headers: {{'Content-Type': 'application/json'}}, body: up}}));
  try {{ const r = await fetch(T + '/v1/runs'); out.read = 'read:' + await r.text(); }}
  catch (e) {{ out.read = 'blocked'; }}
  await new Promise(done => {{
    document.getElementById('sink').onload = done;
    document.getElementById('f').submit();
  }});
  out.form = 'sent';
  window.results = out;
}})();
</script></body></html>"#
    )
}

/// Serves `page` to every request on a loopback port of its own: the
/// attacker's site. Its address.
fn attacker(page: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = listener.local_addr().expect("an address");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    format!("http://{addr}")
}

fn parcels(server: &Server) -> Vec<String> {
    let (_, body) = server.call("GET", "/v1/parcels", None);
    body["parcels"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn run_ids(server: &Server) -> Vec<String> {
    let (_, body) = server.call("GET", "/v1/runs", None);
    body["runs"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pages_of_other_origins_and_rebound_names_change_nothing_and_read_nothing() {
    let rule = format!("--host-resolver-rules=MAP {REBOUND} 127.0.0.1");
    let Some(b) = browser_with(&[&rule]) else {
        return;
    };
    let server = Server::start(&[]);
    let client = Client::new(&server);
    // A finished run the attacker would like to see, prune or replay.
    let hello = client.agent("hello", "echo hello\n");
    let legit = client.ok(&["run", "-d", &hello]);
    assert_eq!(client.ok(&["wait", &legit]), "0");
    let before = run_ids(&server);
    assert_eq!(before.len(), 1, "{before:?}");
    let marker = client.dir.path().join("pwned");

    // A page on another origin: every write refused, the read blocked.
    let page = attacker(attack_page(&format!("http://{}", server.host), &marker));
    b.goto(&format!("{page}/"));
    let results = b.wait_js("the attack to finish", "return window.results || false");
    assert_eq!(
        results["read"], "blocked",
        "a page of another origin read the API: {results}"
    );
    assert!(
        results["upload_json"]
            .as_str()
            .is_some_and(|r| r.starts_with("error:")),
        "the preflight was refused: {results}"
    );
    assert_eq!(parcels(&server), vec!["hello".to_string()], "{results}");
    assert_eq!(
        run_ids(&server),
        before,
        "no run created, none pruned: {results}"
    );
    assert!(!marker.exists(), "the attacker's command ran");

    // A rebinding page: the browser thinks it talks to rebind.test, and
    // its requests say so. Nothing is answered, nothing is changed.
    let port = server.host.rsplit(':').next().expect("a port");
    let rebound = format!("http://{REBOUND}:{port}");
    for path in ["/ui/runs", "/ui/approvals", "/v1/runs"] {
        b.goto(&format!("{rebound}{path}"));
        let text = b.js("return document.body.innerText", json!([]));
        let text = text.as_str().unwrap_or("");
        assert!(text.contains("host_not_allowed"), "{path}: {text}");
        assert!(
            !text.contains(&legit[..12]),
            "{path} showed the run: {text}"
        );
    }
    // Same-origin now, as far as the browser knows: fetch can read and send JSON.
    b.js(
        "window.rebound = null; (async () => { const o = {}; \
         const r = await fetch('/v1/runs'); o.read = r.status + ' ' + await r.text(); \
         const w = await fetch('/v1/parcels', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: arguments[0]}); \
         o.write = w.status; \
         const p = await fetch('/v1/runs/prune', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'}); \
         o.prune = p.status; window.rebound = o; })();",
        json!([json!({"files": {"Agentfile": "NAME pwn\nCOPY agent.sh\nCOMMAND sh agent.sh\n", "agent.sh": "id\n"}}).to_string()]),
    );
    let rebound_results = b.wait_js("the rebound requests", "return window.rebound || false");
    let read = rebound_results["read"].as_str().unwrap_or("");
    assert!(read.starts_with("421 "), "{rebound_results}");
    assert!(!read.contains(&legit[..12]), "{rebound_results}");
    assert_eq!(rebound_results["write"], 421, "{rebound_results}");
    assert_eq!(rebound_results["prune"], 421, "{rebound_results}");
    assert_eq!(parcels(&server), vec!["hello".to_string()]);
    assert_eq!(run_ids(&server), before);
    b.goto("about:blank");
    drop(b);
}

/// The CSRF token of the first form on `/ui/runs` and the session cookie
/// the server set, for a browser that had none.
fn fresh_session(ui: &str) -> (String, String) {
    let page = http::get(&format!("{ui}/runs"))
        .timeout(std::time::Duration::from_secs(10))
        .call()
        .expect("the runs page");
    let cookie = page
        .all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("dispatch_browser="))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let html = page.into_string().expect("a page");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form with a CSRF token")
        .to_string();
    (cookie, csrf)
}

#[test]
fn every_browser_gets_its_own_csrf_token() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let hello = client.agent("hello", "echo hello\n");
    let id = client.ok(&["run", "-d", &hello]);
    assert_eq!(client.ok(&["wait", &id]), "0");
    let ui = format!("http://{}/ui", server.host);
    let (cookie_a, csrf_a) = fresh_session(&ui);
    let (cookie_b, csrf_b) = fresh_session(&ui);
    assert_ne!(cookie_a, cookie_b);
    assert_ne!(csrf_a, csrf_b, "two browsers, two tokens");
    // A's token under B's session is refused; under A's it is taken.
    let replay = |cookie: &str, csrf: &str| match http::post(&format!("{ui}/runs/{id}/replay"))
        .timeout(std::time::Duration::from_secs(10))
        .set("cookie", cookie)
        .set("origin", &format!("http://{}", server.host))
        .set("content-type", "application/x-www-form-urlencoded")
        .send_string(&format!("csrf={csrf}"))
    {
        Ok(r) => r.status(),
        Err(http::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(replay(&cookie_b, &csrf_a), 403);
    let taken = replay(&cookie_a, &csrf_a);
    assert!((200..400).contains(&taken), "{taken}");
    assert_eq!(run_ids(&server).len(), 2, "the replay was made once");
}
