//! A worker killed with `kill -9` leaves the overlay workspaces of the runs
//! it held mounted; started again on its directory, it unmounts those of
//! runs no live worker holds (their files stay, as after a helper's death).

use crate::remote_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use dispatch_test_support::eventually;
use remote_common::{Client, Server, mounts, postgres};

fn worker(db_url: &str, name: &str, root: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["worker", "--database-url", db_url, "--name", name])
        .args(["--slots", "2", "--lease-ms", "1000"])
        .env("DISPATCH_ROOT", root)
        // Small parcels get copies by default: this test is about mounts.
        .env("DISPATCH_WORKSPACE", "overlay")
        .env_remove("DISPATCH_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker starts")
}

/// The mount points under `dir` (this process's mount table).
fn mounted_under(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

#[test]
fn a_restarted_worker_unmounts_the_workspaces_its_killed_process_left() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    let dir = tempfile::tempdir().expect("tempdir");
    let _unmount = Unmount(dir.path().to_path_buf());
    let root = dir.path().join("w1/.dispatch");
    let other = dir.path().join("w2/.dispatch");
    let mut first = worker(db.url(), "w1", &root);
    // The first attempt waits; the next (on another worker) ends at once.
    let script = "if [ \"$DISPATCH_ATTEMPT\" = 1 ]; then sleep 60; fi\necho done";
    let agent = client.agent("sleeper", script);
    let id = client.ok(&["run", &agent, "-d"]);
    let running = server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "running");
    let work = root.join("runs").join(&id).join("work");
    eventually(10, "the workspace in place", || work.is_dir());
    if mounted_under(&root).is_empty() {
        eprintln!("note: no overlay workspace here (not root): nothing is left mounted to clean");
        let _ = first.kill();
        let _ = first.wait();
        return;
    }
    // The worker dies at once, and its agent with it (as on a crash).
    first.kill().expect("kill -9 the worker");
    first.wait().expect("reaped");
    if let Some(pid) = running["state"]["agent"]["pid"].as_i64() {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // Another worker takes the run once the lease runs out, and ends it.
    let second = worker(db.url(), "w2", &other);
    let ended = server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "succeeded");
    assert_eq!(ended["attempt"], 2, "{ended}");
    assert_eq!(
        mounted_under(&root),
        vec![work.clone()],
        "the killed worker's workspace is still mounted"
    );
    // The first worker, started again on its directory under its name.
    let again = worker(db.url(), "w1", &root);
    eventually(20, "the left workspace unmounted", || {
        mounted_under(&root).is_empty()
    });
    let upper = root.join("runs").join(&id).join("overlay").join("upper");
    assert!(upper.is_dir(), "its files stay: {}", upper.display());
    for mut w in [second, again] {
        let _ = w.kill();
        let _ = w.wait();
    }
}

/// Unmounts what is mounted under the test's directory however it ends.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        mounts::unmount_under(&self.0);
    }
}
