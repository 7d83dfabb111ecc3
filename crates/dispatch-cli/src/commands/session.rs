//! `dispatch session ls|inspect|rm|prune`: the sessions runs keep between
//! them (`dispatch run --session NAME`, `dispatch chat`, an A2A context of
//! `serve --a2a`), named `<parcel>/<name>`. In the local state, or on a
//! server under `--host` (`GET /v1/sessions`, `GET`/`DELETE
//! /v1/sessions/{parcel}/{name}`, `POST /v1/sessions/prune`). A session a
//! live run holds is never removed.

use clap::{Args, Subcommand};
use dispatch_core::now_ms;
use dispatch_store::{SessionStore, SessionSummary, StoreError};
use serde_json::json;

use crate::cli::Format;
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult, EXIT_DISPATCH};
use crate::output::{print_columns, print_json, time_text};

#[derive(Debug, Args)]
pub struct SessionArgs {
    #[command(subcommand)]
    pub command: SessionCommand,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List sessions, most recently used first.
    #[command(visible_alias = "list")]
    Ls {
        /// Only sessions whose name starts with this (`triage/`, `planner/a2a-`).
        #[arg(long, value_name = "PREFIX", default_value = "")]
        prefix: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show everything sessions keep, as JSON: the conversation, the file, memory and checkpoint keys.
    Inspect {
        /// `<parcel>/<name>`, as `dispatch session ls` shows it.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },
    /// Remove sessions and everything they keep (refused while a live run holds one).
    Rm {
        /// `<parcel>/<name>`, as `dispatch session ls` shows it.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },
    /// Remove every session unused for a while (none a live run holds).
    Prune {
        /// Only sessions unused since this time: an age (`24h`, `30m`, `7d`) or an RFC 3339 time.
        #[arg(long, value_name = "DURATION")]
        until: String,
        /// Only sessions whose name starts with this.
        #[arg(long, value_name = "PREFIX", default_value = "")]
        prefix: String,
    },
}

/// Refuses a name that is not `<parcel>/<name>`, each part a plain name
/// (it names a file under `.dispatch/state/`).
fn check_name(name: &str) -> CliResult<()> {
    use dispatch_runtime::submit::check_session_name as plain;
    match name.split_once('/') {
        Some((p, n)) if plain(p).is_ok() && plain(n).is_ok() => Ok(()),
        _ => Err(CliError::input(format!(
            "`{name}` is not a session name: sessions are named <parcel>/<name> (hint: `dispatch session ls`)"
        ))),
    }
}

/// The cut of `--until`: sessions last used before it go.
fn until_ms(text: &str) -> CliResult<i64> {
    dispatch_core::time::parse_time(text, now_ms())
        .map_err(|e| CliError::input(format!("--until: {e}")))
}

pub async fn session(ctx: &Ctx, args: &SessionArgs) -> CliResult {
    let store = ctx.store()?;
    match &args.command {
        SessionCommand::Ls { prefix, format } => {
            let all = dispatch_store::session_summaries(&store, prefix).await?;
            print_sessions(&all, *format);
            Ok(0)
        }
        SessionCommand::Inspect { names } => {
            let mut found = Vec::new();
            for name in names {
                check_name(name)?;
                match dispatch_store::session_contents(&store, name).await? {
                    Some(c) => found.push(dispatch_server::api::wire_ops::session_detail(c)),
                    None => return Err(no_such(name)),
                }
            }
            print_json(&found);
            Ok(0)
        }
        SessionCommand::Rm { names } => {
            let mut code = 0;
            for name in names {
                let removed = match check_name(name) {
                    Ok(()) => remove_local(ctx, &store, name).await,
                    Err(e) => Err(e),
                };
                match removed.and_then(|n| said_removed(name, n)) {
                    Ok(()) => {
                        // This machine's copy of a process agent's file.
                        if let Some(f) = dispatch_runtime::submit::session_file(&ctx.layout, name) {
                            let _ = std::fs::remove_file(f);
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        code = EXIT_DISPATCH;
                    }
                }
            }
            Ok(code)
        }
        SessionCommand::Prune { until, prefix } => {
            let before = until_ms(until)?;
            let gone = store.expire_sessions(prefix, before).await?;
            for name in &gone {
                if let Some(f) = dispatch_runtime::submit::session_file(&ctx.layout, name) {
                    let _ = std::fs::remove_file(f);
                }
            }
            said_pruned(&gone);
            Ok(0)
        }
    }
}

/// Removes session `name`; a holder whose helper died is reconciled first
/// (it ends, and frees the session), as `dispatch run --session` does.
async fn remove_local(
    ctx: &Ctx,
    store: &dispatch_store::sqlite::SqliteStore,
    name: &str,
) -> CliResult<u64> {
    match store.remove_session(name).await {
        Err(StoreError::SessionBusy { run, .. }) => {
            let holder = dispatch_store::RunStore::get_run(store, &run).await?;
            let holder = dispatch_runtime::reconcile::reconcile(store, &ctx.layout, holder).await?;
            if !holder.state.is_terminal() {
                return Err(busy(name, run.as_str()));
            }
            store
                .remove_session(name)
                .await
                .map_err(|e| refused(name, e))
        }
        other => other.map_err(|e| refused(name, e)),
    }
}

fn no_such(name: &str) -> CliError {
    CliError::input(format!(
        "no session `{name}` (hint: `dispatch session ls` lists sessions)"
    ))
}

fn refused(name: &str, e: StoreError) -> CliError {
    match e {
        StoreError::SessionBusy { run, .. } => busy(name, run.as_str()),
        e => e.into(),
    }
}

fn busy(name: &str, run: &str) -> CliError {
    CliError::input(format!(
        "session `{name}` is in use by live run {run} (hint: wait for it to end, or `dispatch stop {run}` first)"
    ))
}

fn said_removed(name: &str, records: u64) -> CliResult<()> {
    if records == 0 {
        return Err(no_such(name));
    }
    println!("{name}");
    Ok(())
}

fn said_pruned(gone: &[String]) {
    for name in gone {
        println!("{name}");
    }
    eprintln!("removed {} session(s)", gone.len());
}

/// A listing: a table or JSON.
pub fn print_sessions(all: &[SessionSummary], format: Format) {
    if format == Format::Json {
        print_json(&json!(all));
        return;
    }
    let now = now_ms();
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let keeps = match (s.messages, s.file) {
                (Some(m), true) => format!("{m} messages, file"),
                (Some(m), false) => format!("{m} messages"),
                (None, true) => "file".into(),
                (None, false) => "-".into(),
            };
            vec![
                s.name.clone(),
                keeps,
                s.turns.to_string(),
                time_text(s.updated_at, now),
                s.last_run
                    .as_ref()
                    .map_or("-".into(), |r| r.short().to_string()),
                s.in_use_by
                    .as_ref()
                    .map_or("-".into(), |r| r.short().to_string()),
            ]
        })
        .collect();
    print_columns(
        &["NAME", "KEEPS", "TURNS", "USED", "LAST RUN", "IN USE BY"],
        &rows,
    );
}

impl super::remote::Remote {
    /// `dispatch session --host`: the server's session routes.
    pub(super) fn session(&self, args: &SessionArgs) -> CliResult {
        let encode = super::remote::encode;
        let path = |name: &str| {
            let (parcel, rest) = name.split_once('/').unwrap_or((name, ""));
            format!("/v1/sessions/{}/{}", encode(parcel), encode(rest))
        };
        match &args.command {
            SessionCommand::Ls { prefix, format } => {
                let q = match prefix.as_str() {
                    "" => String::new(),
                    p => format!("?prefix={}", encode(p)),
                };
                let answer: dispatch_api::SessionList =
                    self.typed("GET", &format!("/v1/sessions{q}"), None)?;
                let all: Vec<SessionSummary> =
                    super::remote::as_record("session listing", answer.sessions)?;
                print_sessions(&all, *format);
                Ok(0)
            }
            SessionCommand::Inspect { names } => {
                let mut found = Vec::new();
                for name in names {
                    check_name(name)?;
                    let one: dispatch_api::SessionDetail = self.typed("GET", &path(name), None)?;
                    found.push(one);
                }
                print_json(&found);
                Ok(0)
            }
            SessionCommand::Rm { names } => {
                let mut code = 0;
                for name in names {
                    let removed = check_name(name)
                        .and_then(|()| self.typed("DELETE", &path(name), None))
                        .and_then(|a: dispatch_api::SessionRemoved| said_removed(name, a.removed));
                    if let Err(e) = removed {
                        eprintln!("error: {e}");
                        code = EXIT_DISPATCH;
                    }
                }
                Ok(code)
            }
            SessionCommand::Prune { until, prefix } => {
                until_ms(until)?; // checked here first
                let request = dispatch_api::PruneSessions {
                    until: until.clone(),
                    prefix: Some(prefix.clone()),
                };
                let answer: dispatch_api::SessionsPruned =
                    self.typed_body("POST", "/v1/sessions/prune", &request)?;
                said_pruned(&answer.removed);
                Ok(0)
            }
        }
    }
}
