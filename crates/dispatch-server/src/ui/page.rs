//! The frame every page shares: head, navigation, main landmark.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::assets;
use super::session::{Session, csrf_field};

/// The sections in the navigation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nav {
    Runs,
    Approvals,
    DeadLetters,
    Services,
    Workers,
    Usage,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) " · Dispatch" }
            link rel="stylesheet" href=(assets::css_url());
            link rel="icon" href=(assets::icon_url());
            script src=(assets::js_url()) defer {}
        }
    }
}

/// A dashboard page: navigation (with `current` marked) and `body`.
pub fn page(title: &str, current: Nav, session: &Session, body: Markup) -> Response {
    let link = |nav: Nav, href: &str, label: &str| {
        html! {
            a href=(href) aria-current=[(nav == current).then_some("page")] { (label) }
        }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/runs" { "Dispatch" }
                    nav aria-label="Main" {
                        (link(Nav::Runs, "/ui/runs", "Runs"))
                        (link(Nav::Approvals, "/ui/approvals", "Approvals"))
                        (link(Nav::DeadLetters, "/ui/dead-letters", "Dead letters"))
                        (link(Nav::Services, "/ui/services", "Services"))
                        (link(Nav::Workers, "/ui/workers", "Workers"))
                        (link(Nav::Usage, "/ui/usage", "Usage"))
                    }
                    @if session.logged_in {
                        form.logout method="post" action="/ui/logout" {
                            (csrf_field(session))
                            @if let Some(who) = &session.who { span.who { (who) } }
                            button.link type="submit" { "Log out" }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page without navigation (the login form).
pub fn bare(title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { main #main { (body) } }
        }
    };
    Html(markup.into_string()).into_response()
}

/// An error page with `status`: one line saying what is wrong.
pub fn error(status: StatusCode, message: &str) -> Response {
    let body = html! {
        section.error-page {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("error")) }
            p.notice.error role="alert" { (message) }
            p { a href="/ui/runs" { "Back to the runs" } }
        }
    };
    (status, bare("Error", body)).into_response()
}

/// Any other `/ui/…` path.
pub async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such page (hint: the dashboard has Runs, Approvals, Dead letters, Services, Workers and Usage)",
    )
}
