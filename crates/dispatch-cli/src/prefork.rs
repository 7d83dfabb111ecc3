//! `dispatch run` forks its helper first thing, before it parses anything.
//!
//! Spawning `dispatch internal run-record <id>` costs a whole program start
//! (exec, dynamic linking, runtime set-up: about 1.5 ms of CPU) on the path
//! from `run` to the agent. Instead `run` forks itself at the top of `main`,
//! while it is still one thread, and the child does all of the work:
//!
//! - a second thread opens the database the run most likely goes to, while
//!   the first parses the command line (clap's help, version and usage
//!   errors are printed from there, to the caller's terminal), detaches (its
//!   own session, stdio off the caller's pipes), checks the input, resolves
//!   the parcel, writes the brief and builds the async runtime: on two cores
//!   the two halves overlap instead of adding up;
//! - it creates the run already claimed by itself
//!   ([`dispatch_store::NewRun::claimed_by`]: the `created` event and the
//!   claim in one transaction; deduplication and sessions checked as always);
//! - it tells the parent through a pipe, and becomes that run's helper,
//!   exactly as `internal run-record` would.
//!
//! The parent parses and opens nothing: it prints what the child reports
//! (the run id, or the one error line and its exit code), and for a
//! foreground run then follows it. A child that finds the command is not a
//! local run (`--host`) says so and the parent carries on as any command
//! does; one that reports nothing (it died first) leaves the parent to do it
//! the usual way: create the run and spawn `internal run-record`.
//!
//! A detached run's helper is not forked but cloned into the parent's own
//! memory ([`shared_vm`]): the parent then may only wait, so the helper
//! prints the report to the caller's stdout and stderr itself and sends
//! the parent its exit code; it declines a foreground run (forked then, as
//! above) and a command that is not a local run.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::thread::JoinHandle;

use dispatch_store::Run;
use dispatch_store::sqlite::SqliteStore;
use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, fork, pipe};
use serde::{Deserialize, Serialize};

use crate::cli::Command;
use crate::commands::{internal, run};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult, exit_code};

mod shared_vm;

/// What the forked helper tells `dispatch run`.
#[derive(Debug, Serialize, Deserialize)]
pub enum Report {
    /// The run exists; `existing` when it is the one a dispatch with the
    /// same key made (nothing was created). `root` is its state directory.
    Created {
        run: Box<Run>,
        existing: bool,
        detach: bool,
        root: PathBuf,
        /// `--tool-approval`, as given.
        #[serde(default)]
        tool_approval: Option<String>,
        /// RESOURCES that will hold only approximately or not at all here.
        #[serde(default)]
        warnings: Vec<String>,
    },
    /// Nothing was created: the error line and its exit code.
    Failed { message: String, code: i32 },
    /// The command line was help, a version or a usage error, which the
    /// helper printed: exit with `code`.
    Exited { code: i32 },
    /// Not a local run: the parent does what the command asks.
    Declined,
}

/// Runs `dispatch run` through a forked helper. `None` when this is not a
/// local run, or the helper could not do it: the caller carries on.
pub fn run_forked() -> Option<i32> {
    if !maybe_local_run() {
        return None;
    }
    if maybe_detached() {
        match shared_vm::hand_off() {
            Some(shared_vm::Outcome::Declined) => return None,
            // A foreground run, or no clone: forked as below.
            Some(shared_vm::Outcome::Foreground) | None => {}
        }
    }
    match tell(Prefork::fork()?.wait()?) {
        Told::Exit(code) => Some(code),
        Told::Declined => None,
        Told::Follow {
            run,
            root,
            tool_approval,
        } => {
            let ctx = Ctx::new(Some(root));
            let ask = run::asks_inline(tool_approval.as_deref());
            Some(crate::block_on_runtime(run::follow_created(
                &ctx, &run, ask,
            )))
        }
    }
}

/// What the caller is told of a report, and what is left to do.
enum Told {
    /// Exit with this code.
    Exit(i32),
    /// Not a local run: do what the command asks.
    Declined,
    /// A foreground run: follow it to its end.
    Follow {
        run: Box<Run>,
        root: PathBuf,
        tool_approval: Option<String>,
    },
}

/// Prints what `dispatch run` says of a report, as it would have itself.
fn tell(report: Report) -> Told {
    match report {
        Report::Declined => Told::Declined,
        Report::Exited { code } => Told::Exit(code),
        Report::Failed { message, code } => {
            Told::Exit(exit_code(Err(CliError::new(code, message))))
        }
        Report::Created {
            run,
            existing,
            detach,
            root,
            tool_approval,
            warnings,
        } => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            if existing {
                run::say_deduplicated(&run);
            } else {
                run::say_in_review(&run);
            }
            if detach {
                // A closed stdout loses the id, not the run.
                let _ = writeln!(std::io::stdout().lock(), "{}", run.id);
                return Told::Exit(0);
            }
            Told::Follow {
                run,
                root,
                tool_approval,
            }
        }
    }
}

/// Whether the command line may ask for a detached run (`--detach`, `-d`,
/// or a bundle of short flags with `d`). Only a guess: the helper parses it
/// properly and declines a foreground run.
fn maybe_detached() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .filter_map(|a| a.into_string().ok())
        .any(|a| a == "--detach" || (!a.starts_with("--") && a.starts_with('-') && a.contains('d')))
}

/// Whether the command line may be `dispatch run` on this machine: an
/// argument is `run` and no server is set in the environment. The helper
/// parses it properly and declines what is not.
fn maybe_local_run() -> bool {
    std::env::var_os("DISPATCH_HOST").is_none_or(|h| h.is_empty())
        && std::env::args_os().skip(1).any(|a| a == "run")
}

/// The parent's end: what the forked helper reports.
struct Prefork {
    report: File,
}

impl Prefork {
    /// Forks the helper. Must be called while this process has a single
    /// thread. `None` when forking failed (the caller does it all itself).
    fn fork() -> Option<Prefork> {
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
                let code = child(To::Parent(File::from(write)));
                std::process::exit(code);
            }
        }
    }

    /// Waits for the helper's report; `None` when it ended without one.
    fn wait(mut self) -> Option<Report> {
        let mut bytes = Vec::new();
        self.report.read_to_end(&mut bytes).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Where the helper's report goes.
enum To {
    /// To the forked parent, which prints it (it has a memory of its own).
    Parent(File),
    /// To the caller's terminal, by the helper itself: the parent shares
    /// its memory and may only wait ([`shared_vm`]).
    Caller(shared_vm::Caller),
}

/// Sends the report; a caller gone meanwhile changes nothing.
fn send(to: To, report: Report) {
    match to {
        To::Parent(mut to) => {
            if let Ok(bytes) = serde_json::to_vec(&report) {
                let _ = to.write_all(&bytes);
            }
        }
        To::Caller(caller) => caller.tell(|| match tell(report) {
            Told::Exit(code) => code,
            // Declined before anything was created (see `child`).
            Told::Declined | Told::Follow { .. } => 0,
        }),
    }
}

/// The database a run with no `--root` goes to, opened while the command
/// line is parsed; only one that exists (a bad command line creates nothing).
fn open_ahead() -> JoinHandle<Option<SqliteStore>> {
    std::thread::spawn(|| {
        let ctx = Ctx::new(std::env::var_os("DISPATCH_ROOT").map(PathBuf::from));
        if !ctx.layout.db().is_file() {
            return None;
        }
        ctx.store().ok()
    })
}

/// The helper: parse, detach, create the run, report, run it.
fn child(report: To) -> i32 {
    // SAFETY: forked from a process with one thread; none started since.
    unsafe { dispatch_runtime::sandbox::harden_process() };
    // On the path to the agent: it runs while clap parses.
    let ahead = open_ahead();
    let cli = match crate::run_cli::parse(std::env::args_os()).map_or_else(crate::parse_cli, Ok) {
        Ok(cli) => cli,
        Err(code) => {
            send(report, Report::Exited { code });
            let _ = ahead.join();
            return 0;
        }
    };
    let args = match cli.command {
        Command::Run(args)
            if cli.host.as_deref().is_none_or(str::is_empty)
                && !args.print_prompt
                && !args.list_tools =>
        {
            args
        }
        _ => {
            let _ = ahead.join();
            return match report {
                To::Parent(_) => {
                    send(report, Report::Declined);
                    0
                }
                To::Caller(_) => shared_vm::DECLINED,
            };
        }
    };
    let report = match report {
        To::Caller(_) if !args.detach => {
            let _ = ahead.join();
            return shared_vm::FOREGROUND;
        }
        To::Caller(caller) => To::Caller(caller.detach()),
        to => to,
    };
    detach();
    let ctx = Ctx::new(cli.root);
    // While the database opens: the input, the parcel and the brief.
    let checked = run::check_run(&ctx, &args, Some(dispatch_runtime::os::this_process()));
    // A native agent's first model call needs the HTTP client: build it meanwhile.
    if let Ok(sub) = &checked
        && sub.parcel().manifest.courier == dispatch_core::parcel::Courier::Agent
    {
        std::thread::spawn(dispatch_runtime::native::warm_client);
    }
    let warnings = match &checked {
        Ok(sub) => dispatch_runtime::limits::preview(&sub.parcel().manifest.resources),
        Err(_) => Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    // Joined whatever happens: the thread may be migrating the database.
    let ahead = ahead
        .join()
        .ok()
        .flatten()
        .filter(|store| store.path() == ctx.layout.db());
    let Ok(runtime) = runtime else {
        return 0; // no report: the parent does it all
    };
    let opened = checked.and_then(|checked| {
        let store = match ahead {
            Some(store) => store,
            None => ctx.store()?,
        };
        Ok((checked, store))
    });
    let created: CliResult<_> = match opened {
        Ok((checked, store)) => runtime.block_on(run::create_checked(&ctx, store, checked)),
        Err(e) => Err(e),
    };
    let (message, started) = match created {
        Ok((store, run, existing, known)) => {
            let message = Report::Created {
                tool_approval: args.tool_approval.clone(),
                run: Box::new(run.clone()),
                existing,
                detach: args.detach,
                root: ctx.layout.root().to_path_buf(),
                warnings,
            };
            // A run in review is nobody's until it is approved.
            let mine = !existing && run.status() != dispatch_core::Status::Review;
            (message, mine.then_some((store, run, known)))
        }
        Err(e) => (
            Report::Failed {
                message: e.message,
                code: e.code,
            },
            None,
        ),
    };
    send(report, message);
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
    let code = exit_code(runtime.block_on(internal::run_created(&ctx, &store, run, known)));
    runtime.shutdown_background();
    code
}

/// Off the caller's terminal and pipes (a caller reading our stdout to its
/// end must not wait for the run), and out of its session.
fn detach() {
    stdio_to_null();
    dispatch_runtime::os::detach_session();
    // `ps -e` / `top` tell it from the command it was forked from.
    let _ = nix::sys::prctl::set_name(c"dispatch-helper");
}

/// Points stdin, stdout and stderr at `/dev/null`.
fn stdio_to_null() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = dup2_stdin(&null);
        let _ = dup2_stdout(&null);
        let _ = dup2_stderr(&null);
    }
}
