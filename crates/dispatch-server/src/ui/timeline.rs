//! Where a run's time went: its attempts, steps, model calls, tool calls,
//! approvals and waits as bars on one time axis, drawn from its
//! [`RunReport`] (a pure function) as SVG by the server.

use dispatch_core::time::human_duration;
use dispatch_core::{EventKind, Ts};
use dispatch_runtime::report::{ModelCall, ReportAttempt, RunReport, Step, ToolCall};
use dispatch_store::{Approval, Event};
use maud::{Markup, html};
use serde_json::Value;

/// The kinds of bar, each its own color (and named in the legend).
pub const KINDS: [(&str, &str); 6] = [
    ("attempt", "attempt"),
    ("step", "step"),
    ("model_call", "model call"),
    ("tool_call", "tool call"),
    ("approval", "approval"),
    ("wait", "wait"),
];

/// One bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// Which row it is drawn in.
    pub lane: String,
    pub kind: &'static str,
    pub start: Ts,
    pub end: Ts,
    /// Still going (its end is "now").
    pub open: bool,
    pub label: String,
}

/// The most rows drawn; later ones are counted, not drawn.
const MAX_LANES: usize = 40;

/// What the timeline is drawn from: parts of the run's report.
pub struct Parts<'a> {
    pub attempts: &'a [ReportAttempt],
    pub steps: &'a [Step],
    pub model_calls: &'a [ModelCall],
    pub tool_calls: &'a [ToolCall],
    /// Its waits are its `state` events to and from `paused`.
    pub events: &'a [Event],
    pub approvals: &'a [Approval],
}

impl<'a> From<&'a RunReport> for Parts<'a> {
    fn from(r: &'a RunReport) -> Self {
        Parts {
            attempts: &r.attempts,
            steps: &r.timeline,
            model_calls: &r.model_calls,
            tool_calls: &r.tool_calls,
            events: &r.events,
            approvals: &r.approvals,
        }
    }
}

/// The bars of a run, from its report (attempts, steps, model and tool
/// calls, approvals; waits from its state events); `now` ends whatever is
/// still going.
pub fn build(report: Parts<'_>, now: Ts) -> Vec<Bar> {
    let mut bars = Vec::new();
    for a in report.attempts {
        let a = &a.attempt;
        bars.push(Bar {
            lane: "attempts".into(),
            kind: "attempt",
            start: a.started_at,
            end: a.ended_at.unwrap_or(now),
            open: a.ended_at.is_none(),
            label: format!(
                "attempt {}{}",
                a.number,
                a.status.map(|s| format!(" ({s})")).unwrap_or_default()
            ),
        });
    }
    // What the event log says, in the order its bars ended (still open
    // ones last), as the event log is read: rows appear in that order.
    let attempts_end = bars.len();
    for s in report.steps {
        let (end, open) = s.ended_at.map_or((now, true), |end| (end, false));
        bars.push(step_bar(s.attempt, s.name.clone(), s.started_at, end, open));
    }
    for d in report.model_calls {
        let took = d.get("latency_ms").as_i64().unwrap_or(0).max(0);
        bars.push(Bar {
            lane: "model calls".into(),
            kind: "model_call",
            start: d.at - took,
            end: d.at,
            open: false,
            label: format!(
                "{} · {}",
                d.str("model").unwrap_or("?"),
                human_duration(took)
            ),
        });
    }
    for d in report.tool_calls {
        let took = d.duration_ms.unwrap_or(0).max(0);
        let name = d.name.as_deref().unwrap_or("?");
        bars.push(Bar {
            lane: format!("tool {name}"),
            kind: "tool_call",
            start: d.at - took,
            end: d.at,
            open: false,
            label: format!(
                "{name}{}{} · {}",
                if d.ok.unwrap_or(true) {
                    ""
                } else {
                    " (failed)"
                },
                match &d.edited_by {
                    Some(e) => format!(" (input edited by {})", e.by),
                    None => String::new(),
                },
                human_duration(took)
            ),
        });
    }
    let mut wait_from: Option<(Ts, String)> = None;
    for e in report
        .events
        .iter()
        .filter(|e| e.event.is(EventKind::State))
    {
        let (d, at) = (&e.event.data, e.event.at);
        if let Some((from, reason)) = wait_from.take() {
            bars.push(wait_bar(from, at, false, reason));
        }
        if d.get("to").and_then(Value::as_str) == Some("paused") {
            let reason = d.get("reason").and_then(Value::as_str).unwrap_or("paused");
            wait_from = Some((at, reason.to_string()));
        }
    }
    if let Some((from, reason)) = wait_from {
        bars.push(wait_bar(from, now, true, reason));
    }
    bars[attempts_end..].sort_by_key(|b| (b.open, b.end));
    for a in report.approvals {
        bars.push(Bar {
            lane: format!("approval {}", a.id),
            kind: "approval",
            start: a.requested_at,
            end: a.decided_at.unwrap_or(now),
            open: a.decided_at.is_none(),
            label: format!("{} · {}", a.id, a.decision.as_deref().unwrap_or("waiting")),
        });
    }
    bars
}

fn step_bar(attempt: u32, name: String, start: Ts, end: Ts, open: bool) -> Bar {
    Bar {
        lane: format!("step {name}"),
        kind: "step",
        start,
        end,
        open,
        label: format!("{name} (attempt {attempt})"),
    }
}

fn wait_bar(start: Ts, end: Ts, open: bool, reason: String) -> Bar {
    Bar {
        lane: "waits".into(),
        kind: "wait",
        start,
        end,
        open,
        label: reason,
    }
}

/// The bars as an SVG chart with a time axis and a legend.
pub fn render(bars: &[Bar]) -> Markup {
    if bars.is_empty() {
        return html! { p.muted { "Nothing to show yet: the run has not started." } };
    }
    let mut lanes: Vec<&str> = Vec::new();
    for b in bars {
        if !lanes.contains(&b.lane.as_str()) {
            lanes.push(&b.lane);
        }
    }
    let hidden = lanes.len().saturating_sub(MAX_LANES);
    lanes.truncate(MAX_LANES);
    let t0 = bars.iter().map(|b| b.start).min().unwrap_or(0);
    let t1 = bars.iter().map(|b| b.end).max().unwrap_or(t0).max(t0 + 1);
    let (left, right, row, top) = (170.0, 990.0, 22.0, 24.0);
    let x = |t: Ts| left + (right - left) * ((t - t0) as f64 / (t1 - t0) as f64);
    let height = top + row * lanes.len() as f64 + 6.0;
    let ticks: Vec<(f64, String, &str)> = (0..=4)
        .map(|i| {
            let t = t0 + (t1 - t0) * i / 4;
            let anchor = match i {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            (x(t), format!("+{}", human_duration(t - t0)), anchor)
        })
        .collect();
    let desc = format!(
        "{} bars over {} in {} rows",
        bars.len(),
        human_duration(t1 - t0),
        lanes.len()
    );
    html! {
        div.legend aria-hidden="true" {
            @for (kind, name) in KINDS { span class={ "k-" (kind) } { (name) } }
        }
        svg viewBox={ "0 0 1000 " (height) } role="img" aria-label={ "Timeline: " (desc) }
            data-bars=(bars.len()) {
            @for (tx, label, anchor) in &ticks {
                line.axis x1=(tx) x2=(tx) y1="16" y2=(height) {}
                text.tick x=(tx) y="12" text-anchor=(anchor) { (label) }
            }
            @for (i, lane) in lanes.iter().enumerate() {
                @let y = top + row * i as f64;
                text x="4" y=(y + 14.0) { (super::fmt::clip(lane, 24)) }
                @for b in bars.iter().filter(|b| b.lane == *lane) {
                    @let (bx, bw) = (x(b.start), (x(b.end) - x(b.start)).max(2.0));
                    rect class={ "bar-" (b.kind) } data-kind=(b.kind) x=(format!("{bx:.1}")) y=(y + 3.0)
                        width=(format!("{bw:.1}")) height="15" rx="2" {
                        title { (b.label) " · " (human_duration(b.end - b.start)) @if b.open { " (still going)" } }
                    }
                }
            }
        }
        @if hidden > 0 { p.muted { (hidden) " more rows not drawn." } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatch_core::NewEvent;
    use dispatch_store::Attempt;
    use serde_json::json;

    fn event(seq: i64, kind: &str, attempt: u32, at: Ts, data: Value) -> Event {
        Event {
            seq,
            run_id: dispatch_core::RunId::new(),
            event: NewEvent::new(kind, attempt, at, data),
        }
    }

    fn attempt(number: u32, started_at: Ts, ended_at: Option<Ts>) -> Attempt {
        Attempt {
            number,
            started_at,
            ended_at,
            status: None,
            exit_code: None,
            error: None,
            worker: None,
        }
    }

    #[test]
    fn attempts_steps_tools_and_waits_become_bars() {
        let attempts = [attempt(1, 0, Some(100)), attempt(2, 200, None)];
        let events = [
            event(1, "step", 1, 10, json!({"name": "plan", "phase": "start"})),
            event(
                2,
                "tool_call",
                1,
                60,
                json!({"name": "search", "duration_ms": 20, "ok": true}),
            ),
            event(3, "step", 2, 210, json!({"name": "plan", "phase": "start"})),
            event(4, "step", 2, 230, json!({"name": "plan", "phase": "end"})),
            event(
                5,
                "state",
                2,
                240,
                json!({"from": "running", "to": "paused", "reason": "approval"}),
            ),
            event(
                6,
                "state",
                2,
                260,
                json!({"from": "paused", "to": "running"}),
            ),
        ];
        let t = dispatch_runtime::report::telemetry::build(&events, &attempts);
        let parts = Parts {
            attempts: &t.attempts,
            steps: &t.timeline,
            model_calls: &[],
            tool_calls: &t.tool_calls,
            events: &events,
            approvals: &[],
        };
        let bars = build(parts, 300);
        let of = |k: &str| bars.iter().filter(|b| b.kind == k).collect::<Vec<_>>();
        assert_eq!(of("attempt").len(), 2);
        assert!(of("attempt")[1].open);
        let tool = of("tool_call")[0];
        assert_eq!((tool.start, tool.end), (40, 60));
        let steps = of("step");
        assert_eq!(steps.len(), 2);
        // The first attempt's step ends with its attempt.
        assert!(steps.iter().any(|s| s.start == 10 && s.end == 100));
        assert!(steps.iter().any(|s| s.start == 210 && s.end == 230));
        let wait = of("wait")[0];
        assert_eq!((wait.start, wait.end), (240, 260));
    }

    #[test]
    fn rows_come_in_the_order_things_ended_open_ones_last() {
        let attempts = [attempt(1, 0, None)];
        let events = [
            event(1, "step", 1, 10, json!({"name": "a"})),
            event(2, "step", 1, 20, json!({"name": "b"})),
            event(
                3,
                "tool_call",
                1,
                25,
                json!({"name": "search", "duration_ms": 2}),
            ),
            event(4, "step", 1, 30, json!({"name": "c"})),
        ];
        let t = dispatch_runtime::report::telemetry::build(&events, &attempts);
        let parts = Parts {
            attempts: &t.attempts,
            steps: &t.timeline,
            model_calls: &[],
            tool_calls: &t.tool_calls,
            events: &events,
            approvals: &[],
        };
        let mut lanes: Vec<String> = Vec::new();
        for b in build(parts, 40) {
            if !lanes.contains(&b.lane) {
                lanes.push(b.lane);
            }
        }
        assert_eq!(
            lanes,
            ["attempts", "step a", "tool search", "step b", "step c"]
        );
    }

    #[test]
    fn labels_are_escaped_in_the_svg() {
        let bars = [Bar {
            lane: "tool <script>".into(),
            kind: "tool_call",
            start: 0,
            end: 5,
            open: false,
            label: "<script>alert(1)</script>".into(),
        }];
        let svg = render(&bars).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
    }
}
