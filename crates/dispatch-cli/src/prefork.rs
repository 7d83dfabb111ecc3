//! The helper of `dispatch run`, forked before the CLI does anything else.
//!
//! Spawning `dispatch internal run-record <id>` costs a whole program start
//! (exec, dynamic linking, runtime set-up: about 1.5 ms of CPU) on the path
//! from `run` to the agent. Instead `run` forks itself first thing, while it
//! is still one thread with no database open: the child detaches (its own
//! session, stdio off the caller's pipes), opens the database while the
//! parent creates the run, and waits on a pipe. Once the run exists
//! (deduplication and sessions checked) the parent writes it into the pipe
//! (the whole record, so the child need not read it back), and the child
//! becomes that run's helper, exactly as `internal run-record` would. If the
//! parent writes nothing (bad input, a deduplicated run) the pipe closes and
//! the child exits without touching anything.
//!
//! The child never uses a database connection of its parent: it forks before
//! the parent opens one (SQLite connections must not cross a fork).
//!
//! The parent creates the run already claimed by the child (its pid and
//! start time, [`dispatch_store::NewRun::claimed_by`], one transaction), so
//! the child starts the agent without a write of its own. A child that died
//! before it got the run cannot take it: the parent then fails the run with
//! that reason (readers would too: its helper is gone).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use dispatch_core::ProcRef;
use dispatch_store::Run;
use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, fork, pipe};

use crate::commands::internal;
use crate::ctx::Ctx;

/// The parent's end: start the forked helper on a run, or let it go.
pub struct Prefork {
    go: File,
    /// The child: the helper the run is created claimed by.
    pub helper: ProcRef,
}

impl Prefork {
    /// Forks the helper-to-be. Must be called while this process has a
    /// single thread and no database open. `None` when forking failed (the
    /// caller spawns a helper the usual way).
    pub fn fork(ctx: &Ctx) -> Option<Prefork> {
        let (read, write) = pipe().ok()?;
        // SAFETY: the process has one thread (called from `main` before any
        // runtime or thread exists), so the child may run arbitrary code.
        match unsafe { fork() }.ok()? {
            ForkResult::Parent { child } => {
                drop(read);
                let pid = u32::try_from(child.as_raw()).ok()?;
                Some(Prefork {
                    go: File::from(write),
                    helper: dispatch_runtime::os::proc_ref(pid),
                })
            }
            ForkResult::Child => {
                drop(write);
                let code = child(ctx, read);
                std::process::exit(code);
            }
        }
    }

    /// Hands the created run to the helper, which starts it at once.
    pub fn start(mut self, run: &Run) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(run).map_err(std::io::Error::other)?;
        self.go.write_all(&bytes)
        // Dropping `self` closes the pipe: the helper reads to its end.
    }
}

/// The helper-to-be: detach, open the database, wait for the run, run it.
fn child(ctx: &Ctx, go: OwnedFd) -> i32 {
    // Off the caller's terminal and pipes (a caller reading our stdout to
    // its end must not wait for the run), and out of its session.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = dup2_stdin(&null);
        let _ = dup2_stdout(&null);
        let _ = dup2_stderr(&null);
    }
    dispatch_runtime::os::detach_session();
    // `ps -e` / `top` tell it from the command it was forked from.
    let _ = nix::sys::prctl::set_name(c"dispatch-helper");
    // Opened while the parent creates the run; only an existing database
    // (the parent creates a new one and runs its migrations).
    let store = match ctx.layout.db().is_file() {
        true => ctx.store().ok(),
        false => None,
    };
    // Ready to run before the run exists.
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 0; // the parent finds the pipe closed and fails the run
    };
    let mut message = Vec::new();
    let mut go = File::from(go);
    if go.read_to_end(&mut message).is_err() || message.is_empty() {
        return 0; // the parent started nothing
    }
    let Ok(run) = serde_json::from_slice::<Run>(&message) else {
        return 0;
    };
    // The run's log is the helper's stdout and stderr, as when spawned.
    let _ = std::fs::create_dir_all(ctx.layout.runs());
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ctx.layout.log(&run.id))
    {
        let _ = dup2_stdout(&log);
        let _ = dup2_stderr(&log);
    }
    let code = match runtime.block_on(internal::run_created(ctx, store, run)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.code
        }
    };
    runtime.shutdown_background();
    code
}
