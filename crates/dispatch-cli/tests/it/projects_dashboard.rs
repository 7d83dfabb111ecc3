//! The dashboard with tokens bound to projects, by plain HTTP against a
//! real `dispatch server --require-auth`: a session sees only its token's
//! projects, a run of another project is 403 naming it, and the buttons its
//! role lacks are not shown.

use crate::remote_common;

use std::time::Duration;

use dispatch_test_support::{eventually, http};
use remote_common::{Client, Server};

/// A token made on `server`'s state directory with `dispatch token create ARGS`.
pub fn token(server: &Server, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["token", "create"])
        .args(args)
        .env("DISPATCH_ROOT", server.state.path().join(".dispatch"))
        .env_remove("DISPATCH_HOST")
        .output()
        .expect("dispatch token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn status_of(r: Result<http::Response, http::Error>) -> (u16, String) {
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(http::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("transport error: {e}"),
    }
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap_or_default().to_string()
}

/// A browser logged in with `token`.
struct Browser {
    agent: http::Agent,
    ui: String,
    cookies: String,
}

impl Browser {
    fn login(server: &Server, token: &str) -> Browser {
        let ui = format!("http://{}/ui", server.host);
        let agent = http::AgentBuilder::new()
            .redirects(0)
            .timeout(Duration::from_secs(10))
            .build();
        let form = agent.get(&format!("{ui}/login")).call().expect("the form");
        let browser = form
            .all("set-cookie")
            .into_iter()
            .find(|c| c.starts_with("dispatch_browser="))
            .and_then(|c| c.split(';').next())
            .expect("a browser cookie")
            .to_string();
        let csrf = csrf_in(&form.into_string().expect("html"));
        let answer = agent
            .post(&format!("{ui}/login"))
            .set("cookie", &browser)
            .set("content-type", "application/x-www-form-urlencoded")
            .send_string(&format!("token={token}&csrf={csrf}&next=/ui/runs"));
        let session = match answer {
            Ok(r) | Err(http::Error::Status(_, r)) => r
                .header("set-cookie")
                .and_then(|c| c.split(';').next())
                .map(str::to_string)
                .expect("a session cookie: a bound token logs in"),
            Err(e) => panic!("transport error: {e}"),
        };
        Browser {
            agent,
            ui,
            cookies: format!("{session}; {browser}"),
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        status_of(
            self.agent
                .get(&format!("{}{path}", self.ui))
                .set("cookie", &self.cookies)
                .call(),
        )
    }

    fn post(&self, path: &str, csrf: &str) -> (u16, String) {
        status_of(
            self.agent
                .post(&format!("{}{path}", self.ui))
                .set("cookie", &self.cookies)
                .set("content-type", "application/x-www-form-urlencoded")
                .send_string(&format!("csrf={csrf}")),
        )
    }
}

const ASKING: &str = "echo '{\"type\":\"approval\",\"id\":\"send\",\"summary\":\"Send?\",\"timeout_s\":3600}' >> \"$DISPATCH_EVENTS\"\n\
while [ ! -e \"$DISPATCH_APPROVALS/send.json\" ]; do sleep 0.02; done\n";

#[test]
fn a_session_sees_its_tokens_projects_and_only_the_buttons_its_role_allows() {
    let server = Server::start(&["--require-auth"]);
    let root = token(&server, &["--name", "root"]);
    let viewer = token(
        &server,
        &[
            "--name",
            "watch",
            "--project",
            "payments",
            "--role",
            "viewer",
        ],
    );
    let runner = token(
        &server,
        &[
            "--name",
            "ci",
            "--project",
            "payments",
            "--role",
            "runner",
            "--project",
            "search",
            "--role",
            "viewer",
        ],
    );
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
    let paid = run("payments", &client.agent("hello", "sleep 30\n"));
    let searched = run("search", &client.agent("careful", ASKING));
    // An admin bound to no project sees every project's approval.
    eventually(30, "the approval to be asked for", || {
        Browser::login(&server, &root)
            .get("/approvals")
            .1
            .contains("data-approval=\"send\"")
    });

    // A viewer of payments: its runs only, no buttons, nothing of search.
    let watch = Browser::login(&server, &viewer);
    let (status, html) = watch.get("/runs");
    assert_eq!(status, 200);
    assert!(html.contains(&paid) && !html.contains(&searched), "{html}");
    assert!(
        !html.contains("/restart\""),
        "a viewer gets no buttons: {html}"
    );
    let (status, html) = watch.get(&format!("/runs/{searched}"));
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("may not read in project search"), "{html}");
    let (_, html) = watch.get("/approvals");
    assert!(
        !html.contains("data-approval=\"send\""),
        "not its project's: {html}"
    );
    let (_, html) = watch.get("/runs?project=search");
    assert!(html.contains("may not read in project search"), "{html}");

    // A runner of payments, viewer of search: both, buttons only in payments.
    let ci = Browser::login(&server, &runner);
    let (_, html) = ci.get("/runs");
    assert!(html.contains(&paid) && html.contains(&searched), "{html}");
    assert!(html.contains(&format!("/ui/runs/{paid}/stop")), "{html}");
    assert!(
        !html.contains(&format!("/ui/runs/{searched}/stop")),
        "{html}"
    );
    let (_, html) = ci.get("/approvals");
    assert!(html.contains("data-approval=\"send\""), "{html}");
    assert!(
        !html.contains(&format!("/ui/runs/{searched}/approvals/send")),
        "a viewer there may not decide: {html}"
    );
    let (_, html) = ci.get(&format!("/runs/{searched}"));
    assert!(html.contains("search"), "the run page names its project");
    let csrf = csrf_in(&html);
    let (status, html) = ci.post(&format!("/runs/{searched}/stop"), &csrf);
    assert_eq!(status, 403, "{html}");
    assert!(
        html.contains("may not run in project search: it is a viewer there"),
        "{html}"
    );
    let (status, _) = ci.post(&format!("/runs/{paid}/stop"), &csrf);
    assert!(status < 400, "a runner stops its project's run: {status}");
    let out = client
        .command()
        .env("DISPATCH_TOKEN", &root)
        .args(["stop", &searched])
        .output()
        .expect("dispatch stop");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
