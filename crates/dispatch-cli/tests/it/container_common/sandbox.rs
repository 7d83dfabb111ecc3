//! `TOOL_SANDBOX image <ref>` as podman and docker both run it.

use serde_json::json;

use crate::common::Dispatch;
use crate::native_common::{Mock, events_of, native_agent, text};

/// Runs a native agent whose LOCAL tool `probe` runs in a container of
/// `image`, and checks the tool got its input, no network and a read-only
/// workspace. Returns the tool's output (it prints `$container` first).
pub fn a_sandboxed_tool_runs_without_network_or_write_access(d: &Dispatch, image: &str) -> String {
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "probe", "arguments": {"q": "x"}, "id": "c0"}]},
        text("done", 1, 1),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "sandboxed",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL_SANDBOX image {image}\nTOOL LOCAL tools/probe.sh AS probe DESCRIPTION \"Look around\"",
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
    let output = calls[0]["output"].as_str().unwrap_or_default().to_string();
    assert!(output.contains(r#"input: {"q":"x"}"#), "ran: {output}");
    assert!(output.contains("nets: lo "), "no network: {output}");
    assert!(output.contains("read-only"), "{output}");
    output
}
