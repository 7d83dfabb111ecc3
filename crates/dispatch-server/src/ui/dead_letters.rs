//! Dead letters (`GET /v1/dead-letters`), each with replay.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use dispatch_core::RunId;
use maud::html;

use super::fmt;
use super::page::{self, Nav};
use super::session::{Session, csrf_field};
use crate::api::AppState;
use crate::api::reliability::dead_letter_docs;

/// `GET /ui/dead-letters`.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let visible = crate::auth::visible(session.token.as_ref(), None).unwrap_or_default();
    let letters = match dead_letter_docs(&state, &visible).await {
        Ok(l) => l,
        Err(e) => return page::error(e.status, &e.message),
    };
    let id_of = |s: &str| s.parse::<RunId>().ok();
    let body = html! {
        h1 { "Dead letters" }
        @if letters.is_empty() { p.muted { "No run has exhausted its retries." } }
        @else {
            div.table-wrap { table #dead-letters {
                thead { tr {
                    th scope="col" { "Run" } th scope="col" { "Parcel" } th scope="col" { "Reason" }
                    th scope="col" .num { "Attempts" } th scope="col" .hide-narrow { "At" }
                    th scope="col" { "Replayed by" } th scope="col" { span.skip { "Actions" } }
                } }
                tbody { @for l in &letters {
                    @let id = id_of(&l.run_id);
                    tr {
                        td { @if let Some(id) = id.as_ref().filter(|_| session.can(&l.project, dispatch_store::TokenScope::Run)) { (fmt::run_link(id)) } }
                        td { (l.parcel_name) }
                        td { (fmt::clip(&l.reason, 200)) }
                        td.num { (l.attempts) }
                        td.hide-narrow { (fmt::time(l.at)) }
                        td { @if let Some(by) = l.replayed_by.as_deref().and_then(id_of) { (fmt::run_link(&by)) } @else { span.muted { "-" } } }
                        td { @if let Some(id) = &id {
                            form method="post" action={ "/ui/dead-letters/" (id) "/replay" }
                                data-confirm={ "Replay run " (id.short()) " as a new run?" } {
                                (csrf_field(&session))
                                button type="submit" aria-label={ "Replay dead letter " (id.short()) } { "Replay" }
                            }
                        } }
                    }
                } }
            } }
        }
    };
    page::page("Dead letters", Nav::DeadLetters, &session, body)
}
