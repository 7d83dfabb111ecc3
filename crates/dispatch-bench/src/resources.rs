//! `dispatch-bench resources [--dispatch PATH] [--n N]`: `run --detach` →
//! agent executing, for the same agent without `RESOURCES`, with
//! `RESOURCES` enforced by cgroup v1 groups, and with the groups turned off
//! (`DISPATCH_NO_CGROUPS=1`: rlimits only). The three are interleaved run by
//! run so that they share the machine's load; the ratio is to the
//! no-`RESOURCES` median of the same run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{flag_value, median, pct};

fn agent(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let a = dir.join(name);
    std::fs::create_dir_all(&a).expect("mkdir agent");
    std::fs::write(
        a.join("Agentfile"),
        format!("NAME {name}\nCOMMAND [\"date\", \"+%s%N\"]\nENV LC_ALL=C\n{extra}"),
    )
    .expect("write Agentfile");
    a
}

/// Milliseconds from just before `run --detach` to the agent's clock read.
fn once(dispatch: &Path, root: &Path, a: &Path, no_cgroups: bool) -> f64 {
    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i128;
    let mut c = Command::new(dispatch);
    c.env("DISPATCH_ROOT", root).stdin(Stdio::null());
    if no_cgroups {
        c.env("DISPATCH_NO_CGROUPS", "1");
    }
    let out = c
        .args(["run", a.to_str().expect("utf-8"), "--detach"])
        .output()
        .expect("run dispatch");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Command::new(dispatch)
        .env("DISPATCH_ROOT", root)
        .args(["wait", &id])
        .output()
        .expect("wait");
    let log = std::fs::read_to_string(root.join("runs").join(format!("{id}.log"))).expect("log");
    let ns: i128 = log
        .lines()
        .find(|l| !l.starts_with("[dispatch]"))
        .and_then(|l| l.trim().parse().ok())
        .expect("the agent printed its start time");
    (ns - t0) as f64 / 1e6
}

pub fn main(dispatch: &Path, args: &[String]) {
    let n: usize = flag_value(args, "--n")
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join(".dispatch");
    let limits = "RESOURCES CPUS 1 MEMORY 512M PIDS 256\n";
    let bare = agent(dir.path(), "bare", "");
    let limited = agent(dir.path(), "limited", limits);
    let (mut b, mut g, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n + 5 {
        let (x, y, z) = (
            once(dispatch, &root, &bare, false),
            once(dispatch, &root, &limited, false),
            once(dispatch, &root, &limited, true),
        );
        if i >= 5 {
            b.push(x);
            g.push(y);
            r.push(z);
        }
    }
    let base = median(b.clone());
    println!("| measurement | median | p90 | ratio to no RESOURCES |\n|---|---|---|---|");
    for (what, v) in [
        ("no RESOURCES", b),
        ("`RESOURCES CPUS 1 MEMORY 512M PIDS 256`, cgroup v1", g),
        ("the same, `DISPATCH_NO_CGROUPS=1` (rlimits)", r),
    ] {
        let m = median(v.clone());
        println!(
            "| `run --detach` → agent executing (n={n}), {what} | {m:.2} ms | {:.2} ms | {:.2} |",
            pct(v, 0.9),
            m / base
        );
    }
}
