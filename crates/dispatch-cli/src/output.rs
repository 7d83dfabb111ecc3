//! Shared output helpers: data on stdout, everything else on stderr.

use std::io::IsTerminal;

use dispatch_core::time::{human_ago, human_duration};
use dispatch_core::{RunState, Status, Ts};
use dispatch_store::Run;

/// Prints `v` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize + ?Sized>(v: &T) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let _ = serde_json::to_writer_pretty(&mut out, v);
    let _ = writeln!(out);
    let _ = out.flush();
}

/// A run as `ps --format json` shows it: the stored record plus derived fields.
#[derive(serde::Serialize)]
pub struct RunView<'a> {
    #[serde(flatten)]
    pub run: &'a Run,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<i64>,
    pub total_tokens: u64,
    /// Why a queued run waits, as a server says (see `GET /v1/runs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<&'a str>,
}

impl<'a> RunView<'a> {
    pub fn new(run: &'a Run, now: Ts) -> Self {
        RunView {
            run,
            status: run.status(),
            exit_code: run.state.exit_code(),
            duration_ms: duration_ms(&run.state, now),
            total_tokens: run.usage.total_tokens(),
            waiting: None,
        }
    }
}

/// Whether to color output on stderr: a terminal, and `NO_COLOR` unset.
pub fn color_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

pub use dispatch_runtime::report::{duration_ms, status_text};

pub fn duration_text(state: &RunState, now: Ts) -> String {
    duration_ms(state, now).map_or_else(|| "-".into(), human_duration)
}

/// A time for people: `2026-11-23 10:04:05 UTC (3 minutes ago)`, or
/// `(in 2m05s)` for one still to come; never raw epoch milliseconds.
pub fn time_text(at: Ts, now: Ts) -> String {
    let when = dispatch_core::time::format_rfc3339(at).map_or_else(
        || "-".to_string(),
        // 2026-11-23T10:04:05.123Z -> 2026-11-23 10:04:05 UTC
        |t| format!("{} UTC", t.replacen('T', " ", 1).get(..19).unwrap_or(&t)),
    );
    if at > now {
        format!("{when} (in {})", human_duration(at - now))
    } else {
        format!("{when} ({})", human_ago(at, now))
    }
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

/// Prints rows as left-aligned columns separated by three spaces (like
/// `docker ps`). Hand-rolled rather than a table crate because `ps -a` prints
/// tens of thousands of rows and must stay fast.
pub fn print_columns(header: &[&str], rows: &[Vec<String>]) {
    use std::io::Write;
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::with_capacity((rows.len() + 1) * (widths.iter().sum::<usize>() + 24));
    let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
        let start = out.len();
        for (i, cell) in cells.enumerate() {
            out.push_str(cell);
            if i + 1 < widths.len() {
                let pad = widths[i] - cell.chars().count() + 3;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let trimmed = out[start..].trim_end().len();
        out.truncate(start + trimmed);
        out.push('\n');
    };
    push_row(&mut header.iter().copied());
    for row in rows {
        push_row(&mut row.iter().map(String::as_str));
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}
