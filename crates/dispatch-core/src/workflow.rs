//! Workflow parcels (`FROM workflow`): the members, how they are coordinated,
//! and the pure rules a coordinator follows — where a message goes, what a
//! receiver's payload is, how fan-out results are aggregated.
//!
//! Messages: an agent writes `{"type":"message","to":…,"kind":…,"payload":…}`.
//! `to` is a member's name or a reserved receiver:
//!
//! | receiver | meaning |
//! |---|---|
//! | `__end__` | the payload becomes the workflow's output; the workflow succeeds |
//! | `__self__` | the sender again |
//! | `__next__`, `__prev__` | the member after / before the sender in `AGENTS` order (declaration order when there is no `AGENTS`) |
//!
//! A member that ends without sending a message: in a chain its output
//! passes to the next member (the last one's to `__end__`); in a workflow its
//! output goes along its `ROUTE` edges as a RESULT. A member that fails after
//! its retries sends ERROR along its `ROUTE … ON ERROR` edges; with none, the
//! workflow fails.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The reserved receivers.
pub const END: &str = "__end__";
pub const SELF: &str = "__self__";
pub const NEXT: &str = "__next__";
pub const PREV: &str = "__prev__";
/// The sender of the first message (the workflow's input).
pub const START: &str = "__start__";

/// How many prior messages a receiver's payload carries in its `thread`.
pub const THREAD_LEN: usize = 20;
/// The hop limit when the Agentfile sets none (its ROUTE graph has no cycle,
/// but agents may still address each other in a loop).
pub const DEFAULT_MAX_HOPS: u64 = 100;

/// The kinds of message.
pub const KINDS: [&str; 5] = ["TASK", "RESULT", "VALIDATION", "ERROR", "CONTROL"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coordinator {
    /// Messages along ROUTE edges (and any an agent addresses).
    Workflow,
    /// Each member's output to the next, in AGENTS order.
    Chain,
    /// Every member at once with the same input; the results aggregated.
    FanOut,
}

impl Coordinator {
    pub fn as_str(self) -> &'static str {
        match self {
            Coordinator::Workflow => "workflow",
            Coordinator::Chain => "chain",
            Coordinator::FanOut => "fan_out",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// An object keyed by member name, of every member that succeeded.
    #[default]
    MergeAll,
    /// The output of the first member to succeed.
    First,
    /// The most common output (ties: the earliest member in AGENTS order).
    Vote,
}

/// One member: its name in the workflow and the parcel it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// The member parcel's digest (the source as written, until built).
    pub parcel: String,
}

/// One `ROUTE from -> to…` (ON ERROR: taken when `from` fails).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub from: String,
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_error: bool,
}

/// What a workflow parcel holds beyond an ordinary manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub coordinator: Coordinator,
    /// In declaration order.
    pub members: Vec<Member>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// `AGENTS`: the order of a chain or fan-out (and of `__next__`/`__prev__`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<String>,
    #[serde(default)]
    pub aggregate: Aggregate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hops: Option<u64>,
    /// `TIMEOUT AGENT`: the run timeout of every member's turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_timeout_ms: Option<u64>,
    /// `JOIN`: members that run once per wave with every message sent to
    /// them, not once per message (see [`Workflow::upstream_of`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joins: Vec<String>,
}

impl Workflow {
    /// AGENTS order, or declaration order.
    pub fn sequence(&self) -> Vec<&str> {
        if self.order.is_empty() {
            self.members.iter().map(|m| m.name.as_str()).collect()
        } else {
            self.order.iter().map(String::as_str).collect()
        }
    }

    /// The member that gets the workflow's input (chain, workflow).
    pub fn entry(&self) -> Option<&str> {
        self.sequence().first().copied()
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Whether `name` is declared `JOIN`.
    pub fn is_join(&self, name: &str) -> bool {
        self.joins.iter().any(|j| j == name)
    }

    /// The members that can reach `name` along ROUTE edges (ON ERROR too),
    /// `name` itself left out: while one of them runs or is about to, a
    /// message to a JOIN member may still be on its way.
    pub fn upstream_of(&self, name: &str) -> BTreeSet<String> {
        let edges = self.edges();
        let mut up: BTreeSet<String> = self
            .members
            .iter()
            .filter(|m| m.name != name && reachable(&edges, &m.name).contains(name))
            .map(|m| m.name.clone())
            .collect();
        up.remove(name);
        up
    }

    /// The members with a ROUTE (not ON ERROR) straight to `name`.
    pub fn senders_to(&self, name: &str) -> BTreeSet<String> {
        self.routes
            .iter()
            .filter(|r| {
                !r.on_error
                    && r.to
                        .iter()
                        .any(|t| self.resolve(&r.from, t).is_ok_and(|t| t == name))
            })
            .map(|r| r.from.clone())
            .collect()
    }

    /// Edges (ON ERROR too), with reserved receivers resolved; unresolvable ones left out.
    fn edges(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in &self.routes {
            for t in &r.to {
                if let Ok(to) = self.resolve(&r.from, t) {
                    edges.entry(r.from.clone()).or_default().insert(to);
                }
            }
        }
        edges
    }

    pub fn hop_limit(&self) -> u64 {
        self.max_hops.unwrap_or(DEFAULT_MAX_HOPS)
    }

    /// Resolves a receiver as written by `sender` to a member name or `__end__`.
    pub fn resolve(&self, sender: &str, to: &str) -> Result<String, String> {
        let seq = self.sequence();
        let pos = seq.iter().position(|n| *n == sender);
        let step = |delta: isize| -> Result<String, String> {
            let i = pos.ok_or_else(|| {
                format!("`{to}` from `{sender}`, which has no place in AGENTS order")
            })?;
            let j = i as isize + delta;
            if j < 0 {
                return Err(format!(
                    "`{to}` from `{sender}`, the first member (hint: it has no previous member)"
                ));
            }
            Ok(seq
                .get(j as usize)
                .map_or(END.to_string(), |n| n.to_string()))
        };
        match to {
            END => Ok(END.to_string()),
            SELF => Ok(sender.to_string()),
            NEXT => step(1),
            PREV => step(-1),
            name if self.member(name).is_some() => Ok(name.to_string()),
            name => Err(format!(
                "unknown receiver `{name}` (hint: one of {}, or {END}, {SELF}, {NEXT}, {PREV})",
                self.members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Where `from`'s output goes when it ends without a message (resolved).
    pub fn default_targets(&self, from: &str, on_error: bool) -> Vec<String> {
        match self.coordinator {
            Coordinator::FanOut => Vec::new(),
            Coordinator::Chain if on_error => Vec::new(),
            Coordinator::Chain => self.resolve(from, NEXT).into_iter().collect(),
            Coordinator::Workflow => self
                .routes
                .iter()
                .filter(|r| r.from == from && r.on_error == on_error)
                .flat_map(|r| r.to.iter().filter_map(|t| self.resolve(from, t).ok()))
                .collect(),
        }
    }
}

/// Checks the graph: unknown agents, unreachable agents, agents with no path
/// to `__end__`, cycles without `LIMIT HOPS`. `lines` gives the line of each
/// member (`AGENT`), of each route (by index) and of the directives named
/// `COORDINATOR`, `AGENTS`, `LIMIT HOPS`; `last` is the last line.
pub fn check(wf: &Workflow, lines: &Lines, last: usize) -> Result<(), (usize, String)> {
    let line_of = |name: &str| lines.members.get(name).copied().unwrap_or(last);
    if wf.members.is_empty() {
        return Err((
            last,
            "a workflow needs members (hint: `AGENT researcher ./researcher`)".into(),
        ));
    }
    let known = |n: &str| wf.member(n).is_some();
    for n in &wf.order {
        if !known(n) {
            return Err((
                lines.order,
                format!("AGENTS names `{n}`, which is not an AGENT (hint: add `AGENT {n} ./{n}`)"),
            ));
        }
    }
    for (i, r) in wf.routes.iter().enumerate() {
        let line = lines.routes.get(i).copied().unwrap_or(last);
        for n in std::iter::once(&r.from).chain(&r.to) {
            let reserved = [END, SELF, NEXT, PREV].contains(&n.as_str());
            let ok = known(n) || (reserved && n != &r.from);
            if !ok {
                return Err((
                    line,
                    format!(
                        "ROUTE names `{n}`, which is not an AGENT (hint: add `AGENT {n} ./{n}`, or route to {END})"
                    ),
                ));
            }
        }
    }
    for j in &wf.joins {
        if wf.coordinator != Coordinator::Workflow {
            return Err((
                lines.joins,
                format!(
                    "JOIN is for `COORDINATOR workflow`; a {} follows AGENTS order",
                    wf.coordinator.as_str()
                ),
            ));
        }
        if !known(j) {
            return Err((
                lines.joins,
                format!("JOIN names `{j}`, which is not an AGENT (hint: add `AGENT {j} ./{j}`)"),
            ));
        }
        if wf.senders_to(j).len() < 2 {
            return Err((
                lines.joins,
                format!(
                    "JOIN `{j}` needs ROUTEs from two or more members to it (hint: `ROUTE analyst -> {j}` and `ROUTE writer -> {j}`)"
                ),
            ));
        }
    }
    if wf.coordinator != Coordinator::Workflow {
        if let Some(line) = lines.routes.first() {
            return Err((
                *line,
                format!(
                    "ROUTE is for `COORDINATOR workflow`; a {} follows AGENTS order",
                    wf.coordinator.as_str()
                ),
            ));
        }
        return Ok(());
    }
    // Edges (ON ERROR too), with reserved receivers resolved.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &wf.routes {
        for t in &r.to {
            let to = wf.resolve(&r.from, t).map_err(|e| (last, e))?;
            edges.entry(r.from.clone()).or_default().insert(to);
        }
    }
    let entry = wf.entry().expect("members is not empty").to_string();
    let reach = reachable(&edges, &entry);
    for m in &wf.members {
        if !reach.contains(&m.name) {
            return Err((
                line_of(&m.name),
                format!(
                    "agent `{}` is unreachable from `{entry}`, where the workflow starts (hint: add a `ROUTE … -> {}`)",
                    m.name, m.name
                ),
            ));
        }
        if !reachable(&edges, &m.name).contains(END) {
            return Err((
                line_of(&m.name),
                format!(
                    "agent `{}` has no path to {END} (hint: add `ROUTE {} -> {END}`)",
                    m.name, m.name
                ),
            ));
        }
    }
    if wf.max_hops.is_none()
        && let Some(n) = wf.members.iter().find(|m| {
            edges
                .get(&m.name)
                .into_iter()
                .flatten()
                .any(|t| reachable(&edges, t).contains(&m.name))
        })
    {
        return Err((
            line_of(&n.name),
            format!(
                "the ROUTE graph has a cycle through `{}` (hint: add `LIMIT HOPS 20` to bound it)",
                n.name
            ),
        ));
    }
    Ok(())
}

/// Lines of the workflow directives, for [`check`].
#[derive(Clone, Debug, Default)]
pub struct Lines {
    pub members: BTreeMap<String, usize>,
    pub routes: Vec<usize>,
    pub order: usize,
    pub joins: usize,
}

fn reachable(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::from([from.to_string()]);
    let mut todo = vec![from.to_string()];
    while let Some(n) = todo.pop() {
        for t in edges.get(&n).into_iter().flatten() {
            if seen.insert(t.clone()) {
                todo.push(t.clone());
            }
        }
    }
    seen
}

/// A message as the receiver gets it: its payload (stdin, `$DISPATCH_PAYLOAD`).
///
/// ```json
/// {"from": "researcher", "kind": "RESULT", "payload": {…},
///  "workflow": {"run": "<parent id>", "agent": "analyst", "hop": 2},
///  "thread": [{"from": "__start__", "to": "researcher", "kind": "TASK", "payload": {…}}, …]}
/// ```
pub fn envelope(
    from: &str,
    kind: &str,
    payload: &Value,
    workflow: Value,
    thread: Vec<Value>,
) -> Value {
    json!({"from": from, "kind": kind, "payload": payload, "workflow": workflow, "thread": thread})
}

/// The aggregate of fan-out results `(member, output)` in AGENTS order.
pub fn aggregate(how: Aggregate, results: &[(String, Value)]) -> Value {
    match how {
        Aggregate::MergeAll => Value::Object(results.iter().cloned().collect()),
        Aggregate::First => results
            .first()
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Null),
        Aggregate::Vote => {
            let mut best: Option<(&Value, usize)> = None;
            for (_, v) in results {
                let n = results.iter().filter(|(_, w)| w == v).count();
                if best.is_none_or(|(_, m)| n > m) {
                    best = Some((v, n));
                }
            }
            best.map(|(v, _)| v.clone()).unwrap_or(Value::Null)
        }
    }
}

#[cfg(test)]
#[path = "workflow_tests.rs"]
mod tests;
