//! What each channel receives for a notification: a signed JSON document for
//! a webhook, Slack's `{"text", "blocks"}` payload, and a plain-text e-mail.

use dispatch_store::Notification;
use dispatch_store::notifications as kind;
use serde_json::{Value, json};

/// What a notification says, rendered once for every channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// One line: the Slack text, the e-mail's subject (after `[dispatch] `).
    pub title: String,
    /// More lines: what to do about it.
    pub lines: Vec<String>,
    /// The webhook's JSON document.
    pub document: Value,
}

/// The run a notification is about, as far as it is known when sent.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    pub parcel: Option<String>,
    pub status: Option<String>,
}

/// Renders notification `n` about a run described by `run`.
pub fn render(n: &Notification, run: &RunInfo) -> Message {
    let id = n.run_id.to_string();
    let parcel = run.parcel.as_deref().unwrap_or("?");
    let d = &n.data;
    let (title, lines) = match n.kind.as_str() {
        kind::APPROVAL_REQUESTED | kind::APPROVAL_ESCALATED => {
            let a = &d["approval"];
            let aid = a["id"].as_str().unwrap_or("?");
            let summary = a["summary"].as_str().unwrap_or("");
            let tool = a["details"]["tool"].as_str();
            let mut lines = vec![format!(
                "Run {id} (parcel {parcel}) waits for a decision on `{aid}`."
            )];
            if let Some(tool) = tool {
                lines.push(format!("Tool call: {tool} {}", a["details"]["arguments"]));
            }
            lines.push(format!(
                "Decide with: dispatch approve {id} {aid}   or   dispatch deny {id} {aid}"
            ));
            let title = match n.kind.as_str() {
                kind::APPROVAL_ESCALATED => {
                    let after = d["escalation"]["after_ms"].as_u64().unwrap_or(0);
                    format!(
                        "Approval still waiting after {}: {summary}",
                        human_ms(after)
                    )
                }
                _ => format!("Approval needed: {summary}"),
            };
            (title, lines)
        }
        kind::REVIEW_EXPIRED => {
            let reason = d["reason"].as_str().unwrap_or("its review deadline passed");
            (
                format!("Review expired: {parcel} was cancelled"),
                vec![
                    format!(
                        "Run {id} (parcel {parcel}) was cancelled before it started: {reason}."
                    ),
                    format!("Run it again with: dispatch replay {id}"),
                ],
            )
        }
        kind::RUN_FAILED => {
            let status = d["status"].as_str().unwrap_or("failed");
            let reason = d["reason"].as_str().unwrap_or("no reason given");
            let mut lines = vec![format!(
                "Run {id} (parcel {parcel}) ended {status}: {reason}"
            )];
            if let Some(code) = d["exit_code"].as_i64() {
                lines.push(format!("Exit code {code}, attempt {}.", d["attempt"]));
            }
            lines.push(format!(
                "See: dispatch inspect-run {id}   and   dispatch logs {id}"
            ));
            (format!("Run {status}: {parcel} ({reason})"), lines)
        }
        kind::BUDGET_THRESHOLD => {
            let pct = d["percent"].as_u64().unwrap_or(0);
            let limit = d["limit"].as_str().unwrap_or("?");
            let (used, max) = match limit {
                "cost" => (
                    format!("${:.4}", d["used"].as_f64().unwrap_or(0.0)),
                    format!("${:.4}", d["max"].as_f64().unwrap_or(0.0)),
                ),
                _ => (d["used"].to_string(), d["max"].to_string()),
            };
            (
                format!("Budget {pct}% used: {parcel} ({limit} {used} of {max})"),
                vec![
                    format!(
                        "Run {id} (parcel {parcel}) used {used} of its {limit} limit {max} ({pct}%)."
                    ),
                    format!("Stop it with: dispatch stop {id}"),
                ],
            )
        }
        kind::QUOTA_SOFT | kind::QUOTA_HARD => {
            let project = d["project"].as_str().unwrap_or("?");
            let limit = d["limit"].as_str().unwrap_or("?");
            let usd = limit.starts_with("usd");
            let show = |v: &Value| match usd {
                true => format!("${:.2}", v.as_f64().unwrap_or(0.0)),
                false => format!("{}", v.as_f64().unwrap_or(0.0).round() as u64),
            };
            let (used, max) = (show(&d["used"]), show(&d["value"]));
            let period = d["period"].as_str().unwrap_or("?");
            let (title, then) = match n.kind.as_str() {
                kind::QUOTA_HARD => (
                    format!("Quota reached: project {project} ({limit} {used} of {max}, {period})"),
                    match d["on_hard"].as_str() {
                        Some("refuse") => {
                            "New runs of the project are refused until the period ends or the quota is raised."
                        }
                        _ => {
                            "New runs of the project wait in the queue until the period ends or the quota is raised."
                        }
                    },
                ),
                _ => (
                    format!(
                        "Quota {}% used: project {project} ({limit} {used} of {max}, {period})",
                        d["percent"]
                    ),
                    "Nothing is held back yet.",
                ),
            };
            (
                title,
                vec![
                    format!(
                        "Run {id} (parcel {parcel}) took project {project} to {used} of its {limit} quota {max} for {period}."
                    ),
                    then.to_string(),
                    format!(
                        "Raise it with: dispatch quota set {project} --{} N",
                        limit.replace('_', "-")
                    ),
                ],
            )
        }
        other => (format!("{other} on run {id}"), Vec::new()),
    };
    let mut document = json!({
        "id": n.key,
        "event": n.kind,
        "at": n.created_at,
        "run": {"id": id, "parcel": run.parcel, "status": run.status},
        "title": title,
        "text": lines.join("\n"),
    });
    if let Some(obj) = d.as_object() {
        let section = match n.kind.as_str() {
            kind::RUN_FAILED => Some("failure"),
            kind::BUDGET_THRESHOLD => Some("budget"),
            kind::QUOTA_SOFT | kind::QUOTA_HARD => Some("quota"),
            _ => None,
        };
        match section {
            Some(name) => document[name] = d.clone(),
            None => {
                for (k, v) in obj {
                    document[k] = v.clone();
                }
            }
        }
    }
    Message {
        title,
        lines,
        document,
    }
}

/// Slack's payload: the title as `text` (what notifications and old clients
/// show) and the same in blocks, with the lines as a section.
pub fn slack(m: &Message, event: &str) -> Value {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    json!({
        "text": esc(&m.title),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": truncate(&m.title, 150)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": esc(&m.lines.join("\n"))}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("dispatch · {event}")}]},
        ]
    })
}

/// The e-mail: subject and plain-text body.
pub fn email(m: &Message, event: &str, key: &str) -> (String, String) {
    let subject = format!("[dispatch] {}", m.title);
    let mut body = m.lines.join("\n");
    body.push_str(&format!("\n\n-- \nDispatch notification {event} ({key})\n"));
    (subject, body)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `90s`, `30m`, `2h`, `1h30m`.
fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatch_core::RunId;

    fn n(kind: &str, data: Value) -> Notification {
        Notification {
            seq: 1,
            key: "k".into(),
            run_id: RunId::new(),
            kind: kind.into(),
            data,
            created_at: 5,
            due_at: 5,
            tries: 0,
            sent: vec![],
            last_error: None,
            outcome: None,
            done_at: None,
        }
    }

    #[test]
    fn each_kind_says_what_happened_and_what_to_do() {
        let run = RunInfo {
            parcel: Some("refunds".into()),
            status: Some("paused".into()),
        };
        let a = json!({"approval": {"id": "pay", "summary": "Pay <50> & go", "details": null}});
        let m = render(&n(kind::APPROVAL_REQUESTED, a.clone()), &run);
        assert_eq!(m.title, "Approval needed: Pay <50> & go");
        assert!(
            m.lines.iter().any(|l| l.contains("dispatch approve")),
            "{m:?}"
        );
        assert_eq!(m.document["approval"]["id"], "pay");
        assert_eq!(m.document["run"]["parcel"], "refunds");
        let s = slack(&m, kind::APPROVAL_REQUESTED);
        assert_eq!(s["text"], "Approval needed: Pay &lt;50&gt; &amp; go");
        assert_eq!(s["blocks"][1]["type"], "section");
        let mut esc = a;
        esc["escalation"] = json!({"step": 1, "after_ms": 5_400_000});
        let m = render(&n(kind::APPROVAL_ESCALATED, esc), &run);
        assert!(
            m.title.starts_with("Approval still waiting after 1h30m"),
            "{}",
            m.title
        );
        let m = render(
            &n(
                kind::RUN_FAILED,
                json!({"status": "timed_out", "reason": "deadline", "exit_code": null, "attempt": 2}),
            ),
            &run,
        );
        assert_eq!(m.title, "Run timed_out: refunds (deadline)");
        assert_eq!(m.document["failure"]["attempt"], 2);
        let m = render(
            &n(
                kind::BUDGET_THRESHOLD,
                json!({"limit": "cost", "percent": 80, "used": 0.85, "max": 1.0}),
            ),
            &run,
        );
        assert_eq!(
            m.title,
            "Budget 80% used: refunds (cost $0.8500 of $1.0000)"
        );
        let (subject, body) = email(&m, kind::BUDGET_THRESHOLD, "k");
        assert!(subject.starts_with("[dispatch] Budget 80%"));
        assert!(body.contains("dispatch stop"));
        let reason = "cancelled before it started: review deadline passed: nobody decided within 24h00m (review timeout)";
        let m = render(
            &n(
                kind::REVIEW_EXPIRED,
                json!({"approval": {"id": "policy-review", "deadline": 9}, "reason": reason}),
            ),
            &run,
        );
        assert_eq!(m.title, "Review expired: refunds was cancelled");
        assert!(m.lines[0].ends_with(&format!("{reason}.")), "{m:?}");
        assert!(m.lines.iter().any(|l| l.contains("dispatch replay")));
        assert_eq!(m.document["reason"], reason);
        assert_eq!(m.document["approval"]["deadline"], 9);
    }
}
