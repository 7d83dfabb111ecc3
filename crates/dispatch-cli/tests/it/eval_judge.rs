//! `expect.judge`: a model-graded check, asked of the scripted mock model
//! server on loopback through the real provider code; recorded into a
//! cassette and replayed with the server stopped; bad input.

use crate::common;
use crate::native_common;

use common::Dispatch;
use serde_json::{Value, json};

/// A process agent: it answers the payload's `reply` as its output.
const AGENT: &str = "cat \"$DISPATCH_PAYLOAD\" > \"$DISPATCH_OUTPUT\"\n";

const CASES: &str = r#"
[[case]]
name = "apologizes"
payload = { reply = "Sorry, order 12345 is late." }
expect.judge = { criteria = "The reply apologizes.", model = "judge-model" }

[[case]]
name = "names the order"
payload = { reply = "Sorry for the wait." }
expect.judge = { criteria = "The reply names the order number.", model = "judge-model" }
"#;

fn eval(d: &Dispatch, url: Option<&str>, args: &[&str], code: i32) -> (Value, String) {
    let mut c = d.command();
    c.args(args);
    match url {
        Some(u) => c.env("LLM_BASE_URL", u),
        // Nothing listens there: a call that is made fails loudly.
        None => c.env("LLM_BASE_URL", "http://127.0.0.1:9/v1"),
    };
    let out = c.output().expect("dispatch runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "dispatch {args:?}\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        serde_json::from_slice(&out.stdout).expect("a JSON report"),
        stderr,
    )
}

fn verdicts(r: &Value) -> Vec<Value> {
    r["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|o| {
            json!([
                o["case"],
                o["passed"],
                o["judge"]["passed"],
                o["judge"]["reason"]
            ])
        })
        .collect()
}

#[test]
fn the_judge_grades_each_run_and_its_calls_replay_from_the_cassette() {
    let d = Dispatch::new();
    let mock = native_common::Mock::start(json!([
        native_common::text("{\"pass\": true, \"reason\": \"it says sorry\"}", 80, 12),
        native_common::text("FAIL: no order number", 80, 6),
    ]));
    let agent = d.agent("echo", AGENT);
    let agent = agent.to_str().expect("utf-8");
    let cases = d.dir.path().join("cases.toml");
    std::fs::write(&cases, CASES).expect("cases");
    let cases = cases.to_str().expect("utf-8");
    let tape = d.dir.path().join("tape");
    let tape = tape.to_str().expect("utf-8");
    let args = [
        "eval", agent, "--cases", cases, "--jobs", "1", "--format", "json",
    ];
    let mut record = args.to_vec();
    record.extend(["--record", tape]);
    let (live, _) = eval(&d, Some(&mock.url()), &record, 1);
    assert_eq!(
        verdicts(&live),
        vec![
            json!(["apologizes", true, true, "it says sorry"]),
            json!(["names the order", false, false, "no order number"]),
        ]
    );
    let failures = &live["results"][1]["failures"];
    assert_eq!(failures, &json!(["judge: no order number"]));
    assert_eq!(live["results"][0]["judge"]["input_tokens"], 80);
    assert_eq!(live["results"][0]["judge"]["model"], "judge-model");
    // What the judge was asked: the criteria, the input, the output.
    let asked = mock.requests();
    assert_eq!(asked.len(), 2, "one judge call per run");
    let body = asked[1].body.to_string();
    assert!(
        body.contains("The reply names the order number.")
            && body.contains("Sorry for the wait.")
            && body.contains("judge-model"),
        "{body}"
    );
    // Offline: the same verdicts from the cassette, nothing listening.
    drop(mock);
    let mut replay = args.to_vec();
    replay.extend(["--replay", tape]);
    let (offline, _) = eval(&d, None, &replay, 1);
    assert_eq!(verdicts(&offline), verdicts(&live));
    // A judge whose call was never recorded is not judged in replay: said, not failed.
    let other = d.dir.path().join("other.toml");
    std::fs::write(
        &other,
        "[[case]]\nname = \"new criteria\"\npayload = { reply = \"hi\" }\nexpect.judge = { criteria = \"Says hi.\", model = \"judge-model\" }\n",
    )
    .expect("cases");
    let (unjudged, stderr) = eval(
        &d,
        None,
        &[
            "eval",
            agent,
            "--cases",
            other.to_str().expect("utf-8"),
            "--format",
            "json",
            "--replay",
            tape,
        ],
        0,
    );
    assert_eq!(unjudged["results"][0]["passed"], true);
    assert_eq!(unjudged["results"][0]["judge"]["passed"], Value::Null);
    assert!(stderr.contains("not judged"), "{stderr}");
}

#[test]
fn a_judge_without_a_model_or_with_bad_fields_is_refused_before_any_run() {
    let d = Dispatch::new();
    let agent = d.agent("echo", AGENT);
    let agent = agent.to_str().expect("utf-8");
    let write = |name: &str, text: &str| {
        let p = d.dir.path().join(name);
        std::fs::write(&p, text).expect("cases");
        p.to_str().expect("utf-8").to_string()
    };
    let no_model = write(
        "a.toml",
        "[[case]]\nname = \"x\"\nexpect.judge = \"The reply is polite.\"\n",
    );
    let err = d.fails(&["eval", agent, "--cases", &no_model], 125);
    assert!(
        err.contains("case \"x\": expect.judge needs a model"),
        "{err}"
    );
    let unknown = write(
        "b.toml",
        "[[case]]\nname = \"y\"\nexpect.judge = { criteria = \"ok\", modle = \"m\" }\n",
    );
    let err = d.fails(&["eval", agent, "--cases", &unknown], 125);
    assert!(
        err.contains("b.toml:3:") && err.contains("expect.judge") && err.contains("modle"),
        "{err}"
    );
    let empty = write(
        "c.toml",
        "[[case]]\nname = \"z\"\nexpect.judge = { criteria = \" \", model = \"m\" }\n",
    );
    let err = d.fails(&["eval", agent, "--cases", &empty], 125);
    assert!(err.contains("empty criteria"), "{err}");
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "nothing ran");
}
