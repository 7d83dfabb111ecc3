//! `dispatch notify ls|check|test`: the local notification outbox,
//! and the configuration (`notifications.toml`) checked, or tried on every
//! channel with a test message.

use clap::{Args, Subcommand};
use dispatch_core::now_ms;
use dispatch_core::time::human_ago;
use dispatch_store::{Notification, NotificationStore};
use serde_json::json;

use crate::cli::Format;
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{print_columns, print_json};

#[derive(Debug, Args)]
pub struct NotificationsArgs {
    #[command(subcommand)]
    pub command: NotificationsCommand,
}

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// List the newest notifications of the outbox and what became of them (the server's under --host).
    #[command(visible_alias = "list")]
    Ls {
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Load and check the configuration (`$DISPATCH_NOTIFICATIONS`, else `notifications.toml` in the state directory).
    Check,
    /// Send a test message to every configured channel (or those named) and say how each went.
    Test {
        /// Channels to try (default: all).
        channels: Vec<String>,
    },
}

pub async fn notifications(ctx: &Ctx, args: &NotificationsArgs) -> CliResult {
    match &args.command {
        NotificationsCommand::Ls { limit, format } => ls(ctx, *limit, *format).await,
        NotificationsCommand::Check => check(ctx),
        NotificationsCommand::Test { channels } => test(ctx, channels).await,
    }
}

async fn ls(ctx: &Ctx, limit: usize, format: Format) -> CliResult {
    let list = match ctx.existing_store()? {
        Some(store) => store.list_notifications(limit).await?,
        None => Vec::new(),
    };
    print(&list, format);
    Ok(0)
}

impl super::remote::Remote {
    /// `dispatch notify ls --host`: the server's outbox, printed as the
    /// local one; `check` and `test` read this machine's configuration,
    /// which is not the server's, so they stay local.
    pub(super) fn notify(&self, args: &NotificationsArgs) -> CliResult {
        let NotificationsCommand::Ls { limit, format } = &args.command else {
            return Err(CliError::input(
                "`dispatch notify check` and `notify test` read this machine's notifications.toml, not the server's (hint: run them on the server's machine, without --host)",
            ));
        };
        let answer: dispatch_api::NotificationList =
            self.typed("GET", &format!("/v1/notifications?limit={limit}"), None)?;
        let list: Vec<Notification> =
            super::remote::as_record("notification listing", answer.notifications)?;
        print(&list, *format);
        Ok(0)
    }
}

/// The outbox as a table (or JSON), newest first.
fn print(list: &[Notification], format: Format) {
    if format == Format::Json {
        print_json(&list);
        return;
    }
    let now = now_ms();
    let ids: Vec<&str> = list.iter().map(|n| n.run_id.as_str()).collect();
    let shown = dispatch_core::id::abbreviate(&ids);
    let rows: Vec<Vec<String>> = list
        .iter()
        .zip(shown)
        .map(|(n, short)| {
            vec![
                short.to_string(),
                n.kind.clone(),
                human_ago(n.created_at, now),
                state(n, now),
                n.sent.join(","),
                n.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_columns(
        &[
            "RUN ID",
            "EVENT",
            "CREATED",
            "STATE",
            "SENT TO",
            "LAST ERROR",
        ],
        &rows,
    );
}

fn state(n: &Notification, now: i64) -> String {
    match (&n.outcome, n.tries) {
        (Some(outcome), _) => outcome.clone(),
        (None, 0) => "pending".into(),
        (None, tries) => format!(
            "retrying (try {} in {})",
            tries + 1,
            dispatch_core::time::human_duration((n.due_at - now).max(0))
        ),
    }
}

fn check(ctx: &Ctx) -> CliResult {
    match dispatch_notify::config::load_in(ctx.layout.root()) {
        Err(e) => Err(CliError::input(e.to_string())),
        Ok(None) => {
            eprintln!(
                "no notifications are configured (set {} or write {})",
                dispatch_notify::config::ENV,
                ctx.layout
                    .root()
                    .join(dispatch_notify::config::FILE)
                    .display()
            );
            Ok(0)
        }
        Ok(Some(c)) => {
            let channels: Vec<String> = c
                .channels
                .iter()
                .map(|(name, ch)| format!("{name} ({})", ch.kind()))
                .collect();
            eprintln!(
                "{}: loads; channels: {}; approvals → [{}], {} escalation step(s), failures → [{}], budget {:?} % → [{}]",
                c.path.display(),
                channels.join(", "),
                c.approvals.notify.join(", "),
                c.escalate.len(),
                c.failures.notify.join(", "),
                c.budget_percent,
                c.budget.notify.join(", "),
            );
            Ok(0)
        }
    }
}

async fn test(ctx: &Ctx, wanted: &[String]) -> CliResult {
    let Some(config) = dispatch_notify::config::load_in(ctx.layout.root())
        .map_err(|e| CliError::input(e.to_string()))?
    else {
        return Err(CliError::input(format!(
            "no notifications are configured (hint: write {})",
            ctx.layout
                .root()
                .join(dispatch_notify::config::FILE)
                .display()
        )));
    };
    if let Some(unknown) = wanted.iter().find(|w| !config.channels.contains_key(*w)) {
        return Err(CliError::input(format!(
            "no channel `{unknown}` in {}",
            config.path.display()
        )));
    }
    let http = dispatch_http::client("notify").map_err(|e| CliError::input(e.to_string()))?;
    let message = dispatch_notify::message::Message {
        title: "Test notification from dispatch".into(),
        lines: vec!["If you read this, this channel works.".into()],
        document: json!({"id": "test", "event": "test", "at": now_ms(),
            "title": "Test notification from dispatch", "text": "If you read this, this channel works."}),
    };
    let mut failed = 0;
    for (name, channel) in &config.channels {
        if !wanted.is_empty() && !wanted.contains(name) {
            continue;
        }
        let r = dispatch_notify::send::send(
            &http,
            channel,
            &message,
            "test",
            "test",
            config.delivery.timeout,
        )
        .await;
        match r {
            Ok(()) => eprintln!("{name} ({}): sent", channel.kind()),
            Err(e) => {
                failed += 1;
                eprintln!("{name} ({}): {e}", channel.kind());
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
