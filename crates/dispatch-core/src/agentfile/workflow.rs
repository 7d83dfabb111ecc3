//! The workflow directives: `AGENT name source`, `COORDINATOR`, `ROUTE`,
//! `AGENTS`, `AGGREGATE`, and `LIMIT HOPS` / `TIMEOUT AGENT`.
//!
//! `JOIN c` makes c run once with the messages of every member upstream of
//! it (see [`workflow::Workflow::upstream_of`]), not once per message.
//!
//! `ROUTE a -> b, c` sends a's output to b and c as RESULT when a ends
//! without a message; `ROUTE a -> b ON ERROR` sends b an ERROR when a fails
//! after its retries.

use std::collections::BTreeMap;

use super::lex::{check_name, expected};
use super::{AgentfileError, duration_ms};
use crate::parcel::Manifest;
use crate::workflow::{self, Aggregate, Coordinator, Lines, Member, Route, Workflow};

/// The workflow directives seen so far.
#[derive(Default)]
pub(super) struct Decl {
    coordinator: Option<Coordinator>,
    members: Vec<Member>,
    routes: Vec<Route>,
    order: Vec<String>,
    joins: Vec<String>,
    aggregate: Option<Aggregate>,
    pub(super) max_hops: Option<u64>,
    pub(super) agent_timeout_ms: Option<u64>,
    lines: Lines,
    /// The first workflow directive (an error when the courier is another).
    pub(super) first_line: Option<(usize, &'static str)>,
    aggregate_line: usize,
}

impl Decl {
    pub(super) fn note(&mut self, line: usize, key: &'static str) {
        self.first_line.get_or_insert((line, key));
    }

    /// `AGENT <name> <source>`.
    pub(super) fn agent(
        &mut self,
        key: &'static str,
        line: usize,
        args: &[String],
    ) -> Result<(), String> {
        self.note(line, key);
        let [name, source] = args else {
            return Err(expected(key, &args.join(" ")));
        };
        let name = check_member(name)?;
        if let Some(prev) = self.lines.members.get(&name) {
            return Err(format!(
                "AGENT `{name}` is already declared on line {prev} (hint: give each member its own name)"
            ));
        }
        self.lines.members.insert(name.clone(), line);
        self.members.push(Member {
            name,
            parcel: source.clone(),
        });
        Ok(())
    }

    /// `COORDINATOR workflow|chain|fan_out`.
    pub(super) fn coordinator(
        &mut self,
        key: &'static str,
        line: usize,
        c: &str,
    ) -> Result<(), String> {
        self.note(line, key);
        self.coordinator = Some(match c.to_ascii_lowercase().as_str() {
            "workflow" => Coordinator::Workflow,
            "chain" => Coordinator::Chain,
            "fan_out" | "fan-out" | "fanout" => Coordinator::FanOut,
            _ => {
                return Err(format!(
                    "unknown coordinator `{c}` (hint: one of workflow, chain, fan_out)"
                ));
            }
        });
        Ok(())
    }

    /// `ROUTE a -> b, c [ON ERROR]`.
    pub(super) fn route(
        &mut self,
        key: &'static str,
        line: usize,
        rest: &str,
    ) -> Result<(), String> {
        self.note(line, key);
        self.routes.push(parse_route(rest)?);
        self.lines.routes.push(line);
        Ok(())
    }

    /// `AGENTS a b c` (or `a,b,c`): the members' order.
    pub(super) fn agents(
        &mut self,
        key: &'static str,
        line: usize,
        args: &[String],
    ) -> Result<(), String> {
        self.note(line, key);
        for n in args
            .iter()
            .flat_map(|a| a.split(','))
            .filter(|n| !n.is_empty())
        {
            if self.order.iter().any(|o| o == n) {
                return Err(format!("AGENTS names `{n}` twice"));
            }
            self.order.push(n.to_string());
        }
        self.lines.order = line;
        Ok(())
    }

    /// `JOIN a b` (or `a,b`).
    pub(super) fn join(&mut self, key: &'static str, line: usize, args: &[String]) {
        self.note(line, key);
        for n in args
            .iter()
            .flat_map(|a| a.split(','))
            .filter(|n| !n.is_empty())
        {
            if !self.joins.iter().any(|j| j == n) {
                self.joins.push(n.to_string());
            }
        }
        self.lines.joins = line;
    }

    /// `AGGREGATE merge_all|first|vote`.
    pub(super) fn aggregate(
        &mut self,
        key: &'static str,
        line: usize,
        a: &str,
    ) -> Result<(), String> {
        self.note(line, key);
        self.aggregate_line = line;
        self.aggregate = Some(match a.to_ascii_lowercase().as_str() {
            "merge_all" => Aggregate::MergeAll,
            "first" => Aggregate::First,
            "vote" => Aggregate::Vote,
            _ => {
                return Err(format!(
                    "unknown aggregate `{a}` (hint: one of merge_all, first, vote)"
                ));
            }
        });
        Ok(())
    }

    /// `TIMEOUT AGENT <duration>`.
    pub(super) fn timeout(&mut self, line: usize, d: &str) -> Result<(), String> {
        self.note(line, "TIMEOUT AGENT");
        let ms = duration_ms(d)?;
        if ms == 0 {
            return Err("TIMEOUT AGENT must be greater than zero".into());
        }
        self.agent_timeout_ms = Some(ms);
        Ok(())
    }

    /// `LIMIT HOPS <n>`.
    pub(super) fn hops(&mut self, line: usize, n: &str) -> Result<(), String> {
        self.note(line, "LIMIT HOPS");
        self.max_hops = Some(super::lex::positive(n, "LIMIT HOPS")?);
        Ok(())
    }

    /// The workflow of a `FROM workflow` Agentfile, its graph checked.
    pub(super) fn finish(
        self,
        m: &Manifest,
        last: usize,
    ) -> Result<(Workflow, BTreeMap<String, usize>), AgentfileError> {
        if !m.command.is_empty() {
            return Err(AgentfileError::new(
                last,
                "a workflow runs its members, not a COMMAND (hint: remove COMMAND, or use `FROM process`)",
            ));
        }
        let coordinator = self.coordinator.unwrap_or(Coordinator::Workflow);
        if self.aggregate.is_some() && coordinator != Coordinator::FanOut {
            return Err(AgentfileError::new(
                self.aggregate_line,
                "AGGREGATE is for `COORDINATOR fan_out`",
            ));
        }
        let wf = Workflow {
            coordinator,
            members: self.members,
            routes: self.routes,
            order: self.order,
            aggregate: self.aggregate.unwrap_or_default(),
            max_hops: self.max_hops,
            agent_timeout_ms: self.agent_timeout_ms,
            joins: self.joins,
        };
        workflow::check(&wf, &self.lines, last).map_err(|(l, e)| AgentfileError::new(l, e))?;
        Ok((wf, self.lines.members))
    }
}

fn check_member(name: &str) -> Result<String, String> {
    if name.starts_with("__") {
        return Err(format!(
            "`{name}` is reserved (hint: names starting with `__` are receivers such as __end__)"
        ));
    }
    check_name(name.to_string())
}

/// `a -> b, c [ON ERROR|ON RESULT]`.
fn parse_route(rest: &str) -> Result<Route, String> {
    let hint =
        "(hint: `ROUTE researcher -> analyst, writer` or `ROUTE analyst -> writer ON ERROR`)";
    let Some((from, to)) = rest.split_once("->") else {
        return Err(format!("ROUTE expects `from -> to`, got `{rest}` {hint}"));
    };
    let from = from.trim();
    if from.is_empty() || from.contains(char::is_whitespace) || from.contains(',') {
        return Err(format!(
            "ROUTE needs one sender before `->`, got `{from}` {hint}"
        ));
    }
    let mut words: Vec<&str> = to
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    let mut on_error = false;
    if let [.., on, what] = words.as_slice()
        && on.eq_ignore_ascii_case("on")
    {
        on_error = match what.to_ascii_uppercase().as_str() {
            "ERROR" => true,
            "RESULT" => false,
            _ => {
                return Err(format!(
                    "ROUTE … ON expects ERROR or RESULT, got `{what}` {hint}"
                ));
            }
        };
        words.truncate(words.len() - 2);
    }
    if words.is_empty() {
        return Err(format!("ROUTE needs a receiver after `->` {hint}"));
    }
    Ok(Route {
        from: from.to_string(),
        to: words.into_iter().map(String::from).collect(),
        on_error,
    })
}
