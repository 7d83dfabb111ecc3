//! A2A push notifications of `serve --a2a`, to a receiver on loopback: the
//! card says it can; a task's webhook (given with the message, or set
//! later) gets the task at each status change, its final status retried
//! until the receiver takes it, with the client's token and credentials;
//! a webhook that is down holds up nothing; bad configs are refused.

use crate::common;
use crate::service_a2a::{A2A_TOKEN, a2a_message, a2a_rpc};
use crate::service_common;
use crate::service_ingress::send;

use common::{Dispatch, eventually};
use dispatch_test_support::http;
use dispatch_test_support::receiver::HttpReceiver;
use serde_json::{Value, json};
use service_common::{ECHO_AGENT, Service};

fn with_push(text: &str, config: Value) -> Value {
    let mut m = a2a_message(text);
    m["configuration"] = json!({"pushNotificationConfig": config});
    m
}

fn states(posts: &[dispatch_test_support::receiver::Posted]) -> Vec<String> {
    posts
        .iter()
        .map(|p| {
            p.json()["status"]["state"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

#[test]
fn a_tasks_webhook_gets_each_status_and_the_final_one_until_it_is_taken() {
    let d = Dispatch::with_env(&[("A2A_TOKEN", A2A_TOKEN)]);
    let agent = d.agent_with(
        "echo",
        ECHO_AGENT,
        "SECRET A2A_TOKEN\nLISTEN 127.0.0.1:0\nLISTEN_SECRET A2A_TOKEN\n",
    );
    let svc = Service::start(&d, &agent, &["--a2a", "--overlap", "concurrent"]);
    let url = svc.url("/");
    let r = HttpReceiver::start().expect("a receiver");
    let (_, card) = send(http::get(&svc.url("/.well-known/agent-card.json")), None);
    assert_eq!(card["capabilities"]["pushNotifications"], true, "{card}");

    // Given with the message: every status, in order, the final one last,
    // with the client's token and credentials.
    let config = json!({"url": r.url("/a"), "token": "tok-1",
        "authentication": {"schemes": ["Bearer"], "credentials": "cred-1"}});
    let (_, body) = a2a_rpc(&url, "message/send", with_push("hello", config));
    let task = body["result"]["id"].as_str().expect("a task").to_string();
    assert_eq!(body["result"]["status"]["state"], "completed", "{body:#}");
    eventually(30, "the final status is pushed", || {
        states(&r.posted_to("/a")).last().map(String::as_str) == Some("completed")
    });
    let posts = r.posted_to("/a");
    let seen = states(&posts);
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|s| s == "submitted" || s == "working"),
        "every status before the final one is on the way: {seen:?}"
    );
    let last = posts.last().expect("a post");
    assert_eq!(last.header("x-a2a-notification-token"), Some("tok-1"));
    assert_eq!(last.header("authorization"), Some("Bearer cred-1"));
    assert_eq!(last.json()["id"], task.as_str());
    assert_eq!(last.json()["kind"], "task");
    assert_eq!(last.json()["artifacts"][0]["parts"][0]["text"], "hello");

    // Set on a task that has ended: its final status is sent, retried
    // while the receiver answers 503.
    r.fail_next("/retry", 2);
    let set =
        json!({"taskId": task, "pushNotificationConfig": {"id": "again", "url": r.url("/retry")}});
    let (_, got) = a2a_rpc(&url, "tasks/pushNotificationConfig/set", set);
    assert_eq!(got["result"]["taskId"], task.as_str(), "{got}");
    assert_eq!(got["result"]["pushNotificationConfig"]["id"], "again");
    eventually(30, "the retried notification is taken", || {
        r.posted_to("/retry").iter().any(|p| p.status == 200)
    });
    let tries: Vec<u16> = r.posted_to("/retry").iter().map(|p| p.status).collect();
    assert_eq!(tries, [503, 503, 200]);
    assert!(
        states(&r.posted_to("/retry"))
            .iter()
            .all(|s| s == "completed")
    );
    let doc = d.inspect(&svc.id);
    let recorded = doc["events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["type"] == "push_notification" && e["data"]["config_id"] == "again")
        .unwrap_or_else(|| panic!("a push_notification event: {doc:#}"));
    assert_eq!(recorded["data"]["tries"], 3);
    assert_eq!(recorded["data"]["delivered"], true);
    assert!(!doc.to_string().contains("tok-1"), "no token is recorded");

    // A webhook that is down holds up neither the run nor the answer.
    r.fail_next("/down", 1000);
    let (_, body) = a2a_rpc(
        &url,
        "message/send",
        with_push("again", json!({"url": r.url("/down")})),
    );
    assert_eq!(body["result"]["status"]["state"], "completed", "{body:#}");

    // Bad configs: one JSON-RPC error each, and no run for a bad message.
    let runs = svc.heartbeats().len();
    let (_, e) = a2a_rpc(
        &url,
        "message/send",
        with_push("x", json!({"url": "ftp://x/n"})),
    );
    assert_eq!(e["error"]["code"], -32602, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not an http(s) URL")),
        "{e}"
    );
    assert_eq!(svc.heartbeats().len(), runs, "no run for a refused message");
    let unknown = json!({"taskId": "nope", "pushNotificationConfig": {"url": r.url("/a")}});
    let (_, e) = a2a_rpc(&url, "tasks/pushNotificationConfig/set", unknown);
    assert_eq!(e["error"]["code"], -32001, "{e}");
    let (_, e) = a2a_rpc(
        &url,
        "tasks/pushNotificationConfig/delete",
        json!({"id": task}),
    );
    assert_eq!(e["error"]["code"], -32602, "{e}");
    let (_, listed) = a2a_rpc(
        &url,
        "tasks/pushNotificationConfig/list",
        json!({"id": task}),
    );
    assert!(listed["result"].is_array(), "{listed}");
    svc.stop(5_000);
}
