//! The workers page: every worker seen in the last day (this server's own
//! and `dispatch worker` processes), from [`dispatch_store::WorkerStore`]:
//! name, labels, slots used of total, the age of its newest lease renewal,
//! when it was last seen, and whether it is working, stopped or silent.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use dispatch_core::now_ms;
use dispatch_store::WorkerInfo;
use maud::{Markup, html};

use super::fmt;
use super::page::{self, Nav};
use super::session::Session;
use crate::api::AppState;
use crate::presence::EVERY;

/// Workers not seen for this long are left out.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// What a worker is doing, as far as the store knows.
fn condition(w: &WorkerInfo, now: i64) -> (&'static str, &'static str) {
    let silent_after = i64::try_from(EVERY.as_millis()).unwrap_or(5000) * 3;
    if w.beat.stopped_at.is_some() {
        ("stopped", "s-stopped")
    } else if now - w.beat.seen_at > silent_after {
        ("silent", "s-failed")
    } else {
        ("working", "s-running")
    }
}

/// `GET /ui/workers`.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let now = now_ms();
    let workers = match state.store.list_workers(now - DAY_MS).await {
        Ok(w) => w,
        Err(e) => return page::error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let body = html! {
        h1 { "Workers" }
        @if workers.is_empty() {
            p.muted { "No worker was seen in the last day. " code { "dispatch worker" } " starts one; " code { "dispatch server" } " runs its own unless " code { "--workers 0" } "." }
        } @else {
            div.table-wrap { table #workers {
                caption.skip { "Workers seen in the last day" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Labels" }
                    th scope="col" .num { "Slots used" } th scope="col" .num { "Lease age" }
                    th scope="col" { "Last seen" } th scope="col" .hide-narrow { "Started" }
                } }
                tbody { @for w in &workers { (row(w, now)) } }
            } }
            p.muted { "A worker says it is there every " (EVERY.as_secs()) " s; one not heard from for three times that is silent (its leases expire and its runs go back to the queue)." }
        }
    };
    page::page("Workers", Nav::Workers, &session, body)
}

fn row(w: &WorkerInfo, now: i64) -> Markup {
    let (word, class) = condition(w, now);
    html! {
        tr data-worker=(w.beat.name) data-state=(word) {
            th scope="row" { code { (w.beat.name) } }
            td { span class={ "status " (class) } { (word) } }
            td { @if w.beat.labels.is_empty() { span.muted { "none" } } @else { (w.beat.labels.join(", ")) } }
            td.num data-used=(w.held) data-slots=(w.beat.slots) { (w.held) " / " (w.beat.slots) }
            td.num { (fmt::duration(w.renewed_at.map(|r| now - r))) }
            td { (fmt::time(w.beat.seen_at)) span.muted { " (" (fmt::duration(Some(now - w.beat.seen_at))) " ago)" } }
            td.hide-narrow { (fmt::time(w.beat.started_at)) }
        }
    }
}
