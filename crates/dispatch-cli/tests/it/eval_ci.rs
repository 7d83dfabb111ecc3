//! `dispatch eval` as CI reads it: a baseline regression is a JUnit failure
//! and the verdict line says why the eval failed; each testcase carries its
//! run's id, tokens and cost as properties; a case without expectations
//! fails when its run does; tools a case names must be the agent's; and a
//! closed stdout (`dispatch eval | head -1`) neither kills nor fails a run.

use crate::common;
use crate::native_common;

use std::io::BufRead;
use std::process::Stdio;

use common::Dispatch;
use roxmltree::{Document, Node};
use serde_json::Value;

/// Payload words: `dear` costs what the file `price` says (else $0.001),
/// `slow` sleeps a second, `boom` exits 3, `hang` outlives the timeout.
fn agent(d: &Dispatch) -> String {
    let price = d.dir.path().join("price");
    std::fs::write(&price, "0.0010").expect("price");
    let script = format!(
        r#"payload=$(cat "$DISPATCH_PAYLOAD")
has() {{ echo "$payload" | grep -q "$1"; }}
cost=0.0010
if has dear; then cost=$(cat '{}'); fi
echo "{{\"type\":\"usage\",\"model\":\"m\",\"input_tokens\":100,\"output_tokens\":20,\"cost_usd\":$cost}}" >> "$DISPATCH_EVENTS"
if has slow; then sleep 1; fi
if has hang; then sleep 30; fi
if has boom; then exit 3; fi
echo '{{"ok":true}}' > "$DISPATCH_OUTPUT"
"#,
        price.display()
    );
    let dir = d.agent_with("priced", &script, "TIMEOUT RUN 2s\n");
    dir.to_str().expect("utf-8").to_string()
}

fn write(d: &Dispatch, name: &str, text: &str) -> String {
    let path = d.dir.path().join(name);
    std::fs::write(&path, text).expect("write cases");
    path.to_str().expect("utf-8").to_string()
}

/// `dispatch <args>`: asserts the exit code; stdout.
fn eval(d: &Dispatch, args: &[&str], code: i32) -> String {
    let out = d.run(args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "dispatch {args:?}\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn testcase<'a, 'i>(doc: &'a Document<'i>, name: &str) -> Node<'a, 'i> {
    doc.descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
        .unwrap_or_else(|| panic!("no testcase {name}"))
}

fn property(case: Node, name: &str) -> Option<String> {
    case.children()
        .find(|n| n.has_tag_name("properties"))?
        .children()
        .find(|p| p.has_tag_name("property") && p.attribute("name") == Some(name))?
        .attribute("value")
        .map(str::to_string)
}

const TWO: &str = "[[case]]\nname = \"cheap\"\npayload = { t = \"plain\" }\n\n[[case]]\nname = \"dear\"\npayload = { t = \"dear\" }\n";

#[test]
fn a_baseline_regression_is_a_junit_failure_and_the_verdict_says_why() {
    let d = Dispatch::new();
    let agent = agent(&d);
    let cases = write(&d, "cases.toml", TWO);
    let first = eval(
        &d,
        &["eval", &agent, "--cases", &cases, "--format", "json"],
        0,
    );
    let first: Value = serde_json::from_str(&first).expect("JSON");
    let id = first["eval"].as_str().expect("eval id").to_string();
    std::fs::write(d.dir.path().join("price"), "0.0020").expect("price");

    // Every run passes its expectations; `dear` costs twice as much.
    let xml = eval(
        &d,
        &[
            "eval",
            &agent,
            "--cases",
            &cases,
            "--format",
            "junit",
            "--baseline",
            &id,
        ],
        1,
    );
    common::junit::assert_valid(d.dir.path(), &xml);
    let doc = Document::parse(&xml).expect("XML");
    let root = doc.root_element();
    assert_eq!(root.attribute("failures"), Some("1"), "{xml}");
    let suite = root
        .children()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a suite");
    assert_eq!(suite.attribute("failures"), Some("1"), "{xml}");
    let failure = testcase(&doc, "dear")
        .children()
        .find(|n| n.has_tag_name("failure"))
        .expect("the regressed case fails");
    assert_eq!(failure.attribute("type"), Some("regression"), "{xml}");
    // The eval's run says why it failed too.
    let suite_props = |name: &str| {
        suite
            .children()
            .find(|n| n.has_tag_name("properties"))
            .and_then(|p| {
                p.children()
                    .find(|n| n.attribute("name") == Some(name))
                    .and_then(|n| n.attribute("value"))
            })
            .map(str::to_string)
    };
    assert_eq!(suite_props("baseline").as_deref(), Some(id.as_str()));
    let eval_id = suite_props("eval").expect("the eval's id");
    let group = d.inspect(&eval_id);
    assert_eq!(group["status"], "failed", "{group}");
    assert_eq!(
        group["state"]["reason"],
        format!("1 case(s) regressed against the baseline {id}: dear"),
        "{group}"
    );
    let message = failure.attribute("message").expect("a message");
    assert!(message.contains("cost +100%"), "{message}");
    assert!(message.contains(&id), "names the baseline: {message}");
    let cheap = testcase(&doc, "cheap");
    assert!(
        !cheap.children().any(|n| n.has_tag_name("failure")),
        "{xml}"
    );

    // The run's id, status, tokens and cost are the testcase's properties
    // (and still in its system-out).
    let run_id = property(cheap, "run_id").expect("run_id");
    assert_eq!(d.inspect(&run_id)["status"], "succeeded");
    assert_eq!(property(cheap, "status").as_deref(), Some("succeeded"));
    assert_eq!(property(cheap, "tokens").as_deref(), Some("120"));
    assert_eq!(property(cheap, "cost_usd").as_deref(), Some("0.001"));
    let out = cheap
        .children()
        .find(|n| n.has_tag_name("system-out"))
        .and_then(|n| n.text())
        .expect("system-out");
    assert!(out.contains(&run_id), "{out}");

    // The table's verdict says why it failed.
    let table = eval(
        &d,
        &["eval", &agent, "--cases", &cases, "--baseline", &id],
        1,
    );
    assert!(
        table.contains("FAILED: 2/2 passed (100%), 1 regression against the baseline (dear)"),
        "{table}"
    );
}

#[test]
fn a_case_without_expectations_fails_when_its_run_does_not_succeed() {
    let d = Dispatch::new();
    let agent = agent(&d);
    let cases = write(
        &d,
        "cases.toml",
        r#"
[[case]]
name = "runs"
payload = { t = "plain" }

[[case]]
name = "exits 3"
payload = { t = "boom" }

[[case]]
name = "times out"
payload = { t = "hang" }

[[case]]
name = "says it fails"
payload = { t = "boom" }
expect.status = "failed"
expect.exit_code = 3
"#,
    );
    let json = eval(
        &d,
        &[
            "eval", &agent, "--cases", &cases, "--format", "json", "-j", "4",
        ],
        1,
    );
    let r: Value = serde_json::from_str(&json).expect("JSON");
    let result = |name: &str| {
        r["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|o| o["case"] == name)
            .cloned()
            .expect("case")
    };
    assert_eq!(result("runs")["passed"], true, "{r}");
    assert_eq!(result("says it fails")["passed"], true, "{r}");
    for (name, status) in [("exits 3", "failed"), ("times out", "timed_out")] {
        let o = result(name);
        assert_eq!(o["passed"], false, "{name}: {o}");
        assert_eq!(o["status"], status, "{name}: {o}");
        let first = o["failures"][0].as_str().expect("a failure");
        assert!(
            first.starts_with(&format!(
                "expect.status: wanted succeeded, the run {status}"
            )),
            "{name}: {first}"
        );
    }
    assert_eq!(r["summary"]["passed"], 2);

    // A non-zero exit code with the default status could never pass.
    let contradicts = write(
        &d,
        "contradicts.toml",
        "[[case]]\nname = \"exit only\"\nexpect.exit_code = 3\n",
    );
    let err = d.fails(&["eval", &agent, "--cases", &contradicts], 125);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("case \"exit only\""), "{err}");
    assert!(err.contains("expect.status = \"failed\""), "{err}");
}

#[test]
fn a_failed_eval_says_why_in_its_verdict_line() {
    let d = Dispatch::new();
    let agent = agent(&d);
    let cases = write(
        &d,
        "cases.toml",
        "[[case]]\nname = \"runs\"\n\n[[case]]\nname = \"exits 3\"\npayload = { t = \"boom\" }\n",
    );
    let table = eval(&d, &["eval", &agent, "--cases", &cases], 1);
    assert!(
        table.contains("FAILED: 1/2 passed (50%), 1 case failed (exits 3)"),
        "{table}"
    );
    let ok = write(&d, "ok.toml", "[[case]]\nname = \"runs\"\n");
    let table = eval(&d, &["eval", &agent, "--cases", &ok], 0);
    assert!(table.contains(" ok: 1/1 passed (100%) · "), "{table}");
}

#[test]
fn tools_a_case_names_must_be_tools_the_native_agent_declares() {
    let d = Dispatch::new();
    let dir = native_common::native_agent(
        d.dir.path(),
        "support",
        "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL http://127.0.0.1:9\nTOOL LOCAL tools/lookup.sh AS lookup_order DESCRIPTION \"Find an order\"\nTOOL BUILTIN memory_get",
    );
    std::fs::create_dir_all(dir.join("tools")).expect("mkdir");
    std::fs::write(dir.join("tools/lookup.sh"), "echo ok\n").expect("tool");
    let dir = dir.to_str().expect("utf-8");
    for (key, list) in [
        ("called", "[\"lookup_ordr\"]"),
        ("not_called", "[\"refund\"]"),
        ("count", "{ refund = 0 }"),
        ("args", "{ refund = { id = 1 } }"),
    ] {
        let bad = if key == "called" {
            "lookup_ordr"
        } else {
            "refund"
        };
        let cases = write(
            &d,
            "cases.toml",
            &format!(
                "[[case]]\nname = \"fine\"\nexpect.tools = {{ called = [\"lookup_order\"] }}\n\n[[case]]\nname = \"typo\"\nexpect.tools = {{ {key} = {list} }}\n"
            ),
        );
        let err = d.fails(&["eval", dir, "--cases", &cases], 125);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        for want in [
            "case \"typo\"",
            &format!("expect.tools.{key}"),
            &format!("`{bad}`"),
            "lookup_order, memory_get",
        ] {
            assert!(err.contains(want), "wanted `{want}` in: {err}");
        }
    }
    // Nothing ran.
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
}

/// `dispatch eval … 2>&1 | head -1`: the pipe closes after the first line,
/// while the cases run. The eval finishes every run, ends its own run
/// with the verdict and exits with it, saying nothing more.
#[test]
fn a_closed_stdout_neither_kills_nor_fails_the_eval_or_its_runs() {
    let d = Dispatch::new();
    let agent = agent(&d);
    let cases = write(
        &d,
        "cases.toml",
        "[[case]]\nname = \"one\"\npayload = { t = \"slow\" }\n\n[[case]]\nname = \"two\"\npayload = { t = \"slow\" }\n",
    );
    for format in ["table", "json", "junit"] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        let mut child = d
            .command()
            .args(["eval", &agent, "--cases", &cases, "--format", format])
            .stdout(writer.try_clone().expect("dup"))
            .stderr(writer)
            .spawn()
            .expect("spawn dispatch eval");
        let mut first = String::new();
        std::io::BufReader::new(reader)
            .read_line(&mut first)
            .expect("the first line");
        // The reader is dropped: the pipe has no reader any more.
        let status = child.wait().expect("dispatch eval ends");
        assert_eq!(status.code(), Some(0), "{format}: {first}");
        let eval_id = first
            .strip_prefix("eval ")
            .and_then(|s| s.split(':').next())
            .unwrap_or_else(|| panic!("{format}: the first line names the eval: {first}"));
        let group = d.inspect(eval_id);
        assert_eq!(group["status"], "succeeded", "{format}: {group}");
        assert_eq!(group["output"]["summary"]["passed"], 2, "{group}");
        let children = d.ok(&["ps", "-a", "-q", "--no-trunc", "--parent", eval_id]);
        assert_eq!(children.lines().count(), 2, "{children}");
        for id in children.lines() {
            assert_eq!(d.status(id), "succeeded", "{format}: run {id}");
        }
    }
    // stdout alone closed early (`dispatch eval | head -1`): the same, and
    // nothing on stderr but the eval's progress.
    let out_file = d.dir.path().join("stderr.txt");
    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut child = d
        .command()
        .args(["eval", &agent, "--cases", &cases])
        .stdout(writer)
        .stderr(Stdio::from(
            std::fs::File::create(&out_file).expect("stderr file"),
        ))
        .spawn()
        .expect("spawn dispatch eval");
    let mut first = String::new();
    std::io::BufReader::new(reader)
        .read_line(&mut first)
        .expect("the first line");
    let status = child.wait().expect("dispatch eval ends");
    let stderr = std::fs::read_to_string(&out_file).expect("stderr");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(first.starts_with("CASE"), "{first}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
}
