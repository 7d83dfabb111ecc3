//! The eval's report as JUnit XML, written with `quick-xml` (escaping is the
//! writer's), in the shape of the JUnit schema CI servers read (Jenkins'
//! `junit-10.xsd`, checked by the tests): `testsuites` > `testsuite` >
//! `properties`, `testcase` (`failure`, `system-out`).

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

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

fn document(w: &mut Writer<Vec<u8>>, r: &Report) -> std::io::Result<()> {
    let s = &r.summary;
    let (tests, failures) = (s.runs.to_string(), s.failed.to_string());
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
    w.write_event(Event::Start(BytesStart::new("properties")))?;
    for (name, value) in [("eval", r.eval.as_str()), ("parcel", r.parcel.as_str())] {
        let mut p = BytesStart::new("property");
        p.push_attribute(("name", name));
        p.push_attribute(("value", value));
        w.write_event(Event::Empty(p))?;
    }
    w.write_event(Event::End(BytesEnd::new("properties")))?;
    let repeated = r.results.iter().any(|x| x.repeat > 1);
    for o in &r.results {
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
        if !o.passed {
            let mut f = BytesStart::new("failure");
            let first = o.failures.first().map_or("", String::as_str);
            f.push_attribute(("message", first));
            f.push_attribute(("type", "expectation"));
            w.write_event(Event::Start(f))?;
            w.write_event(Event::Text(BytesText::new(&o.failures.join("\n"))))?;
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
