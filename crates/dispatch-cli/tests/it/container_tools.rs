//! `TOOL_SANDBOX image <ref>`: a native agent's LOCAL tools run in a
//! container (read-only parcel and workspace, no network), from the binary
//! against the scripted mock model server.

use crate::common;
use crate::container_common;

use common::Dispatch;
use container_common::{IMAGE, available};

#[test]
fn a_sandboxed_local_tool_runs_in_a_container_without_network_or_write_access() {
    if !available() {
        return;
    }
    let output = container_common::sandbox::a_sandboxed_tool_runs_without_network_or_write_access(
        &Dispatch::new(),
        IMAGE,
    );
    assert!(
        output.contains("in: podman"),
        "ran in a container: {output}"
    );
}
