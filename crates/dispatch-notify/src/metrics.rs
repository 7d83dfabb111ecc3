//! This process's delivery counters (the outbox's counts, cluster-wide,
//! come from the store: [`dispatch_store::NotificationStore::notification_counts`]).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use dispatch_store::NotificationCounts;

/// The process's counters.
pub static METRICS: Counters = Counters::new();

/// Sends by channel kind and result, and notifications given up on.
#[derive(Debug)]
pub struct Counters {
    sent: [AtomicU64; 3],
    failed: [AtomicU64; 3],
    given_up: AtomicU64,
}

const KINDS: [&str; 3] = ["webhook", "slack", "email"];

impl Counters {
    const fn new() -> Counters {
        Counters {
            sent: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            failed: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            given_up: AtomicU64::new(0),
        }
    }

    fn at(kind: &str) -> usize {
        KINDS.iter().position(|k| *k == kind).unwrap_or(0)
    }

    pub(crate) fn sent(&self, kind: &str) {
        self.sent[Self::at(kind)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, kind: &str) {
        self.failed[Self::at(kind)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn given_up(&self) {
        self.given_up.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters, and the outbox's `counts` when known, as Prometheus text.
    pub fn render(&self, counts: Option<NotificationCounts>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP dispatch_notification_sends_total Notifications this process sent, by channel kind and result.\n\
             # TYPE dispatch_notification_sends_total counter"
        );
        for (i, kind) in KINDS.iter().enumerate() {
            for (result, c) in [("ok", &self.sent[i]), ("error", &self.failed[i])] {
                let _ = writeln!(
                    out,
                    "dispatch_notification_sends_total{{channel=\"{kind}\",result=\"{result}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP dispatch_notifications_given_up_total Notifications this process gave up on after their last try.\n\
             # TYPE dispatch_notifications_given_up_total counter\n\
             dispatch_notifications_given_up_total {}",
            self.given_up.load(Ordering::Relaxed)
        );
        if let Some(c) = counts {
            let _ = writeln!(
                out,
                "# HELP dispatch_notifications Notifications in the outbox, by state.\n\
                 # TYPE dispatch_notifications gauge"
            );
            for (state, n) in [
                ("pending", c.pending),
                ("retrying", c.retrying),
                ("delivered", c.delivered),
                ("failed", c.failed),
                ("skipped", c.skipped),
            ] {
                let _ = writeln!(out, "dispatch_notifications{{state=\"{state}\"}} {n}");
            }
        }
        out
    }
}
