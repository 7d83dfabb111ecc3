//! `dispatch`: run AI agents as durable, audited runs.

mod cli;
mod commands;
mod ctx;
mod error;
mod notify_local;
mod output;
mod prefork;
mod reliability_args;
mod run_cli;
mod suggest;

use clap::Parser;

use cli::{Cli, Command, ContainerCommand, InternalCommand};
use commands::*;
use ctx::Ctx;
use error::{CliResult, EXIT_DISPATCH, EXIT_USAGE};

fn main() {
    // A stage of a tool's start (see `dispatch_runtime::sandbox::stage`).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == dispatch_runtime::sandbox::stage::STAGE_ARG)
    {
        dispatch_runtime::sandbox::stage::main();
    }
    // The small process that makes stages (`sandbox::spawner`).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == dispatch_runtime::sandbox::spawner::SPAWNER_ARG)
    {
        dispatch_runtime::sandbox::spawner::main();
    }
    dispatch_runtime::sandbox::stage::enable();
    // The helper starts on the hot path of every run: spare it clap.
    if let Some(id) = helper_run_id() {
        // SAFETY: no thread has been started yet.
        unsafe { dispatch_runtime::sandbox::harden_process() };
        let ctx = Ctx::new(std::env::var_os("DISPATCH_ROOT").map(std::path::PathBuf::from));
        let code = block_on_runtime(internal::run_record_cmd(&ctx, &id));
        std::process::exit(code);
    }
    // `dispatch run` is done by the helper it forks first thing.
    if let Some(code) = prefork::run_forked() {
        std::process::exit(code);
    }
    if runs_agents() {
        // SAFETY: no thread has been started yet.
        unsafe { dispatch_runtime::sandbox::harden_process() };
    }
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => std::process::exit(code),
    };
    if prints_a_listing(&cli.command) {
        restore_sigpipe();
    }
    let ctx = Ctx::new(cli.root.clone());
    let host = cli.host.clone().filter(|h| !h.is_empty());
    let code = block_on_runtime(async {
        if let Some(host) = host
            && let Some(result) =
                remote::execute(&ctx, &host, cli.cacert.as_deref(), &cli.command).await
        {
            return result;
        }
        execute(&ctx, cli.command).await
    });
    std::process::exit(code);
}

/// `dispatch internal run-record <id>`, recognized without clap.
fn helper_run_id() -> Option<String> {
    let mut args = std::env::args_os().skip(1);
    let (Some(a), Some(b), Some(id), None) = (args.next(), args.next(), args.next(), args.next())
    else {
        return None;
    };
    (a == "internal" && b == "run-record")
        .then(|| id.into_string().ok())
        .flatten()
}

/// Whether this process starts agents for runs it does not own the caller
/// of: a worker, or a helper started ahead of its run.
fn runs_agents() -> bool {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).take(2).collect();
    match args.as_slice() {
        [a, ..] if a == "worker" => true,
        [a, b] => a == "internal" && b == "run-standby",
        _ => false,
    }
}

/// The command line, or the exit code after clap printed the help, the
/// version or the usage error it is.
fn parse_cli() -> Result<Cli, i32> {
    // Not `std::env::args()`: it panics on an argument that is not UTF-8;
    // clap says which one is wrong instead.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    Cli::try_parse_from(&args).map_err(|mut e| {
        let root = <Cli as clap::CommandFactory>::command();
        let words: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        suggest::add_subcommand_tip(&mut e, &root, &words);
        let _ = e.print();
        if e.use_stderr() { EXIT_USAGE } else { 0 }
    })
}

/// Runs a command on a current-thread runtime; returns its exit code,
/// printing its error.
pub(crate) fn block_on_runtime(command: impl std::future::Future<Output = CliResult>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(EXIT_DISPATCH);
        }
    };
    let code = error::exit_code(runtime.block_on(command));
    // Do not wait for stray tasks (a stdin feeder blocked on a full pipe).
    runtime.shutdown_background();
    code
}

/// Commands that only print data, where `dispatch ps | head` should end
/// quietly as Unix tools do. Never the long-lived ones (server, worker,
/// serve, the helper): they write to sockets and to agents' stdin, where a
/// closed peer must be an error to handle, not a signal that kills them.
/// Nor `eval`: `dispatch eval | head -1` must still finish its runs, record
/// them and end the eval's run; it ignores a closed stdout instead.
fn prints_a_listing(command: &Command) -> bool {
    matches!(
        command,
        Command::Ps(_)
            | Command::Images(_)
            | Command::Skill(_)
            | Command::Reference(_)
            | Command::InspectRun(_)
            | Command::Artifacts(_)
            | Command::Logs(_)
            | Command::Usage(_)
            | Command::Quota(_)
            | Command::Session(_)
            | Command::Container(
                ContainerCommand::Ls(_)
                    | ContainerCommand::Ps(_)
                    | ContainerCommand::Inspect(_)
                    | ContainerCommand::Logs(_)
            )
    )
}

/// Lets a listing piped into `head` end quietly instead of failing on a
/// closed stdout (see [`prints_a_listing`]).
fn restore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: installing the default disposition has no handler code to run;
    // it happens before any other thread exists.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}

async fn execute(ctx: &Ctx, command: Command) -> CliResult {
    match command {
        Command::Build(a) => build::build(ctx, &a),
        Command::Run(a) => run::run_cmd(ctx, &a).await,
        Command::Create(a) => run::create_cmd(ctx, &a).await,
        Command::Chat(a) => chat::chat(ctx, &a).await,
        Command::Serve(a) => serve::serve(ctx, &a).await,
        Command::Wake(a) => wake::wake(ctx, &a).await,
        Command::Start(a) => start::start(ctx, &a).await,
        Command::Ps(a) => ps::ps(ctx, &a).await,
        Command::Logs(a) => logs::logs(ctx, &a).await,
        Command::Wait(a) => wait::wait(ctx, &a).await,
        Command::Stop(a) => stop::stop(ctx, &a).await,
        Command::Restart(a) => restart::restart(ctx, &a).await,
        Command::Rm(a) => rm::rm(ctx, &a).await,
        Command::Prune(a) => prune::prune(ctx, &a).await,
        Command::InspectRun(a) => inspect::inspect(ctx, &a).await,
        Command::Artifacts(a) => artifacts::artifacts(ctx, &a).await,
        Command::Images(a) => images::images(ctx, &a),
        Command::Rmi(a) => rmi::rmi(ctx, &a).await,
        Command::Signal(a) => signal::signal(ctx, &a).await,
        Command::Approve(a) => approvals::decide(ctx, &a, "approve").await,
        Command::Deny(a) => approvals::decide(ctx, &a, "deny").await,
        Command::Approvals(c) => approvals::approvals(ctx, &c).await,
        Command::Dlq(c) => dlq::dlq(ctx, &c).await,
        Command::Replay(a) => replay::replay(ctx, &a).await,
        Command::Eval(a) => eval::eval(ctx, &a).await,
        Command::Container(c) => match c {
            ContainerCommand::Ls(a) | ContainerCommand::Ps(a) => ps::ps(ctx, &a).await,
            ContainerCommand::Logs(a) => logs::logs(ctx, &a).await,
            ContainerCommand::Wait(a) => wait::wait(ctx, &a).await,
            ContainerCommand::Inspect(a) => inspect::inspect(ctx, &a).await,
            ContainerCommand::Stop(a) => stop::stop(ctx, &a).await,
            ContainerCommand::Restart(a) => restart::restart(ctx, &a).await,
            ContainerCommand::Prune(a) => prune::prune(ctx, &a).await,
            ContainerCommand::Rm(a) => rm::rm(ctx, &a).await,
        },
        Command::Server(a) => server::server(ctx, &a).await,
        Command::Worker(a) => server::worker(ctx, &a).await,
        Command::Ui(a) => ui::ui(ctx, &a).await,
        Command::Token(a) => token::token(ctx, &a).await,
        Command::Skill(a) => skill::skill(ctx, &a),
        Command::Policy(a) => policy::policy(&a),
        Command::Reference(a) => commands::reference_agentfile::reference(&a),
        Command::Usage(a) => usage::usage(ctx, &a).await,
        Command::Quota(a) => quota::quota(ctx, &a).await,
        Command::Session(a) => session::session(ctx, &a).await,
        Command::Notify(a) => notifications::notifications(ctx, &a).await,
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "dispatch", &mut script);
            if shell == clap_complete::Shell::Fish {
                script.extend(commands::reference_agentfile::fish_completions().into_bytes());
            }
            // A closed pipe (`| head`) ends it quietly.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(0)
        }
        Command::Internal(InternalCommand::RunRecord { id }) => {
            internal::run_record_cmd(ctx, &id).await
        }
        Command::Internal(InternalCommand::RunStandby) => internal::run_standby_cmd(ctx).await,
        Command::Internal(InternalCommand::NotifyDrain) => {
            crate::notify_local::drain_cmd(ctx).await
        }
        Command::Internal(InternalCommand::Reference { page }) => reference::reference(page),
    }
}
