//! What CI servers need of a JUnit report, checked two ways: the essentials
//! of the schema written out here (element by element, attribute by
//! attribute, the counts agreeing with the testcases), and `xmllint
//! --schema` against tests/fixtures/junit-10.xsd (xmllint comes from
//! Debian's libxml2-utils, which `.ci/run` installs; under CI=true it must
//! be there).

use std::path::Path;

use roxmltree::{Document, Node};

/// Asserts `xml` is a JUnit report CI servers read; returns nothing, panics
/// naming what is wrong.
pub fn assert_valid(dir: &Path, xml: &str) {
    let doc = Document::parse(xml).unwrap_or_else(|e| panic!("not well-formed XML: {e}\n{xml}"));
    essentials(&doc, xml);
    xmllint(dir, xml);
}

/// The schema's essentials: `testsuites` (name tests failures errors time)
/// › `testsuite` (name tests failures errors skipped time; `properties`
/// first) › `testcase` (name classname time) › `properties`/`property`
/// (name value), `failure` (message type), `system-out`; every count agrees
/// with the testcases under it.
fn essentials(doc: &Document, xml: &str) {
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites", "{xml}");
    has(root, &["name", "tests", "failures", "errors", "time"], xml);
    let suites = elements(root);
    assert!(suites.iter().all(|s| s.has_tag_name("testsuite")), "{xml}");
    let (mut tests, mut failures) = (0, 0);
    for suite in &suites {
        has(
            *suite,
            &["name", "tests", "failures", "errors", "skipped", "time"],
            xml,
        );
        let children = elements(*suite);
        let cases: Vec<Node> = children
            .iter()
            .copied()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        if let Some(p) = children.iter().position(|n| n.has_tag_name("properties")) {
            assert_eq!(p, 0, "a suite's properties come first: {xml}");
            properties(children[0], xml);
        }
        let failed = cases
            .iter()
            .filter(|c| elements(**c).iter().any(|n| n.has_tag_name("failure")))
            .count();
        assert_eq!(count(*suite, "tests"), cases.len(), "{xml}");
        assert_eq!(count(*suite, "failures"), failed, "{xml}");
        tests += cases.len();
        failures += failed;
        for case in &cases {
            testcase(*case, xml);
        }
    }
    assert_eq!(count(root, "tests"), tests, "{xml}");
    assert_eq!(count(root, "failures"), failures, "{xml}");
    number(root.attribute("time"), xml);
}

fn testcase(case: Node, xml: &str) {
    has(case, &["name", "classname", "time"], xml);
    number(case.attribute("time"), xml);
    let order = [
        "properties",
        "skipped",
        "error",
        "failure",
        "system-out",
        "system-err",
    ];
    let mut last = 0;
    for child in elements(case) {
        let name = child.tag_name().name();
        let at = order
            .iter()
            .position(|o| *o == name)
            .unwrap_or_else(|| panic!("<{name}> is not a testcase's child: {xml}"));
        assert!(at >= last, "<{name}> is out of order in a testcase: {xml}");
        last = at;
        match name {
            "properties" => properties(child, xml),
            "failure" => has(child, &["message", "type"], xml),
            _ => {}
        }
    }
}

fn properties(p: Node, xml: &str) {
    for property in elements(p) {
        assert!(property.has_tag_name("property"), "{xml}");
        has(property, &["name", "value"], xml);
    }
}

fn elements<'a, 'i>(n: Node<'a, 'i>) -> Vec<Node<'a, 'i>> {
    n.children().filter(Node::is_element).collect()
}

fn has(n: Node, attributes: &[&str], xml: &str) {
    for a in attributes {
        assert!(
            n.attribute(*a).is_some(),
            "<{}> lacks `{a}`: {xml}",
            n.tag_name().name()
        );
    }
}

fn count(n: Node, attribute: &str) -> usize {
    n.attribute(attribute)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("`{attribute}` is not a count"))
}

fn number(v: Option<&str>, xml: &str) {
    assert!(
        v.is_some_and(|t| t.parse::<f64>().is_ok_and(|x| x >= 0.0)),
        "a time is seconds: {v:?}: {xml}"
    );
}

/// `xmllint --schema tests/fixtures/junit-10.xsd`.
fn xmllint(dir: &Path, xml: &str) {
    let have = std::process::Command::new("xmllint")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "xmllint is missing under CI=true (hint: apt-get install libxml2-utils)"
        );
        eprintln!(
            "skipping the JUnit schema check: xmllint is missing (apt-get install libxml2-utils)"
        );
        return;
    }
    let path = dir.join("report.xml");
    std::fs::write(&path, xml).expect("write report");
    let xsd = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/junit-10.xsd");
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--schema", xsd])
        .arg(&path)
        .output()
        .expect("xmllint runs");
    assert!(
        out.status.success(),
        "the JUnit report does not validate: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}
