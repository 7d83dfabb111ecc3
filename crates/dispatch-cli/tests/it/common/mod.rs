//! Drives the real `dispatch` binary against a fresh state directory.
#![allow(dead_code)]

pub mod checks;
pub mod junit;
pub mod mounts;

pub use dispatch_test_support::eventually;
pub use mounts::unmount_under;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct Dispatch {
    pub dir: tempfile::TempDir,
    /// Set for every `dispatch` this test runs (e.g. the container runtime).
    pub env: Vec<(String, String)>,
}

/// A kept overlay workspace stays mounted until `dispatch rm`: whatever a
/// test left mounted under its directory goes with it (else the mount
/// would outlive the removed directory).
impl Drop for Dispatch {
    fn drop(&mut self) {
        unmount_under(self.dir.path());
    }
}

impl Dispatch {
    /// A fresh state directory. Its runs' agents are not sandboxed
    /// (`DISPATCH_SANDBOX=off`): they signal the test through files in its
    /// temporary directory, which a sandboxed agent does not see. The
    /// sandbox's tests use [`Dispatch::sandboxed`].
    pub fn new() -> Self {
        Dispatch::with_env(&[])
    }

    /// A fresh state directory whose `dispatch` processes also get `env`
    /// (agents not sandboxed, as [`Dispatch::new`]).
    pub fn with_env(env: &[(&str, &str)]) -> Self {
        let mut d = Dispatch::sandboxed_with(env);
        d.env.insert(0, ("DISPATCH_SANDBOX".into(), "off".into()));
        d
    }

    /// A fresh state directory whose runs' agents are sandboxed (as root:
    /// see `dispatch_runtime::sandbox`), with `env`.
    pub fn sandboxed_with(env: &[(&str, &str)]) -> Self {
        Dispatch {
            dir: tempfile::tempdir().expect("tempdir"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// [`Dispatch::sandboxed_with`] no other variable.
    pub fn sandboxed() -> Self {
        Dispatch::sandboxed_with(&[])
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join(".dispatch")
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dispatch"));
        c.env("DISPATCH_ROOT", self.root())
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs `dispatch <args>` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run dispatch")
    }

    /// Runs `dispatch <args>`, asserts success, returns trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        checks::ok(args, &self.run(args))
    }

    /// Runs `dispatch <args>`, asserts it failed with `code`, returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        checks::fails(args, &self.run(args), code)
    }

    /// Writes an agent directory with `Agentfile` and `agent.sh`.
    pub fn agent(&self, name: &str, script: &str) -> PathBuf {
        self.agent_with(name, script, "")
    }

    pub fn agent_with(&self, name: &str, script: &str, extra: &str) -> PathBuf {
        checks::agent(self.dir.path(), name, "FROM process\n", script, extra)
    }

    /// `dispatch run <dir> --detach [--job payload]`; returns the id.
    pub fn detach(&self, dir: &Path, job: &str) -> String {
        self.ok(&[
            "run",
            dir.to_str().expect("utf-8 path"),
            "--detach",
            "--job",
            job,
        ])
    }

    pub fn inspect(&self, id: &str) -> Value {
        let out = self.ok(&["inspect-run", id, "--format", "json"]);
        let v: Value = serde_json::from_str(&out).expect("inspect prints JSON");
        v[0].clone()
    }

    /// The pid of run `id`'s helper, as `inspect-run` reports it.
    pub fn helper_pid(&self, id: &str) -> u32 {
        self.inspect(id)["state"]["helper"]["pid"]
            .as_u64()
            .expect("a helper") as u32
    }

    pub fn status(&self, id: &str) -> String {
        self.inspect(id)["status"]
            .as_str()
            .expect("status")
            .to_string()
    }

    /// Waits (bounded) until the run is terminal; returns its inspect document.
    pub fn wait_terminal(&self, id: &str) -> Value {
        let out = self.run(&["wait", id, "--timeout-ms", "30000"]);
        assert_ne!(
            out.status.code(),
            Some(124),
            "run {id} did not finish in 30 s"
        );
        self.inspect(id)
    }
}

/// Whether a process is alive (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next())
                .unwrap_or("X");
            !matches!(state, "Z" | "X")
        }
        Err(_) => false,
    }
}

/// Every process whose command line or environment names run `id`.
pub fn processes_of(id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let read = |f: &str| std::fs::read(entry.path().join(f)).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&read("cmdline")).replace('\0', " ");
        let environ = String::from_utf8_lossy(&read("environ")).to_string();
        if cmdline.contains(id) || environ.contains(&format!("DISPATCH_RUN_ID={id}")) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

/// SIGKILL to `pid`.
pub fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
}

/// Kills run `id`'s helper with SIGKILL and waits until it is gone;
/// returns its pid.
pub fn kill_helper(d: &Dispatch, id: &str) -> u32 {
    let helper = d.inspect(id)["state"]["helper"]["pid"]
        .as_u64()
        .expect("a helper") as u32;
    kill9(helper as i32);
    eventually(10, "the helper is gone", || !alive(helper));
    helper
}

/// Waits until every file in `beats` has a beat, kills run `id`'s helper
/// with SIGKILL, and asserts that none of the files grows any more: the
/// run's whole tree died with its helper.
pub fn kill_helper_and_assert_beats_stop(d: &Dispatch, id: &str, beats: &[PathBuf]) {
    let size = |f: &PathBuf| std::fs::metadata(f).map_or(0, |m| m.len());
    eventually(30, "every beater beats", || {
        beats.iter().all(|f| size(f) > 0)
    });
    kill_helper(d, id);
    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<u64> = beats.iter().map(size).collect();
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<u64> = beats.iter().map(size).collect();
    assert_eq!(before, after, "the tree still beats: {beats:?}");
}
