//! What an attempt used: peak memory and CPU time, from its control groups
//! or, without them, from `getrusage(RUSAGE_CHILDREN)` around the attempt.

use serde::{Deserialize, Serialize};

/// Peak memory and CPU time of one attempt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
    /// `cgroup v1`, or `rusage` (the largest single process, and the CPU
    /// time of the processes the agent waited for).
    pub measured_by: String,
}

/// `getrusage(RUSAGE_CHILDREN)` before an attempt: the CPU time of this
/// process's reaped children so far. Meaningful only in a process that runs
/// one agent at a time (a run's helper), not in a worker running several.
#[derive(Clone, Copy, Debug)]
pub struct RusageMark {
    cpu_us: u64,
}

fn children() -> Option<(u64, u64)> {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).ok()?;
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    // ru_maxrss is in kilobytes on Linux.
    Some((
        us(u.user_time()) + us(u.system_time()),
        u.max_rss() as u64 * 1024,
    ))
}

impl RusageMark {
    pub fn now() -> Option<RusageMark> {
        children().map(|(cpu_us, _)| RusageMark { cpu_us })
    }

    /// What the children reaped since the mark used.
    pub fn since(self) -> Option<AttemptUsage> {
        let (cpu_us, max_rss) = children()?;
        Some(AttemptUsage {
            peak_memory_bytes: (max_rss > 0).then_some(max_rss),
            cpu_time_ms: Some(cpu_us.saturating_sub(self.cpu_us) / 1000),
            measured_by: "rusage".to_string(),
        })
    }
}
