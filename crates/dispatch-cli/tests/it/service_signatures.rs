//! Signed webhooks on a local service, from a real HTTP client: a delivery
//! signed as GitHub, Stripe or the generic scheme sign runs; a changed body,
//! a wrong secret, a replay and a stale timestamp get 401 and wake nothing;
//! a webhook with no secret at all refuses to start unless `--public`.

use crate::common;
use crate::service_common;

use common::{Dispatch, eventually};
use dispatch_test_support::http;
use hmac::{Hmac, Mac};
use serde_json::Value;
use service_common::{ECHO_AGENT, Service, wait_heartbeats_done};
use sha2::Sha256;

const GH_SECRET: &str = "gh-5e1f0c9a7b3d";
const STRIPE_SECRET: &str = "whsec_4b8e2d6f1a3c";

fn hmac_hex(key: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key");
    for p in parts {
        mac.update(p);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// POSTs `body` with `headers`; the status and the JSON answer.
fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut req = http::post(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.send_string(body) {
        Ok(r) => r,
        Err(http::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn signed_service<'a>(d: &'a Dispatch, name: &str, signature: &str) -> Service<'a> {
    let agent = d.agent_with(
        name,
        ECHO_AGENT,
        &format!(
            "SECRET GH_SECRET\nSECRET STRIPE_SECRET\nLISTEN 127.0.0.1:0\nLISTEN_PATH /hook\nLISTEN_SIGNATURE {signature}\n"
        ),
    );
    Service::start(d, &agent, &["--interval-ms", "0"])
}

fn secrets() -> Dispatch {
    Dispatch::with_env(&[("GH_SECRET", GH_SECRET), ("STRIPE_SECRET", STRIPE_SECRET)])
}

#[test]
fn a_github_delivery_runs_and_tampered_wrongly_signed_or_replayed_ones_do_not() {
    let d = secrets();
    let svc = signed_service(&d, "gh", "github GH_SECRET");
    let url = svc.url("/hook");
    let body = r#"{"action":"opened","number":7}"#;
    let sig = format!("sha256={}", hmac_hex(GH_SECRET, &[body.as_bytes()]));
    let delivery = [
        ("x-github-event", "pull_request"),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("x-hub-signature-256", sig.as_str()),
    ];
    let (status, answer) = post(&url, &delivery, body);
    assert_eq!(
        status, 202,
        "a correctly signed delivery is taken: {answer}"
    );
    let run_id = answer["run_id"].as_str().expect("a run id").to_string();

    let wrong = format!("sha256={}", hmac_hex("not-the-secret", &[body.as_bytes()]));
    let fresh_id = ("x-github-delivery", "a-new-delivery-id");
    let refused = [
        (
            "a tampered body",
            vec![delivery[1], delivery[2]],
            r#"{"action":"opened","number":8}"#,
            "bad_signature",
        ),
        (
            "a wrong secret",
            vec![fresh_id, ("x-hub-signature-256", wrong.as_str())],
            body,
            "bad_signature",
        ),
        (
            "the same delivery again",
            delivery.to_vec(),
            body,
            "replayed",
        ),
        (
            "the same delivery under a new id",
            vec![fresh_id, delivery[2]],
            body,
            "replayed",
        ),
        ("no signature", vec![fresh_id], body, "signature_missing"),
    ];
    for (what, headers, body, code) in refused {
        let (status, answer) = post(&url, &headers, body);
        assert_eq!(
            (status, answer["code"].as_str()),
            (401, Some(code)),
            "{what}: {answer}"
        );
        assert!(!answer.to_string().contains(GH_SECRET), "never the secret");
    }
    wait_heartbeats_done(&svc, 30);
    let runs = svc.heartbeats();
    assert_eq!(runs.len(), 1, "only the signed delivery woke the service");
    assert_eq!(runs[0]["id"], run_id.as_str());
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    let done = d.inspect(&run_id);
    let request = &done["payload"]["request"];
    assert_eq!(request["body"], body);
    assert_eq!(request["headers"]["x-hub-signature-256"], "[redacted]");
    eventually(10, "the five refusals are counted", || {
        svc.service_state()["listeners"][0]["requests_rejected"] == 5
    });
    let stored = svc.service_state().to_string();
    assert!(
        stored.contains("GH_SECRET") && !stored.contains(GH_SECRET),
        "the secret's name is stored, never its value: {stored}"
    );
    svc.stop(0);
}

#[test]
fn a_stripe_event_runs_once_and_a_stale_or_replayed_one_is_refused() {
    let d = secrets();
    let svc = signed_service(&d, "stripe", "stripe STRIPE_SECRET");
    let url = svc.url("/hook");
    let body = r#"{"id":"evt_1","type":"invoice.paid"}"#;
    let stripe = |t: i64, body: &str| {
        let t = t.to_string();
        let sig = hmac_hex(STRIPE_SECRET, &[t.as_bytes(), b".", body.as_bytes()]);
        format!("t={t},v1={},v1={sig}", "0".repeat(64))
    };
    let now = now_s();
    let fresh = stripe(now, body);
    let (status, answer) = post(&url, &[("stripe-signature", &fresh)], body);
    assert_eq!(
        status, 202,
        "a signed event within 300 s is taken: {answer}"
    );
    let cases = [
        (stripe(now, body), "replayed"),
        (stripe(now - 600, body), "stale_timestamp"),
        (stripe(now + 600, body), "stale_timestamp"),
        (
            fresh.replace(&format!("t={now}"), &format!("t={}", now + 1)),
            "bad_signature",
        ),
    ];
    for (header, code) in &cases {
        let (status, answer) = post(&url, &[("stripe-signature", header)], body);
        assert_eq!(
            (status, answer["code"].as_str()),
            (401, Some(*code)),
            "{header}: {answer}"
        );
    }
    wait_heartbeats_done(&svc, 30);
    assert_eq!(svc.heartbeats().len(), 1, "refused events woke nothing");
    svc.stop(0);
}

#[test]
fn the_generic_scheme_signs_timestamp_and_body() {
    let d = secrets();
    let svc = signed_service(&d, "generic", "hmac-sha256 GH_SECRET");
    let url = svc.url("/hook");
    let body = r#"{"ticket":42}"#;
    let ts = now_s().to_string();
    let sig = format!(
        "sha256={}",
        hmac_hex(GH_SECRET, &[ts.as_bytes(), b".", body.as_bytes()])
    );
    let headers = [
        ("x-dispatch-timestamp", ts.as_str()),
        ("x-dispatch-signature", sig.as_str()),
    ];
    assert_eq!(post(&url, &headers, body).0, 202);
    let (status, answer) = post(&url, &headers, body);
    assert_eq!((status, answer["code"].as_str()), (401, Some("replayed")));
    svc.stop(0);
}

#[test]
fn a_webhook_without_any_secret_refuses_to_start_unless_public() {
    let d = secrets();
    let open = d.agent_with("open", ECHO_AGENT, "LISTEN 127.0.0.1:0\n");
    let dir = open.to_str().expect("utf-8");
    let err = d.fails(&["serve", dir, "--detach"], 125);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    for says in [
        "`LISTEN 127.0.0.1:0`",
        "no secret",
        "LISTEN_SIGNATURE",
        "--public",
    ] {
        assert!(err.contains(says), "{says}: {err}");
    }
    let err = d.fails(&["serve", dir, "--detach", "--listen", "127.0.0.1:0"], 125);
    assert!(err.contains("no secret"), "{err}");
    assert!(
        d.ok(&["ps", "-a", "--format", "json"]).trim() == "[]",
        "nothing was created"
    );
    let svc = Service::start(&d, &open, &["--public"]);
    let (status, _) = post(&svc.url("/"), &[], "{}");
    assert_eq!(status, 202, "--public serves it open, as asked");
    svc.stop(0);
}

#[test]
fn a_signature_whose_secret_is_unset_refuses_to_start() {
    let d = Dispatch::with_env(&[("STRIPE_SECRET", STRIPE_SECRET)]);
    let agent = d.agent_with(
        "unset",
        ECHO_AGENT,
        "SECRET STRIPE_SECRET\nLISTEN 127.0.0.1:0\nLISTEN_SIGNATURE github STRIPE_SECRET\n",
    );
    let svc = Service::start(&d, &agent, &[]);
    svc.stop(0);
    let other = d.agent_with(
        "unset2",
        ECHO_AGENT,
        "SECRET STRIPE_SECRET\nSECRET GH_SECRET\nLISTEN 127.0.0.1:0\nLISTEN_SIGNATURE github GH_SECRET\n",
    );
    let err = d.fails(&["serve", other.to_str().expect("utf-8"), "--detach"], 125);
    assert!(err.contains("GH_SECRET"), "names the secret: {err}");
}
