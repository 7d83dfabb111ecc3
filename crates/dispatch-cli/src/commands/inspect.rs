//! `dispatch inspect-run`: everything about a run.

use dispatch_core::now_ms;
use dispatch_core::time::human_duration;
use dispatch_runtime::report::{self, Place};
use dispatch_store::Run;
use dispatch_store::sqlite::SqliteStore;
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
    let mut docs = Vec::new();
    for arg in &args.ids.ids {
        let run = find_run(&store, &ctx.layout, arg).await?;
        docs.push(document(ctx, &store, &run).await?);
    }
    if args.format == Format::Json {
        print_json(&Value::Array(docs));
    } else {
        for (i, d) in docs.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print_human(d);
        }
    }
    Ok(0)
}

/// The run's [`RunReport`](dispatch_runtime::report::RunReport), as JSON.
async fn document(ctx: &Ctx, store: &SqliteStore, run: &Run) -> CliResult<Value> {
    let now = now_ms();
    let waiting = dispatch_runtime::waiting::reason(store, run, now).await;
    let report = report::build(store, &ctx.layout, Place::Local, run.clone(), waiting, now).await?;
    Ok(json!(report))
}

pub(crate) fn print_human(d: &Value) {
    let s = |k: &str| match &d[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12}{v}\n"));
    line("Run:", s("id"));
    // Shown once there is more than the default project.
    if let Some(project) = d["project"]
        .as_str()
        .filter(|p| *p != dispatch_core::project::DEFAULT_PROJECT)
    {
        line("Project:", project.to_string());
    }
    line(
        "Parcel:",
        format!("{} ({})", s("parcel_name"), s("parcel_digest")),
    );
    line("Operation:", s("operation"));
    line("Status:", s("status_text"));
    if let Some(reason) = d["state"]["reason"].as_str() {
        line("Reason:", reason.to_string());
    }
    if let Some(why) = d["waiting"].as_str() {
        line("Waiting:", why.to_string());
    }
    line("Exit code:", s("exit_code"));
    line("Attempt:", s("attempt"));
    let created = d["created_at"]
        .as_i64()
        .map_or_else(|| "-".to_string(), |at| time_text(at, now_ms()));
    line("Created:", created);
    if let Some(ms) = d["duration_ms"].as_i64() {
        line("Duration:", human_duration(ms));
    }
    let u = &d["usage"];
    let estimated = super::inspect_agent::estimated_calls(d);
    line(
        "Tokens:",
        match estimated {
            0 => format!("{} in / {} out", u["input_tokens"], u["output_tokens"]),
            n => format!(
                "{} in / {} out (of which {n} call(s) estimated)",
                u["input_tokens"], u["output_tokens"]
            ),
        },
    );
    let cost = cost_text(u["cost_usd"].as_f64().unwrap_or(0.0));
    match super::inspect_agent::cost_unknown(d) {
        true => line(
            "Cost:",
            format!("{cost} + unknown (a model without a price; add PRICE)"),
        ),
        false => line("Cost:", cost),
    }
    if let Some(p) = d["parent_id"].as_str() {
        line("Parent:", p.to_string());
    }
    line("Trigger:", s("trigger"));
    if let Some(key) = d["concurrency"]["key"].as_str() {
        let c = &d["concurrency"];
        let strategy = c["strategy"].as_str().unwrap_or("queue");
        line(
            "Concurrency:",
            format!(" {key} (max {}, {strategy})", c["max"]),
        );
    }
    if let Some(p) = d["origin_id"].as_str() {
        line("Origin:", p.to_string());
    }
    for (key, label) in [("advisory", "Metadata:"), ("mounts", "Mounts:")] {
        let text = super::inspect_agent::pairs(&d[key]);
        if !text.is_empty() {
            line(label, text);
        }
    }
    // The runs this one handed off to (each once, however often it said so).
    let mut handed: Vec<String> = Vec::new();
    for e in d["events"].as_array().into_iter().flatten() {
        let data = &e["data"];
        if let (Some("handoff"), Some(id)) = (e["type"].as_str(), data["run_id"].as_str()) {
            let entry = format!("{id} ({})", data["parcel"].as_str().unwrap_or("?"));
            if !handed.contains(&entry) {
                handed.push(entry);
            }
        }
    }
    if !handed.is_empty() {
        line("Handoffs:", handed.join(", "));
    }
    line("Payload:", d["payload"].to_string());
    line("Output:", d["output"].to_string());
    line("Brief:", s("brief_sha256"));
    line("Log:", s("log_path"));
    if let Some(path) = d["workspace"]["path"].as_str() {
        let state = d["workspace"]["state"].as_str().unwrap_or("-");
        let keep = match d["workspace"]["keep"].as_bool() {
            Some(true) => ", --keep-workspace",
            _ => "",
        };
        let kind = match d["workspace"]["kind"].as_str() {
            Some(k) => format!(", {k}"),
            None => String::new(),
        };
        line("Workspace:", format!("{path} ({state}{kind}{keep})"));
    }
    print!("{out}");
    if d["service"].is_object() {
        print_service(&d["service"]);
    }
    if let Some(attempts) = d["attempts"].as_array().filter(|a| !a.is_empty()) {
        println!("Attempts:");
        for a in attempts {
            let dur = match (a["started_at"].as_i64(), a["ended_at"].as_i64()) {
                (Some(s), Some(e)) => human_duration(e - s),
                _ => "-".into(),
            };
            let u = &a["usage"];
            let exit = a["exit_code"]
                .as_i64()
                .map_or_else(|| "-".to_string(), |c| c.to_string());
            println!(
                "  #{} {} exit {} {} tokens {}/{} cost {}{}",
                a["number"],
                a["status"].as_str().unwrap_or("running"),
                exit,
                dur,
                u["input_tokens"],
                u["output_tokens"],
                cost_text(u["cost_usd"].as_f64().unwrap_or(0.0)),
                a["error"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            if let Some(worker) = a["worker"].as_str() {
                println!("     on {worker}");
            }
            super::inspect_resources::print_attempt(a);
        }
    }
    super::telemetry::print_human(d);
    super::inspect_agent::print_human(d);
    super::inspect_workflow::print_human(d);
    if let Some(approvals) = d["approvals"].as_array().filter(|a| !a.is_empty()) {
        println!("Approvals:");
        for a in approvals {
            let decision = match a["decision"].as_str() {
                Some(dec) => format!(
                    "{dec} by {}{}",
                    a["decided_by"].as_str().unwrap_or("?"),
                    a["rationale"]
                        .as_str()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                None => "pending".into(),
            };
            let member = match a["run_id"].as_str() {
                Some(r) if Some(r) != d["id"].as_str() => format!(" [member run {r}]"),
                _ => String::new(),
            };
            println!(
                "  {} ({}) {decision}{member}",
                a["id"].as_str().unwrap_or("?"),
                a["summary"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(reason) = d["dead_letter"]["reason"].as_str() {
        println!("Dead letter: {reason} (`dispatch dlq replay` runs it again)");
    }
    if let Some(arts) = d["artifacts"].as_array().filter(|a| !a.is_empty()) {
        println!("Artifacts:");
        for a in arts {
            println!(
                "  {} {} bytes sha256:{}",
                a["name"].as_str().unwrap_or("?"),
                a["size"],
                a["sha256"].as_str().unwrap_or("?")
            );
        }
    }
    if let Some(events) = d["events"].as_array() {
        println!("Events:");
        for e in events {
            let mut data = e["data"].clone();
            if let Some(o) = data.as_object_mut() {
                o.remove("type");
            }
            println!(
                "  {:>4} {:<12} {}",
                e["seq"],
                e["type"].as_str().unwrap_or("?"),
                data
            );
        }
    }
}

/// The service part: wake policy, timers, listeners, ingress policy.
fn print_service(svc: &Value) {
    let c = &svc["config"];
    let now = now_ms();
    let t = |v: &Value| {
        v.as_i64()
            .map_or_else(|| "-".into(), |at| time_text(at, now))
    };
    println!(
        "Service:    overlap {} (max concurrent {}, max pending {})",
        c["overlap"].as_str().unwrap_or("?"),
        c["max_concurrent"],
        c["max_pending"]
    );
    for s in svc["schedules"].as_array().into_iter().flatten() {
        let label = match s["kind"].as_str() {
            Some("interval") => format!(
                "every {}",
                s["every_ms"]
                    .as_i64()
                    .map_or_else(|| "?".into(), human_duration)
            ),
            _ => s["expr"].as_str().unwrap_or("?").to_string(),
        };
        println!(
            "  schedule {label:<20} next_fire_at {} last_fired_at {} fires {} skipped {}",
            t(&s["next_fire_at"]),
            t(&s["last_fired_at"]),
            s["fires"],
            s["skipped"]
        );
    }
    for l in svc["listeners"].as_array().into_iter().flatten() {
        println!(
            "  listener {} bound_addr {} requests_handled {} requests_rejected {} last_request_at {}",
            l["addr"].as_str().unwrap_or("?"),
            l["bound_addr"].as_str().unwrap_or("-"),
            l["requests_handled"],
            l["requests_rejected"],
            t(&l["last_request_at"])
        );
    }
    if let Some(p) = c["listen"].as_object() {
        let methods: Vec<&str> = p["methods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "  ingress  path {} methods {} secret {} max_body_bytes {} max_header_bytes {}",
            p["path"].as_str().unwrap_or("(any)"),
            if methods.is_empty() {
                "(any)".to_string()
            } else {
                methods.join(",")
            },
            p["secret_source"]
                .as_str()
                .map_or("(none)".to_string(), |s| format!("sha256 from {s}")),
            p["max_body_bytes"],
            p["max_header_bytes"]
        );
    }
}
