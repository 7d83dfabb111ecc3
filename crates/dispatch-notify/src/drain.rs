//! Draining the outbox: escalations found due are enqueued, due
//! notifications are claimed, sent to the channels that have not had them
//! yet (at once, each with its deadline), and settled: done when every
//! channel has them, else due again after a backoff, until the tries are
//! spent. A notification held by a deliverer that died is taken over when
//! its hold ends (delivery is at least once; `Dispatch-Delivery` names it).

use std::sync::Arc;
use std::time::Duration;

use dispatch_core::{Ts, now_ms};
use dispatch_store::notifications::approval_escalated;
use dispatch_store::{Notification, NotificationStore, Settle, Store};

use crate::config::Config;
use crate::message::{RunInfo, render};
use crate::metrics::METRICS;
use crate::send::send;

/// Notifications claimed per round.
const BATCH: usize = 32;

/// A configured deliverer.
#[derive(Clone)]
pub struct Notifier {
    config: Arc<Config>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("config", &self.config.path)
            .finish_non_exhaustive()
    }
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Notifications claimed.
    pub claimed: usize,
    /// Of those, settled for good.
    pub settled: usize,
}

impl Notifier {
    pub fn new(config: Config) -> Result<Notifier, dispatch_http::HttpError> {
        Ok(Notifier {
            config: Arc::new(config),
            http: dispatch_http::client("notify")?,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How long a claimed notification is held: longer than one round of
    /// sends can take.
    fn hold_ms(&self) -> i64 {
        let ms = self.config.delivery.timeout.as_millis().saturating_mul(2) + 5_000;
        i64::try_from(ms).unwrap_or(i64::MAX)
    }

    /// One round at `now`: escalations, then up to a batch of due notifications.
    pub async fn round<S>(&self, store: &S, now: Ts) -> Round
    where
        S: Store + NotificationStore + ?Sized,
    {
        self.escalate(store, now).await;
        let due = match store.claim_notifications(now, self.hold_ms(), BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!("[notify] cannot read the notification outbox: {e}");
                return Round::default();
            }
        };
        let mut round = Round {
            claimed: due.len(),
            settled: 0,
        };
        let sends = due.iter().map(|n| self.deliver(store, n));
        for done in futures_util::future::join_all(sends).await {
            round.settled += usize::from(done);
        }
        round
    }

    /// Enqueues the escalation steps now due of every pending approval (a
    /// step enqueued before is not enqueued again).
    async fn escalate<S>(&self, store: &S, now: Ts)
    where
        S: Store + NotificationStore + ?Sized,
    {
        if self.config.escalate.is_empty() {
            return;
        }
        let pending = match store.list_approvals(None, true).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("[notify] cannot list pending approvals: {e}");
                return;
            }
        };
        for a in pending {
            for (n, step) in self.config.escalate.iter().enumerate() {
                let after = u64::try_from(step.after.as_millis()).unwrap_or(u64::MAX);
                let due_at = a
                    .requested_at
                    .saturating_add(i64::try_from(after).unwrap_or(i64::MAX));
                if due_at > now {
                    break;
                }
                let note = approval_escalated(&a, n + 1, after, now);
                if let Err(e) = store.enqueue_notification(&note).await {
                    tracing::warn!("[notify] cannot enqueue escalation {}: {e}", note.key);
                }
            }
        }
    }

    /// Sends `n` to the channels that have not had it and settles it;
    /// `true` when it is settled for good.
    async fn deliver<S>(&self, store: &S, n: &Notification) -> bool
    where
        S: Store + NotificationStore + ?Sized,
    {
        let max_age = i64::try_from(self.config.delivery.max_age.as_millis()).unwrap_or(i64::MAX);
        let stale = n.tries == 0 && now_ms().saturating_sub(n.created_at) > max_age;
        let route: &[String] = if stale { &[] } else { self.config.route(n) };
        let todo: Vec<&String> = route.iter().filter(|c| !n.sent.contains(c)).collect();
        let mut sent = n.sent.clone();
        let mut errors = Vec::new();
        if !todo.is_empty() {
            let info = match store.get_run(&n.run_id).await {
                Ok(run) => RunInfo {
                    parcel: Some(run.parcel_name.clone()),
                    status: Some(run.status().as_str().to_string()),
                },
                Err(_) => RunInfo::default(),
            };
            let message = render(n, &info);
            let timeout = self.config.delivery.timeout;
            let sends = todo.iter().map(|name| {
                let channel = &self.config.channels[name.as_str()];
                let message = &message;
                async move {
                    let r = send(&self.http, channel, message, &n.kind, &n.key, timeout).await;
                    (name, channel.kind(), r)
                }
            });
            for (name, kind, r) in futures_util::future::join_all(sends).await {
                match r {
                    Ok(()) => {
                        METRICS.sent(kind);
                        sent.push(name.to_string());
                    }
                    Err(e) => {
                        METRICS.failed(kind);
                        tracing::warn!("[notify] {} to channel `{name}`: {e}", n.kind);
                        errors.push(format!("{name}: {e}"));
                    }
                }
            }
        }
        let tries = n.tries + u32::from(!todo.is_empty());
        let now = now_ms();
        let outcome = match (errors.is_empty(), tries >= self.config.delivery.tries) {
            (true, _) if route.is_empty() => Some("skipped"),
            (true, _) => Some("delivered"),
            (false, true) => {
                METRICS.given_up();
                Some("failed")
            }
            (false, false) => None,
        };
        if stale {
            errors.push("older than delivery.max_age when first tried: not sent".into());
        }
        let settle = Settle {
            sent,
            tries,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
            outcome: outcome.map(str::to_string),
            next_at: now.saturating_add(self.backoff_ms(tries)),
            at: now,
        };
        if let Err(e) = store.settle_notification(n.seq, &settle).await {
            tracing::warn!("[notify] cannot record the delivery of {}: {e}", n.key);
        }
        outcome.is_some()
    }

    /// The wait after try `tries`: `backoff`, doubled per try, at most `max_backoff`.
    fn backoff_ms(&self, tries: u32) -> i64 {
        let d = &self.config.delivery;
        let factor = 1u32 << tries.saturating_sub(1).min(20);
        let wait = d.backoff.saturating_mul(factor).min(d.max_backoff);
        i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)
    }

    /// Rounds every `delivery.poll` (at once again after a full batch)
    /// until `stop` completes.
    pub async fn run_until<S>(&self, store: &S, stop: impl std::future::Future<Output = ()>)
    where
        S: Store + NotificationStore + ?Sized,
    {
        tokio::pin!(stop);
        loop {
            let round = self.round(store, now_ms()).await;
            let wait = match round.claimed == BATCH {
                true => Duration::ZERO,
                false => self.config.delivery.poll,
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Whether anything is left to deliver at `now`: a notification not
    /// settled, or a pending approval with an escalation step still ahead.
    pub async fn has_work<S>(&self, store: &S, now: Ts) -> bool
    where
        S: Store + NotificationStore + ?Sized,
    {
        if let Ok(counts) = store.notification_counts().await
            && counts.pending > 0
        {
            return true;
        }
        let Some(last) = self.config.escalate.last() else {
            return false;
        };
        let last_ms = i64::try_from(last.after.as_millis()).unwrap_or(i64::MAX);
        match store.list_approvals(None, true).await {
            Ok(pending) => pending
                .iter()
                .any(|a| a.requested_at.saturating_add(last_ms) >= now),
            Err(_) => false,
        }
    }

    /// Rounds until nothing is due for `linger`, or `linger` has passed
    /// since this began: what a local run's helper does after its run ended.
    pub async fn linger<S>(&self, store: &S)
    where
        S: Store + NotificationStore + ?Sized,
    {
        let deadline = tokio::time::Instant::now() + self.config.delivery.linger;
        while tokio::time::Instant::now() < deadline {
            self.round(store, now_ms()).await;
            let open = match store.list_notifications(BATCH * 4).await {
                Ok(list) => list.iter().any(|n| n.done_at.is_none()),
                Err(_) => false,
            };
            if !open {
                return;
            }
            tokio::time::sleep(
                self.config
                    .delivery
                    .poll
                    .min(deadline - tokio::time::Instant::now()),
            )
            .await;
        }
    }
}
