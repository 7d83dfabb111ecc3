//! `RESOURCES`: memory, process and disk limits enforced on a process
//! agent (cgroup v1 where the runtime can create groups), the reason a run
//! killed by a limit ends with, what `inspect-run` says about each attempt,
//! the plain statement of a limit that could not be applied, and requests
//! larger than the machine refused.
//!
//! Tests that need control groups fail under `CI=true` when none can be
//! created here, and otherwise say how to get them and check only the
//! statement that the limit was not applied.

use crate::common;

use std::path::PathBuf;

use common::Dispatch;
use serde_json::Value;

/// This process's directory in the v1 hierarchy of `controller`.
fn own_group(controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| {
        let mut p = l.splitn(3, ':');
        let (_, cs, path) = (p.next()?, p.next()?, p.next()?);
        cs.split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })?;
    Some(
        PathBuf::from("/sys/fs/cgroup/")
            .join(controller)
            .join(path.trim_start_matches('/')),
    )
}

/// Whether groups can be created in `controller`'s hierarchy (tried).
fn can_create(controller: &str) -> bool {
    let Some(own) = own_group(controller) else {
        return false;
    };
    // One name per probe: tests probing at once (in one process) must not
    // see each other's group as "cannot create".
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = own.join(format!("dispatch-test-probe-{}-{n}", std::process::id()));
    let ok = std::fs::create_dir(&probe).is_ok();
    let _ = std::fs::remove_dir(&probe);
    ok
}

/// Whether the cgroup v1 `controllers` are usable; under `CI=true` their
/// absence fails the test.
fn cgroups(controllers: &[&str]) -> bool {
    let missing: Vec<&str> = controllers
        .iter()
        .copied()
        .filter(|c| !can_create(c))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let what = format!(
        "cannot create cgroup v1 groups for {missing:?} under /sys/fs/cgroup (hint: run as root on a machine with the controllers mounted, or with a delegated subtree)"
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{what}");
    eprintln!("skipping the enforcement part: {what}");
    false
}

/// Kills every task of the run's groups and removes them, whatever the
/// test's outcome (a contained fork bomb must not outlive its test).
struct GroupGuard(String);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        for c in ["pids", "memory", "cpu", "cpuacct"] {
            let Some(own) = own_group(c) else { continue };
            let Ok(entries) = std::fs::read_dir(&own) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with(&format!("dispatch-{}", self.0)) {
                    continue;
                }
                for _ in 0..200 {
                    let procs =
                        std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
                    if procs.trim().is_empty() {
                        break;
                    }
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        let _ = std::process::Command::new("kill")
                            .args(["-9", &pid.to_string()])
                            .status();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

fn resources_of(doc: &Value) -> &Value {
    &doc["attempts"][0]["resources"]
}

fn how_of(doc: &Value, limit: &str) -> String {
    resources_of(doc)["limits"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["limit"] == limit)
        .and_then(|l| l["how"].as_str())
        .unwrap_or("missing")
        .to_string()
}

/// `tail` of an endless line buffers it all: memory grows without bound.
const HOG: &str = "tail /dev/zero\n";

/// The cgroup version the runtime must choose on this machine: v2 when
/// `/sys/fs/cgroup` is a `cgroup2` mount, v1 when it holds v1 hierarchies.
fn expected_version() -> Option<&'static str> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let fields: Vec<Vec<&str>> = mounts
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .collect();
    if fields
        .iter()
        .any(|f| f[1] == "/sys/fs/cgroup" && f[2] == "cgroup2")
    {
        return Some("cgroup_v2");
    }
    let v1_memory = fields
        .iter()
        .any(|f| f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory"));
    v1_memory.then_some("cgroup_v1")
}

#[test]
fn the_cgroup_version_is_chosen_from_the_machine() {
    let d = Dispatch::new();
    let agent = d.agent_with("small", "true\n", "RESOURCES MEMORY 64M PIDS 64\n");
    let id = d.detach(&agent, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    match expected_version() {
        // This machine (cgroup v1: memory, pids, cpu bound to v1 hierarchies).
        Some("cgroup_v1") if cgroups(&["memory", "pids"]) => {
            assert_eq!(how_of(&doc, "memory"), "cgroup_v1");
            assert_eq!(how_of(&doc, "pids"), "cgroup_v1");
        }
        Some("cgroup_v2") => {
            let how = how_of(&doc, "memory");
            // v2, or a plain fallback where the subtree is not delegated.
            assert!(how == "cgroup_v2" || how == "rlimit", "{how}");
            assert_ne!(how_of(&doc, "pids"), "cgroup_v1");
        }
        _ => assert_ne!(how_of(&doc, "memory"), "cgroup_v2"),
    }
}

#[test]
fn a_memory_hog_ends_failed_out_of_memory_and_inspect_shows_its_peak() {
    let d = Dispatch::new();
    let agent = d.agent_with("hog", HOG, "RESOURCES MEMORY 64M\nTIMEOUT 60s\n");
    let id = d.detach(&agent, "{}");
    let _guard = GroupGuard(id.clone());
    let doc = d.wait_terminal(&id);
    if !cgroups(&["memory"]) {
        assert_ne!(how_of(&doc, "memory"), "cgroup_v1");
        return;
    }
    assert_eq!(doc["status"], "failed", "{doc:#}");
    assert_eq!(doc["state"]["reason"], "out of memory (limit 64M)");
    assert_eq!(how_of(&doc, "memory"), "cgroup_v1");
    let r = resources_of(&doc);
    let peak = r["peak_memory_bytes"]
        .as_u64()
        .expect("peak memory recorded");
    assert!(peak > 32 << 20 && peak <= 64 << 20, "peak {peak}");
    assert!(r["cpu_time_ms"].is_u64(), "{r}");
    let human = d.ok(&["inspect-run", &id]);
    assert!(human.contains("limits: memory 64M (cgroup v1)"), "{human}");
    assert!(human.contains("used: peak memory"), "{human}");
}

#[test]
fn a_fork_bomb_under_pids_is_contained_and_the_run_fails() {
    let d = Dispatch::new();
    let bomb = "bomb() { bomb | bomb & }\nbomb\nsleep 30\n";
    let agent = d.agent_with("bomb", bomb, "RESOURCES PIDS 64\nTIMEOUT 20s\n");
    if !cgroups(&["pids"]) {
        // Never start a fork bomb without a group to contain it: check the
        // statement on a harmless agent instead.
        let tame = d.agent_with("tame", "true\n", "RESOURCES PIDS 64\n");
        let out = d.run(&["run", tame.to_str().expect("utf-8"), "--detach"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("pids 64"), "{stderr}");
        return;
    }
    let id = d.detach(&agent, "{}");
    let _guard = GroupGuard(id.clone());
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    assert_eq!(doc["state"]["reason"], "process limit reached (limit 64)");
    assert_eq!(how_of(&doc, "pids"), "cgroup_v1");
    // Nothing of the run's is left in its group, and the group is gone.
    let own = own_group("pids").expect("pids group");
    let left: Vec<_> = std::fs::read_dir(&own)
        .expect("read own pids group")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("dispatch-{id}"))
        })
        .collect();
    assert!(left.is_empty(), "groups left behind: {left:?}");
}

/// The run's groups in the hierarchies of `controllers`.
fn groups_of(id: &str, controllers: &[&str]) -> Vec<PathBuf> {
    controllers
        .iter()
        .filter_map(|c| own_group(c))
        .flat_map(|own| std::fs::read_dir(own).into_iter().flatten().flatten())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("dispatch-{id}-"))
        })
        .map(|e| e.path())
        .collect()
}

#[test]
fn the_groups_of_a_sigkilled_helper_are_removed_by_the_next_reader() {
    let d = Dispatch::new();
    let agent = d.agent_with(
        "orphan",
        "sleep 300 &\nsleep 300\n",
        "RESOURCES CPUS 1 MEMORY 64M PIDS 64\n",
    );
    let all = ["memory", "pids", "cpu", "cpuacct"];
    if !cgroups(&all) {
        return;
    }
    let id = d.detach(&agent, "{}");
    let _guard = GroupGuard(id.clone());
    common::eventually(10, "running", || d.status(&id) == "running");
    let groups = groups_of(&id, &all);
    assert_eq!(groups.len(), 4, "{groups:?}");
    let tasks = std::fs::read_to_string(groups[0].join("cgroup.procs")).expect("procs");
    let pids: Vec<i32> = tasks
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(!pids.is_empty(), "the agent is in its group");
    let helper = d.inspect(&id)["state"]["helper"]["pid"]
        .as_u64()
        .expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill helper");
    common::eventually(5, "helper gone", || !common::alive(helper as u32));
    assert_eq!(groups_of(&id, &all).len(), 4, "left behind by the helper");
    assert_eq!(d.status(&id), "failed");
    assert!(groups_of(&id, &all).is_empty(), "the reader removed them");
    for pid in pids {
        assert!(!common::alive(pid as u32), "task {pid} outlived its group");
    }
}

#[test]
fn a_disk_filler_is_stopped_at_its_disk_limit() {
    let d = Dispatch::new();
    let filler = "i=0\nwhile true; do i=$((i+1)); head -c 1048576 /dev/zero > \"$DISPATCH_ARTIFACTS/f$i\"; done\n";
    let agent = d.agent_with("filler", filler, "RESOURCES DISK 8M\nTIMEOUT 60s\n");
    let id = d.detach(&agent, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    assert_eq!(doc["state"]["reason"], "disk limit exceeded (limit 8M)");
    assert_eq!(how_of(&doc, "disk"), "watch");
}

#[test]
fn one_file_over_the_disk_limit_is_cut_short() {
    let d = Dispatch::new();
    let big = "head -c 20971520 /dev/zero > \"$DISPATCH_ARTIFACTS/big\"\n";
    let agent = d.agent_with("big", big, "RESOURCES DISK 4M\nTIMEOUT 60s\n");
    let id = d.detach(&agent, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    assert_eq!(doc["state"]["reason"], "disk limit exceeded (limit 4M)");
    let written = std::fs::metadata(d.root().join("runs").join(&id).join("artifacts/big"))
        .map_or(0, |m| m.len());
    assert!(written <= 4 << 20, "wrote {written} bytes");
}

#[test]
fn limits_that_cannot_be_applied_are_said_plainly() {
    let d = Dispatch::new();
    let agent = d.agent_with("plain", "true\n", "RESOURCES CPUS 1 MEMORY 256M PIDS 64\n");
    let out = d
        .command()
        .env("DISPATCH_NO_CGROUPS", "1")
        .args(["run", agent.to_str().expect("utf-8"), "--detach"])
        .output()
        .expect("run dispatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: RESOURCES cpus 1: NOT APPLIED"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: RESOURCES memory 256M: rlimit"),
        "{stderr}"
    );
    assert!(stderr.contains("pids 64"), "{stderr}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(how_of(&doc, "cpus"), "not_applied");
    assert_eq!(how_of(&doc, "memory"), "rlimit");
    let r = resources_of(&doc);
    assert_eq!(r["measured_by"], "rusage", "{r}");
    assert!(r["cpu_time_ms"].is_u64(), "{r}");
    let human = d.ok(&["inspect-run", &id]);
    assert!(human.contains("cpus 1 (NOT APPLIED"), "{human}");
    let log =
        std::fs::read_to_string(d.root().join("runs").join(format!("{id}.log"))).expect("read log");
    assert!(log.contains("limits: cpus 1: NOT APPLIED"), "{log}");
}

#[test]
fn resources_larger_than_the_machine_are_refused() {
    let d = Dispatch::new();
    let agent = d.agent_with("huge", "true\n", "RESOURCES CPUS 4096\n");
    let path = agent.to_str().expect("utf-8");
    for cmd in ["run", "create"] {
        let stderr = d.fails(&[cmd, path], 125);
        assert!(
            stderr.contains("RESOURCES CPUS 4096 exceeds this machine's")
                && stderr.contains("hint:"),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    let mem = d.agent_with("mem", "true\n", "RESOURCES MEMORY 64T\n");
    let stderr = d.fails(&["run", mem.to_str().expect("utf-8")], 125);
    assert!(
        stderr.contains("RESOURCES MEMORY 64T exceeds this machine's"),
        "{stderr}"
    );
    // Nothing was stored.
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
}
