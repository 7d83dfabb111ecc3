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
//! The coordinator is the parent of each helper it hands a run, so it wakes
//! the moment one exits (its run ended: the coordinator's next pass reads
//! what it sent) instead of waiting for its next poll.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use dispatch_core::RunId;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Notify;

use crate::error::{RuntimeError, RuntimeResult};
use crate::layout::{Layout, ROOT_ENV};

/// A helper process waiting for a run id on its stdin.
pub(super) struct Standby {
    child: Child,
    stdin: ChildStdin,
}

impl Standby {
    /// Starts `exe internal run-standby` for the runs of `layout`.
    pub(super) fn spawn(layout: &Layout, exe: &Path) -> RuntimeResult<Standby> {
        let mut child = Command::new(exe)
            .args(["internal", "run-standby"])
            .env(ROOT_ENV, layout.root())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| RuntimeError::Spawn(exe.to_path_buf(), e))?;
        let stdin = child
            .stdin
            .take()
            .expect("the standby helper's stdin is piped");
        Ok(Standby { child, stdin })
    }

    /// Hands the helper run `id`; `woken` is notified when the helper exits.
    /// An error when the helper is gone (the caller starts one the usual way).
    pub(super) async fn take(mut self, id: &RunId, woken: Arc<Notify>) -> std::io::Result<()> {
        self.stdin.write_all(format!("{id}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        drop(self.stdin);
        let mut child = self.child;
        tokio::spawn(async move {
            let _ = child.wait().await;
            woken.notify_one();
        });
        Ok(())
    }
}
