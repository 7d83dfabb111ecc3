//! The sections of the run page below its header and timeline. Everything
//! here that an agent produced (outputs, tool results, event data) is
//! untrusted text: maud escapes it.

use dispatch_core::{RunId, Ts};
use dispatch_runtime::report::{ModelCall, ToolCall};
use dispatch_store::{Artifact, Event, Run};
use maud::{Markup, html};
use serde_json::Value;

use super::fmt;
use super::run::RunView;
use super::session::{Session, csrf_field};

/// Events the table shows at once.
const EVENTS_PAGE: usize = 200;
/// Tool calls shown in full (the newest).
const TOOL_CALLS: usize = 200;
/// Characters of a tool's input or output shown before "more".
const CLIP: usize = 4000;

/// Approvals: pending ones with approve / deny, decided ones listed.
pub fn approvals(view: &RunView, session: &Session) -> Markup {
    if view.report.approvals.is_empty() {
        return html! {};
    }
    let live = !view.run().state.is_terminal();
    html! {
        h2 #approvals-title { "Approvals" }
        section aria-labelledby="approvals-title" {
            @for a in &view.report.approvals {
                div.approval data-approval=(a.id) {
                    p {
                        strong { (a.id) } " — " (a.summary) " "
                        span.muted { "asked " (fmt::time(a.requested_at)) }
                        @if let Some(d) = &a.decision {
                            " · " span class={ "status " (if d == "approve" { "s-succeeded" } else { "s-failed" }) } { (d) }
                            @if let Some(by) = &a.decided_by { " by " (by) }
                            @if let Some(r) = &a.rationale { ": " (r) }
                        }
                    }
                    @if let Some(details) = &a.details {
                        details { summary { "What is asked" } pre { (fmt::json(details)) } }
                    }
                    @if a.decision.is_none() && live && session.can(&view.run().project, dispatch_store::TokenScope::Approve) {
                        (decide_form(&view.run().id, a, session, None))
                    }
                }
            }
        }
    }
}

/// The approve / deny form of one pending approval.
pub fn decide_form(
    run: &RunId,
    a: &dispatch_store::Approval,
    session: &Session,
    back: Option<&str>,
) -> Markup {
    let field = format!("rationale-{}-{}", run.short(), a.id);
    let arguments = a
        .details
        .as_ref()
        .and_then(|d| d.get("arguments"))
        .map(fmt::json);
    html! {
        form.decide method="post" action={ "/ui/runs/" (run) "/approvals/" (a.id) } {
            (csrf_field(session))
            @if let Some(back) = back { input type="hidden" name="back" value=(back); }
            div.field {
                label for=(field) { "Rationale (optional)" }
                textarea id=(field) name="rationale" rows="2" {}
            }
            @if let Some(args) = arguments {
                details {
                    summary { "Edit the tool's input before approving" }
                    label for={ "input-" (field) } { "Input (JSON)" }
                    textarea id={ "input-" (field) } name="input" rows="4" spellcheck="false" { (args) }
                }
            }
            div.actions {
                button.primary type="submit" name="decision" value="approve" { "Approve" }
                button.danger type="submit" name="decision" value="deny" { "Deny" }
            }
        }
    }
}

/// The run's output, if any.
pub fn output(run: &Run) -> Markup {
    html! {
        @if let Some(out) = &run.output {
            h2 #output-title { "Output" }
            section aria-labelledby="output-title" {
                pre #output { (match out { Value::String(s) => s.clone(), v => fmt::json(v) }) }
            }
        }
    }
}

fn clipped(text: &str) -> Markup {
    let short = fmt::clip(text, CLIP);
    html! {
        @if short.len() < text.len() {
            details { summary { pre { (short) } } pre { (text) } }
        } @else {
            pre { (text) }
        }
    }
}

/// Tool calls with their input and output (as the run's report has them).
pub fn tool_calls(calls: &[ToolCall]) -> Markup {
    if calls.is_empty() {
        return html! {};
    }
    let total = calls.len();
    let calls = &calls[total.saturating_sub(TOOL_CALLS)..];
    html! {
        h2 #tools-title { "Tool calls (" (total) ")" }
        section #tool-calls aria-labelledby="tools-title" {
            @if total > calls.len() {
                p.muted { "The last " (calls.len()) " shown; the events table has the earlier ones." }
            }
            @for d in calls {
                details.tool-call {
                    summary {
                        strong { (d.name.as_deref().unwrap_or("?")) }
                        " · attempt " (d.attempt)
                        " · " (fmt::duration(d.duration_ms))
                        @if d.ok == Some(false) { " · " span.status.s-failed { "failed" } }
                        @if let Some(e) = &d.edited_by { " · edited by " (e.by) }
                        " · " (fmt::time(d.at))
                    }
                    h3.muted { "Input" }
                    (clipped(&fmt::json(&d.input)))
                    @if let Some(e) = &d.edited_by {
                        p.muted {
                            "What ran: edited by " (e.by) " (approval "
                            (e.approval) ", " (fmt::time(e.at)) ")."
                        }
                        h3.muted { "Requested by the model" }
                        (clipped(&fmt::json(d.requested_input.as_ref().unwrap_or(&Value::Null))))
                    }
                    h3.muted { "Output" }
                    (clipped(&match &d.output { Value::String(s) => s.clone(), v => fmt::json(v) }))
                }
            }
        }
    }
}

/// Model calls shown with their conversation (the newest).
const CONVERSATIONS: usize = 50;

/// The model calls whose conversations the page shows (the newest).
pub fn shown_calls(calls: &[ModelCall]) -> impl Iterator<Item = &ModelCall> {
    calls.iter().skip(calls.len().saturating_sub(CONVERSATIONS))
}

/// Model calls: model, tokens, latency, finish reason, and each one's
/// conversation (messages in, the answer out).
pub fn model_calls(calls: &[ModelCall], layout: &dispatch_runtime::Layout, id: &RunId) -> Markup {
    if calls.is_empty() {
        return html! {};
    }
    let n = |d: &ModelCall, k: &str| d.u64(k).map(fmt::count).unwrap_or_else(|| "-".into());
    let shown = calls.len().saturating_sub(CONVERSATIONS);
    html! {
        h2 #models-title { "Model calls (" (calls.len()) ")" }
        div.table-wrap { table aria-labelledby="models-title" {
            thead { tr {
                th scope="col" { "Model" } th scope="col" .num { "Attempt" }
                th scope="col" .num { "In" } th scope="col" .num { "Out" }
                th scope="col" .num { "Latency" } th scope="col" .num.hide-narrow { "First token" }
                th scope="col" { "Finish" } th scope="col" .hide-narrow { "At" }
            } }
            tbody { @for d in calls {
                tr {
                    td { (d.str("model").unwrap_or("?")) }
                    td.num { (d.attempt) }
                    td.num { (n(d, "input_tokens")) }
                    td.num { (n(d, "output_tokens")) }
                    td.num { (fmt::duration(d.get("latency_ms").as_i64())) }
                    td.num.hide-narrow { (fmt::duration(d.get("first_token_ms").as_i64())) }
                    td {
                        (d.str("finish_reason").unwrap_or("-"))
                        @if d.estimated() { " (estimated)" }
                    }
                    td.hide-narrow { (fmt::time(d.at)) }
                }
            } }
        } }
        section #conversations aria-label="Conversations of the model calls" {
            @if shown > 0 { p.muted { "The conversations of the last " (CONVERSATIONS) " calls." } }
            @for (i, d) in calls.iter().enumerate().skip(shown) {
                details.model-call data-seq=(d.seq) {
                    summary {
                        "Call " (i + 1) ": " strong { (d.str("model").unwrap_or("?")) }
                        " · attempt " (d.attempt) " · " (fmt::time(d.at))
                    }
                    (super::conversation::render(layout, id, d))
                }
            }
        }
    }
}

/// The files the run produced.
pub fn artifacts(artifacts: &[Artifact], id: &RunId) -> Markup {
    if artifacts.is_empty() {
        return html! {};
    }
    html! {
        h2 #artifacts-title { "Artifacts" }
        div.table-wrap { table aria-labelledby="artifacts-title" {
            thead { tr { th scope="col" { "Name" } th scope="col" .num { "Size" } th scope="col" { "SHA-256" } } }
            tbody { @for a in artifacts { tr {
                td { a.artifact href={ "/ui/runs/" (id) "/artifacts/" (a.sha256) } download=(a.name.rsplit('/').next().unwrap_or(&a.name)) { code { (a.name) } } }
                td.num { (fmt::count(a.size)) " B" }
                td { code title=(a.sha256) { (fmt::clip(&a.sha256, 16)) } (fmt::copy(&a.sha256, "Copy digest")) }
            } } }
        } }
    }
}

/// Runs started by this one.
pub fn children(children: &[Run], session: &Session, now: Ts) -> Markup {
    if children.is_empty() {
        return html! {};
    }
    html! {
        h2 #children-title { "Child runs" }
        div.table-wrap { table aria-labelledby="children-title" {
            thead { tr {
                th scope="col" { "Run" } th scope="col" { "Parcel" } th scope="col" { "Status" }
                th scope="col" .hide-narrow { "Created" } th scope="col" .num { "Duration" }
                th scope="col" .num { "Tokens" } th scope="col" .num { "Cost" }
                th scope="col" .num.hide-narrow { "Attempt" } th scope="col" { span.skip { "Actions" } }
            } }
            tbody { (super::runs::rows(children, session, now)) }
        } }
    }
}

/// The event log, a page at a time (the last page first).
pub fn events(events: &[Event], from: Option<usize>, id: &RunId) -> Markup {
    let total = events.len();
    let start = from
        .unwrap_or_else(|| total.saturating_sub(EVENTS_PAGE))
        .min(total);
    let end = (start + EVENTS_PAGE).min(total);
    html! {
        h2 #events-title { "Events (" (total) @if total >= super::run::MAX_EVENTS { "+" } ")" }
        nav.pager aria-label="Event pages" {
            @if start > 0 {
                a href={ "/ui/runs/" (id) "?events_from=" (start.saturating_sub(EVENTS_PAGE)) "#events-title" } { "« Earlier" }
            }
            span.muted { (start + usize::from(total > 0)) "–" (end) " of " (total) }
            @if end < total {
                a href={ "/ui/runs/" (id) "?events_from=" (end) "#events-title" } { "Later »" }
            }
        }
        div.table-wrap { table #events aria-labelledby="events-title" {
            thead { tr {
                th scope="col" .num { "#" } th scope="col" { "Type" } th scope="col" .num { "Attempt" }
                th scope="col" { "At" } th scope="col" { "Data" }
            } }
            tbody { @for e in &events[start..end] { tr {
                td.num { (e.seq) }
                td { code { (e.event.kind) } }
                td.num { (e.event.attempt) }
                td { (fmt::time(e.event.at)) }
                td { code.mono { (fmt::clip(&e.event.data.to_string(), 300)) } }
            } } }
        } }
    }
}

/// The bill of materials of each attempt (`GET /v1/runs/{id}/bom`): the
/// latest in full, the earlier ones folded.
pub fn bom(bom: Option<&dispatch_api::Bom>) -> Markup {
    let Some(bom) = bom.filter(|b| !b.attempts.is_empty()) else {
        return html! {};
    };
    let attempts = &bom.attempts;
    let latest = &bom.bom;
    let models: Vec<&Value> = latest["models"].as_array().into_iter().flatten().collect();
    let tools: Vec<&Value> = latest["tools"].as_array().into_iter().flatten().collect();
    let word = |v: &Value, k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v[k].to_string())
    };
    html! {
        h2 #bom-title { "Bill of materials" }
        section #bom aria-labelledby="bom-title" {
            @if !models.is_empty() {
                p { "Models: " @for (i, m) in models.iter().enumerate() {
                    @if i > 0 { ", " }
                    code { (word(m, "model")) }
                    span.muted { " (" (m["provider"].as_str().unwrap_or("?")) @if let Some(h) = m["host"].as_str() { ", " (h) } ")" }
                } }
            }
            @if !tools.is_empty() {
                div.table-wrap { table aria-label="Tools" {
                    thead { tr { th scope="col" { "Tool" } th scope="col" { "Kind" } th scope="col" { "Schema digest" } } }
                    tbody { @for t in &tools { tr {
                        td { code { (word(t, "name")) } }
                        td { (t["kind"].as_str().unwrap_or("-")) }
                        td { @if let Some(d) = t["schema_sha256"].as_str() { code title=(d) { (fmt::clip(d, 16)) } } @else { "-" } }
                    } } }
                } }
            }
            details {
                summary { "Everything recorded (" (attempts.len()) " attempt" @if attempts.len() != 1 { "s" } ")" }
                @for a in attempts {
                    h3.muted { "Attempt " (a.attempt) }
                    pre { (fmt::json(&a.bom)) }
                }
            }
        }
    }
}
