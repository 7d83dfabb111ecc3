//! The container courier (`FROM image <ref>`) from the real binary, with a
//! real podman and a locally imported busybox image.

use crate::common;
use crate::container_common;

use common::{Dispatch, eventually};
use container_common::same::{self, UP, agent, log, wait_up};
use container_common::{IMAGE, available, containers_of};
use std::path::PathBuf;

/// An agent directory running `script` in the test image.
#[test]
fn a_container_agent_reads_its_payload_and_its_events_output_and_artifacts_are_collected() {
    if !available() {
        return;
    }
    let (_, _, log) =
        same::an_agent_reads_its_payload_and_its_results_are_collected(&Dispatch::new(), "", "");
    assert!(log.contains("container dispatch-"), "{log}");
}

#[test]
fn a_failing_container_fails_the_run_with_its_exit_code() {
    if !available() {
        return;
    }
    same::a_failing_container_fails_the_run_with_its_exit_code(&Dispatch::new());
}

/// Podman's attach relay (podman 4.3) now and then dropped the whole
/// output of a container that exits without reading its stdin: ~1 % of
/// runs alone, one in a few of this file's test runs under the suite's
/// load. The container's stdio is now the client's own (`--log-driver
/// passthrough`).
#[test]
fn every_quick_container_run_keeps_its_output() {
    if !available() {
        return;
    }
    same::every_quick_run_keeps_its_output(&Dispatch::new());
}

/// A container's stdout is never the run's log file itself: an agent that
/// truncates or rewrites what its stdout points to (`/proc/self/fd/1`)
/// cannot erase the lines written before and beside it.
#[test]
fn a_container_agent_cannot_truncate_its_runs_log() {
    if !available() {
        return;
    }
    let d = Dispatch::new();
    let script = "echo before-truncation\n\
                  : > /proc/self/fd/1 2>/dev/null\n\
                  truncate -s 0 /proc/self/fd/2 2>/dev/null\n\
                  echo after-truncation\n";
    let dir = agent(&d, "eraser", IMAGE, script, "");
    let id = d.detach(&dir, "{}");
    assert_eq!(d.wait_terminal(&id)["status"], "succeeded");
    let log = log(&d, &id);
    for kept in ["attempt 1 of 1", "before-truncation", "after-truncation"] {
        assert!(log.contains(kept), "{kept} is gone from the log:\n{log}");
    }
}

#[test]
fn network_none_leaves_only_loopback_and_is_the_default() {
    if !available() {
        return;
    }
    same::network_none_leaves_only_loopback(&Dispatch::new());
}

#[test]
fn a_missing_image_fails_at_once_with_a_clear_error_and_no_retry() {
    if !available() {
        return;
    }
    same::a_missing_image_fails_at_once_with_a_clear_error_and_no_retry(&Dispatch::new(), "podman");
}

#[test]
fn resources_become_container_limits() {
    if !available() {
        return;
    }
    same::resources_become_container_limits(&Dispatch::new());
}

#[test]
fn stop_gives_a_container_agent_its_grace_then_removes_the_container() {
    if !available() {
        return;
    }
    let d = Dispatch::new();
    let dir = agent(
        &d,
        "graceful",
        IMAGE,
        &format!(
            "trap 'echo got-term; sleep 1; echo cleaned-up; exit 3' TERM\n{UP}while true; do sleep 0.1; done\n"
        ),
        "",
    );
    let id = d.detach(&dir, "{}");
    wait_up(&d, &id);
    d.ok(&["stop", "--grace-period-ms", "10000", &id]);
    same::stopped_within_its_grace(&d, &id);
}

#[test]
fn a_killed_helper_leaves_no_container_behind() {
    if !available() {
        return;
    }
    let d = Dispatch::new();
    let dir = agent(
        &d,
        "orphan",
        IMAGE,
        &format!("{UP}while true; do sleep 0.1; done\n"),
        "",
    );
    let id = d.detach(&dir, "{}");
    wait_up(&d, &id);
    same::kill_its_helper(&d, &id);
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        // The client was in the run's group: its keeper killed it and
        // removed the container, with no reader involved (issue #33).
        eventually(
            30,
            "the keeper removes the container of a killed helper",
            || containers_of(&id).is_empty(),
        );
    }
    d.ok(&["ps", "-a"]);
    assert_eq!(d.status(&id), "failed");
    assert!(
        containers_of(&id).is_empty(),
        "reconciliation removed the container"
    );
    assert!(
        parents_of(&id).is_empty(),
        "and its accounting groups: {:?}",
        parents_of(&id)
    );
}

/// The container's accounting parents (`/sys/fs/cgroup/*/dispatch-<id>-*`).
fn parents_of(id: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|h| std::fs::read_dir(h.path()).into_iter().flatten().flatten())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("dispatch-{id}-"))
        })
        .map(|e| e.path())
        .collect()
}

#[test]
fn a_containers_peak_memory_and_cpu_time_are_recorded() {
    if !available() {
        return;
    }
    let d = Dispatch::new();
    // A 24 MB buffer (dd's block) and some CPU.
    let dir = agent(
        &d,
        "user",
        IMAGE,
        "dd if=/dev/zero of=/dev/null bs=24M count=20 2>/dev/null\necho used\n",
        "RESOURCES MEMORY 256M\n",
    );
    let id = d.detach(&dir, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{}", log(&d, &id));
    let r = &doc["attempts"][0]["resources"];
    assert_eq!(r["measured_by"], "container cgroup v1", "{doc:#}");
    let peak = r["peak_memory_bytes"].as_u64().expect("peak memory");
    assert!((24 << 20..=256 << 20).contains(&peak), "peak {peak}");
    assert!(r["cpu_time_ms"].is_u64(), "{r}");
    assert_eq!(r["limits"][0]["how"], "container", "{r}");
    let human = d.ok(&["inspect-run", &id]);
    assert!(human.contains("used: peak memory"), "{human}");
    assert!(parents_of(&id).is_empty(), "{:?}", parents_of(&id));
}

#[test]
fn a_container_over_its_memory_limit_ends_failed_out_of_memory() {
    if !available() {
        return;
    }
    let d = Dispatch::new();
    // dd (the agent itself) holds one block of 256 MB: four times the limit.
    let dir = agent(
        &d,
        "hog",
        IMAGE,
        "echo start\nexec dd if=/dev/zero of=/dev/null bs=256M count=1\n",
        "RESOURCES MEMORY 64M\n",
    );
    let id = d.detach(&dir, "{}");
    let doc = d.wait_terminal(&id);
    let log = log(&d, &id);
    assert_eq!(doc["status"], "failed", "{log}");
    assert_eq!(
        doc["state"]["reason"], "out of memory (limit 64M)",
        "{doc:#}\n{log}"
    );
    // Not retried: the same limit would kill it again.
    assert_eq!(doc["attempts"].as_array().map(Vec::len), Some(1), "{doc:#}");
    assert!(parents_of(&id).is_empty(), "{:?}", parents_of(&id));
    eventually(30, "the container is removed", || {
        containers_of(&id).is_empty()
    });
}

#[test]
fn a_container_killed_below_its_memory_limit_is_not_called_out_of_memory() {
    if !available() {
        return;
    }
    let d = Dispatch::new();
    let dir = agent(
        &d,
        "self-kill",
        IMAGE,
        "kill -9 $$\n",
        "RESOURCES MEMORY 64M\n",
    );
    let id = d.detach(&dir, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().unwrap_or_default();
    assert!(!reason.contains("out of memory"), "{reason}");
}

/// A secret named like a variable the container client reads itself
/// (`HTTPS_PROXY`) reaches the agent through a file only its owner reads,
/// never a command line; the file goes with the container.
#[test]
fn a_secret_the_client_reads_too_never_goes_on_a_command_line() {
    if !available() {
        return;
    }
    let d = Dispatch::with_env(&[("HTTPS_PROXY", "http://u:pr0xy-s3cret@127.0.0.1:9")]);
    let dir = agent(
        &d,
        "proxied",
        IMAGE,
        &format!("echo \"proxy-len=${{#HTTPS_PROXY}}\"\n{UP}sleep 1\n"),
        "SECRET HTTPS_PROXY\n",
    );
    let id = d.detach(&dir, "{}");
    wait_up(&d, &id);
    let env_file = d.root().join("runs").join(&id);
    let env_file = std::fs::read_dir(&env_file)
        .expect("run dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "env"))
        .expect("the container's env file");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&env_file)
            .expect("env file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", env_file.display());
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("pr0xy-s3cret"),
            "on a command line: {}",
            String::from_utf8_lossy(&cmdline).replace('\0', " ")
        );
    }
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}\n{}", log(&d, &id));
    assert!(log(&d, &id).contains("proxy-len=33"), "{}", log(&d, &id));
    assert!(!env_file.exists(), "removed with the container");
}
