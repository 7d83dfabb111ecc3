//! The workflow part of `dispatch inspect-run`: usage by agent, the
//! messages that passed (sender → receiver, kind, time, child runs), and
//! `--graph dot|mermaid`.

use dispatch_core::RunId;
use dispatch_runtime::report::RunReport;
use dispatch_runtime::workflow::graph;
use dispatch_store::sqlite::SqliteStore;
use serde_json::Value;

use super::remote::Remote;
use crate::cli::{GraphFormat, InspectArgs};
use crate::ctx::{Ctx, find_run};
use crate::error::{CliError, CliResult};
use crate::output::cost_text;

/// `inspect-run <id>… --graph dot|mermaid`: each workflow run's graph on stdout.
pub async fn print_graph(
    ctx: &Ctx,
    store: &SqliteStore,
    args: &InspectArgs,
    how: GraphFormat,
) -> CliResult {
    for arg in &args.ids.ids {
        let run = find_run(store, &ctx.layout, arg).await?;
        let Some(g) = graph::graph(store, &run).await? else {
            return Err(not_a_workflow(&run.id));
        };
        draw(&g, how);
    }
    Ok(0)
}

/// `inspect-run <id>… --graph dot|mermaid` against a server
/// (`GET /v1/runs/{id}/graph`).
pub(super) fn print_remote_graph(
    remote: &Remote,
    args: &InspectArgs,
    how: GraphFormat,
) -> CliResult {
    for arg in &args.ids.ids {
        let run = remote.get_run(arg)?;
        let Some(g) = remote_graph(remote, &run.id)? else {
            return Err(not_a_workflow(&run.id));
        };
        // The runtime draws the graph as it builds it: as JSON.
        let g = serde_json::to_value(g).map_err(|e| {
            CliError::input(format!(
                "the server's graph of run {} does not write back: {e}",
                run.id
            ))
        })?;
        draw(&g, how);
    }
    Ok(0)
}

/// The graph of run `id` from the server, or `None` when it is not a
/// workflow run's (the server answers one with no nodes).
pub(super) fn remote_graph(remote: &Remote, id: &RunId) -> CliResult<Option<dispatch_api::Graph>> {
    let g: dispatch_api::Graph = remote.typed("GET", &format!("/v1/runs/{id}/graph"), None)?;
    Ok((!g.nodes.is_empty()).then_some(g))
}

fn draw(g: &Value, how: GraphFormat) {
    match how {
        GraphFormat::Dot => print!("{}", graph::dot(g)),
        GraphFormat::Mermaid => print!("{}", graph::mermaid(g)),
    }
}

fn not_a_workflow(id: &RunId) -> CliError {
    CliError::input(format!(
        "run {id} is not a workflow run: it sent no messages (hint: --graph draws the runs of `FROM workflow` parcels)"
    ))
}

/// The human view: a `Workflow:` section.
pub fn print_human(r: &RunReport) {
    let Some(g) = &r.workflow else {
        return;
    };
    let Some(nodes) = g["nodes"].as_array() else {
        return;
    };
    println!("Workflow:");
    println!("  usage by agent:");
    for n in nodes
        .iter()
        .filter(|n| n["turns"].as_u64().unwrap_or(0) > 0)
    {
        let u = &n["usage"];
        let cost = u["cost_usd"].as_f64().unwrap_or(0.0);
        println!(
            "    {:<16} {} turn(s)  {} in / {} out tokens  cost {}  {} ms",
            n["id"].as_str().unwrap_or("?"),
            n["turns"],
            u["input_tokens"],
            u["output_tokens"],
            cost_text(cost),
            n["duration_ms"],
        );
    }
    println!("  messages:");
    for m in g["messages"].as_array().into_iter().flatten() {
        let at = m["at"]
            .as_i64()
            .and_then(dispatch_core::time::format_rfc3339);
        let child = match m["child_run"].as_str() {
            Some(c) if m["delivered"] == true => format!(" → run {c}"),
            Some(c) => format!(" → run {c} (not started)"),
            None => String::new(),
        };
        println!(
            "    {:>3} {} → {} {} {}{child}",
            m["seq"],
            m["from"].as_str().unwrap_or("?"),
            m["to"].as_str().unwrap_or("?"),
            m["kind"].as_str().unwrap_or("?"),
            at.unwrap_or_default(),
        );
    }
    println!(
        "  (graph: `dispatch inspect-run {} --graph dot|mermaid`)",
        r.run.id
    );
}
