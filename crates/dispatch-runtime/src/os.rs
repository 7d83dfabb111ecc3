//! Operating-system specifics, in one place.
//!
//! - Liveness is judged from `/proc/<pid>/stat`: a pid is ours only if its
//!   start time matches the one recorded when we spawned it (pids are
//!   recycled), and a zombie counts as dead (in containers PID 1 may never
//!   reap an orphaned helper).
//! - Agents run in their own process group (the agent's pid is the group id);
//!   every signal goes to the group, never to a lone pid, so grandchildren die
//!   with their parent.
//! - The helper runs in its own session (`setsid`, called by the helper
//!   itself), so a terminal's SIGINT or SIGHUP never reaches it and it
//!   survives the CLI that spawned it.

use dispatch_core::ProcRef;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// What `/proc/<pid>/stat` says about a process.
struct Stat {
    state: char,
    start_ticks: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces and
    // parentheses: fields resume after the last `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// A reference to the running process `pid`, with its start time.
pub fn proc_ref(pid: u32) -> ProcRef {
    ProcRef {
        pid,
        start_ticks: read_stat(pid).map_or(0, |s| s.start_ticks),
    }
}

/// This process.
pub fn this_process() -> ProcRef {
    proc_ref(std::process::id())
}

/// Whether `p` is still running (not exited, not a zombie, pid not recycled).
pub fn is_alive(p: ProcRef) -> bool {
    match read_stat(p.pid) {
        Some(stat) => {
            !matches!(stat.state, 'Z' | 'X' | 'x')
                && (p.start_ticks == 0 || stat.start_ticks == p.start_ticks)
        }
        None if std::path::Path::new("/proc/self/stat").exists() => false,
        // No procfs: fall back to signal 0.
        None => kill(Pid::from_raw(p.pid as i32), None).is_ok(),
    }
}

/// Sends `signal` to the process group `pgid`. Returns false when the group is gone.
pub fn signal_group(pgid: u32, signal: Signal) -> bool {
    if pgid <= 1 {
        return false; // never signal init's group or "every process"
    }
    killpg(Pid::from_raw(pgid as i32), signal).is_ok()
}

/// Sends `signal` to one process we own (the helper). Returns false when it is gone.
pub fn signal_process(p: ProcRef, signal: Signal) -> bool {
    is_alive(p) && kill(Pid::from_raw(p.pid as i32), signal).is_ok()
}

/// Whether any live (non-zombie) process remains in group `pgid`.
pub fn group_has_live_members(pgid: u32) -> bool {
    if killpg(Pid::from_raw(pgid as i32), None).is_err() {
        return false;
    }
    // Members exist; make sure they are not all zombies waiting to be reaped.
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            return false;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
            return false;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // fields after the name: state, ppid, pgrp
        f.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
            && !matches!(f.first(), Some(&"Z") | Some(&"X"))
    })
}

/// Moves this process into a new session (and so a new process group), so a
/// terminal's SIGINT or SIGHUP never reaches it. The helper calls this first
/// thing: spawning it plainly lets std use posix_spawn (vfork) instead of
/// fork + pre_exec, which is several times faster. Fails harmlessly when the
/// process already leads a group.
pub fn detach_session() {
    let _ = nix::unistd::setsid();
}

/// The exit code a shell would report: the code, or 128 + signal.
pub fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn this_process_is_alive_and_a_recycled_pid_is_not() {
        let me = this_process();
        assert!(me.start_ticks > 0, "procfs reports a start time");
        assert!(is_alive(me));
        let impostor = ProcRef {
            pid: me.pid,
            start_ticks: me.start_ticks + 1,
        };
        assert!(
            !is_alive(impostor),
            "a different start time is another process"
        );
    }

    #[test]
    fn a_reaped_child_is_dead() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let r = proc_ref(child.id());
        child.wait().expect("wait");
        assert!(!is_alive(r));
    }
}
