//! Notifications that reach people: a new approval, its escalation steps, a
//! failed run and a budget mark crossed, sent to webhooks (JSON, signed with
//! HMAC-SHA256), Slack incoming webhooks and e-mail over SMTP.
//!
//! The store writes each notification into its outbox in the same
//! transaction as the change that caused it ([`dispatch_store::NotificationStore`]);
//! a [`Notifier`] drains it: `dispatch server` all the time, a local run's
//! helper while it lives (and for a while after its run ended). Sending
//! never blocks a run: a channel that fails is retried with backoff, and the
//! outcome is kept with the notification (`dispatch notify`, `/metrics`).
//!
//! The configuration is `notifications.toml` in the state directory, or the
//! file `$DISPATCH_NOTIFICATIONS` names ([`config`]).

pub mod config;
mod drain;
mod error;
pub mod message;
pub mod metrics;
pub mod send;

pub use config::Config;
pub use drain::{Notifier, Round};
pub use error::ConfigError;

/// The notifier configured under state directory `root`: `None` without a
/// configuration file; an error (one line) when it does not load.
pub fn configured(root: &std::path::Path) -> Result<Option<Notifier>, String> {
    let Some(config) = config::load_in(root).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    Notifier::new(config)
        .map(Some)
        .map_err(|e| format!("notifications: {e}"))
}
