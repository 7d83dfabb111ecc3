//! Isolation of a native agent's tools from the binary, against the
//! scripted mock model server: a LOCAL tool starts from the allowlisted
//! environment in the run's workspace (a copy of the parcel's files), and
//! a secret in its output is masked in the run's events.

use crate::common;
use crate::native_common;

use common::Dispatch;
use native_common::{Mock, events_of, native_agent, text};
use serde_json::json;

#[test]
fn a_local_tool_sees_only_declared_variables_and_works_in_the_workspace() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "probe", "arguments": {}, "id": "c0"}]},
        text("done", 5, 5),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "probe",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n\
             ENV DECLARED=yes\nSECRET TOOL_TOKEN TO probe\nENV_PASSTHROUGH PASSED_VAR\n\
             COPY data.txt\nTOOL LOCAL tools/probe.sh AS probe",
            mock.url()
        ),
    );
    std::fs::create_dir_all(dir.join("tools")).expect("tools");
    std::fs::write(
        dir.join("tools/probe.sh"),
        "echo \"undeclared=${UNDECLARED_VAR:-unset} declared=${DECLARED:-unset} passed=${PASSED_VAR:-unset}\"\n\
         echo \"token=$TOOL_TOKEN\"\n\
         echo \"cwd=$PWD data=$(cat data.txt)\"\n\
         echo changed > data.txt\n",
    )
    .expect("probe");
    std::fs::write(dir.join("data.txt"), "from-the-parcel").expect("data");
    let out = d
        .command()
        .args(["run", dir.to_str().expect("utf-8"), "--job", "{}"])
        .env("UNDECLARED_VAR", "leaked")
        .env("PASSED_VAR", "through")
        .env("TOOL_TOKEN", "tool-s3cret")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let id = d.ok(&["ps", "-a", "-q"]);
    let id = id
        .lines()
        .next()
        .unwrap_or_else(|| panic!("a run: {stderr}"));
    let doc = d.inspect(id);
    assert_eq!(doc["status"], "succeeded", "{doc:#} {stderr}");
    let calls = events_of(&doc, "tool_call");
    let output = calls[0]["output"].as_str().expect("output");
    assert!(
        output.contains("undeclared=unset declared=yes passed=through"),
        "{output}"
    );
    assert!(output.contains("token=****"), "masked in events: {output}");
    let work = d.root().join("runs").join(id).join("work");
    assert!(
        output.contains(&format!("cwd={} data=from-the-parcel", work.display())),
        "{output}"
    );
    assert!(!doc.to_string().contains("tool-s3cret"), "{doc:#}");
    // The tool wrote its copy; the parcel is as built.
    d.ok(&["images", "--verify"]);
}

/// A helper killed with SIGKILL in the middle of a LOCAL tool call takes
/// the tool's whole tree with it (the tool is sandboxed and tethered to
/// the helper), a background child included: nothing of the call runs on
/// beside the run's recovery.
#[test]
fn a_helper_killed_during_a_tool_call_takes_the_tools_tree_with_it() {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return; // the tether comes with the sandbox's PID namespace (root here)
    }
    let d = Dispatch::sandboxed();
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "beat", "arguments": {}, "id": "c0"}]},
        text("done", 5, 5),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "beater",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL LOCAL beat.sh AS beat",
            mock.url()
        ),
    );
    std::fs::write(
        dir.join("beat.sh"),
        "(while :; do date +%s%N >> child-beats; sleep 0.02; done) &\n\
         while :; do date +%s%N >> tool-beats; sleep 0.02; done\n",
    )
    .expect("tool");
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let work = d.root().join("runs").join(&id).join("work");
    common::kill_helper_and_assert_beats_stop(
        &d,
        &id,
        &[work.join("tool-beats"), work.join("child-beats")],
    );
}
