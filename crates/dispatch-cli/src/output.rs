//! Shared output helpers: data on stdout, everything else on stderr.

use std::io::IsTerminal;

use comfy_table::{ContentArrangement, Table, presets};
use dispatch_core::time::{human_ago, human_duration};
use dispatch_core::{RunState, Status, Ts};
use dispatch_store::Run;
use serde_json::{Value, json};

/// A plain, Docker-like table: no borders, columns separated by spaces.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

/// Prints a table without the padding comfy-table leaves at line ends.
pub fn print_table(t: &Table) {
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    print!("{out}");
}

pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values always serialize")
    );
}

/// Whether to color output on stderr: a terminal, and `NO_COLOR` unset.
pub fn color_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// `running 3.2s`, `succeeded (exit 0)`, `failed (exit 3)`, `queued`.
pub fn status_text(state: &RunState, now: Ts) -> String {
    match state {
        RunState::Running { started_at, .. } => {
            format!("running {}", human_duration(now - started_at))
        }
        RunState::Paused { reason, .. } => format!("paused: {reason}"),
        s if s.is_terminal() => match s.exit_code() {
            Some(code) => format!("{} (exit {code})", s.status()),
            None => s.status().to_string(),
        },
        s => s.status().to_string(),
    }
}

/// How long the run ran (or has been running).
pub fn duration_ms(state: &RunState, now: Ts) -> Option<i64> {
    let start = state.started_at()?;
    Some(state.ended_at().unwrap_or(now) - start)
}

pub fn duration_text(state: &RunState, now: Ts) -> String {
    duration_ms(state, now).map_or_else(|| "-".into(), human_duration)
}

pub fn created_text(run: &Run, now: Ts) -> String {
    human_ago(run.created_at, now)
}

pub fn cost_text(cost: f64) -> String {
    if cost == 0.0 {
        "-".into()
    } else {
        format!("${cost:.4}")
    }
}

/// A run as JSON: the stored record plus derived fields.
pub fn run_json(run: &Run, now: Ts) -> Value {
    let mut v = serde_json::to_value(run).expect("a run is plain data");
    v["status"] = json!(run.status());
    v["exit_code"] = json!(run.state.exit_code());
    v["duration_ms"] = json!(duration_ms(&run.state, now));
    v["total_tokens"] = json!(run.usage.total_tokens());
    v
}

/// Colors a status word for a terminal.
pub fn paint(status: Status, text: &str) -> String {
    if !color_stderr() {
        return text.to_string();
    }
    let code = match status {
        Status::Succeeded => "32",
        Status::Failed | Status::TimedOut => "31",
        Status::Cancelled | Status::Stopped => "33",
        _ => "36",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}
