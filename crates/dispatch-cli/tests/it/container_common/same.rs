//! What the container courier promises whichever runtime CLI drives it:
//! each check takes a state directory whose runs use podman
//! (`tests/it/container.rs`) or docker (`tests/it/container_docker.rs`).

use std::path::PathBuf;

use super::{IMAGE, containers_of};
use crate::common::{Dispatch, alive, checks, eventually};

/// A parcel `name` of `image` whose `agent.sh` runs `script`, with `extra`
/// directives.
pub fn agent(d: &Dispatch, name: &str, image: &str, script: &str, extra: &str) -> PathBuf {
    checks::agent(
        d.dir.path(),
        name,
        &format!("FROM image {image}\n"),
        script,
        extra,
    )
}

pub fn log(d: &Dispatch, id: &str) -> String {
    d.ok(&["logs", id])
}

/// A line of an agent's script that writes its `up` step (see [`wait_up`]).
pub const UP: &str =
    "echo '{\"type\":\"step\",\"name\":\"up\",\"phase\":\"start\"}' >> \"$DISPATCH_EVENTS\"\n";

/// Waits until the agent wrote its `up` step from inside the container.
pub fn wait_up(d: &Dispatch, id: &str) {
    eventually(30, "the agent runs in its container", || {
        let doc = d.inspect(id);
        let ended = doc["status"] == "failed" || doc["status"] == "succeeded";
        assert!(!ended, "the run ended early: {doc:#}\n{}", log(d, id));
        doc["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["data"]["name"] == "up"))
    });
}

/// SIGKILLs the helper of run `id`, whose one container runs, and waits
/// until it is gone.
pub fn kill_its_helper(d: &Dispatch, id: &str) {
    let doc = d.inspect(id);
    let helper = doc["state"]["helper"]["pid"].as_u64().expect("helper pid") as u32;
    assert_eq!(containers_of(id).len(), 1, "the container runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill helper");
    eventually(5, "helper gone", || !alive(helper));
}

/// A container agent reads its payload; what it writes to the protocol
/// files inside (events, usage, an artifact, its output) is collected; its
/// root is read-only and `/tmp` writable; the container goes. `script` and
/// `extra` add lines and directives; returns the run's id, document and log.
pub fn an_agent_reads_its_payload_and_its_results_are_collected(
    d: &Dispatch,
    script: &str,
    extra: &str,
) -> (String, serde_json::Value, String) {
    let common = r#"echo "payload: $(cat)"
echo '{"type":"step","name":"inside","phase":"start"}' >> "$DISPATCH_EVENTS"
echo '{"type":"usage","model":"m","input_tokens":3,"output_tokens":4}' >> "$DISPATCH_EVENTS"
echo made-inside > "$DISPATCH_ARTIFACTS/report.txt"
echo '{"answer":42}' > "$DISPATCH_OUTPUT"
echo "root is read-only: $(touch /rootfile 2>/dev/null && echo no || echo yes)"
echo "tmp is writable: $(touch /tmp/x && echo yes)"
"#;
    let dir = agent(d, "boxed", IMAGE, &format!("{common}{script}"), extra);
    let id = d.detach(&dir, "{\"q\":1}");
    let doc = d.wait_terminal(&id);
    let log = log(d, &id);
    assert_eq!(doc["status"], "succeeded", "{log}");
    assert!(log.contains(r#"payload: {"q":1}"#), "{log}");
    assert!(log.contains("root is read-only: yes"), "{log}");
    assert!(log.contains("tmp is writable: yes"), "{log}");
    assert_eq!(doc["output"]["answer"], 42);
    assert_eq!(doc["artifacts"][0]["name"], "report.txt");
    assert_eq!(doc["usage"]["input_tokens"], 3);
    let events = doc["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["data"]["name"] == "inside"),
        "the step event written inside the container is recorded: {events:?}"
    );
    eventually(10, "the container is removed", || {
        containers_of(&id).is_empty()
    });
    (id, doc, log)
}

/// After `stop` with a grace period, the agent (which traps TERM, cleans
/// up and exits 3) ended `cancelled` with its exit code, and its container
/// went.
pub fn stopped_within_its_grace(d: &Dispatch, id: &str) {
    let doc = d.inspect(id);
    let log = log(d, id);
    assert_eq!(doc["status"], "cancelled", "{log}");
    assert!(
        log.contains("got-term") && log.contains("cleaned-up"),
        "{log}"
    );
    assert_eq!(doc["state"]["exit_code"], 3, "{doc}");
    eventually(10, "no container is left", || containers_of(id).is_empty());
}

/// A failing container fails the run with its exit code, and goes.
pub fn a_failing_container_fails_the_run_with_its_exit_code(d: &Dispatch) {
    let dir = agent(d, "fails", IMAGE, "echo failing\nexit 7\n", "");
    let id = d.detach(&dir, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["state"]["exit_code"], 7, "{doc}");
    assert!(log(d, &id).contains("failing"));
    eventually(10, "the container is removed", || {
        containers_of(&id).is_empty()
    });
}

/// 24 quick runs that never read their stdin: every one's output reaches
/// its log.
pub fn every_quick_run_keeps_its_output(d: &Dispatch) {
    let dir = agent(d, "quick", IMAGE, "echo quick-output\n", "");
    let ids: Vec<String> = (0..24).map(|_| d.detach(&dir, "{}")).collect();
    for id in &ids {
        let doc = d.wait_terminal(id);
        assert_eq!(doc["status"], "succeeded", "{id}: {doc}\n{}", log(d, id));
    }
    let lost: Vec<&String> = ids
        .iter()
        .filter(|id| !log(d, id).contains("quick-output"))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} runs lost their container's output: {lost:?}",
        lost.len(),
        ids.len()
    );
}

/// `NETWORK none` (the default): only loopback, and the host's loopback
/// listener is out of reach.
pub fn network_none_leaves_only_loopback(d: &Dispatch) {
    // Reachable from any process of the host, not from the container.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let script = format!(
        "echo \"nets: $(ls /sys/class/net | tr '\\n' ' ')\"\n\
         if nc -w 2 127.0.0.1 {port} </dev/null 2>/dev/null; then echo reached; else echo unreachable; fi\n"
    );
    let dir = agent(d, "offline", IMAGE, &script, "");
    let id = d.detach(&dir, "{}");
    let doc = d.wait_terminal(&id);
    let log = log(d, &id);
    assert_eq!(doc["status"], "succeeded", "{log}");
    assert!(
        log.contains("nets: lo \n") || log.contains("nets: lo\n"),
        "{log}"
    );
    assert!(log.contains("unreachable"), "{log}");
    assert!(log.contains("network none"), "{log}");
}

/// `RESOURCES` are the container's limits, seen from inside; `DISK` is said
/// plainly not to apply.
pub fn resources_become_container_limits(d: &Dispatch) {
    let dir = agent(
        d,
        "limited",
        IMAGE,
        "echo \"memory: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)\"\n\
         echo \"pids: $(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max)\"\n",
        "RESOURCES MEMORY 64M PIDS 64 DISK 1G\n",
    );
    let id = d.detach(&dir, "{}");
    let doc = d.wait_terminal(&id);
    let log = log(d, &id);
    assert_eq!(doc["status"], "succeeded", "{log}");
    assert!(log.contains(&format!("memory: {}", 64 << 20)), "{log}");
    assert!(log.contains("pids: 64"), "{log}");
    assert!(
        log.contains("DISK 1G is NOT applied to containers"),
        "said plainly: {log}"
    );
}

/// An image that is not there fails the run at once, not retried, saying
/// so with `runtime`'s own way to get it.
pub fn a_missing_image_fails_at_once_with_a_clear_error_and_no_retry(d: &Dispatch, runtime: &str) {
    let dir = agent(
        d,
        "noimage",
        "localhost/dispatch-test-missing:1",
        "echo never\n",
        "RETRY 3 BACKOFF 10ms..20ms\n",
    );
    let id = d.detach(&dir, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed");
    let reason = doc["state"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("image localhost/dispatch-test-missing:1 is not present")
            && reason.contains("Dispatch never pulls")
            && reason.contains(&format!("{runtime} build/pull/load it")),
        "{reason}"
    );
    assert_eq!(
        doc["attempts"].as_array().map(Vec::len),
        Some(1),
        "not retried"
    );
}
