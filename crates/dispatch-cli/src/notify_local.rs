//! Notifications on a machine without a server. The run's helper is the
//! process alive while the run is, so it drains the notification outbox
//! beside its run (approvals asked, their escalation steps, the run's end)
//! and, after the run ended, for `delivery.linger` at most. When something
//! is still to be done then (a retry not yet due, an escalation step ahead
//! of a pending approval) it starts the machine's drainer,
//! `dispatch internal notify-drain` (one at a time, by a lock on
//! `.dispatch/notify.lock`), which carries on until nothing is left and
//! exits. `dispatch notify ls` shows the outbox.

use std::future::Future;
use std::process::{Command, Stdio};

use dispatch_core::now_ms;
use dispatch_runtime::layout::Layout;
use dispatch_store::sqlite::SqliteStore;

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

/// The lock the drainer holds while it runs.
const LOCK: &str = "notify.lock";
/// The drainer's log.
const LOG: &str = "notify.log";

/// Refuses a dispatch while `notifications.toml` does not load (one line).
pub fn check(layout: &Layout) -> CliResult<()> {
    dispatch_notify::config::load_in(layout.root())
        .map(|_| ())
        .map_err(|e| CliError::input(e.to_string()))
}

/// Runs `work` (a run's helper) with the state directory's notifier
/// draining the outbox beside it, then lingers while notifications are
/// open, and hands what is left to the drainer; without a configuration,
/// just `work`.
pub async fn beside<T>(layout: &Layout, store: &SqliteStore, work: impl Future<Output = T>) -> T {
    let notifier = match dispatch_notify::configured(layout.root()) {
        Ok(Some(n)) => n,
        Ok(None) => return work.await,
        Err(e) => {
            eprintln!("[dispatch] {e}; no notification is sent by this run's helper");
            return work.await;
        }
    };
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let drain = notifier.run_until(store, async {
        let _ = ended.await;
    });
    let work = async {
        let out = work.await;
        let _ = done.send(());
        out
    };
    let (out, ()) = tokio::join!(work, drain);
    notifier.linger(store).await;
    if notifier.has_work(store, now_ms()).await {
        start_drainer(layout);
    }
    out
}

/// Starts `dispatch internal notify-drain` detached (it exits at once when
/// another one holds the lock).
fn start_drainer(layout: &Layout) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.root().join(LOG));
    let (out, err) = match log.and_then(|l| Ok((l.try_clone()?, l))) {
        Ok((a, b)) => (Stdio::from(a), Stdio::from(b)),
        Err(_) => (Stdio::null(), Stdio::null()),
    };
    let started = Command::new(exe)
        .args(["internal", "notify-drain"])
        .env(dispatch_runtime::layout::ROOT_ENV, layout.root())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn();
    if let Err(e) = started {
        eprintln!("[dispatch] cannot start the notification drainer: {e}");
    }
}

/// `dispatch internal notify-drain`: delivers until nothing is left.
pub async fn drain_cmd(ctx: &Ctx) -> CliResult {
    dispatch_runtime::os::detach_session();
    let path = ctx.layout.root().join(LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    let Ok(_lock) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    else {
        return Ok(0); // another drainer is at it
    };
    let Some(notifier) = dispatch_notify::configured(ctx.layout.root()).map_err(CliError::input)?
    else {
        return Ok(0);
    };
    let store = ctx.store()?;
    loop {
        notifier.round(&store, now_ms()).await;
        if !notifier.has_work(&store, now_ms()).await {
            return Ok(0);
        }
        tokio::time::sleep(notifier.config().delivery.poll).await;
    }
}
