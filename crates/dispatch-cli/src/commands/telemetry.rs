//! The telemetry sections of `inspect-run`: the timeline of steps with
//! durations, tool calls and usage by model (built by
//! `dispatch_runtime::report`).

use dispatch_core::event::shorten;
use dispatch_core::time::human_duration;
use dispatch_runtime::report::RunReport;
use serde_json::Value;

use crate::output::cost_text;

/// The human-readable telemetry sections of `inspect-run`.
pub fn print_human(r: &RunReport) {
    if !r.timeline.is_empty() {
        println!("Timeline:");
        for s in &r.timeline {
            let dur = s
                .duration_ms
                .map_or_else(|| "running".into(), human_duration);
            println!("  #{} {:<20} {dur}", s.attempt, s.name);
        }
    }
    if !r.tool_calls.is_empty() {
        println!("Tool calls:");
        for t in &r.tool_calls {
            let ok = match t.ok {
                Some(true) => "ok",
                Some(false) => "failed",
                None => "-",
            };
            let dur = t.duration_ms.map_or_else(|| "-".into(), human_duration);
            let kind = t.kind.as_ref().map(|k| format!(" {k}")).unwrap_or_default();
            println!(
                "  #{} {:<20} {ok:<6} {dur}{kind}",
                t.attempt,
                t.name.as_deref().unwrap_or("?")
            );
            if !t.input.is_null() {
                println!("      input:  {}", shorten(&t.input.to_string(), 160));
            }
            if let Some(by) = &t.edited_by {
                let asked = t.requested_input.as_ref().unwrap_or(&Value::Null);
                println!("      asked:  {}", shorten(&asked.to_string(), 160));
                let when = dispatch_core::time::format_rfc3339(by.at)
                    .map(|at| format!(", {at}"))
                    .unwrap_or_default();
                println!(
                    "      edited by {} (approval {}{when}): the input above is what ran",
                    by.by, by.approval,
                );
            }
            if let Some(out) = t.output.as_str() {
                let out = out.replace('\n', " ");
                println!("      output: {}", shorten(&out, 160));
            }
        }
    }
    if !r.usage_by_model.is_empty() {
        println!("Usage by model:");
        for (model, u) in &r.usage_by_model {
            println!(
                "  {model:<20} {} in / {} out  {}",
                u.input_tokens,
                u.output_tokens,
                cost_text(u.cost_usd)
            );
        }
    }
}
