//! Containment, from the binary: an unsandboxed run's whole process tree —
//! a background child in the agent's process group, and one that left it
//! with `setsid` — dies at `dispatch stop`, and when its helper is killed
//! with SIGKILL (by its keeper, at once). Without a writable cgroup the run
//! says so, and recovery still finds the escaped process.
//! A native agent's LOCAL tool's escaped child dies with the run.
//! A run cancelled while suspended on an approval ends the approval
//! `cancelled` and its workspace goes.

use crate::common;
use crate::native_common;

use std::path::Path;

use common::mounts::mounted;
use common::{Dispatch, alive, eventually, kill9};
use native_common::{Mock, native_agent, text};
use serde_json::{Value, json};

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// An agent that writes its pid, starts `sleep 300 &` (in its process
/// group) and a `setsid` child (out of it), each writing its pid to a file
/// of its parcel's state directory, and waits.
const TREE: &str = "echo $$ > \"$DISPATCH_STATE_DIR/agent.pid\"\n\
     sleep 300 &\n\
     echo $! > \"$DISPATCH_STATE_DIR/bg.pid\"\n\
     setsid sh -c 'echo $$ > \"$0/escaped.pid\"; exec sleep 300' \"$DISPATCH_STATE_DIR\" &\n\
     wait\n";

/// The pids of the agent, its background child and its escaped child,
/// once all three wrote them.
fn tree_pids(state: &Path) -> Vec<u32> {
    let read = |f: &str| {
        std::fs::read_to_string(state.join(f))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
    };
    let mut pids = Vec::new();
    eventually(
        30,
        "the agent, its child and its escaped child start",
        || {
            pids = ["agent.pid", "bg.pid", "escaped.pid"]
                .iter()
                .filter_map(|f| read(f))
                .collect();
            pids.len() == 3
        },
    );
    pids
}

fn log_of(d: &Dispatch, id: &str) -> String {
    std::fs::read_to_string(d.root().join("runs").join(format!("{id}.log"))).unwrap_or_default()
}

fn helper_of(d: &Dispatch, id: &str) -> i32 {
    d.inspect(id)["state"]["helper"]["pid"]
        .as_i64()
        .expect("a helper") as i32
}

/// Kills what a failed test left running.
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                kill9(*pid as i32);
            }
        }
    }
}

#[test]
fn stop_leaves_no_process_of_an_unsandboxed_run_not_even_one_that_left_its_group() {
    let d = Dispatch::new();
    let dir = d.agent("tree", TREE);
    let id = d.detach(&dir, "{}");
    let pids = tree_pids(&d.root().join("state/tree"));
    let _reaper = Reaper(pids.clone());
    d.ok(&["stop", &id]);
    assert_eq!(d.status(&id), "cancelled");
    eventually(10, "every process of the stopped run is gone", || {
        pids.iter().all(|p| !alive(*p))
    });
    let log = log_of(&d, &id);
    if is_root() {
        assert!(log.contains("contained (cgroup v"), "{log}");
        assert!(log.contains("), tethered"), "{log}");
        // The group went with the attempt.
        assert!(!d.root().join(format!("runs/{id}.cgroup")).exists());
    }
}

#[test]
fn a_killed_helpers_unsandboxed_tree_dies_with_it_escaped_child_included() {
    let d = Dispatch::new();
    // One attempt: recovery fails the run rather than starting it again.
    let dir = d.agent_with("tree", TREE, "RETRY 1\n");
    let id = d.detach(&dir, "{}");
    let pids = tree_pids(&d.root().join("state/tree"));
    let _reaper = Reaper(pids.clone());
    kill9(helper_of(&d, &id));
    if is_root() {
        // The keeper kills the group, with no reader involved, and removes it.
        eventually(10, "the whole tree dies with its helper", || {
            pids.iter().all(|p| !alive(*p))
        });
        let record = d.root().join(format!("runs/{id}.cgroup"));
        let group = std::fs::read_to_string(&record).expect("the group is recorded");
        eventually(10, "the emptied group is removed", || {
            !Path::new(group.trim()).exists()
        });
    }
    // The first reader recovers the run (and kills what is left).
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    eventually(10, "nothing of the run is left after recovery", || {
        pids.iter().all(|p| !alive(*p))
    });
    if is_root() {
        let work = d.root().join("runs").join(&id).join("work");
        assert!(!mounted(&work), "the workspace is unmounted at recovery");
    }
}

/// Runs `dispatch run <dir> --detach` in a mount namespace of its own
/// whose `/sys/fs/cgroup` is the unified (v2) hierarchy, mounted afresh:
/// the helper it forks stays there, so the run is contained on cgroup v2
/// even on a machine whose own mounts are v1. `None` when that cannot be
/// set up here (not root, no `unshare`, no cgroup2 in the kernel).
/// Thaws a v1 group a test froze, whatever the test's end.
struct Thaw(std::path::PathBuf);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
    }
}

/// #33: a supervisor (helper or worker) kills a tree on cgroup v1 by
/// freezing its group, killing what is listed and thawing it. Killed with
/// SIGKILL between the freeze and the thaw, it used to leave the keeper
/// frozen in the group with everything else, for good (`DISPATCH_SANDBOX=off`
/// chaos found such runs' processes in state D after every worker had
/// stopped). The keeper now lives outside the group it keeps.
#[test]
fn a_helper_killed_while_it_had_its_runs_group_frozen_leaves_nothing_frozen() {
    if !is_root() {
        return; // the run's group needs root here
    }
    let d = Dispatch::new();
    let dir = d.agent_with("tree", TREE, "RETRY 1\n");
    let id = d.detach(&dir, "{}");
    let pids = tree_pids(&d.root().join("state/tree"));
    let _reaper = Reaper(pids.clone());
    let record = d.root().join(format!("runs/{id}.cgroup"));
    let group = std::fs::read_to_string(&record).expect("the group is recorded");
    let group = Path::new(group.trim());
    if !group.join("freezer.state").exists() {
        return; // cgroup v2 kills a group at once, with no freeze
    }
    let _thaw = Thaw(group.to_path_buf());
    // What the helper's own kill of the tree does first; then it dies.
    std::fs::write(group.join("freezer.state"), "FROZEN").expect("freeze the group");
    kill9(helper_of(&d, &id));
    eventually(10, "the keeper kills the frozen tree", || {
        pids.iter().all(|p| !alive(*p))
    });
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc:#}");
}

fn detach_on_cgroup_v2(d: &Dispatch, dir: &Path) -> Option<String> {
    let plain = d.command();
    let mut c = std::process::Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\"")
        .arg("sh")
        .arg(plain.get_program())
        .args(["run", "--detach", "--job", "{}"])
        .arg(dir)
        .stdin(std::process::Stdio::null());
    for (k, v) in plain.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(cwd) = plain.get_current_dir() {
        c.current_dir(cwd);
    }
    let out = c.output().ok()?;
    if !out.status.success() {
        eprintln!(
            "cannot run on cgroup v2 here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn on_cgroup_v2_a_killed_helpers_unsandboxed_tree_dies_with_it_escaped_child_included() {
    if !is_root() {
        eprintln!("skipping: cgroup v2 containment needs root to mount the unified hierarchy");
        return;
    }
    let d = Dispatch::new();
    let dir = d.agent_with("tree", TREE, "RETRY 1\n");
    let Some(id) = detach_on_cgroup_v2(&d, &dir) else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs as root on Linux with cgroup2 available: the v2 path must be tested"
        );
        return;
    };
    let pids = tree_pids(&d.root().join("state/tree"));
    let _reaper = Reaper(pids.clone());
    // Every process of the run is in its v2 group, the escaped one too.
    for pid in &pids {
        let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        assert!(
            groups
                .lines()
                .any(|l| l.starts_with(&format!("0::/dispatch/{id}."))),
            "process {pid} is in the run's cgroup v2 group: {groups}"
        );
    }
    let log = log_of(&d, &id);
    assert!(log.contains("contained (cgroup v2"), "{log}");
    kill9(helper_of(&d, &id));
    // The keeper writes `cgroup.kill`, with no reader involved.
    eventually(10, "the whole v2 tree dies with its helper", || {
        pids.iter().all(|p| !alive(*p))
    });
}

#[test]
fn without_a_cgroup_the_run_says_so_and_recovery_still_finds_the_escaped_child() {
    let d = Dispatch::with_env(&[("DISPATCH_NO_CGROUPS", "1")]);
    let dir = d.agent_with("tree", TREE, "RETRY 1\n");
    let id = d.detach(&dir, "{}");
    let pids = tree_pids(&d.root().join("state/tree"));
    let _reaper = Reaper(pids.clone());
    let log = log_of(&d, &id);
    assert!(
        log.contains("NOT APPLIED: containment: no cgroup (DISPATCH_NO_CGROUPS=1)"),
        "{log}"
    );
    kill9(helper_of(&d, &id));
    d.wait_terminal(&id);
    eventually(10, "the escaped child is found by its environment", || {
        pids.iter().all(|p| !alive(*p))
    });
}

#[test]
fn a_run_cancelled_while_suspended_on_an_approval_cancels_it_and_drops_its_workspace() {
    let d = Dispatch::new();
    let agent = d.agent(
        "asker",
        "echo '{\"type\":\"wait\",\"for\":\"approval\",\"id\":\"refund\",\"summary\":\"Refund?\"}' >> \"$DISPATCH_EVENTS\"\n",
    );
    let id = d.detach(&agent, "{}");
    eventually(10, "the run is suspended", || {
        d.inspect(&id)["state"]["status"] == "suspended"
    });
    let work = d.root().join("runs").join(&id).join("work");
    let was_mounted = mounted(&work);
    assert!(work.exists(), "a suspended run keeps its workspace");

    d.ok(&["stop", &id]);
    assert_eq!(d.status(&id), "cancelled");
    let pending: Value =
        serde_json::from_str(&d.ok(&["approvals", "ls", "--format", "json"])).expect("JSON");
    assert_eq!(pending, serde_json::json!([]), "nothing stays pending");
    let out = d.run(&["approve", &id, "refund", "--by", "ada"]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cancelled"), "{err}");
    if was_mounted {
        assert!(!mounted(&work), "the overlay is unmounted at cancel");
    }
    assert!(!work.exists(), "the workspace went with the run");
}

#[test]
fn a_local_tools_escaped_child_dies_when_the_run_ends() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "spawn", "arguments": {}, "id": "c0"}]},
        text("done", 5, 5),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "spawner",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL LOCAL spawn.sh AS spawn",
            mock.url()
        ),
    );
    let pid_file = d.dir.path().join("tool-escaped.pid");
    std::fs::write(
        dir.join("spawn.sh"),
        format!(
            "setsid sh -c 'echo $$ > \"$0\"; exec sleep 300' \"{}\" </dev/null >/dev/null 2>&1 &\n\
             while [ ! -s \"{}\" ]; do sleep 0.01; done\n\
             echo started\n",
            pid_file.display(),
            pid_file.display()
        ),
    )
    .expect("tool");
    d.ok(&["run", dir.to_str().expect("utf-8"), "--job", "{}"]);
    let escaped: u32 = std::fs::read_to_string(&pid_file)
        .expect("the tool's child wrote its pid")
        .trim()
        .parse()
        .expect("a pid");
    let _reaper = Reaper(vec![escaped]);
    let id = d.ok(&["ps", "-a", "-q"]);
    let id = id.lines().next().expect("a run");
    assert_eq!(d.status(id), "succeeded");
    eventually(10, "the tool's escaped child dies with the run", || {
        !alive(escaped)
    });
}

#[test]
fn a_stale_mount_of_an_ended_run_is_removed_by_the_next_ps() {
    if !is_root() {
        return; // mounting needs root
    }
    let d = Dispatch::new();
    let dir = d.agent("quick", "echo hi\n");
    let id = d.detach(&dir, "{}");
    assert_eq!(d.wait_terminal(&id)["status"], "succeeded");
    // As a helper killed between its last write and its cleanup leaves it.
    let work = d.root().join("runs").join(&id).join("work");
    std::fs::create_dir_all(&work).expect("work");
    nix::mount::mount(
        Some("tmpfs"),
        &work,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount a stand-in workspace");
    assert!(mounted(&work));
    d.ok(&["ps", "-a"]);
    assert!(!mounted(&work), "the stale mount is gone");
    assert!(!work.exists(), "and the ended run's workspace with it");
}
