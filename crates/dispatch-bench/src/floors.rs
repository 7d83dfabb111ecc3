//! `dispatch-bench local --only floors [--dispatch PATH]`: what time to
//! agent with the sandbox on cannot go below on this machine, each part
//! measured beside a bare spawn in the same run (issue #38 item 5).
//!
//! - **spawn+wait `true`**: the baseline every ratio is taken against.
//! - **`dispatch` starting and exiting** (`dispatch __spawner 1`, which
//!   fails at once: no parent of that pid): the loader mapping and
//!   relocating the binary and Rust's runtime start, before `main` does
//!   anything. Every `dispatch run` pays it once.
//! - **bubblewrap** (`bwrap`, when it is on `PATH`): the sandbox tool of
//!   Flatpak, making a view like the agent's (its own mount, PID, IPC and
//!   UTS namespaces; `/usr` read-only, `/proc`, `/dev`, a `/tmp` of its own)
//!   and executing `true` in it: what a sandbox of that kind costs the
//!   kernel, with no run recorded.
//!
//! The samples of the three are interleaved (one of each in turn), so a
//! noisy minute moves them together. Wall time per start (median, p90) and
//! CPU time per start (the children's user + system time, averaged) are
//! printed in the bench's Markdown table.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// One thing started and waited for, `n` times.
struct Probe {
    name: &'static str,
    command: Command,
    /// It must exit 0 to count (`dispatch __spawner 1` fails by design).
    must_succeed: bool,
    /// It could not be started, or failed when it must succeed: no floor.
    failed: bool,
    wall_ms: Vec<f64>,
    cpu_ms: f64,
}

impl Probe {
    fn new(name: &'static str, program: &str, args: &[&str], must_succeed: bool) -> Probe {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Probe {
            name,
            command,
            must_succeed,
            failed: false,
            wall_ms: Vec::new(),
            cpu_ms: 0.0,
        }
    }

    /// Starts it once and waits, unless it failed before; marks it failed
    /// when it cannot be started, or fails when it must succeed (a sandbox
    /// refused here is no floor).
    fn sample(&mut self) {
        if self.failed {
            return;
        }
        let before = children_cpu_ms();
        let t = Instant::now();
        match self.command.status() {
            Ok(status) if status.success() || !self.must_succeed => {
                self.wall_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                self.cpu_ms += children_cpu_ms() - before;
            }
            _ => self.failed = true,
        }
    }
}

/// User + system time of this process's waited-for children so far
/// (`/proc`'s ticks of 10 ms are too coarse for one start).
pub(crate) fn children_cpu_ms() -> f64 {
    rusage_ms(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
}

/// User + system time of `who` (this process, or its waited-for children).
pub(crate) fn rusage_ms(who: nix::sys::resource::UsageWho) -> f64 {
    let Ok(usage) = nix::sys::resource::getrusage(who) else {
        return 0.0;
    };
    let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1000.0 + t.tv_usec() as f64 / 1000.0;
    ms(usage.user_time()) + ms(usage.system_time())
}

/// The bwrap command line of a view like the sandbox's, `true` in it.
fn bwrap_args() -> Vec<&'static str> {
    let mut args = vec![
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
    ];
    for (link, target) in [
        ("/bin", "usr/bin"),
        ("/sbin", "usr/sbin"),
        ("/lib", "usr/lib"),
        ("/lib64", "usr/lib64"),
    ] {
        args.extend(["--symlink", target, link]);
    }
    args.extend([
        "--ro-bind",
        "/etc",
        "/etc",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--chdir",
        "/tmp",
        "true",
    ]);
    args
}

/// Prints the floors' rows (`n` samples of each).
pub fn run(dispatch: &Path, n: usize) {
    let exe = dispatch.to_str().expect("a UTF-8 path");
    let mut probes = vec![
        Probe::new("spawn+wait `true`", "true", &[], true),
        Probe::new(
            "`dispatch` starting and exiting (`dispatch __spawner 1`)",
            exe,
            &["__spawner", "1"],
            false,
        ),
    ];
    let bwrap = super::ui::which("bwrap").is_some();
    if bwrap {
        probes.push(Probe::new(
            "bubblewrap: its namespaces and view, then `true`",
            "bwrap",
            &bwrap_args(),
            true,
        ));
    }
    // Warm up (page cache, the first mounts), then interleave.
    for probe in probes.iter_mut() {
        for _ in 0..5 {
            probe.sample();
        }
        probe.wall_ms.clear();
        probe.cpu_ms = 0.0;
    }
    for _ in 0..n {
        for probe in probes.iter_mut() {
            probe.sample();
        }
    }
    let base = super::median(probes[0].wall_ms.clone());
    let base_cpu = probes[0].cpu_ms / probes[0].wall_ms.len().max(1) as f64;
    for probe in probes {
        if probe.failed || probe.wall_ms.is_empty() {
            println!(
                "| floor: {} | could not be started, or failed (bwrap needs user namespaces or root) | — |",
                probe.name
            );
            continue;
        }
        let runs = probe.wall_ms.len();
        let cpu = probe.cpu_ms / runs as f64;
        let p50 = super::median(probe.wall_ms.clone());
        println!(
            "| floor: {} (n={runs}) | wall p50 {p50:.2} ms ({:.1}× the spawn), p90 {:.2} ms; CPU {cpu:.2} ms a start ({:.1}×) | — |",
            probe.name,
            p50 / base,
            super::pct(probe.wall_ms, 0.9),
            cpu / base_cpu,
        );
    }
    if !bwrap {
        println!(
            "| floor: bubblewrap | not installed (`apt-get install bubblewrap`): no sandbox floor | — |"
        );
    }
}
