//! The helper of `dispatch run`, forked before the CLI does anything else.
//!
//! Spawning `dispatch internal run-record <id>` costs a whole program start
//! (exec, dynamic linking, runtime set-up: about 1.5 ms of CPU) on the path
//! from `run` to the agent. Instead `run` forks itself right after parsing
//! its arguments, while it is still one thread with no database open, and
//! the child does the rest: it detaches (its own session, stdio off the
//! caller's pipes), opens the database, checks the input and creates the run
//! already claimed by itself ([`dispatch_store::NewRun::claimed_by`]: the
//! `created` event and the claim in one transaction; deduplication and
//! sessions checked as always), tells the parent through a pipe, and becomes
//! that run's helper, exactly as `internal run-record` would. The parent
//! opens nothing: it prints what the child reports (the run id, or the one
//! error line and its exit code), and for a foreground run then follows it.
//!
//! A child that reports nothing (it died first) leaves the parent to do it
//! the usual way: create the run and spawn `internal run-record`.

use std::fs::File;
use std::io::{Read, Write};

use dispatch_store::Run;
use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, fork, pipe};
use serde::{Deserialize, Serialize};

use crate::cli::RunArgs;
use crate::commands::{internal, run};
use crate::ctx::Ctx;
use crate::error::exit_code;

/// What the forked helper tells `dispatch run`.
#[derive(Debug, Serialize, Deserialize)]
pub enum Report {
    /// The run exists; `existing` when it is the one a dispatch with the
    /// same key made (nothing was created).
    Created { run: Box<Run>, existing: bool },
    /// Nothing was created: the error line and its exit code.
    Failed { message: String, code: i32 },
}

/// The parent's end: what the forked helper reports.
pub struct Prefork {
    report: File,
}

impl Prefork {
    /// Forks the helper for `args`. Must be called while this process has
    /// a single thread and no database open. `None` when forking failed (the
    /// caller does it all itself).
    pub fn fork(ctx: &Ctx, args: &RunArgs) -> Option<Prefork> {
        let (read, write) = pipe().ok()?;
        // SAFETY: the process has one thread (called from `main` before any
        // runtime or thread exists), so the child may run arbitrary code.
        match unsafe { fork() }.ok()? {
            ForkResult::Parent { .. } => {
                drop(write);
                Some(Prefork {
                    report: File::from(read),
                })
            }
            ForkResult::Child => {
                drop(read);
                let code = child(ctx, args, File::from(write));
                std::process::exit(code);
            }
        }
    }

    /// Waits for the helper's report; `None` when it ended without one.
    pub fn wait(mut self) -> Option<Report> {
        let mut bytes = Vec::new();
        self.report.read_to_end(&mut bytes).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The helper: detach, create the run, report, run it.
fn child(ctx: &Ctx, args: &RunArgs, mut report: File) -> i32 {
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
    // The runtime is built while this thread checks the input and opens
    // the database (both are on the path to the agent).
    let runtime = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    });
    let me = dispatch_runtime::os::this_process();
    let opened = run::check_run(args, Some(me)).and_then(|checked| Ok((checked, ctx.store()?)));
    let Ok(Ok(runtime)) = runtime.join() else {
        return 0; // no report: the parent does it all
    };
    let created = match opened {
        Ok((checked, store)) => runtime.block_on(run::create_checked(ctx, store, checked)),
        Err(e) => Err(e),
    };
    let (message, started) = match created {
        Ok((store, run, existing, known)) => {
            let message = Report::Created {
                run: Box::new(run.clone()),
                existing,
            };
            (message, (!existing).then_some((store, run, known)))
        }
        Err(e) => (
            Report::Failed {
                message: e.message,
                code: e.code,
            },
            None,
        ),
    };
    // A caller gone meanwhile changes nothing: the run exists and is ours.
    if let Ok(bytes) = serde_json::to_vec(&message) {
        let _ = report.write_all(&bytes);
    }
    drop(report);
    let Some((store, run, known)) = started else {
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
    let code = exit_code(runtime.block_on(internal::run_created(ctx, &store, run, known)));
    runtime.shutdown_background();
    code
}
