//! `dispatch run …` parsed by a command line of one subcommand.
//!
//! clap builds every subcommand's arguments before it parses anything:
//! forty subcommands' worth of allocations (and their drop), on the path
//! from `run` to the agent. The forked helper of `dispatch run` parses with
//! a command that has only `run` (and the global options) instead; on
//! anything else — help, a version, a usage error — it answers `None` and
//! the whole command line is parsed as always, so what is printed is the
//! same. A test keeps the global options the same as [`Cli`]'s.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cli::{Cli, Command, RunArgs};

/// [`Cli`] with only `run`.
#[derive(Debug, Parser)]
#[command(name = "dispatch")]
struct RunOnly {
    #[arg(long, global = true, env = "DISPATCH_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,
    #[arg(long, global = true, env = "DISPATCH_HOST", value_name = "URL")]
    host: Option<String>,
    #[arg(long, global = true, env = "DISPATCH_CACERT", value_name = "FILE")]
    cacert: Option<PathBuf>,
    #[command(subcommand)]
    command: Only,
}

#[derive(Debug, Subcommand)]
enum Only {
    Run(RunArgs),
}

/// The command line as [`Cli`] when it is a `run` that parses; `None`
/// otherwise (the whole parser then says what it is).
pub fn parse<I, T>(args: I) -> Option<Cli>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let parsed = RunOnly::try_parse_from(args).ok()?;
    let Only::Run(run) = parsed.command;
    Some(Cli {
        root: parsed.root,
        host: parsed.host,
        cacert: parsed.cacert,
        command: Command::Run(run),
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn describe(command: &clap::Command) -> Vec<String> {
        let mut args: Vec<String> = command
            .get_arguments()
            .filter(|a| a.is_global_set())
            .map(|a| {
                format!(
                    "{} --{:?} env={:?} value_name={:?}",
                    a.get_id(),
                    a.get_long(),
                    a.get_env(),
                    a.get_value_names()
                )
            })
            .collect();
        args.sort();
        args
    }

    #[test]
    fn the_global_options_are_the_whole_parsers() {
        assert_eq!(describe(&RunOnly::command()), describe(&Cli::command()));
    }

    #[test]
    fn a_run_parses_as_the_whole_parser_parses_it_and_anything_else_is_left_to_it() {
        let line = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
        for ok in [
            "dispatch run ./agent --detach",
            "dispatch --root /tmp/x run ./agent --label a=b --priority 3 --payload {\"a\":1}",
            "dispatch run --root /tmp/x ./agent --project p",
        ] {
            let fast = parse(line(ok)).expect("a run");
            let whole = Cli::try_parse_from(line(ok)).expect("parses");
            assert_eq!(format!("{fast:?}"), format!("{whole:?}"), "{ok}");
        }
        for other in [
            "dispatch run --help",
            "dispatch --version",
            "dispatch run",
            "dispatch ps",
            "dispatch run ./agent --no-such-flag",
        ] {
            assert!(parse(line(other)).is_none(), "{other}");
        }
    }
}
