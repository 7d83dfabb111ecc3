//! `dispatch-bench isolation [--dispatch NEW] [--baseline OLD] [--n N]`:
//! the private workspace's costs (see BENCHMARKS.md, "Isolation").
//!
//! 1. Workspace creation for a parcel of 1,000 files / 50 MB (and for a
//!    small one): `dispatch_runtime::workspace::ensure` as a run gets it
//!    (an overlayfs mount as root), and `workspace::populate`, the copy it
//!    falls back to, each time into a new directory, on the filesystem of
//!    `TMPDIR` (reported).
//! 2. `run --detach` → agent executing (`date +%s%N`) for a small parcel
//!    (two files), alternating run by run between `--baseline` (a binary
//!    without the workspace and the scrubbed environment) and `--dispatch`,
//!    in the same minutes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::{flag_value, median, pct};

pub(crate) fn main(dispatch: &Path, args: &[String]) {
    let n: usize = flag_value(args, "--n")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let base = tempfile::tempdir().expect("tempdir");
    let fs = filesystem(base.path());
    println!("filesystem of {}: {fs}\n", base.path().display());
    println!("| measurement | result | target |\n|---|---|---|");
    workspace_creation(base.path(), 1000, 50 * 1024, 30);
    workspace_creation(base.path(), 2, 1024, 200);
    let mut bins = Vec::new();
    if let Some(b) = flag_value(args, "--baseline") {
        bins.push(("baseline", PathBuf::from(b)));
    }
    bins.push(("this build", dispatch.to_path_buf()));
    time_to_agent(base.path(), &bins, n);
}

/// `df --output=fstype`: the filesystem's type (`stat -f` says `ext2/ext3` for ext4).
fn filesystem(dir: &Path) -> String {
    Command::new("df")
        .args(["--output=fstype"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines().nth(1).map(|l| l.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Builds a parcel of `files` files of `size` bytes each, then copies it
/// into a new workspace `n` times.
fn workspace_creation(base: &Path, files: usize, size: usize, n: usize) {
    let ctx = base.join(format!("ctx-{files}"));
    std::fs::create_dir_all(ctx.join("data")).expect("mkdir");
    std::fs::write(ctx.join("Agentfile"), "NAME big\nCOMMAND true\nCOPY data\n")
        .expect("Agentfile");
    for i in 0..files {
        // Ten directories, distinct contents (no two files alike).
        let dir = ctx.join("data").join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut bytes = vec![(i % 251) as u8; size];
        bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
        std::fs::write(dir.join(format!("f{i}.bin")), bytes).expect("write");
    }
    let parcels = base.join(format!("parcels-{files}"));
    let parcel = dispatch_core::parcel::build(&ctx, &parcels).expect("build");
    let total: u64 = parcel.manifest.files.iter().map(|f| f.size).sum();
    let mut times = Vec::with_capacity(n);
    let mut how = dispatch_runtime::workspace::Populated::default();
    for i in 0..n {
        let dest = base.join(format!("ws-{files}-{i}"));
        let t = Instant::now();
        how = dispatch_runtime::workspace::populate(
            &parcel.files_dir(),
            &parcel.manifest.files,
            &dest,
        )
        .expect("populate");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    if files >= 1000 {
        overlay_workspaces(base, &ctx, n);
    }
    let way = match (how.cloned, how.copied) {
        (_, 0) => "reflinks",
        (0, _) => "copies",
        _ => "reflinks and copies",
    };
    println!(
        "| copied workspace (the fallback without overlayfs), {} files / {:.1} MB ({way}, n={n}) | median {:.2} ms, p90 {:.2} ms | ≤ 5 ms median |",
        parcel.manifest.files.len(),
        total as f64 / 1e6,
        median(times.clone()),
        pct(times, 0.9)
    );
}

/// The workspace as a run gets it (`workspace::ensure`: an overlayfs
/// mount as root), `n` times, after the one-time template of the parcel;
/// and its removal when the run ends (`workspace::release`: unmount, then
/// the upper layer removed).
fn overlay_workspaces(base: &Path, ctx: &Path, n: usize) {
    let layout = dispatch_runtime::layout::Layout::new(base.join("ovl-root"));
    let parcel = dispatch_core::parcel::build(ctx, &layout.parcels()).expect("build");
    let ids: Vec<dispatch_core::RunId> = (0..=n).map(|_| dispatch_core::RunId::new()).collect();
    for id in &ids {
        std::fs::create_dir_all(layout.run_dir(id)).expect("mkdir");
    }
    let (mut made, mut released) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let t = Instant::now();
    dispatch_runtime::workspace::ensure(&layout, &ids[0], &parcel).expect("workspace");
    let first = t.elapsed().as_secs_f64() * 1000.0;
    let info = dispatch_runtime::workspace::info(&layout, &ids[0], false, false);
    let kind = info.kind.unwrap_or_else(|| "unknown".into());
    for id in &ids[1..] {
        let t = Instant::now();
        dispatch_runtime::workspace::ensure(&layout, id, &parcel).expect("workspace");
        made.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    for id in &ids {
        let t = Instant::now();
        dispatch_runtime::workspace::release(&layout, id);
        released.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "| run's workspace (`ensure`, {kind}), first run of the parcel: template + workspace | {first:.2} ms | — |"
    );
    println!(
        "| run's workspace (`ensure`, {kind}), later runs (n={n}) | median {:.2} ms, p90 {:.2} ms | ≤ 5 ms median |",
        median(made.clone()),
        pct(made, 0.9)
    );
    println!(
        "| its removal when the run ends (`release`, n={}) | median {:.2} ms, p90 {:.2} ms | — |",
        released.len(),
        median(released.clone()),
        pct(released, 0.9)
    );
}

/// `run --detach` → the agent's `date +%s%N`, each binary in turn.
fn time_to_agent(base: &Path, bins: &[(&str, PathBuf)], n: usize) {
    let agent = base.join("clock");
    std::fs::create_dir_all(&agent).expect("mkdir");
    std::fs::write(
        agent.join("Agentfile"),
        "NAME clock\nCOMMAND [\"date\", \"+%s%N\"]\nCOPY run.sh\nCOPY notes.txt\n",
    )
    .expect("Agentfile");
    std::fs::write(agent.join("run.sh"), "date +%s%N\n").expect("run.sh");
    std::fs::write(agent.join("notes.txt"), "a small parcel\n").expect("notes");
    let roots: Vec<PathBuf> = (0..bins.len())
        .map(|i| base.join(format!("root-{i}")))
        .collect();
    let mut lat: Vec<Vec<f64>> = vec![Vec::with_capacity(n); bins.len()];
    for round in 0..n + 5 {
        for (i, (_, bin)) in bins.iter().enumerate() {
            let t0 = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as i128;
            let out = Command::new(bin)
                .env("DISPATCH_ROOT", &roots[i])
                .args(["run", agent.to_str().expect("utf-8"), "--detach"])
                .stdin(Stdio::null())
                .output()
                .expect("run dispatch");
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Command::new(bin)
                .env("DISPATCH_ROOT", &roots[i])
                .args(["wait", &id])
                .output()
                .expect("wait");
            let log = std::fs::read_to_string(roots[i].join("runs").join(format!("{id}.log")))
                .expect("log");
            let ns: i128 = log
                .lines()
                .find(|l| !l.starts_with("[dispatch]"))
                .and_then(|l| l.trim().parse().ok())
                .expect("the agent printed its start time");
            if round >= 5 {
                lat[i].push((ns - t0) as f64 / 1e6);
            }
        }
    }
    let medians: Vec<f64> = lat.iter().map(|l| median(l.clone())).collect();
    for (i, (name, _)) in bins.iter().enumerate() {
        println!(
            "| `run --detach` → agent executing, small parcel, {name} (n={n}) | median {:.2} ms, p90 {:.2} ms | ≤ 5 ms median |",
            medians[i],
            pct(lat[i].clone(), 0.9)
        );
    }
    if medians.len() == 2 {
        println!(
            "| ratio this build / baseline | {:.2} | — |",
            medians[1] / medians[0]
        );
    }
}
