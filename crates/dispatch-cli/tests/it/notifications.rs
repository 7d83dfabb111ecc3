//! Notifications that reach people (issue #37, item 4): a receiver in the
//! test tree (HTTP and SMTP on loopback) receives and verifies every
//! message — the webhook's HMAC signature, Slack's payload, the e-mail —
//! for a new approval, its escalation, a failed run and a budget mark; a
//! failing endpoint is retried until it takes the message; a configuration
//! that does not load is refused in one line; a call an `auto_approve` rule
//! decides notifies nobody. Locally (the run's helper delivers) and on a
//! cluster (the server delivers).

use crate::common;
use crate::remote_common;

use common::{Dispatch, eventually};
use dispatch_test_support::receiver::{HttpReceiver, Posted, SmtpReceiver};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "whsec-test-1234";

/// Checks `Dispatch-Signature: t=…,v1=…` against HMAC-SHA256(secret, "t.body").
fn verify(p: &Posted) {
    let header = p.header("dispatch-signature").expect("a signature header");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("malformed signature `{header}`"));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(&p.body);
    let expected = hex::encode(mac.finalize().into_bytes());
    assert_eq!(v1, expected, "the signature is the body's HMAC");
    assert_eq!(p.header("content-type"), Some("application/json"));
    let doc = p.json();
    assert_eq!(p.header("dispatch-event"), doc["event"].as_str());
    assert_eq!(p.header("dispatch-delivery"), doc["id"].as_str());
}

/// Checks Slack's incoming-webhook payload: `text` plus header, section
/// and context blocks.
fn verify_slack(p: &Posted) -> String {
    let doc = p.json();
    let text = doc["text"].as_str().expect("text").to_string();
    let types: Vec<&str> = doc["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .map(|b| b["type"].as_str().expect("a block type"))
        .collect();
    assert_eq!(types, ["header", "section", "context"], "{doc:#}");
    assert_eq!(doc["blocks"][1]["text"]["type"], "mrkdwn");
    text
}

fn channels(hooks: &HttpReceiver, smtp: &SmtpReceiver) -> String {
    format!(
        "[channels.ops]\ntype = \"webhook\"\nurl = \"{}\"\nsecret_env = \"OPS_SECRET\"\n\n\
         [channels.team]\ntype = \"slack\"\nurl = \"{}\"\n\n\
         [channels.leads]\ntype = \"email\"\nsmtp = \"{}\"\ntls = \"none\"\n\
         from = \"Dispatch <dispatch@example.com>\"\nto = [\"leads@example.com\"]\n\n",
        hooks.url("/ops"),
        hooks.url("/slack"),
        smtp.addr()
    )
}

const FAST: &str = "[delivery]\npoll = \"50ms\"\nbackoff = \"100ms\"\nlinger = \"20s\"\n";

fn with_config(config: &str) -> Dispatch {
    let d = Dispatch::with_env(&[("OPS_SECRET", SECRET)]);
    std::fs::create_dir_all(d.root()).expect("state dir");
    std::fs::write(d.root().join("notifications.toml"), config).expect("config");
    d
}

fn asking(id: &str) -> String {
    format!(
        "echo '{{\"type\":\"approval\",\"id\":\"{id}\",\"summary\":\"Refund 40 EUR?\"}}' >> \"$DISPATCH_EVENTS\"\n\
         while [ ! -e \"$DISPATCH_APPROVALS/{id}.json\" ]; do sleep 0.02; done\n"
    )
}

fn outbox(d: &Dispatch) -> Vec<Value> {
    let out = d.ok(&["notify", "ls", "--format", "json"]);
    serde_json::from_str::<Vec<Value>>(&out).expect("JSON")
}

#[test]
fn a_new_approval_reaches_the_webhook_slack_and_email_each_verified() {
    let (hooks, smtp) = (
        HttpReceiver::start().expect("http"),
        SmtpReceiver::start().expect("smtp"),
    );
    let d = with_config(&format!(
        "{}[approvals]\nnotify = [\"ops\", \"team\", \"leads\"]\n\n{FAST}",
        channels(&hooks, &smtp)
    ));
    let id = d.detach(&d.agent("careful", &asking("refund-1")), "{}");
    eventually(20, "every channel has the approval", || {
        !hooks.posted_to("/ops").is_empty()
            && !hooks.posted_to("/slack").is_empty()
            && !smtp.mails().is_empty()
    });

    let hook = hooks.posted_to("/ops").remove(0);
    verify(&hook);
    let doc = hook.json();
    assert_eq!(doc["event"], "approval.requested");
    assert_eq!(doc["run"]["id"], id.as_str());
    assert_eq!(doc["run"]["parcel"], "careful");
    assert_eq!(doc["approval"]["id"], "refund-1");
    assert_eq!(doc["approval"]["summary"], "Refund 40 EUR?");
    assert_eq!(doc["title"], "Approval needed: Refund 40 EUR?");

    let text = verify_slack(&hooks.posted_to("/slack").remove(0));
    assert_eq!(text, "Approval needed: Refund 40 EUR?");

    let mail = smtp.mails().remove(0);
    assert_eq!(mail.from, "dispatch@example.com");
    assert_eq!(mail.to, ["leads@example.com"]);
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("[dispatch] Approval needed: Refund 40 EUR?")
    );
    assert!(
        mail.body()
            .contains(&format!("dispatch approve {id} refund-1")),
        "{}",
        mail.data
    );

    d.ok(&["approve", &id, "refund-1", "--by", "ada"]);
    assert_eq!(d.wait_terminal(&id)["status"], "succeeded");
    let listed = outbox(&d);
    assert_eq!(listed.len(), 1, "a success is no news: {listed:#?}");
    eventually(20, "the outbox says delivered", || {
        outbox(&d)[0]["outcome"] == "delivered"
    });
    let mut sent: Vec<String> =
        serde_json::from_value(outbox(&d)[0]["sent"].clone()).expect("sent");
    sent.sort();
    assert_eq!(sent, ["leads", "ops", "team"]);
    assert_eq!(hooks.posted().len(), 2, "each channel once");
    assert_eq!(smtp.mails().len(), 1);
}

#[test]
fn a_failing_endpoint_is_retried_with_backoff_until_it_takes_the_failure() {
    let (hooks, smtp) = (
        HttpReceiver::start().expect("http"),
        SmtpReceiver::start().expect("smtp"),
    );
    hooks.fail_next("/ops", 2);
    // The helper hands the retries to the machine's drainer at once.
    let fast = FAST.replace("linger = \"20s\"", "linger = \"0ms\"");
    let d = with_config(&format!(
        "{}[failures]\nnotify = [\"ops\"]\n\n{fast}tries = 5\n",
        channels(&hooks, &smtp)
    ));
    let id = d.detach(&d.agent("flaky", "echo broken >&2\nexit 3\n"), "{}");
    // The run ends at once: the endpoint's trouble is not the run's.
    assert_eq!(d.wait_terminal(&id)["status"], "failed");
    eventually(20, "the third try is taken", || {
        hooks.posted_to("/ops").len() == 3
    });
    let posts = hooks.posted_to("/ops");
    let answers: Vec<u16> = posts.iter().map(|p| p.status).collect();
    assert_eq!(answers, [503, 503, 200]);
    for p in &posts {
        verify(p);
    }
    let delivery: Vec<_> = posts
        .iter()
        .map(|p| p.header("dispatch-delivery"))
        .collect();
    assert!(
        delivery
            .iter()
            .all(|d| *d == Some(&format!("failed:{id}")[..])),
        "one delivery id across the tries: {delivery:?}"
    );
    let doc = posts[2].json();
    assert_eq!(doc["event"], "run.failed");
    assert_eq!(doc["failure"]["status"], "failed");
    assert_eq!(doc["failure"]["exit_code"], 3);
    eventually(20, "the outbox says delivered on the third try", || {
        let n = &outbox(&d)[0];
        n["outcome"] == "delivered" && n["tries"] == 3
    });
    assert!(smtp.mails().is_empty(), "mail was not asked for failures");
    assert!(
        d.root().join("notify.lock").exists(),
        "the helper handed the retries to the drainer"
    );
}

#[test]
fn an_endpoint_that_never_answers_well_is_given_up_on_and_says_why() {
    let (hooks, smtp) = (
        HttpReceiver::start().expect("http"),
        SmtpReceiver::start().expect("smtp"),
    );
    hooks.fail_next("/ops", 1000);
    let d = with_config(&format!(
        "{}[failures]\nnotify = [\"ops\"]\n\n{FAST}tries = 2\n",
        channels(&hooks, &smtp)
    ));
    let id = d.detach(&d.agent("doomed", "exit 1\n"), "{}");
    assert_eq!(d.wait_terminal(&id)["status"], "failed");
    eventually(20, "the outbox gives up after two tries", || {
        outbox(&d)[0]["outcome"] == "failed"
    });
    let n = &outbox(&d)[0];
    assert_eq!(n["tries"], 2);
    let error = n["last_error"].as_str().expect("the last error");
    assert!(error.starts_with("ops: answered 503"), "{error}");
    assert_eq!(hooks.posted_to("/ops").len(), 2, "no try after the last");
    let table = d.ok(&["notify", "ls"]);
    assert!(
        table.contains("run.failed") && table.contains("failed"),
        "{table}"
    );
}

#[test]
fn an_approval_nobody_decides_escalates_to_the_next_group() {
    let (hooks, smtp) = (
        HttpReceiver::start().expect("http"),
        SmtpReceiver::start().expect("smtp"),
    );
    let d = with_config(&format!(
        "{}[approvals]\nnotify = [\"team\"]\nescalate = [{{ after = \"1s\", notify = [\"ops\", \"leads\"] }}]\n\n{FAST}",
        channels(&hooks, &smtp)
    ));
    let id = d.detach(&d.agent("slow-boss", &asking("sign-off")), "{}");
    eventually(20, "the first group hears of it", || {
        !hooks.posted_to("/slack").is_empty()
    });
    eventually(20, "the next group hears of it after the delay", || {
        !hooks.posted_to("/ops").is_empty() && !smtp.mails().is_empty()
    });
    let hook = hooks.posted_to("/ops").remove(0);
    verify(&hook);
    let doc = hook.json();
    assert_eq!(doc["event"], "approval.escalated");
    assert_eq!(doc["escalation"]["step"], 1);
    assert_eq!(doc["escalation"]["after_ms"], 1000);
    assert_eq!(doc["approval"]["id"], "sign-off");
    assert_eq!(doc["run"]["id"], id.as_str());
    let subject = smtp.mails()[0].header("Subject").expect("subject");
    assert_eq!(
        subject,
        "[dispatch] Approval still waiting after 1s: Refund 40 EUR?"
    );
    assert_eq!(
        hooks.posted_to("/slack").len(),
        1,
        "the first group is not told twice"
    );
    d.ok(&["approve", &id, "sign-off"]);
    assert_eq!(d.wait_terminal(&id)["status"], "succeeded");
}

#[test]
fn a_budget_mark_notifies_and_only_the_configured_marks_do() {
    let (hooks, smtp) = (
        HttpReceiver::start().expect("http"),
        SmtpReceiver::start().expect("smtp"),
    );
    let d = with_config(&format!(
        "{}[budget]\nnotify = [\"ops\"]\npercent = [80]\n\n{FAST}",
        channels(&hooks, &smtp)
    ));
    let usage = r#"echo '{"type":"usage","model":"m","input_tokens":850,"output_tokens":0}' >> "$DISPATCH_EVENTS""#;
    let agent = d.agent_with(
        "spender",
        &format!("{usage}\nsleep 0.2\n"),
        "LIMIT TOKENS 1000\n",
    );
    let id = d.detach(&agent, "{}");
    assert_eq!(d.wait_terminal(&id)["status"], "succeeded");
    eventually(20, "the 80 % mark arrives", || {
        !hooks.posted_to("/ops").is_empty()
    });
    let hook = hooks.posted_to("/ops").remove(0);
    verify(&hook);
    let doc = hook.json();
    assert_eq!(doc["event"], "budget.threshold");
    assert_eq!(doc["budget"]["percent"], 80);
    assert_eq!(doc["budget"]["limit"], "tokens");
    assert_eq!(doc["budget"]["used"], 850);
    eventually(20, "the 50 % mark is settled unsent", || {
        outbox(&d)
            .iter()
            .any(|n| n["key"] == format!("budget:{id}:tokens:50") && n["outcome"] == "skipped")
    });
    assert_eq!(hooks.posted().len(), 1, "only the configured mark was sent");
}

#[test]
fn a_configuration_that_does_not_load_is_refused_in_one_line() {
    let d = with_config("[approvals]\nnotify = [\"pager\"]\n");
    let agent = d.agent("any", "true\n");
    let out = d.run(&["run", agent.to_str().expect("utf-8"), "--detach"]);
    assert_ne!(out.status.code(), Some(0), "refused");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(
            "notifications.toml: approvals.notify names channel `pager`, which is not defined"
        ),
        "{err}"
    );
    assert!(d.ok(&["ps", "-a", "-q"]).is_empty(), "no run was created");
    let check = d.run(&["notify", "check"]);
    assert_ne!(check.status.code(), Some(0));

    // A variable the file names that is not set: refused too.
    std::fs::write(
        d.root().join("notifications.toml"),
        "[channels.ops]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nsecret_env = \"NOT_SET_ANYWHERE\"\n",
    )
    .expect("config");
    let err = d.fails(&["notify", "check"], 125);
    assert!(err.contains("`NOT_SET_ANYWHERE` is not set"), "{err}");
}

#[test]
fn a_cluster_server_delivers_the_approval_a_worker_run_asked_for() {
    use remote_common::{Client, Server, Worker, postgres};
    let Some(db) = postgres() else { return };
    let (hooks, smtp) = (
        HttpReceiver::start().expect("http"),
        SmtpReceiver::start().expect("smtp"),
    );
    let conf = tempfile::tempdir().expect("tempdir");
    let file = conf.path().join("notifications.toml");
    std::fs::write(
        &file,
        format!(
            "{}[approvals]\nnotify = [\"ops\", \"team\", \"leads\"]\n\n{FAST}",
            channels(&hooks, &smtp)
        ),
    )
    .expect("config");
    let path = file.to_str().expect("utf-8");
    let server = Server::start_with_env(
        Some(db.url()),
        &["--workers", "0"],
        &[("DISPATCH_NOTIFICATIONS", path), ("OPS_SECRET", SECRET)],
    );
    let _worker = Worker::start(db.url(), "w1", &[]);
    let client = Client::new(&server);
    let agent = client.agent("remote-careful", &asking("ship-it"));
    let id = client.ok(&["run", &agent, "--detach", "--job", "{}"]);
    eventually(30, "every channel has the approval", || {
        !hooks.posted_to("/ops").is_empty()
            && !hooks.posted_to("/slack").is_empty()
            && !smtp.mails().is_empty()
    });
    let hook = hooks.posted_to("/ops").remove(0);
    verify(&hook);
    let doc = hook.json();
    assert_eq!(doc["event"], "approval.requested");
    assert_eq!(doc["run"]["id"], id.as_str());
    assert_eq!(doc["approval"]["id"], "ship-it");
    verify_slack(&hooks.posted_to("/slack").remove(0));
    let mail = smtp.mails().remove(0);
    assert!(mail.body().contains("dispatch approve"), "{}", mail.data);
    let metrics = || {
        let base = format!("http://{}", server.host);
        dispatch_server::client::request(&base, "GET", "/metrics", &[], None)
            .expect("the server answers")
            .text()
            .expect("text")
    };
    eventually(20, "the outbox is delivered, as /metrics says", || {
        metrics().contains("dispatch_notifications{state=\"delivered\"} 1")
    });
    let metrics = metrics();
    assert!(
        metrics.contains("dispatch_notification_sends_total{channel=\"webhook\",result=\"ok\"} 1"),
        "{metrics}"
    );
    // The dashboard's approvals page shows the outbox too.
    let base = format!("http://{}", server.host);
    let page = dispatch_server::client::request(&base, "GET", "/ui/approvals", &[], None)
        .expect("the server answers");
    assert_eq!(page.status, 200);
    let html = page.text().expect("a page");
    assert!(
        html.contains("Notifications") && html.contains("1 delivered"),
        "{html}"
    );
    client.ok(&["approve", &id, "ship-it"]);
    server.wait_for(&format!("/v1/runs/{id}"), |r| {
        r["state"]["status"] == "succeeded"
    });
}

#[test]
fn a_call_an_auto_approve_rule_decides_is_the_rules_and_notifies_nobody() {
    use crate::native_common::{Mock, events_of, refund_agent, text};
    let (hooks, smtp) = (
        HttpReceiver::start().expect("http"),
        SmtpReceiver::start().expect("smtp"),
    );
    let d = with_config(&format!(
        "{}[approvals]\nnotify = [\"ops\", \"team\", \"leads\"]\nescalate = [{{ after = \"1ms\", notify = [\"ops\"] }}]\n\n{FAST}",
        channels(&hooks, &smtp)
    ));
    std::fs::write(
        d.root().join("policy.rego"),
        "package dispatch\n\nauto_approve contains \"refunds up to 30 are approved by rule\" if {\n    \
         input.action == \"tool_call\"\n    input.tool == \"refund\"\n    input.arguments.amount <= 30\n}\n",
    )
    .expect("policy");
    let mock = Mock::start(serde_json::json!([
        {"kind": "tool_calls", "calls": [{"name": "refund", "arguments": {"order": "12345", "amount": 20}, "id": "c0"}]},
        text("done", 1, 1),
    ]));
    let (dir, marks) = refund_agent(d.dir.path(), &mock.url(), "");
    let id = d.detach(&dir, r#"{"ticket":"refund please"}"#);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert!(marks.exists(), "the tool ran");
    let call = events_of(&doc, "tool_call").remove(0);
    assert_eq!(
        call["approval"]["by"], "policy rule: refunds up to 30 are approved by rule",
        "recorded as decided by the rule"
    );
    // The outbox is written with the approval it tells of: none was asked,
    // so nothing was ever due, and nobody heard anything.
    assert_eq!(outbox(&d), Vec::<Value>::new());
    assert!(hooks.posted().is_empty());
    assert!(smtp.mails().is_empty());
}
