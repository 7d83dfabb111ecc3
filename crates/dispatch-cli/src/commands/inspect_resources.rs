//! `inspect-run`'s resources per attempt: the limits in effect and how
//! (cgroup v1, rlimit, watched, not applied), peak memory and CPU time —
//! from the `resources` event the runtime writes when an attempt ends, the
//! same locally and through `--host`.

use dispatch_runtime::report::ReportAttempt;

/// A size in bytes for people: `63.9M`, `512K`.
fn bytes_text(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1}G", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1}M", n as f64 / (1u64 << 20) as f64),
        n => format!("{}K", n >> 10),
    }
}

fn how_text(how: &str) -> &str {
    match how {
        "cgroup_v1" => "cgroup v1",
        "cgroup_v2" => "cgroup v2",
        "rlimit" => "rlimit, approximate",
        "watch" => "watched",
        "not_applied" => "NOT APPLIED",
        other => other,
    }
}

/// The attempt's `limits:` and `used:` lines.
pub fn print_attempt(a: &ReportAttempt) {
    let Some(r) = &a.resources else {
        return;
    };
    let limits: Vec<String> = r
        .limits
        .iter()
        .map(|l| {
            let note = l
                .note
                .as_ref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default();
            format!("{} {} ({}{note})", l.limit, l.value, how_text(&l.how))
        })
        .collect();
    if !limits.is_empty() {
        println!("     limits: {}", limits.join("; "));
    }
    let peak = r
        .peak_memory_bytes
        .map_or_else(|| "-".to_string(), bytes_text);
    let cpu = r
        .cpu_time_ms
        .map_or_else(|| "-".to_string(), |ms| format!("{ms}ms"));
    let fuel = r
        .fuel_used
        .map(|n| format!(", fuel {n}"))
        .unwrap_or_default();
    println!(
        "     used: peak memory {peak}, CPU time {cpu}{fuel} (measured by {})",
        r.measured_by.as_deref().unwrap_or("-")
    );
}
