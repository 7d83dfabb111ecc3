//! `dispatch eval`: cases run as real runs of a process agent; every kind of
//! expectation passes and fails; reports, repeats, pass rates and bad input.

use crate::common;

use common::Dispatch;
use serde_json::Value;

/// A process agent whose payload says what it does: the category it
/// answers, the tool calls it reports, its exit code.
const AGENT: &str = r#"ev() { echo "$1" >> "$DISPATCH_EVENTS"; }
payload=$(cat "$DISPATCH_PAYLOAD")
has() { echo "$payload" | grep -q "$1"; }
if has lookup; then
  ev '{"type":"tool_call","name":"lookup_order","input":{"order_id":"12345","verbose":true},"output":"ok","ok":true,"duration_ms":3}'
fi
if has twice; then
  ev '{"type":"tool_call","name":"lookup_order","input":{"order_id":"999"},"output":"ok","ok":true,"duration_ms":3}'
fi
ev '{"type":"usage","model":"m","input_tokens":100,"output_tokens":20,"cost_usd":0.001}'
cat=other; has refund && cat=refund
echo "{\"category\":\"$cat\",\"reply\":\"Hello, order 12345 is on its way\",\"n\":3}" > "$DISPATCH_OUTPUT"
if has slow; then sleep 0.3; fi
if has boom; then exit 3; fi
exit 0
"#;

/// Pairs of cases: `<kind> ok` passes and `<kind> bad` fails on that kind.
const CASES: &str = r#"
[[case]]
name = "status ok"
payload = { t = "refund" }
expect.status = "succeeded"

[[case]]
name = "status bad"
payload = { t = "boom" }
expect.status = "succeeded"

[[case]]
name = "exit_code ok"
payload = { t = "boom" }
expect.status = "failed"
expect.exit_code = 3

[[case]]
name = "exit_code bad"
payload = { t = "boom" }
expect.status = "failed"
expect.exit_code = 0

[[case]]
name = "equals ok"
payload = { t = "refund" }
expect.output = { path = "$.category", equals = "refund" }

[[case]]
name = "equals bad"
payload = { t = "other" }
expect.output = { path = "$.category", equals = "refund" }

[[case]]
name = "contains ok"
payload = { t = "x" }
expect.output = [{ path = "$.reply", contains = "12345" }, { contains = { category = "other" } }, { path = "$.n", equals = 3.0 }]

[[case]]
name = "contains bad"
payload = { t = "x" }
expect.output = { path = "$.reply", contains = "refund" }

[[case]]
name = "regex ok"
payload = { t = "x" }
expect.output = { path = "$.reply", regex = "^Hello, order \\d+" }

[[case]]
name = "regex bad"
payload = { t = "x" }
expect.output = { path = "$.reply", regex = "^Goodbye" }

[[case]]
name = "schema ok"
payload = { t = "x" }
expect.output = { schema = { type = "object", required = ["category", "reply"] } }

[[case]]
name = "schema bad"
payload = { t = "x" }
expect.output = { path = "$.category", schema = { type = "integer" } }

[[case]]
name = "called ok"
payload = { t = "lookup" }
expect.tools = { called = ["lookup_order"] }

[[case]]
name = "called bad"
payload = { t = "x" }
expect.tools = { called = ["lookup_order"] }

[[case]]
name = "not_called ok"
payload = { t = "x" }
expect.tools = { not_called = ["refund", "lookup_order"] }

[[case]]
name = "not_called bad"
payload = { t = "lookup" }
expect.tools = { not_called = ["lookup_order"] }

[[case]]
name = "count ok"
payload = { t = "lookup twice" }
expect.tools = { count = { lookup_order = 2, refund = 0 } }

[[case]]
name = "count bad"
payload = { t = "lookup" }
expect.tools = { count = { lookup_order = 2 } }

[[case]]
name = "args ok"
payload = { t = "lookup twice" }
expect.tools = { args = { lookup_order = { order_id = "999" } } }

[[case]]
name = "args bad"
payload = { t = "lookup" }
expect.tools = { args = { lookup_order = { order_id = "777" } } }

[[case]]
name = "max_tokens ok"
payload = { t = "x" }
expect.max_tokens = 120

[[case]]
name = "max_tokens bad"
payload = { t = "x" }
expect.max_tokens = 119

[[case]]
name = "max_cost_usd ok"
payload = { t = "x" }
expect.max_cost_usd = 0.01

[[case]]
name = "max_cost_usd bad"
payload = { t = "x" }
expect.max_cost_usd = 0.0001

[[case]]
name = "max_duration ok"
payload = { t = "x" }
expect.max_duration = "1h"

[[case]]
name = "max_duration bad"
payload = { t = "slow" }
expect.max_duration = "100ms"
"#;

fn write(d: &Dispatch, name: &str, text: &str) -> String {
    let path = d.dir.path().join(name);
    std::fs::write(&path, text).expect("write cases");
    path.to_str().expect("utf-8").to_string()
}

fn json_report(d: &Dispatch, args: &[&str], code: i32) -> Value {
    let out = d.run(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "dispatch {args:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the report is JSON on stdout")
}

#[test]
fn every_kind_of_expectation_passes_and_fails_on_real_runs() {
    let d = Dispatch::new();
    let agent = d.agent("shop", AGENT);
    let cases = write(&d, "cases.toml", CASES);
    let agent = agent.to_str().expect("utf-8");
    let r = json_report(
        &d,
        &[
            "eval", agent, "--cases", &cases, "--format", "json", "-j", "8",
        ],
        1,
    );
    let results = r["results"].as_array().expect("results");
    assert_eq!(results.len(), 26);
    for o in results {
        let name = o["case"].as_str().expect("name");
        let (kind, verdict) = name.split_once(' ').expect("`<kind> ok|bad`");
        let failures = o["failures"].as_array().expect("failures");
        if verdict == "ok" {
            assert_eq!(o["passed"], true, "{name}: {failures:?}");
        } else {
            assert_eq!(o["passed"], false, "{name} should fail");
            assert_eq!(failures.len(), 1, "{name}: {failures:?}");
            let first = failures[0].as_str().expect("text");
            let key = match kind {
                "equals" | "contains" | "regex" | "schema" => "expect.output",
                "called" | "not_called" | "count" | "args" => "expect.tools",
                k => k,
            };
            assert!(first.contains(key), "{name}: {first}");
        }
        // Every case is a real run, labeled with the eval.
        let run = d.inspect(o["run_id"].as_str().expect("run id"));
        let eval_label = format!("eval={}", r["eval"].as_str().expect("eval id"));
        let labels = run["labels"].as_array().expect("labels");
        assert!(labels.iter().any(|l| l == "eval"), "{run}");
        assert!(labels.iter().any(|l| *l == *eval_label.as_str()), "{run}");
    }
    assert_eq!(r["summary"]["passed"], 13);
    assert_eq!(r["summary"]["failed"], 13);
    assert_eq!(r["summary"]["ok"], false);
    let msg = |case: &str| {
        results.iter().find(|o| o["case"] == case).expect("case")["failures"][0]
            .as_str()
            .expect("text")
            .to_string()
    };
    assert!(msg("equals bad").contains(r#"wanted "refund", got "other""#));
    assert!(msg("args bad").contains(r#"{"order_id":"777"}"#));
    assert!(msg("status bad").contains("exited with code 3"));
    // The eval's runs are listed by their label: the 26 cases and the
    // eval's own run, their parent.
    let listed = d.ok(&["ps", "-a", "-q", "--filter", "label=eval"]);
    assert_eq!(listed.lines().count(), 27);
    let eval_id = r["eval"].as_str().expect("eval id");
    let children = d.ok(&["ps", "-a", "-q", "--no-trunc", "--parent", eval_id]);
    assert_eq!(children.lines().count(), 26, "{children}");
    for o in results {
        assert!(children.contains(o["run_id"].as_str().expect("id")));
    }
    let group = d.inspect(eval_id);
    assert_eq!(group["status"], "failed", "{group}");
    assert_eq!(group["trigger"], "eval", "{group}");
    let reason = group["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("13 of 26 case run(s) failed: "),
        "{reason}"
    );
    assert_eq!(group["output"]["summary"]["passed"], 13, "{group}");
    assert_eq!(group["usage"]["input_tokens"], 2600, "{group}");
}

#[test]
fn the_agentfile_names_its_cases_and_a_passing_eval_exits_zero_with_a_table() {
    let d = Dispatch::new();
    let agent = d.agent_with("shop", AGENT, "EVAL evals/smoke.toml\n");
    std::fs::create_dir_all(agent.join("evals")).expect("mkdir");
    std::fs::write(
        agent.join("evals/smoke.toml"),
        "[[case]]\nname = \"refund request\"\npayload = { ticket = \"refund lookup\" }\nexpect.status = \"succeeded\"\nexpect.output = { path = \"$.category\", equals = \"refund\" }\nexpect.tools = { called = [\"lookup_order\"], not_called = [\"refund\"] }\nexpect.max_cost_usd = 0.01\n",
    )
    .expect("write");
    let out = d.ok(&["eval", agent.to_str().expect("utf-8")]);
    let mut lines = out.lines();
    let header = lines.next().expect("header");
    for col in ["CASE", "RESULT", "TOKENS", "COST", "TIME", "RUN"] {
        assert!(header.contains(col), "{out}");
    }
    let row = lines.next().expect("a row");
    assert!(
        row.starts_with("refund request") && row.contains("pass"),
        "{out}"
    );
    assert!(row.contains("120") && row.contains("$0.0010"), "{out}");
    let total = lines.next().expect("totals");
    assert!(total.contains("ok: 1/1 passed (100%)"), "{out}");
    // The case file is part of the parcel: changing it changes the digest.
    let before = d.ok(&["build", agent.to_str().expect("utf-8")]);
    std::fs::write(
        agent.join("evals/smoke.toml"),
        "[[case]]\nname = \"other\"\n",
    )
    .expect("write");
    let after = d.ok(&["build", agent.to_str().expect("utf-8")]);
    assert_ne!(before, after);
}

#[test]
fn junit_output_is_well_formed_xml_with_a_failure_per_failed_case() {
    let d = Dispatch::new();
    let agent = d.agent("shop", AGENT);
    let cases = write(
        &d,
        "cases.toml",
        "[[case]]\nname = \"good\"\npayload = { t = \"refund\" }\nexpect.status = \"succeeded\"\n\n[[case]]\nname = \"bad <&> one\"\npayload = { t = \"boom\" }\nexpect.status = \"succeeded\"\n",
    );
    let out = d.run(&[
        "eval",
        agent.to_str().expect("utf-8"),
        "--cases",
        &cases,
        "--format",
        "junit",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let xml = String::from_utf8(out.stdout).expect("utf-8");
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("tests"), Some("2"));
    assert_eq!(root.attribute("failures"), Some("1"));
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 1);
    let cases: Vec<_> = suites[0]
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0].attribute("name"), Some("good"));
    assert!(!cases[0].children().any(|n| n.has_tag_name("failure")));
    assert_eq!(cases[1].attribute("name"), Some("bad <&> one"));
    let failure = cases[1]
        .children()
        .find(|n| n.has_tag_name("failure"))
        .expect("a failure element");
    assert!(
        failure
            .attribute("message")
            .is_some_and(|m| m.contains("expect.status")),
        "{xml}"
    );
    // Data on stdout, progress on stderr.
    assert!(!xml.contains("[1/2]"));
    common::junit::assert_valid(d.dir.path(), &xml);
}

/// Fails every other run: a counter shared by the runs (`--jobs 1`).
const FLAKY: &str = r#"counter="$(cat "$DISPATCH_PAYLOAD" | sed -n 's/.*"counter": *"\([^"]*\)".*/\1/p')"
n=$(cat "$counter" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$counter"
[ $((n % 2)) -eq 0 ] && exit 1
exit 0
"#;

#[test]
fn repeat_counts_every_run_and_min_pass_rate_decides() {
    let d = Dispatch::new();
    let agent = d.agent("flaky", FLAKY);
    let agent = agent.to_str().expect("utf-8").to_string();
    let counter = d.dir.path().join("counter");
    let cases = write(
        &d,
        "cases.toml",
        &format!(
            "[[case]]\nname = \"flaky\"\npayload = {{ counter = \"{}\" }}\nexpect.status = \"succeeded\"\n",
            counter.display()
        ),
    );
    let base = [
        "eval", &agent, "--cases", &cases, "--format", "json", "-j", "1",
    ];
    let args = |extra: &[&'static str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        a
    };
    let r = json_report(&d, &args(&["--repeat", "4", "--min-pass-rate", "0.5"]), 0);
    assert_eq!(r["summary"]["runs"], 4);
    assert_eq!(r["summary"]["passed"], 2);
    assert_eq!(r["summary"]["pass_rate"], 0.5);
    let repeats: Vec<u64> = r["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|o| o["repeat"].as_u64().expect("repeat"))
        .collect();
    assert_eq!(repeats, [1, 2, 3, 4]);
    let r = json_report(&d, &args(&["--repeat", "4", "--min-pass-rate", "0.8"]), 1);
    assert_eq!(r["summary"]["failing_cases"][0], "flaky");
    // Without --min-pass-rate every run must pass.
    json_report(&d, &args(&["--repeat", "2"]), 1);
}

#[test]
fn bad_input_is_one_line_with_where_and_how_to_fix_it() {
    let d = Dispatch::new();
    let agent = d.agent("shop", AGENT);
    let agent = agent.to_str().expect("utf-8").to_string();
    let check = |file: &str, text: &str, wants: &[&str]| {
        let path = write(&d, file, text);
        let err = d.fails(&["eval", &agent, "--cases", &path], 125);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        for w in wants {
            assert!(err.contains(w), "wanted `{w}` in: {err}");
        }
    };
    check(
        "syntax.toml",
        "[[case]]\nname = \"a\"\nexpect.status = \"succeeded\n",
        &["syntax.toml:3:", "error:"],
    );
    check(
        "unknown.toml",
        "[[case]]\nname = \"first\"\n\n[[case]]\nname = \"second\"\nexpect.stauts = \"succeeded\"\n",
        &["unknown.toml:6:", "stauts", "case \"second\"", "hint:"],
    );
    check(
        "unknown_tool.toml",
        "[[case]]\nname = \"a\"\nexpect.tools = { callled = [\"x\"] }\n",
        &["unknown_tool.toml:3:", "callled", "case \"a\""],
    );
    check(
        "path.toml",
        "[[case]]\nname = \"p\"\nexpect.output = { path = \"$.items[\", equals = 1 }\n",
        &[
            "path.toml:3:",
            "case \"p\"",
            "$.items[",
            "is not a JSON path",
            "hint:",
        ],
    );
    check(
        "regex.toml",
        "[[case]]\nname = \"r\"\nexpect.output = { regex = \"(unclosed\" }\n",
        &["regex.toml:3:", "is not a regex"],
    );
    check(
        "status.toml",
        "[[case]]\nname = \"s\"\nexpect.status = \"success\"\n",
        &["status.toml:3:", "`success`", "succeeded"],
    );
    check("empty.toml", "", &["no cases", "hint:"]);
    let cases = write(&d, "ok.toml", "[[case]]\nname = \"a\"\n");
    for rate in ["1.5", "-0.1", "most"] {
        let err = d.fails(
            &["eval", &agent, "--cases", &cases, "--min-pass-rate", rate],
            125,
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("is not a rate from 0 to 1"), "{err}");
    }
    let err = d.fails(&["eval", &agent], 125);
    assert!(
        err.contains("no eval cases") && err.contains("EVAL"),
        "{err}"
    );
    // Nothing ran.
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn a_baseline_comparison_flags_a_cost_regression() {
    let d = Dispatch::new();
    let price = d.dir.path().join("price");
    let script = format!(
        "cost=$(cat '{}')\necho \"{{\\\"type\\\":\\\"usage\\\",\\\"model\\\":\\\"m\\\",\\\"input_tokens\\\":100,\\\"output_tokens\\\":20,\\\"cost_usd\\\":$cost}}\" >> \"$DISPATCH_EVENTS\"\n",
        price.display()
    );
    let agent = d.agent("priced", &script);
    let agent = agent.to_str().expect("utf-8").to_string();
    let cases = write(
        &d,
        "cases.toml",
        "[[case]]\nname = \"answer\"\nexpect.status = \"succeeded\"\n",
    );
    std::fs::write(&price, "0.0010").expect("price");
    let first = json_report(
        &d,
        &["eval", &agent, "--cases", &cases, "--format", "json"],
        0,
    );
    let id = first["eval"].as_str().expect("eval id").to_string();
    // The run database keeps the eval: the report files are only a copy.
    std::fs::remove_dir_all(d.root().join("evals")).expect("remove the report copies");
    // Same cost: no regression.
    let same = json_report(
        &d,
        &[
            "eval",
            &agent,
            "--cases",
            &cases,
            "--format",
            "json",
            "--baseline",
            &id[..20],
        ],
        0,
    );
    assert_eq!(same["baseline"]["regressed"], serde_json::json!([]));
    std::fs::write(&price, "0.0020").expect("price");
    let dearer = json_report(
        &d,
        &[
            "eval",
            &agent,
            "--cases",
            &cases,
            "--format",
            "json",
            "--baseline",
            &id,
        ],
        1,
    );
    assert_eq!(
        dearer["baseline"]["regressed"],
        serde_json::json!(["answer"])
    );
    let why = dearer["baseline"]["cases"][0]["regressions"][0]
        .as_str()
        .expect("a regression");
    assert!(why.starts_with("cost +100%"), "{why}");
    // The table says it too.
    let out = d.run(&["eval", &agent, "--cases", &cases, "--baseline", &id]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("answer: REGRESSION cost +100%"), "{table}");
    let err = d.fails(
        &["eval", &agent, "--cases", &cases, "--baseline", "nope"],
        125,
    );
    assert!(
        err.contains("--baseline nope: no eval with that id"),
        "{err}"
    );
}

#[test]
fn a_parcel_digest_names_the_baseline_its_newest_eval() {
    let d = Dispatch::new();
    let priced = |cost: &str| {
        format!(
            "echo '{{\"type\":\"usage\",\"model\":\"m\",\"input_tokens\":100,\"output_tokens\":20,\"cost_usd\":{cost}}}' >> \"$DISPATCH_EVENTS\"\n"
        )
    };
    let agent = d.agent("priced", &priced("0.0010"));
    let agent = agent.to_str().expect("utf-8").to_string();
    let cases = write(
        &d,
        "cases.toml",
        "[[case]]\nname = \"answer\"\nexpect.status = \"succeeded\"\n",
    );
    let old = json_report(
        &d,
        &["eval", &agent, "--cases", &cases, "--format", "json"],
        0,
    );
    let old_digest = old["parcel"].as_str().expect("digest").to_string();
    // The agent changes: a new parcel, twice as dear.
    std::fs::write(
        std::path::Path::new(&agent).join("agent.sh"),
        priced("0.0020"),
    )
    .expect("rewrite agent");
    let hex = old_digest.trim_start_matches("sha256:");
    let new = json_report(
        &d,
        &[
            "eval",
            &agent,
            "--cases",
            &cases,
            "--format",
            "json",
            "--baseline",
            &hex[..12],
        ],
        1,
    );
    assert_ne!(
        new["parcel"], old["parcel"],
        "the rebuilt agent is a new parcel"
    );
    assert_eq!(new["baseline"]["baseline"], old["eval"]);
    assert_eq!(new["baseline"]["regressed"], serde_json::json!(["answer"]));
    // The newest eval of the old digest is the one compared with.
    let again = json_report(
        &d,
        &[
            "eval",
            &agent,
            "--cases",
            &cases,
            "--format",
            "json",
            "--baseline",
            &old_digest,
        ],
        1,
    );
    assert_eq!(again["baseline"]["baseline"], old["eval"]);
    let err = d.fails(
        &[
            "eval",
            &agent,
            "--cases",
            &cases,
            "--baseline",
            "sha256:ffffffff",
        ],
        125,
    );
    assert!(
        err.contains("no eval with that id or of a parcel with that digest"),
        "{err}"
    );
}
