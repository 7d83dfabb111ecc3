//! A `dispatch worker` killed with SIGKILL together with its unsandboxed
//! run's keeper (as the OOM killer may) leaves the run's escaped child
//! (`setsid`, out of the agent's process group) running in the run's
//! overlay workspace; started again on the same root under the same name,
//! it kills that tree first, then unmounts the workspace (#33:
//! it used to log `unmounted N workspace(s) a previous process left` while
//! the orphans still ran in them). On PostgreSQL; skipped without one.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dispatch_core::RunId;
use dispatch_runtime::Layout;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_store::PgStore;
use dispatch_test_support::testdb::TestDatabase;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use common::mounts::mounted;
use common::{alive, eventually};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

struct Setup {
    dir: tempfile::TempDir,
    db: TestDatabase,
    store: PgStore,
    workers: Vec<Child>,
    /// Pids to kill if the test fails.
    reap: Vec<u32>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = kill(Pid::from_raw(w.id() as i32), Signal::SIGKILL);
            let _ = w.wait();
        }
        for pid in &self.reap {
            if alive(*pid) {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
        // A workspace a failed test left mounted goes with the directory.
        let runs = self.dir.path().join(".dispatch/runs");
        for entry in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
            let _ =
                nix::mount::umount2(&entry.path().join("work"), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Setup {
    /// A parcel whose agent starts a `setsid` child in its workspace that
    /// writes its pid to `escaped-<attempt>` in the test's directory, then
    /// sleeps.
    fn new() -> Option<Setup> {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("agent");
        std::fs::create_dir_all(&src).expect("agent dir");
        std::fs::write(
            src.join("Agentfile"),
            "FROM process\nNAME escaper\nCOPY agent.sh\nCOMMAND sh agent.sh\nRETRY 1\n",
        )
        .expect("Agentfile");
        let script = format!(
            "setsid sh -c 'echo $$ > \"$0\"; exec sleep 300' \"{}/escaped-$DISPATCH_ATTEMPT\" &\n\
             sleep 300\n",
            dir.path().display()
        );
        std::fs::write(src.join("agent.sh"), script).expect("agent.sh");
        let layout = Layout::new(dir.path().join(".dispatch"));
        dispatch_core::parcel::build(&src, &layout.parcels()).expect("the parcel builds");
        let (db, store) = block_on(async {
            let db = TestDatabase::create().await?;
            let store = PgStore::connect(db.url(), 2).await.expect("connects");
            Some((db, store))
        })?;
        Some(Setup {
            dir,
            db,
            store,
            workers: Vec::new(),
            reap: Vec::new(),
        })
    }

    fn layout(&self) -> Layout {
        Layout::new(self.dir.path().join(".dispatch"))
    }

    fn create_run(&self) -> RunId {
        let request = LaunchRequest {
            source: "escaper".into(),
            operation: None,
            payload: json!({}),
            parent_id: None,
            origin_id: None,
            project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
        };
        block_on(launch::create(&self.store, &self.layout(), &request))
            .expect("a run is created")
            .0
            .id
    }

    fn stderr_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("worker-{n}.err"))
    }

    /// Starts the worker `same` again (its stderr in `worker-<n>.err`).
    fn worker(&mut self) {
        let n = self.workers.len();
        let err = std::fs::File::create(self.stderr_path(n)).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_dispatch"))
            .args(["worker", "--database-url", self.db.url(), "--slots", "1"])
            .args(["--name", "same", "--lease-ms", "3000"])
            .env("DISPATCH_ROOT", self.layout().root())
            .env("DISPATCH_SANDBOX", "off")
            // Small parcels get copies by default: this test is about mounts.
            .env("DISPATCH_WORKSPACE", "overlay")
            .env("RUST_LOG", "info")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("the worker starts");
        self.workers.push(child);
    }

    fn escaped(&self, attempt: u32) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join(format!("escaped-{attempt}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

#[test]
fn a_worker_restarted_on_its_root_kills_the_left_tree_before_it_unmounts() {
    let Some(mut setup) = Setup::new() else {
        return;
    };
    let id = setup.create_run();
    setup.worker();
    let mut escaped = 0;
    eventually(30, "the agent's escaped child starts", || {
        setup.escaped(1).is_some_and(|p| {
            escaped = p;
            true
        })
    });
    setup.reap.push(escaped);
    let work = setup.layout().run_dir(&id).join("work");
    let overlay = mounted(&work);
    // The worker and the run's keeper both die (the keeper first, while
    // the worker is stopped and cannot kill the tree at the attempt's
    // end): as when the OOM killer takes both. The escaped child is left.
    // The keeper left the run's group at once (one who froze the group and
    // died must not freeze it too); it holds the group's `freezer.state`
    // (v1) or `cgroup.kill` (v2) open as its descriptor 2.
    let mut keeper = 0;
    eventually(30, "the run's keeper holds its group", || {
        let record = setup.layout().runs().join(format!("{id}.cgroup"));
        let group = std::fs::read_to_string(record).unwrap_or_default();
        let group = group.trim();
        if group.is_empty() {
            return false;
        }
        keeper_of(Path::new(group)).is_some_and(|p| {
            keeper = p;
            true
        })
    });
    let worker = Pid::from_raw(setup.workers[0].id() as i32);
    kill(worker, Signal::SIGSTOP).expect("stop the worker");
    kill(Pid::from_raw(keeper as i32), Signal::SIGKILL).expect("kill -9 the keeper");
    kill(worker, Signal::SIGKILL).expect("kill -9 the worker");
    let _ = setup.workers[0].wait();
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(escaped), "nothing but recovery kills what is left");

    setup.worker();
    eventually(30, "the restarted worker kills the left tree", || {
        !alive(escaped)
    });
    let stderr = || std::fs::read_to_string(setup.stderr_path(1)).unwrap_or_default();
    eventually(30, "the restarted worker says what it reclaimed", || {
        let err = stderr();
        err.contains("a previous process's runs left")
            && (!overlay || err.contains("a previous process left"))
    });
    let err = stderr();
    let killed = err.find("killed ").map(|at| (at, &err[at..]));
    assert!(
        killed.is_some_and(|(_, line)| line.contains("a previous process's runs left")),
        "{err}"
    );
    if overlay {
        let unmounted = err
            .find("unmounted 1 workspace(s) a previous process left")
            .expect("the workspace is unmounted");
        assert!(
            killed.is_some_and(|(at, _)| at < unmounted),
            "killed before unmounting: {err}"
        );
    }
}

/// The keeper kills the tree of a worker killed with SIGKILL, escaped
/// child included, with no restart needed.
#[test]
fn a_killed_workers_unsandboxed_tree_dies_with_it() {
    let Some(mut setup) = Setup::new() else {
        return;
    };
    setup.create_run();
    setup.worker();
    let mut escaped = 0;
    eventually(30, "the agent's escaped child starts", || {
        setup.escaped(1).is_some_and(|p| {
            escaped = p;
            true
        })
    });
    setup.reap.push(escaped);
    kill(Pid::from_raw(setup.workers[0].id() as i32), Signal::SIGKILL).expect("kill -9");
    let _ = setup.workers[0].wait();
    eventually(10, "the escaped child dies with the worker", || {
        !alive(escaped)
    });
}

/// The process holding group `dir`'s stop file as its descriptor 2: its
/// keeper (see `dispatch_runtime::sandbox::keeper`).
fn keeper_of(dir: &Path) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| std::fs::read_link(format!("/proc/{p}/fd/2")).is_ok_and(|l| l.starts_with(dir)))
}
