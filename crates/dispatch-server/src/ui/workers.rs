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
use crate::api::{AppState, workers};
use crate::presence::EVERY;

/// What a worker is doing, and its status color.
fn condition(w: &WorkerInfo, now: i64) -> (&'static str, &'static str) {
    let word = workers::state_of(w, now);
    let class = match word {
        "stopped" => "s-stopped",
        "silent" => "s-failed",
        _ => "s-running",
    };
    (word, class)
}

/// `GET /ui/workers`.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let now = now_ms();
    let workers = match workers::listed(&state).await {
        Ok(w) => w,
        Err(e) => return page::error(StatusCode::SERVICE_UNAVAILABLE, &e.message),
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
