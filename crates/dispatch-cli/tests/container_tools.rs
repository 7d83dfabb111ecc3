//! `TOOL_SANDBOX image <ref>`: a native agent's LOCAL tools run in a
//! container (read-only parcel and workspace, no network), from the binary
//! against the scripted mock model server.

mod common;
mod container_common;
mod native_common;

use common::Dispatch;
use container_common::{IMAGE, available};
use native_common::{Mock, events_of, native_agent, text};
use serde_json::json;

#[test]
fn a_sandboxed_local_tool_runs_in_a_container_without_network_or_write_access() {
    if !available() {
        return;
    }
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "probe", "arguments": {"q": "x"}, "id": "c0"}]},
        text("done", 1, 1),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "sandboxed",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai BASE_URL {}\nTOOL_SANDBOX image {IMAGE}\nTOOL LOCAL tools/probe.sh AS probe DESCRIPTION \"Look around\"",
            mock.url()
        ),
    );
    std::fs::create_dir_all(dir.join("tools")).expect("tools dir");
    std::fs::write(
        dir.join("tools/probe.sh"),
        "echo \"in: $container; input: $(cat); nets: $(ls /sys/class/net | tr '\\n' ' ')\"\n\
         if touch written 2>/dev/null; then echo writable; else echo read-only; fi\n",
    )
    .expect("tool");
    let out = d
        .command()
        .args(["run", dir.to_str().expect("utf-8"), "--job", "{}"])
        .output()
        .expect("dispatch run");
    let id = d.ok(&["ps", "-a", "-q"]).lines().next().map(str::to_string);
    let doc = d.inspect(&id.unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&out.stderr))));
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let calls = events_of(&doc, "tool_call");
    let output = calls[0]["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("in: podman"),
        "ran in a container: {output}"
    );
    assert!(output.contains(r#"input: {"q":"x"}"#), "{output}");
    assert!(output.contains("nets: lo "), "no network: {output}");
    assert!(output.contains("read-only"), "{output}");
}
