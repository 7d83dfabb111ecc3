//! Counters exposed at `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters, shared by the API and the in-process workers.
#[derive(Debug, Default)]
pub struct Metrics {
    pub http_requests: AtomicU64,
    pub http_errors: AtomicU64,
    pub runs_created: AtomicU64,
    pub runs_claimed: AtomicU64,
    pub runs_finished: AtomicU64,
    pub runs_released: AtomicU64,
    pub leases_lost: AtomicU64,
    pub runs_swept: AtomicU64,
    pub runs_queue_timed_out: AtomicU64,
    /// Times a worker held its claims back: its runtime was behind.
    pub claims_held_back: AtomicU64,
    /// How far behind the workers' runtime was at the last look, in ms.
    pub runtime_lag_ms: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters, and the runs in hand, as Prometheus text.
    pub fn render(&self) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let slots_busy = load(&self.runs_claimed).saturating_sub(
            load(&self.runs_finished) + load(&self.runs_released) + load(&self.leases_lost),
        );
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 10] = [
            (
                "dispatch_http_requests_total",
                "HTTP requests served",
                &self.http_requests,
            ),
            (
                "dispatch_http_errors_total",
                "HTTP requests answered with an error",
                &self.http_errors,
            ),
            (
                "dispatch_runs_created_total",
                "runs created through the API",
                &self.runs_created,
            ),
            (
                "dispatch_runs_claimed_total",
                "runs claimed by this process's workers",
                &self.runs_claimed,
            ),
            (
                "dispatch_runs_finished_total",
                "runs this process's workers ran to an end",
                &self.runs_finished,
            ),
            (
                "dispatch_runs_released_total",
                "runs given back to the queue on drain",
                &self.runs_released,
            ),
            (
                "dispatch_leases_lost_total",
                "runs whose lease was taken over",
                &self.leases_lost,
            ),
            (
                "dispatch_runs_swept_total",
                "expired leases returned to the queue",
                &self.runs_swept,
            ),
            (
                "dispatch_runs_queue_timed_out_total",
                "queued runs this process ended because nobody claimed them in time",
                &self.runs_queue_timed_out,
            ),
            (
                "dispatch_worker_claims_held_back_total",
                "times a worker stopped claiming because its runtime was behind",
                &self.claims_held_back,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP dispatch_worker_slots_busy Runs this process's workers hold now.\n\
             # TYPE dispatch_worker_slots_busy gauge\ndispatch_worker_slots_busy {slots_busy}"
        );
        let _ = writeln!(
            out,
            "# HELP dispatch_worker_runtime_lag_ms How far behind the workers' runtime was at the last look.\n\
             # TYPE dispatch_worker_runtime_lag_ms gauge\ndispatch_worker_runtime_lag_ms {}",
            load(&self.runtime_lag_ms)
        );
        out
    }
}
