//! Approvals waiting across all runs (`GET /v1/approvals`), each with
//! approve / deny.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::fmt;
use super::page::{self, Nav};
use super::run_parts::decide_form;
use super::session::Session;
use crate::api::AppState;
use dispatch_store::TokenScope;

/// `GET /ui/approvals`.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let pending = match state.store.list_approvals(None, true).await {
        Ok(list) => list,
        Err(e) => {
            return page::error(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                &crate::api::store_message(&e),
            );
        }
    };
    let visible = crate::auth::visible(session.token.as_ref(), None).unwrap_or_default();
    let pending = match crate::api::reliability::in_projects(&state, pending, &visible).await {
        Ok(list) => list,
        Err(e) => return page::error(e.status, &e.message),
    };
    let outbox = super::notifications::panel(&state.store).await;
    let body = html! {
        h1 { "Approvals" }
        @if pending.is_empty() {
            p.muted { "Nothing is waiting for a decision." }
        }
        @for (a, project) in &pending {
            article.approval data-approval=(a.id) aria-label={ "Approval " (a.id) } {
                p {
                    strong { (a.id) } " — " (a.summary)
                }
                p.muted {
                    "Run " (fmt::run_link(&a.run_id)) " · attempt " (a.attempt)
                    " · asked " (fmt::time(a.requested_at))
                    @if let Some(d) = a.deadline { " · denied automatically " (fmt::time(d)) }
                }
                @if let Some(details) = &a.details {
                    details { summary { "What is asked" } pre { (fmt::json(details)) } }
                }
                @if session.can(project, TokenScope::Approve) {
                    (decide_form(&a.run_id, a, &session, Some("/ui/approvals")))
                }
            }
        }
        (outbox)
    };
    page::page("Approvals", Nav::Approvals, &session, body)
}
