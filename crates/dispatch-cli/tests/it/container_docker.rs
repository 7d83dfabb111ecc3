//! The container courier's docker dialect, end to end from the real
//! binary: the real docker CLI drives real containers through podman's
//! Docker-compatible API (`podman system service` on a socket of the
//! test's own, handed to dispatch as `DOCKER_HOST`), with the locally
//! imported busybox image — no Docker engine, no registry.

use crate::common;
use crate::container_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{Dispatch, checks, eventually};
use container_common::same::{self, UP, agent, log, wait_up};
use container_common::{IMAGE, available, containers_of};

/// The docker CLI, when containers can run here through it. Under
/// `CI=true` a missing docker CLI (or podman) fails the test; otherwise the
/// test says how to get it and skips.
fn docker_cli() -> Option<PathBuf> {
    if !available() {
        return None;
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("docker"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the docker tests need the docker CLI under CI (apt-get install docker.io)")
        }
        None => {
            eprintln!(
                "skipping: the docker CLI is not on PATH (hint: apt-get install docker.io; only its CLI is used, against podman's Docker API)"
            );
            None
        }
    }
}

/// `podman system service` on a socket in a directory of its own: the
/// Docker-compatible API the docker CLI talks to. Killed on drop.
struct DockerApi {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl DockerApi {
    fn start(docker: &Path) -> DockerApi {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = format!("unix://{}", dir.path().join("podman.sock").display());
        let log = std::fs::File::create(dir.path().join("service.log")).expect("log");
        let child = Command::new("podman")
            .args(["system", "service", "--time=0", &host])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("podman system service starts");
        let api = DockerApi {
            child,
            host,
            _dir: dir,
        };
        eventually(30, "podman's Docker API answers the docker CLI", || {
            Command::new(docker)
                .env("DOCKER_HOST", &api.host)
                .args(["version", "--format", "{{.Server.Version}}"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        api
    }
}

impl Drop for DockerApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A state directory whose runs use the docker CLI against `api`.
fn dispatch(docker: &Path, api: &DockerApi) -> Dispatch {
    Dispatch::with_env(&[
        (
            "DISPATCH_CONTAINER_RUNTIME",
            docker.to_str().expect("utf-8"),
        ),
        ("DOCKER_HOST", &api.host),
    ])
}

#[test]
fn docker_runs_a_container_agent_and_collects_its_events_output_and_artifacts() {
    let Some(docker) = docker_cli() else { return };
    let api = DockerApi::start(&docker);
    let d = dispatch(&docker, &api);
    let (_, _, log) = same::an_agent_reads_its_payload_and_its_results_are_collected(
        &d,
        "echo \"declared: $DECLARED\"\necho \"nofile: $(ulimit -n)\"\n",
        "ENV DECLARED=yes\n",
    );
    assert!(
        log.contains(&format!("docker {}", docker.display())),
        "ran through the docker CLI: {log}"
    );
    assert!(log.contains("declared: yes"), "{log}");
    assert!(log.contains("nofile: 1024"), "the default ulimits: {log}");
}

#[test]
fn docker_a_failing_container_fails_the_run_with_its_exit_code() {
    let Some(docker) = docker_cli() else { return };
    let api = DockerApi::start(&docker);
    same::a_failing_container_fails_the_run_with_its_exit_code(&dispatch(&docker, &api));
}

#[test]
fn docker_every_quick_run_keeps_its_output() {
    let Some(docker) = docker_cli() else { return };
    let api = DockerApi::start(&docker);
    same::every_quick_run_keeps_its_output(&dispatch(&docker, &api));
}

#[test]
fn docker_network_none_leaves_only_loopback() {
    let Some(docker) = docker_cli() else { return };
    let api = DockerApi::start(&docker);
    same::network_none_leaves_only_loopback(&dispatch(&docker, &api));
}

#[test]
fn docker_resources_become_container_limits() {
    let Some(docker) = docker_cli() else { return };
    let api = DockerApi::start(&docker);
    same::resources_become_container_limits(&dispatch(&docker, &api));
}

#[test]
fn docker_a_missing_image_fails_at_once_with_a_clear_error_and_no_retry() {
    let Some(docker) = docker_cli() else { return };
    let api = DockerApi::start(&docker);
    same::a_missing_image_fails_at_once_with_a_clear_error_and_no_retry(
        &dispatch(&docker, &api),
        "docker",
    );
}

#[test]
fn docker_stop_gives_a_container_agent_its_grace_then_removes_the_container() {
    let Some(docker) = docker_cli() else { return };
    let api = DockerApi::start(&docker);
    let d = dispatch(&docker, &api);
    let dir = agent(
        &d,
        "graceful",
        IMAGE,
        &format!(
            "trap 'echo got-term; sleep 1; echo cleaned-up; exit 3' TERM\n{UP}\
             while true; do sleep 0.1; done\n"
        ),
        "",
    );
    let id = d.detach(&dir, "{}");
    wait_up(&d, &id);
    // From a shell without DOCKER_HOST: the stop still reaches the engine
    // the run's container is on.
    let out = d
        .command()
        .env_remove("DOCKER_HOST")
        .args(["stop", "--grace-period-ms", "10000", &id])
        .output()
        .expect("dispatch stop");
    checks::ok(&["stop"], &out);
    same::stopped_within_its_grace(&d, &id);
}

#[test]
fn docker_a_killed_helper_leaves_no_container_behind() {
    let Some(docker) = docker_cli() else { return };
    let api = DockerApi::start(&docker);
    let d = dispatch(&docker, &api);
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
    // Reconciled from a shell without DOCKER_HOST: the container is removed
    // from the engine it runs on.
    let out = d
        .command()
        .env_remove("DOCKER_HOST")
        .args(["ps", "-a"])
        .output()
        .expect("dispatch ps");
    checks::ok(&["ps", "-a"], &out);
    assert_eq!(d.status(&id), "failed");
    assert!(
        containers_of(&id).is_empty(),
        "reconciliation removed the container: {:?}",
        containers_of(&id)
    );
}

#[test]
fn docker_follows_the_users_docker_context_and_a_parcels_docker_host_stays_inside() {
    let Some(docker) = docker_cli() else { return };
    let api = DockerApi::start(&docker);
    // The user chose the endpoint with `docker context use`, not DOCKER_HOST:
    // the run, its stop and its clean-up must all go there.
    let home = tempfile::tempdir().expect("home");
    for args in [
        vec![
            "context",
            "create",
            "viaapi",
            "--docker",
            &format!("host={}", api.host),
        ],
        vec!["context", "use", "viaapi"],
    ] {
        let out = Command::new(&docker)
            .env("HOME", home.path())
            .env_remove("DOCKER_HOST")
            .args(&args)
            .output()
            .expect("docker context");
        assert!(out.status.success(), "{out:?}");
    }
    let d = Dispatch::with_env(&[
        (
            "DISPATCH_CONTAINER_RUNTIME",
            docker.to_str().expect("utf-8"),
        ),
        ("HOME", home.path().to_str().expect("utf-8")),
    ]);
    // A parcel's own DOCKER_HOST is for the agent, not for Dispatch's client.
    let dir = agent(
        &d,
        "context",
        IMAGE,
        &format!("echo \"agent sees: $DOCKER_HOST\"\n{UP}while true; do sleep 0.1; done\n"),
        "ENV DOCKER_HOST=tcp://10.255.255.1:2375\n",
    );
    let id = d.detach(&dir, "{}");
    wait_up(&d, &id);
    assert_eq!(containers_of(&id).len(), 1, "the container runs");
    d.ok(&["stop", "--grace-period-ms", "2000", &id]);
    let log = log(&d, &id);
    assert_eq!(d.status(&id), "cancelled", "{log}");
    assert!(log.contains("agent sees: tcp://10.255.255.1:2375"), "{log}");
    eventually(10, "no container is left", || containers_of(&id).is_empty());
}

#[test]
fn docker_runs_a_sandboxed_local_tool_through_the_same_endpoint() {
    let Some(docker) = docker_cli() else { return };
    let api = DockerApi::start(&docker);
    let d = dispatch(&docker, &api);
    container_common::sandbox::a_sandboxed_tool_runs_without_network_or_write_access(&d, IMAGE);
}

#[test]
fn docker_a_starting_worker_removes_this_machines_orphans_and_no_other_machines_containers() {
    let Some(docker) = docker_cli() else { return };
    let Some(db) = crate::remote_common::postgres() else {
        return;
    };
    let api = DockerApi::start(&docker);
    // Two containers whose owner (a pid no process has) is gone: one
    // started on this machine in this boot, one on another machine sharing
    // the engine, where that pid means nothing to us.
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    let tag = format!("{}-{}", std::process::id(), db.name());
    let (mine, theirs) = (
        format!("dispatch-orphan-{tag}"),
        format!("dispatch-remote-{tag}"),
    );
    for (name, host) in [(&mine, boot.trim()), (&theirs, "another-machine")] {
        let out = Command::new(&docker)
            .env("DOCKER_HOST", &api.host)
            .args([
                "create",
                "--name",
                name,
                "--label",
                "dispatch.owner=4194303.1",
            ])
            .args(["--label", &format!("dispatch.host={host}"), IMAGE, "true"])
            .output()
            .expect("docker create");
        assert!(out.status.success(), "{out:?}");
    }
    let exists = |name: &str| {
        Command::new("podman")
            .args(["container", "exists", name])
            .status()
            .is_ok_and(|s| s.success())
    };
    let state = tempfile::tempdir().expect("tempdir");
    let worker = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["worker", "--database-url", db.url(), "--name", "sweeper"])
        .env("DISPATCH_ROOT", state.path().join(".dispatch"))
        .env("DISPATCH_CONTAINER_RUNTIME", &docker)
        .env("DOCKER_HOST", &api.host)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker starts");
    let _worker = Killed(worker);
    eventually(30, "the worker removed this machine's orphan", || {
        !exists(&mine)
    });
    let kept = exists(&theirs);
    let _ = Command::new("podman").args(["rm", "-f", &theirs]).output();
    assert!(kept, "another machine's container is not ours to remove");
}
