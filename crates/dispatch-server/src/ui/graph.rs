//! A workflow's communication graph as server-side SVG: agents as boxes in
//! columns (breadth-first from `__start__`), messages as arrows labelled
//! with their counts. Each node and each edge is a link to its section on
//! the page (its child runs, its messages), so the graph works with the
//! keyboard and without script; the tables below it say the same in text.

use std::collections::{BTreeMap, VecDeque};

use dispatch_api::Graph;
use maud::{Markup, html};

const NODE_W: f64 = 150.0;
const NODE_H: f64 = 46.0;
const COL: f64 = 230.0;
const ROW: f64 = 90.0;
const PAD: f64 = 40.0;

/// One agent's place.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    pub name: String,
    pub turns: u64,
    pub x: f64,
    pub y: f64,
    pub layer: usize,
}

/// One edge of the graph (as `GET /v1/runs/{id}/graph` has it).
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub count: u64,
    /// `TASK ×2, RESULT ×1`.
    pub label: String,
}

/// The anchor of agent `name`'s section.
pub fn node_anchor(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("agent-{safe}")
}

/// The anchor of edge number `i`.
pub fn edge_anchor(i: usize) -> String {
    format!("edge-{i}")
}

/// The graph's edges.
pub fn edges(graph: &Graph) -> Vec<Edge> {
    graph
        .edges
        .iter()
        .map(|e| Edge {
            from: e.from.clone(),
            to: e.to.clone(),
            count: e.count,
            label: e
                .kinds
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect()
}

/// Places the nodes: the column is the shortest hop count from the first
/// node (`__start__`), `__end__` last, unreachable nodes after the rest.
pub fn layout(graph: &Graph, edges: &[Edge]) -> Vec<Placed> {
    let names: Vec<(String, u64)> = graph
        .nodes
        .iter()
        .map(|n| (n.id.clone(), n.turns))
        .collect();
    let mut layer: BTreeMap<&str, usize> = BTreeMap::new();
    if let Some((first, _)) = names.first() {
        let mut queue = VecDeque::from([(first.as_str(), 0)]);
        layer.insert(first, 0);
        while let Some((at, d)) = queue.pop_front() {
            for e in edges.iter().filter(|e| e.from == at) {
                if !layer.contains_key(e.to.as_str()) {
                    layer.insert(&e.to, d + 1);
                    queue.push_back((&e.to, d + 1));
                }
            }
        }
    }
    let deepest = layer.values().copied().max().unwrap_or(0);
    let mut next_free = deepest + 1;
    let mut end_layer = None;
    let mut placed: Vec<(String, u64, usize)> = Vec::new();
    for (name, turns) in &names {
        let l = match layer.get(name.as_str()) {
            Some(&l) => l,
            None => {
                next_free += 1;
                next_free - 1
            }
        };
        if name == "__end__" {
            end_layer = Some(l);
        }
        placed.push((name.clone(), *turns, l));
    }
    // `__end__` goes after every other column.
    if end_layer.is_some() {
        let last = placed
            .iter()
            .filter(|(n, _, _)| n != "__end__")
            .map(|p| p.2)
            .max()
            .unwrap_or(0);
        for p in placed.iter_mut().filter(|p| p.0 == "__end__") {
            p.2 = p.2.max(last + 1);
        }
    }
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let tallest = {
        let mut per: BTreeMap<usize, usize> = BTreeMap::new();
        for p in &placed {
            *per.entry(p.2).or_default() += 1;
        }
        per.values().copied().max().unwrap_or(1)
    };
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    for p in &placed {
        *count.entry(p.2).or_default() += 1;
    }
    placed
        .into_iter()
        .map(|(name, turns, l)| {
            let row = rows.entry(l).or_default();
            let in_col = count[&l];
            // Centre a short column against the tallest one.
            let offset = (tallest - in_col) as f64 * ROW / 2.0;
            let y = PAD + 30.0 + offset + *row as f64 * ROW;
            *row += 1;
            Placed {
                name,
                turns,
                x: PAD + l as f64 * COL,
                y,
                layer: l,
            }
        })
        .collect()
}

fn f(v: f64) -> String {
    format!("{v:.1}")
}

/// The SVG path of one edge and where its label goes.
fn route(a: &Placed, b: &Placed) -> (String, f64, f64) {
    if a.name == b.name {
        // A loop above the node.
        let (x, y) = (a.x + NODE_W / 2.0, a.y);
        let d = format!(
            "M{} {} C{} {} {} {} {} {}",
            f(x - 20.0),
            f(y),
            f(x - 40.0),
            f(y - 50.0),
            f(x + 40.0),
            f(y - 50.0),
            f(x + 20.0),
            f(y)
        );
        return (d, x, y - 42.0);
    }
    if b.layer > a.layer {
        let (x1, y1) = (a.x + NODE_W, a.y + NODE_H / 2.0);
        let (x2, y2) = (b.x, b.y + NODE_H / 2.0);
        let (mx, my) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let d = format!(
            "M{} {} C{} {} {} {} {} {}",
            f(x1),
            f(y1),
            f(mx),
            f(y1),
            f(mx),
            f(y2),
            f(x2),
            f(y2)
        );
        return (d, mx, my - 6.0);
    }
    // Backwards or within a column: an arc above both boxes.
    let (x1, y1) = (a.x + NODE_W / 2.0 + 12.0, a.y);
    let (x2, y2) = (b.x + NODE_W / 2.0 - 12.0, b.y);
    let top = a.y.min(b.y) - 28.0 - (a.layer.abs_diff(b.layer) as f64) * 6.0;
    let d = format!(
        "M{} {} C{} {} {} {} {} {}",
        f(x1),
        f(y1),
        f(x1),
        f(top),
        f(x2),
        f(top),
        f(x2),
        f(y2)
    );
    (d, (x1 + x2) / 2.0, top + 14.0)
}

/// The graph as an SVG figure.
pub fn render(nodes: &[Placed], edges: &[Edge], title: &str) -> Markup {
    let width = nodes.iter().map(|n| n.x + NODE_W).fold(0.0_f64, f64::max) + PAD;
    let height = nodes.iter().map(|n| n.y + NODE_H).fold(0.0_f64, f64::max) + PAD;
    let at = |name: &str| nodes.iter().find(|n| n.name == name);
    html! {
        svg #workflow-graph viewBox={ "0 0 " (f(width)) " " (f(height)) }
            width=(f(width)) role="group" aria-label=(title) {
            defs {
                marker #arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse" {
                    path.arrow-head d="M0 0 L10 5 L0 10 z" {}
                }
            }
            @for (i, e) in edges.iter().enumerate() {
                @if let (Some(a), Some(b)) = (at(&e.from), at(&e.to)) {
                    @let (d, lx, ly) = route(a, b);
                    @let what = format!("{} to {}: {} message{} ({})", e.from, e.to, e.count, if e.count == 1 { "" } else { "s" }, e.label);
                    a.edge href={ "#" (edge_anchor(i)) } aria-label=(what) data-from=(e.from) data-to=(e.to) data-count=(e.count) {
                        title { (what) }
                        path.edge-line d=(d) marker-end="url(#arrow)" {}
                        path.edge-hit d=(d) {}
                        text.edge-count x=(f(lx)) y=(f(ly)) text-anchor="middle" { "×" (e.count) }
                    }
                }
            }
            @for n in nodes {
                @let special = n.name.starts_with("__");
                @let what = format!("{}: {} turn{}", n.name, n.turns, if n.turns == 1 { "" } else { "s" });
                a.node href={ "#" (node_anchor(&n.name)) } aria-label=(what) data-node=(n.name) {
                    title { (what) }
                    rect class=(if special { "node-box special" } else { "node-box" }) x=(f(n.x)) y=(f(n.y))
                        width=(f(NODE_W)) height=(f(NODE_H)) rx=(if special { "23" } else { "6" }) {}
                    text.node-name x=(f(n.x + NODE_W / 2.0)) y=(f(n.y + 20.0)) text-anchor="middle" { (n.name) }
                    @if !special {
                        text.node-turns x=(f(n.x + NODE_W / 2.0)) y=(f(n.y + 37.0)) text-anchor="middle" {
                            (n.turns) (if n.turns == 1 { " turn" } else { " turns" })
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn newsroom() -> Graph {
        let node = |id: &str, turns: u64| {
            json!({"id": id, "turns": turns, "runs": [], "duration_ms": 0,
                "usage": {"cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0}})
        };
        serde_json::from_value(json!({
            "workflow": "0", "name": "newsroom", "messages": [],
            "nodes": [
                node("__start__", 0), node("researcher", 1),
                node("analyst", 2), node("writer", 2), node("__end__", 0),
            ],
            "edges": [
                {"from": "__start__", "to": "researcher", "count": 1, "kinds": {"TASK": 1}},
                {"from": "researcher", "to": "analyst", "count": 1, "kinds": {"RESULT": 1}},
                {"from": "analyst", "to": "writer", "count": 2, "kinds": {"RESULT": 2}},
                {"from": "writer", "to": "analyst", "count": 1, "kinds": {"VALIDATION": 1}},
                {"from": "writer", "to": "__end__", "count": 1, "kinds": {"RESULT": 1}},
            ],
        }))
        .expect("a graph")
    }

    #[test]
    fn columns_follow_the_hops_from_start_and_end_is_last() {
        let g = newsroom();
        let placed = layout(&g, &edges(&g));
        let layer = |n: &str| placed.iter().find(|p| p.name == n).map(|p| p.layer);
        assert_eq!(layer("__start__"), Some(0));
        assert_eq!(layer("researcher"), Some(1));
        assert_eq!(layer("analyst"), Some(2));
        assert_eq!(layer("writer"), Some(3));
        assert_eq!(layer("__end__"), Some(4));
    }

    #[test]
    fn every_node_and_edge_is_a_link_and_names_are_escaped() {
        let mut g = newsroom();
        g.nodes[1].id = "<b>x</b>".into();
        g.edges[0].to = "<b>x</b>".into();
        g.edges[1].from = "<b>x</b>".into();
        let e = edges(&g);
        let svg = render(&layout(&g, &e), &e, "graph").into_string();
        assert_eq!(svg.matches("<a class=\"node\"").count(), 5);
        assert_eq!(svg.matches("<a class=\"edge\"").count(), 5);
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(svg.contains("×2"));
    }
}
