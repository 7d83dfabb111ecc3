//! The workflow page of a workflow run: its communication graph (as
//! `GET /v1/runs/{id}/graph` answers it: `api::wire_runs::workflow_graph`)
//! as SVG, each agent's usage and child runs,
//! and each edge's messages. Message payloads are agent-produced: escaped.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use dispatch_api::{Graph, GraphRun};
use dispatch_core::RunId;
use dispatch_store::Message;
use maud::{Markup, html};
use serde_json::Value;

use super::fmt;
use super::graph::{self, Edge};
use super::page::{self, Nav};
use super::session::Session;
use crate::api::runs::resolve;
use crate::api::{ApiResult, AppState};

/// Characters of a message's payload shown before "more".
const CLIP: usize = 2000;

/// The graph and the messages of workflow run `id`; `None` when it sent none.
async fn load(
    state: &AppState,
    id: &str,
) -> ApiResult<(dispatch_store::Run, Option<(Graph, Vec<Message>)>)> {
    let id = resolve(state, id).await?;
    let run = state.store.get_run(&id).await?;
    let Some(g) = crate::api::wire_runs::workflow_graph(state, &run).await? else {
        return Ok((run, None));
    };
    let messages = state.store.list_messages(&id).await?;
    Ok((run, Some((g, messages))))
}

/// `GET /ui/runs/{id}/workflow`.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let (run, found) = match load(&state, &id).await {
        Ok(v) => v,
        Err(e) => return page::error(e.status, &e.message),
    };
    let title = format!("Workflow {}", run.id.short());
    let Some((g, messages)) = found else {
        let body = html! {
            h1 { "Workflow " code { (run.id.short()) } }
            p.notice { "Run " (fmt::run_link(&run.id)) " sent no messages: it is not a workflow run (or it has not started one yet)." }
        };
        return page::page(&title, Nav::Runs, &session, body);
    };
    let part = live_part(&run, &g, &messages);
    // Live while the workflow runs: the part is sent again when it changes.
    let live = (!run.state.is_terminal())
        .then(|| format!("/ui/live/workflow/{}?h={}", run.id, digest(&part.0)));
    let body = html! {
        h1 { "Workflow " code { (run.id.short()) } " " span.muted { (run.parcel_name) } }
        div data-live-run=[live] {
            div #workflow-live { (part) }
        }
    };
    page::page(&title, Nav::Runs, &session, body)
}

/// What identifies a rendering of the live part (sent again when it differs).
pub fn digest(html: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    html.hash(&mut h);
    h.finish()
}

/// The live part of the page: the status line, the graph, the agents and
/// the messages.
fn live_part(run: &dispatch_store::Run, g: &Graph, messages: &[Message]) -> Markup {
    let edges = graph::edges(g);
    let placed = graph::layout(g, &edges);
    let label = format!(
        "Communication graph of {}: {} agents, {} edges",
        run.parcel_name,
        placed.len(),
        edges.len()
    );
    html! {
        p {
            (fmt::status(run.status())) " · run " (fmt::run_link(&run.id))
            " · " (fmt::count(run.usage.total_tokens())) " tokens · " (fmt::cost(run.usage.cost_usd))
        }
        h2 #graph-title { "Communication graph" }
        p.muted { "Select an agent for its runs, an arrow for its messages." }
        figure.graph aria-labelledby="graph-title" {
            (graph::render(&placed, &edges, &label))
        }
        (agents(g))
        (edge_messages(&edges, messages))
    }
}

/// The live part of workflow run `id` now, and whether the run ended;
/// `None` when it is gone or sent no messages.
pub async fn live_now(state: &AppState, id: &str) -> Option<(String, bool)> {
    let (run, found) = load(state, id).await.ok()?;
    let (g, messages) = found?;
    Some((
        live_part(&run, &g, &messages).into_string(),
        run.state.is_terminal(),
    ))
}

fn run_list(runs: &[GraphRun]) -> Markup {
    html! {
        @for r in runs {
            @if let Ok(id) = r.id.parse::<RunId>() {
                span.agent-run {
                    (fmt::run_link(&id)) " "
                    (fmt::status(r.status))
                }
            }
        }
    }
}

/// Each agent: turns, tokens, cost, time, and its child runs.
fn agents(g: &Graph) -> Markup {
    html! {
        h2 #agents-title { "Agents" }
        div.table-wrap { table #agents aria-labelledby="agents-title" {
            thead { tr {
                th scope="col" { "Agent" } th scope="col" .num { "Turns" }
                th scope="col" .num { "Tokens in" } th scope="col" .num { "Tokens out" }
                th scope="col" .num { "Cost" } th scope="col" .num { "Time" } th scope="col" { "Runs" }
            } }
            tbody { @for n in &g.nodes {
                @let name = n.id.as_str();
                tr id=(graph::node_anchor(name)) data-agent=(name) tabindex="-1" {
                    th scope="row" { (name) }
                    td.num { (n.turns) }
                    td.num { (fmt::count(n.usage.input_tokens)) }
                    td.num { (fmt::count(n.usage.output_tokens)) }
                    td.num { (fmt::cost(n.usage.cost_usd)) }
                    td.num { (fmt::duration(Some(n.duration_ms).filter(|d| *d > 0))) }
                    td { (run_list(&n.runs)) }
                }
            } }
        } }
    }
}

/// Each edge's messages, in the order they were sent.
fn edge_messages(edges: &[Edge], messages: &[Message]) -> Markup {
    let mut by_edge: BTreeMap<(&str, &str), Vec<&Message>> = BTreeMap::new();
    for m in messages {
        by_edge
            .entry((m.message.sender.as_str(), m.message.receiver.as_str()))
            .or_default()
            .push(m);
    }
    html! {
        h2 #messages-title { "Messages (" (messages.len()) ")" }
        @for (i, e) in edges.iter().enumerate() {
            section.edge-messages id=(graph::edge_anchor(i)) tabindex="-1" data-from=(e.from) data-to=(e.to)
                aria-label={ "Messages from " (e.from) " to " (e.to) } {
                h3 { (e.from) " → " (e.to) " " span.muted { "(" (e.label) ")" } }
                @for m in by_edge.get(&(e.from.as_str(), e.to.as_str())).map(Vec::as_slice).unwrap_or(&[]) {
                    @let n = &m.message;
                    details.message data-kind=(n.kind) {
                        summary {
                            "#" (m.seq) " " strong { (n.kind) } " · " (fmt::time(n.created_at))
                            @if let Some(s) = &n.sender_run { " · from " (fmt::run_link(s)) }
                            @if let Some(c) = &n.child_run { " · delivered by " (fmt::run_link(c)) }
                        }
                        @let text = match &n.payload { Value::String(s) => s.clone(), v => fmt::json(v) };
                        pre { (fmt::clip(&text, CLIP)) }
                    }
                }
            }
        }
    }
}

/// Whether `run` is a workflow run (it sent messages): the run page links here.
pub async fn is_workflow(state: &AppState, run: &RunId) -> bool {
    state
        .store
        .list_messages(run)
        .await
        .is_ok_and(|m| !m.is_empty())
}
