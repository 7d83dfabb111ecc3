//! Scoped, expiring API tokens against a real `dispatch server
//! --require-auth`: each scope does what it allows and gets 403 naming the
//! scope it lacks beyond; an expired token gets 401 saying so; `token ls`
//! shows scope and expiry. The dashboard's cookie is a session id, never the
//! token, and the session keeps its token's scope.

use crate::remote_common;

use std::process::Command;
use std::time::{Duration, Instant};

use dispatch_test_support::http;
use remote_common::{Client, Server};
use serde_json::Value;

/// `dispatch token <args>` on the server's own database.
fn admin(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .arg("token")
        .args(args)
        .env("DISPATCH_ROOT", server.state.path().join(".dispatch"))
        .env_remove("DISPATCH_HOST")
        .output()
        .expect("dispatch token");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn token(server: &Server, name: &str, scope: &str, expires: Option<&str>) -> String {
    let mut args = vec!["create", "--name", name, "--scope", scope];
    if let Some(e) = expires {
        args.extend(["--expires", e]);
    }
    let (ok, out, err) = admin(server, &args);
    assert!(ok, "{err}");
    assert!(err.contains(&format!("scope {scope}")), "{err}");
    out
}

/// One API request with `token`; the status and the JSON answer.
fn call(server: &Server, token: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let response = dispatch_server::client::request(
        &format!("http://{}", server.host),
        method,
        path,
        &[("authorization", &auth)],
        (method != "GET").then_some(body.as_bytes()),
    )
    .expect("the server answers");
    let status = response.status;
    let text = response.text().expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn each_scope_allows_its_own_and_is_refused_beyond_naming_the_scope_needed() {
    let server = Server::start(&["--require-auth"]);
    let read = token(&server, "reader", "read", Some("30d"));
    let run = token(&server, "runner", "run", None);
    let approve = token(&server, "approver", "approve", None);
    let root = token(&server, "root", "admin", None);

    // read: GET only.
    assert_eq!(call(&server, &read, "GET", "/v1/runs", "").0, 200);
    let (status, answer) = call(&server, &read, "POST", "/v1/runs/prune", "{}");
    assert_eq!((status, answer["code"].as_str()), (403, Some("forbidden")));
    let client = Client::new(&server);
    let agent = client.agent("hello", "echo hi\n");
    let out = client.run_with(&["run", &agent, "--detach"], Some(&read));
    assert_eq!(out.status.code(), Some(125));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("scope `read`") && e.contains("needs scope `run`"),
        "one line naming the scope it lacks: {e}"
    );

    // run: creates runs, cannot decide approvals.
    let out = client.run_with(&["run", &agent, "--detach"], Some(&run));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let decide = format!("/v1/runs/{id}/approvals/nope");
    let body = r#"{"decision": "approve", "by": "ada"}"#;
    let (status, answer) = call(&server, &run, "POST", &decide, body);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("needs scope `approve`")),
        "{answer}"
    );

    // approve: decides (there is nothing to decide here, but it gets past
    // auth: 404 or 409, not 401 / 403).
    let (status, answer) = call(&server, &approve, "POST", &decide, body);
    assert!(matches!(status, 404 | 409), "{status} {answer}");
    let (status, answer) = call(&server, &approve, "POST", "/v1/runs/prune", "{}");
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["message"]
            .to_string()
            .contains("needs scope `admin`")
    );

    // admin: everything.
    let (status, answer) = call(&server, &root, "POST", "/v1/runs/prune", "{}");
    assert!(status < 300, "admin prunes: {status} {answer}");

    // ls shows scope and expiry, as a table and as JSON.
    let (_, table, _) = admin(&server, &["ls"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("SCOPE") && header.contains("EXPIRES"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("reader") && l.contains("read") && l.contains("UTC"))
    );
    let (_, json, _) = admin(&server, &["ls", "--format", "json"]);
    let docs: Value = serde_json::from_str(&json).expect("JSON");
    let reader = docs
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "reader"))
        .expect("the reader token");
    assert_eq!(reader["scope"], "read");
    assert!(reader["expires_at"].as_i64().is_some(), "{reader}");
    assert_eq!(reader["status"], "active");
    assert!(!json.contains(&read), "never the token itself");
}

#[test]
fn an_expired_token_is_refused_saying_it_expired_and_bad_options_are_one_line() {
    let server = Server::start(&["--require-auth"]);
    let brief = token(&server, "brief", "read", Some("1s"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let (status, answer) = call(&server, &brief, "GET", "/v1/runs", "");
        if status == 401 {
            break answer;
        }
        assert_eq!(status, 200, "live until it expires: {answer}");
        assert!(Instant::now() < deadline, "the token never expired");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(answer["code"], "token_expired", "{answer}");
    assert!(
        answer["message"].to_string().contains("expired"),
        "{answer}"
    );
    let (_, json, _) = admin(&server, &["ls", "--format", "json"]);
    assert!(json.contains("\"expired\""), "{json}");

    for (args, says) in [
        (
            vec!["create", "--scope", "root"],
            "unknown token scope `root`",
        ),
        (vec!["create", "--expires", "soon"], "--expires `soon`"),
    ] {
        let (ok, _, err) = admin(&server, &args);
        assert!(!ok && err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// The dashboard, by plain HTTP: a form login, its cookie, a form post.
fn ui_agent() -> http::Agent {
    http::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(10))
        .build()
}

fn status_of(r: Result<http::Response, http::Error>) -> (u16, Option<http::Response>) {
    match r {
        Ok(r) => (r.status(), Some(r)),
        Err(http::Error::Status(code, r)) => (code, Some(r)),
        Err(e) => panic!("transport error: {e}"),
    }
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap_or_default().to_string()
}

#[test]
fn the_dashboard_cookie_is_a_session_id_with_its_tokens_scope() {
    let server = Server::start(&["--require-auth"]);
    let read = token(&server, "viewer", "read", Some("2h"));
    let ui = format!("http://{}/ui", server.host);
    let agent = ui_agent();
    let form = agent
        .get(&format!("{ui}/login"))
        .call()
        .expect("the login form");
    // The browser's own id, which every CSRF token is bound to.
    let browser = form
        .all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("dispatch_browser="))
        .and_then(|c| c.split(';').next())
        .expect("a browser cookie")
        .to_string();
    let csrf = csrf_in(&form.into_string().expect("html"));
    let (status, answer) = status_of(
        agent
            .post(&format!("{ui}/login"))
            .set("cookie", &browser)
            .set("content-type", "application/x-www-form-urlencoded")
            .send_string(&format!("token={read}&csrf={csrf}&next=/ui/runs")),
    );
    assert_eq!(status, 303, "logged in, sent on");
    let cookie = answer
        .and_then(|r| r.header("set-cookie").map(str::to_string))
        .expect("a session cookie");
    assert!(cookie.starts_with("dispatch_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(&read), "the cookie never holds the token");
    let sid = cookie
        .trim_start_matches("dispatch_session=")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(sid.len(), 64, "a random session id: {cookie}");
    let with = |c: &str| format!("dispatch_session={c}; {browser}");

    let page = |c: &str| {
        status_of(
            agent
                .get(&format!("{ui}/runs"))
                .set("cookie", &with(c))
                .call(),
        )
    };
    assert_eq!(page(&sid).0, 200, "the session opens the dashboard");
    assert_eq!(page(&read).0, 303, "the token itself is no session");

    // The session keeps the token's scope: read cannot stop a run.
    let html = page(&sid).1.expect("a page").into_string().expect("html");
    let csrf = csrf_in(&html);
    let (status, _) = status_of(
        agent
            .post(&format!("{ui}/runs/0123/stop"))
            .set("cookie", &with(&sid))
            .set("content-type", "application/x-www-form-urlencoded")
            .send_string(&format!("csrf={csrf}")),
    );
    assert_eq!(status, 403, "a read session may not stop runs");

    // Logging out ends the session on the server, not only in the browser.
    let (status, _) = status_of(
        agent
            .post(&format!("{ui}/logout"))
            .set("cookie", &with(&sid))
            .set("content-type", "application/x-www-form-urlencoded")
            .send_string(&format!("csrf={csrf}")),
    );
    assert_eq!(status, 303);
    assert_eq!(page(&sid).0, 303, "the old cookie no longer works");
}
