//! The notification outbox on the approvals page: how many messages are in
//! each state, and the ones a channel has not taken yet (retrying, or given
//! up on) with their last error. Nothing until a deliverer has tried a
//! message (without a notifications file, nothing is ever tried).

use maud::{Markup, html};

use super::fmt;
use crate::SharedStore;

/// Messages looked at for the list.
const NEWEST: usize = 200;

/// The panel; empty when the outbox has never held anything.
pub async fn panel(store: &SharedStore) -> Markup {
    let (Ok(counts), Ok(newest)) = (
        store.notification_counts().await,
        store.list_notifications(NEWEST).await,
    ) else {
        return html! {};
    };
    // Shown once a deliverer has tried anything: a server without a
    // notifications file leaves its outbox untried, and says nothing.
    let tried = counts.retrying + counts.delivered + counts.failed + counts.skipped;
    if tried == 0 {
        return html! {};
    }
    let troubled: Vec<_> = newest
        .iter()
        .filter(|n| n.last_error.is_some() && n.outcome.as_deref() != Some("delivered"))
        .take(20)
        .collect();
    html! {
        section.notifications aria-label="Notifications" {
            h2 { "Notifications" }
            p.muted {
                (counts.delivered) " delivered · " (counts.pending) " pending ("
                (counts.retrying) " retrying) · " (counts.failed) " given up · "
                (counts.skipped) " not routed"
            }
            @if !troubled.is_empty() {
                table {
                    thead { tr { th { "Run" } th { "Event" } th { "Created" } th { "Tries" } th { "State" } th { "Last error" } } }
                    tbody {
                        @for n in &troubled {
                            tr {
                                td { (fmt::run_link(&n.run_id)) }
                                td { (n.kind) }
                                td { (fmt::time(n.created_at)) }
                                td { (n.tries) }
                                td { (n.outcome.as_deref().unwrap_or("retrying")) }
                                td { (n.last_error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    }
}
