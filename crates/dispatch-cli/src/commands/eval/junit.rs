//! The eval's report as JUnit XML, written with `quick-xml` (escaping is the
//! writer's), in the shape of the JUnit schema CI servers read (Jenkins'
//! `junit-10.xsd`, checked by the tests): `testsuites` > `testsuite` >
//! `properties`, `testcase` (`properties`, `failure`, `system-out`).
//!
//! A testcase is one run. It fails (a `failure` element, counted in
//! `failures`) when the run failed an expectation (`type="expectation"`) or
//! when, with `--baseline`, its case regressed (`type="regression"`): every
//! way the eval exits 1 shows as a failed testcase, so a CI view is never
//! green on a failed job. Each testcase's properties are its run's id,
//! status, exit code, tokens and cost (the Jenkins JUnit plugin keeps
//! testcase properties); its `system-out` says the same in one line.

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use super::execute::Outcome;
use super::report::Report;
use crate::output::cost_text;

/// Seconds, as JUnit has them.
fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

pub fn write(r: &Report) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    // Writing into a Vec cannot fail.
    let _ = document(&mut w, r);
    let mut xml = String::from_utf8(w.into_inner()).unwrap_or_default();
    xml.push('\n');
    xml
}

/// One `failure` element: its type, its message (one line) and its text.
struct Failure {
    kind: &'static str,
    message: String,
    text: String,
}

/// Why the run `o` fails as a testcase: its failed expectations, then its
/// case's regression against the baseline.
fn failures_of(r: &Report, o: &Outcome) -> Vec<Failure> {
    let mut out = Vec::new();
    if !o.passed {
        out.push(Failure {
            kind: "expectation",
            message: o.failures.first().cloned().unwrap_or_default(),
            text: o.failures.join("\n"),
        });
    }
    if let Some(c) = &r.baseline
        && let Some(d) = c
            .cases
            .iter()
            .find(|d| d.case == o.case && !d.regressions.is_empty())
    {
        out.push(Failure {
            kind: "regression",
            message: format!(
                "regression against the baseline {}: {}",
                c.baseline,
                d.regressions.join("; ")
            ),
            text: d.regressions.join("\n"),
        });
    }
    out
}

fn document(w: &mut Writer<Vec<u8>>, r: &Report) -> std::io::Result<()> {
    let s = &r.summary;
    let failing: Vec<Vec<Failure>> = r.results.iter().map(|o| failures_of(r, o)).collect();
    let failed = failing.iter().filter(|f| !f.is_empty()).count();
    let (tests, failures) = (s.runs.to_string(), failed.to_string());
    let time = secs(s.duration_ms);
    let suite_name = format!("dispatch eval {}", r.parcel_name);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let mut root = BytesStart::new("testsuites");
    root.push_attribute(("name", "dispatch eval"));
    root.push_attribute(("tests", tests.as_str()));
    root.push_attribute(("failures", failures.as_str()));
    root.push_attribute(("errors", "0"));
    root.push_attribute(("time", time.as_str()));
    w.write_event(Event::Start(root))?;
    let mut suite = BytesStart::new("testsuite");
    suite.push_attribute(("name", suite_name.as_str()));
    suite.push_attribute(("tests", tests.as_str()));
    suite.push_attribute(("failures", failures.as_str()));
    suite.push_attribute(("errors", "0"));
    suite.push_attribute(("skipped", "0"));
    suite.push_attribute(("time", time.as_str()));
    w.write_event(Event::Start(suite))?;
    let mut suite_props = vec![("eval", r.eval.clone()), ("parcel", r.parcel.clone())];
    if let Some(c) = &r.baseline {
        suite_props.push(("baseline", c.baseline.clone()));
    }
    properties(w, &suite_props)?;
    let repeated = r.results.iter().any(|x| x.repeat > 1);
    for (o, fails) in r.results.iter().zip(&failing) {
        let name = if repeated {
            format!("{} #{}", o.case, o.repeat)
        } else {
            o.case.clone()
        };
        let case_time = secs(o.duration_ms);
        let mut tc = BytesStart::new("testcase");
        tc.push_attribute(("name", name.as_str()));
        tc.push_attribute(("classname", r.parcel_name.as_str()));
        tc.push_attribute(("time", case_time.as_str()));
        w.write_event(Event::Start(tc))?;
        properties(w, &run_properties(o))?;
        for f in fails {
            let mut e = BytesStart::new("failure");
            e.push_attribute(("message", f.message.as_str()));
            e.push_attribute(("type", f.kind));
            w.write_event(Event::Start(e))?;
            w.write_event(Event::Text(BytesText::new(&f.text)))?;
            w.write_event(Event::End(BytesEnd::new("failure")))?;
        }
        let run = if o.run_id.is_empty() {
            "not run".to_string()
        } else {
            format!("run {}", o.run_id)
        };
        let out = format!(
            "{run} · status {} · tokens {} · cost {}",
            o.status,
            o.tokens,
            cost_text(o.cost_usd)
        );
        w.write_event(Event::Start(BytesStart::new("system-out")))?;
        w.write_event(Event::Text(BytesText::new(&out)))?;
        w.write_event(Event::End(BytesEnd::new("system-out")))?;
        w.write_event(Event::End(BytesEnd::new("testcase")))?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuite")))?;
    w.write_event(Event::End(BytesEnd::new("testsuites")))?;
    Ok(())
}

/// A run's properties: its id (none when not run), status, exit code,
/// tokens and cost (US dollars, a plain number).
fn run_properties(o: &Outcome) -> Vec<(&'static str, String)> {
    let mut props = Vec::new();
    if !o.run_id.is_empty() {
        props.push(("run_id", o.run_id.clone()));
    }
    props.push(("status", o.status.clone()));
    if let Some(code) = o.exit_code {
        props.push(("exit_code", code.to_string()));
    }
    props.extend([
        ("input_tokens", o.input_tokens.to_string()),
        ("output_tokens", o.output_tokens.to_string()),
        ("tokens", o.tokens.to_string()),
        ("cost_usd", o.cost_usd.to_string()),
    ]);
    props
}

fn properties(w: &mut Writer<Vec<u8>>, props: &[(&str, String)]) -> std::io::Result<()> {
    w.write_event(Event::Start(BytesStart::new("properties")))?;
    for (name, value) in props {
        let mut p = BytesStart::new("property");
        p.push_attribute(("name", *name));
        p.push_attribute(("value", value.as_str()));
        w.write_event(Event::Empty(p))?;
    }
    w.write_event(Event::End(BytesEnd::new("properties")))?;
    Ok(())
}
