//! `dispatch inspect-run`: everything about a run.

use dispatch_core::now_ms;
use dispatch_core::time::human_duration;
use dispatch_runtime::report::{self, Place, RunReport, ServiceReport};
use dispatch_runtime::service::model::Trigger;
use dispatch_store::Run;
use dispatch_store::sqlite::SqliteStore;
use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::{Format, InspectArgs};
use crate::ctx::{Ctx, find_run};
use crate::error::{CliError, CliResult};
use crate::output::{cost_text, print_json, time_text};

pub async fn inspect(ctx: &Ctx, args: &InspectArgs) -> CliResult {
    let store = ctx.existing_store()?.ok_or_else(|| {
        CliError::input(format!(
            "no run matches `{}` (no runs yet)",
            args.ids.ids[0]
        ))
    })?;
    if let Some(how) = args.graph {
        return super::inspect_workflow::print_graph(ctx, &store, args, how).await;
    }
    let mut reports = Vec::new();
    for arg in &args.ids.ids {
        let run = find_run(&store, &ctx.layout, arg).await?;
        reports.push(report_of(ctx, &store, &run).await?);
    }
    print(&reports, args.format);
    Ok(0)
}

/// The run's [`RunReport`], built from the local store.
async fn report_of(ctx: &Ctx, store: &SqliteStore, run: &Run) -> CliResult<RunReport> {
    let now = now_ms();
    let waiting = dispatch_runtime::waiting::reason(store, run, now).await;
    Ok(report::build(store, &ctx.layout, Place::Local, run.clone(), waiting, now).await?)
}

/// `inspect-run`'s output of `reports`, local or from a server alike: an
/// array of them in JSON (through a [`Value`], so with its keys sorted),
/// or each for people, a blank line between.
pub(crate) fn print(reports: &[RunReport], format: Format) {
    if format == Format::Json {
        print_json(&json!(reports));
    } else {
        for (i, r) in reports.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print_human(r);
        }
    }
}

/// A field as its JSON says it: a string's text, `-` for null, else the JSON.
fn text<T: Serialize>(v: &T) -> String {
    match json!(v) {
        Value::String(s) => s,
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_human(r: &RunReport) {
    let run = &r.run;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12}{v}\n"));
    line("Run:", run.id.to_string());
    // Shown once there is more than the default project.
    if run.project != dispatch_core::project::DEFAULT_PROJECT {
        line("Project:", run.project.clone());
    }
    line(
        "Parcel:",
        format!("{} ({})", run.parcel_name, run.parcel_digest),
    );
    line("Operation:", text(&run.operation));
    line("Status:", r.status_text.clone());
    if let Some(reason) = run.state.reason() {
        line("Reason:", reason.to_string());
    }
    if let Some(why) = &r.waiting {
        line("Waiting:", why.clone());
    }
    line("Exit code:", text(&r.exit_code));
    line("Attempt:", run.attempt.to_string());
    line("Created:", time_text(run.created_at, now_ms()));
    if let Some(ms) = r.duration_ms {
        line("Duration:", human_duration(ms));
    }
    let u = &run.usage;
    let estimated = super::inspect_agent::estimated_calls(r);
    line(
        "Tokens:",
        match estimated {
            0 => format!("{} in / {} out", u.input_tokens, u.output_tokens),
            n => format!(
                "{} in / {} out (of which {n} call(s) estimated)",
                u.input_tokens, u.output_tokens
            ),
        },
    );
    let cost = cost_text(u.cost_usd);
    match super::inspect_agent::cost_unknown(r) {
        true => line(
            "Cost:",
            format!("{cost} + unknown (a model without a price; add PRICE)"),
        ),
        false => line("Cost:", cost),
    }
    if let Some(p) = &run.parent_id {
        line("Parent:", p.to_string());
    }
    line("Trigger:", text(&run.trigger));
    if let Some(c) = &r.concurrency {
        line(
            "Concurrency:",
            format!(" {} (max {}, {})", c.key, c.max, text(&c.strategy)),
        );
    }
    if let Some(p) = &run.origin_id {
        line("Origin:", p.to_string());
    }
    for (part, label) in [
        (json!(r.advisory), "Metadata:"),
        (json!(r.mounts), "Mounts:"),
    ] {
        let text = super::inspect_agent::pairs(&part);
        if !text.is_empty() {
            line(label, text);
        }
    }
    // The runs this one handed off to (each once, however often it said so).
    let mut handed: Vec<String> = Vec::new();
    for e in r.events.iter().filter(|e| e.event.kind == "handoff") {
        let data = &e.event.data;
        if let Some(id) = data["run_id"].as_str() {
            let entry = format!("{id} ({})", data["parcel"].as_str().unwrap_or("?"));
            if !handed.contains(&entry) {
                handed.push(entry);
            }
        }
    }
    if !handed.is_empty() {
        line("Handoffs:", handed.join(", "));
    }
    line("Payload:", run.payload.to_string());
    line("Output:", json!(run.output).to_string());
    line("Brief:", run.brief_sha256.clone());
    line("Log:", r.log_path.clone());
    let w = &r.workspace;
    let keep = if w.keep { ", --keep-workspace" } else { "" };
    let kind = match &w.kind {
        Some(k) => format!(", {k}"),
        None => String::new(),
    };
    line(
        "Workspace:",
        format!("{} ({}{kind}{keep})", w.path.display(), w.state),
    );
    print!("{out}");
    if let Some(svc) = &r.service {
        print_service(svc);
    }
    if !r.attempts.is_empty() {
        println!("Attempts:");
        for a in &r.attempts {
            let at = &a.attempt;
            let dur = match at.ended_at {
                Some(e) => human_duration(e - at.started_at),
                None => "-".into(),
            };
            let u = &a.usage;
            println!(
                "  #{} {} exit {} {} tokens {}/{} cost {}{}",
                at.number,
                at.status.as_ref().map_or_else(|| "running".into(), text),
                text(&at.exit_code),
                dur,
                u.input_tokens,
                u.output_tokens,
                cost_text(u.cost_usd),
                at.error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            if let Some(worker) = &at.worker {
                println!("     on {worker}");
            }
            super::inspect_resources::print_attempt(a);
        }
    }
    super::telemetry::print_human(r);
    super::inspect_agent::print_human(r);
    super::inspect_workflow::print_human(r);
    if !r.approvals.is_empty() {
        println!("Approvals:");
        for a in &r.approvals {
            let decision = match &a.decision {
                Some(dec) => format!(
                    "{dec} by {}{}",
                    a.decided_by.as_deref().unwrap_or("?"),
                    a.rationale
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                None => "pending".into(),
            };
            let member = match &a.run_id {
                id if *id != run.id => format!(" [member run {id}]"),
                _ => String::new(),
            };
            println!("  {} ({}) {decision}{member}", a.id, a.summary);
        }
    }
    if let Some(dl) = &r.dead_letter {
        println!(
            "Dead letter: {} (`dispatch dlq replay` runs it again)",
            dl.reason
        );
    }
    if !r.artifacts.is_empty() {
        println!("Artifacts:");
        for a in &r.artifacts {
            println!("  {} {} bytes sha256:{}", a.name, a.size, a.sha256);
        }
    }
    println!("Events:");
    for e in &r.events {
        let mut data = e.event.data.clone();
        if let Some(o) = data.as_object_mut() {
            o.remove("type");
        }
        // (The seq unpadded: the untyped renderer's `{:>4}` never padded a JSON value.)
        println!("  {} {:<12} {}", e.seq, e.event.kind, data);
    }
}

/// The service part: wake policy, timers, listeners, ingress policy.
fn print_service(svc: &ServiceReport) {
    let c = &svc.config;
    let now = now_ms();
    let t = |at: Option<i64>| at.map_or_else(|| "-".into(), |at| time_text(at, now));
    println!(
        "Service:    overlap {} (max concurrent {}, max pending {})",
        c.overlap.as_str(),
        c.max_concurrent,
        c.max_pending
    );
    for s in &svc.schedules {
        let label = match &s.trigger {
            Trigger::Interval { every_ms } => format!("every {}", human_duration(*every_ms as i64)),
            Trigger::Cron { expr } => expr.clone(),
        };
        println!(
            "  schedule {label:<20} next_fire_at {} last_fired_at {} fires {} skipped {}",
            t(s.next_fire_at),
            t(s.last_fired_at),
            s.fires,
            s.skipped
        );
    }
    for l in &svc.listeners {
        println!(
            "  listener {} bound_addr {} requests_handled {} requests_rejected {} last_request_at {}",
            l.addr,
            l.bound_addr.as_deref().unwrap_or("-"),
            l.requests_handled,
            l.requests_rejected,
            t(l.last_request_at)
        );
    }
    if let Some(p) = &c.listen {
        println!(
            "  ingress  path {} methods {} secret {} max_body_bytes {} max_header_bytes {}",
            p.path.as_deref().unwrap_or("(any)"),
            if p.methods.is_empty() {
                "(any)".to_string()
            } else {
                p.methods.join(",")
            },
            p.secret_source
                .as_ref()
                .map_or("(none)".to_string(), |s| format!("sha256 from {s}")),
            p.max_body_bytes,
            p.max_header_bytes
        );
    }
}
