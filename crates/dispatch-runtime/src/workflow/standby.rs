//! Member helpers started ahead of their turn.
//!
//! A member's turn is a helper process (`dispatch internal run-standby`),
//! like any local run's, so a member outlives a coordinator killed at any
//! point. Starting that process (exec, dynamic linking, runtime set-up, the
//! database opened) is most of a hop's cost, so the coordinator keeps one
//! started ahead: it opens the database and waits on its stdin for the id of
//! the run to take. Handing it a run is a line written to a pipe; a new one
//! is started for the next turn at once, off the path of this one. A standby
//! helper whose coordinator is gone reads the end of its stdin and exits.
//!
//! The helper keeps its stdout (before it points it at the run's log) as a
//! signal to its coordinator ([`TurnSignal`]): a byte when the member's
//! agent started (the next standby helper may start: it no longer slows
//! this member's start) and one when the member's run ended (the next pass
//! reads what it sent, at once, rather than at the next poll or when the
//! helper has cleaned up and exited). The end of that pipe (the helper
//! exited, however) wakes the coordinator too.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dispatch_core::RunId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Notify;

use crate::error::{RuntimeError, RuntimeResult};
use crate::layout::{Layout, ROOT_ENV};

/// A helper process waiting for a run id on its stdin.
pub(super) struct Standby {
    child: Child,
    stdin: ChildStdin,
    signals: ChildStdout,
}

/// The byte a member's helper writes when its agent started.
const STARTED: u8 = b's';
/// The byte a member's helper writes when its run ended.
const ENDED: u8 = b'e';

/// What a helper handed its run by a coordinator tells it (see the module
/// docs): writes to the pipe the coordinator reads. Errors are ignored: a
/// coordinator that is gone learns from the store.
pub struct TurnSignal(std::sync::Mutex<std::fs::File>);

impl TurnSignal {
    /// Over `file` (the helper's stdout as its coordinator started it).
    pub fn new(file: std::fs::File) -> TurnSignal {
        TurnSignal(std::sync::Mutex::new(file))
    }

    fn send(&self, byte: u8) {
        if let Ok(mut f) = self.0.lock() {
            let _ = f.write_all(&[byte]);
        }
    }

    /// The member's agent started.
    pub fn agent_started(&self) {
        self.send(STARTED);
    }

    /// The member's run ended (its terminal state is saved).
    pub fn ended(&self) {
        self.send(ENDED);
    }
}

/// What the coordinator hears from the helpers it handed runs.
#[derive(Default)]
pub(super) struct Heard {
    /// A pass is due: a member's run ended, or its helper exited.
    pub(super) woken: Notify,
    /// A member's agent started since the flag was last taken.
    started: AtomicBool,
}

impl Heard {
    /// Whether a member's agent started since the last call.
    pub(super) fn take_started(&self) -> bool {
        self.started.swap(false, Ordering::AcqRel)
    }
}

impl Standby {
    /// Starts `exe internal run-standby` for the runs of `layout`.
    pub(super) fn spawn(layout: &Layout, exe: &Path) -> RuntimeResult<Standby> {
        let mut child = Command::new(exe)
            .args(["internal", "run-standby"])
            .env(ROOT_ENV, layout.root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| RuntimeError::Spawn(exe.to_path_buf(), e))?;
        let stdin = child
            .stdin
            .take()
            .expect("the standby helper's stdin is piped");
        let signals = child
            .stdout
            .take()
            .expect("the standby helper's stdout is piped");
        Ok(Standby {
            child,
            stdin,
            signals,
        })
    }

    /// The helper's process, which a run can be created claimed by; `None`
    /// when it exited.
    pub(super) fn process(&mut self) -> Option<dispatch_core::ProcRef> {
        match self.child.try_wait() {
            Ok(None) => self.child.id().map(crate::os::proc_ref),
            _ => None,
        }
    }

    /// Hands the helper run `id`; `heard` learns what it signals.
    /// An error when the helper is gone (the caller starts one the usual way).
    pub(super) async fn take(mut self, id: &RunId, heard: Arc<Heard>) -> std::io::Result<()> {
        self.stdin.write_all(format!("{id}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        drop(self.stdin);
        let (mut child, mut signals) = (self.child, self.signals);
        tokio::spawn(async move {
            let mut buf = [0u8; 16];
            while let Ok(n @ 1..) = signals.read(&mut buf).await {
                if buf[..n].contains(&STARTED) {
                    heard.started.store(true, Ordering::Release);
                    heard.woken.notify_one();
                }
                if buf[..n].contains(&ENDED) {
                    heard.woken.notify_one();
                }
            }
            heard.woken.notify_one();
            let _ = child.wait().await;
        });
        Ok(())
    }
}
