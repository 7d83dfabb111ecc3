//! The logs of `dispatch server` and `dispatch worker`: through `tracing`
//! to stderr, one line per event, as text or JSON (`--log-format`), at the
//! levels `DISPATCH_LOG` (else `RUST_LOG`) lets through (default `info`).

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::error::{CliError, CliResult};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line for a human: time, level, message.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message and
    /// the event's fields.
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// How logs are written on stderr: text or json (one object per line).
    /// Which levels: DISPATCH_LOG (else RUST_LOG), like `warn` or
    /// `info,dispatch_server=debug`; default info.
    #[arg(
        long,
        env = "DISPATCH_LOG_FORMAT",
        value_enum,
        value_name = "FORMAT",
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

/// Dispatch's own lines at `info`; its libraries' only from `warn` (an
/// object store's retries, say, are not the server's news).
const DEFAULT_FILTER: &str = "warn,dispatch=info,dispatch_cli=info,dispatch_server=info,dispatch_runtime=info,dispatch_store=info,dispatch_agent=info,dispatch_core=info";

impl LogArgs {
    /// Installs the process's log subscriber. A filter that does not parse
    /// is one line and a refusal to start.
    pub fn init(&self) -> CliResult<()> {
        let (var, spec) = ["DISPATCH_LOG", "RUST_LOG"]
            .into_iter()
            .find_map(|var| {
                let value = std::env::var(var).ok()?;
                (!value.trim().is_empty()).then_some((var, value))
            })
            .unwrap_or(("DISPATCH_LOG", DEFAULT_FILTER.to_string()));
        let filter = EnvFilter::builder().parse(spec.trim()).map_err(|e| {
            CliError::input(format!(
                "{var}=`{spec}` is not a log filter: {e} (hint: info, warn, or info,dispatch_server=debug)"
            ))
        })?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let installed = match self.log_format {
            LogFormat::Text => {
                let ansi =
                    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                builder.with_target(false).with_ansi(ansi).try_init()
            }
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .try_init(),
        };
        // Already installed (never twice in one process): keep that one.
        drop(installed);
        Ok(())
    }
}
