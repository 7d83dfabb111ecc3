//! The overlayfs workspace, from the binary: as root a run's `work/` is an
//! overlay of a read-only template of the parcel's files; the agent's
//! writes stay in the run's upper layer; the mount goes when the run ends,
//! with `rm`, and after a helper killed with `kill -9` at the next reader.
//! (Two concurrent runs of one parcel: `isolation.rs`, overlays as root.)

use crate::common;

use std::path::{Path, PathBuf};

use common::{Dispatch, alive, eventually};

/// Small parcels get a copy by default (`DISPATCH_WORKSPACE=auto`): these
/// tests are about the overlay.
const OVERLAY: &[(&str, &str)] = &[("DISPATCH_WORKSPACE", "overlay")];

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The mount points in `/proc/self/mountinfo`.
fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .collect()
}

fn mounted(path: &Path) -> bool {
    mount_points().iter().any(|p| p == path)
}

fn work_of(d: &Dispatch, id: &str) -> PathBuf {
    d.root().join("runs").join(id).join("work")
}

#[test]
fn an_overlay_workspace_takes_the_agents_writes_and_leaves_the_parcel_and_template_alone() {
    let d = Dispatch::sandboxed_with(OVERLAY);
    let dir = d.agent_with(
        "overlay",
        "echo changed >> data.txt && echo CHANGED-DATA\n\
         rm notes.txt && echo REMOVED-NOTES\n\
         echo mine > sub/new.txt && echo WROTE-SUB\n\
         lower=\"$DISPATCH_PARCEL_DIR/../../.lower\"\n\
         ls \"$lower\" >/dev/null 2>&1 && echo LISTED-TEMPLATES\n\
         echo evil >> \"$lower/$(basename \"$(dirname \"$DISPATCH_PARCEL_DIR\")\")/data.txt\" 2>/dev/null && echo WROTE-TEMPLATE\n\
         echo \"cwd=$PWD\"\n",
        "COPY data.txt\nCOPY notes.txt\nCOPY sub\n",
    );
    std::fs::write(dir.join("data.txt"), "data\n").expect("write");
    std::fs::write(dir.join("notes.txt"), "notes\n").expect("write");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("sub/keep.txt"), "keep\n").expect("write");
    let id = d.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--detach",
        "--keep-workspace",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let log = d.ok(&["logs", &id]);
    let work = work_of(&d, &id);
    if !is_root() {
        // No mount without root: a copy, and the reason said.
        let kind = doc["workspace"]["kind"].as_str().expect("kind");
        assert!(kind.contains("no overlayfs: not root"), "{kind}");
        return;
    }
    assert_eq!(doc["workspace"]["kind"], "overlayfs", "{doc:#}");
    for done in ["CHANGED-DATA", "REMOVED-NOTES", "WROTE-SUB"] {
        assert!(log.contains(done), "the workspace was not writable: {log}");
    }
    for refused in ["LISTED-TEMPLATES", "WROTE-TEMPLATE"] {
        assert!(!log.contains(refused), "the template was reachable: {log}");
    }
    assert!(log.contains(&format!("cwd={}", work.display())), "{log}");
    // Kept: still mounted, with the agent's changes.
    assert!(mounted(&work), "a kept overlay stays mounted");
    assert_eq!(
        std::fs::read_to_string(work.join("data.txt")).expect("read"),
        "data\nchanged\n"
    );
    assert!(!work.join("notes.txt").exists());
    let human = d.ok(&["inspect-run", &id]);
    assert!(
        human.contains("(kept, overlayfs, --keep-workspace)"),
        "{human}"
    );
    // The parcel and its template are as built (the template of sandboxed
    // runs belongs to their user, `nobody`: `<digest>.65534`).
    let parcels = d.root().join("parcels");
    let digest = doc["parcel_digest"].as_str().expect("digest");
    for base in [
        parcels.join(digest).join("files"),
        parcels.join(".lower").join(format!("{digest}.65534")),
    ] {
        assert_eq!(
            std::fs::read_to_string(base.join("data.txt")).expect("read"),
            "data\n"
        );
        assert!(base.join("notes.txt").is_file());
        assert!(!base.join("sub/new.txt").exists());
    }
    d.ok(&["images", "--verify"]);
    d.ok(&["rm", &id]);
    assert!(!mounted(&work), "rm unmounts");
    assert!(!work.exists() && !d.root().join("runs").join(&id).exists());

    // Not kept: unmounted and removed when the run ends.
    let plain = d.detach(&dir, "{}");
    assert_eq!(d.wait_terminal(&plain)["status"], "succeeded");
    let work = work_of(&d, &plain);
    assert!(!mounted(&work) && !work.exists());
}

#[test]
fn a_sigkilled_helpers_overlay_is_unmounted_by_the_next_reader() {
    if !is_root() {
        eprintln!("skipped: overlay workspaces need root");
        return;
    }
    let d = Dispatch::sandboxed_with(OVERLAY);
    let dir = d.agent("orphan", "echo here > mine.txt\nsleep 300\n");
    let id = d.detach(&dir, "{}");
    let work = work_of(&d, &id);
    eventually(10, "running with its file", || {
        d.status(&id) == "running" && work.join("mine.txt").is_file()
    });
    assert!(mounted(&work));
    let doc = d.inspect(&id);
    let helper = doc["state"]["helper"]["pid"].as_u64().expect("pid") as u32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill helper");
    eventually(5, "helper gone", || !alive(helper));
    assert!(mounted(&work), "a mount outlives its helper");
    let ps = d.ok(&["ps", "-a"]);
    assert!(ps.contains("failed"), "{ps}");
    assert!(!mounted(&work), "the reader unmounted it");
    assert!(!work.exists(), "and removed it (not kept)");
    d.ok(&["rm", &id]);
    assert!(!mounted(&work));
}

#[test]
fn a_sigkilled_helpers_kept_overlay_is_unmounted_and_rm_removes_it() {
    if !is_root() {
        eprintln!("skipped: overlay workspaces need root");
        return;
    }
    let d = Dispatch::sandboxed_with(OVERLAY);
    let dir = d.agent("kept", "echo here > mine.txt\nsleep 300\n");
    let id = d.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--detach",
        "--keep-workspace",
    ]);
    let work = work_of(&d, &id);
    eventually(10, "running with its file", || {
        d.status(&id) == "running" && work.join("mine.txt").is_file()
    });
    let helper = d.inspect(&id)["state"]["helper"]["pid"]
        .as_u64()
        .expect("pid") as u32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill helper");
    eventually(5, "helper gone", || !alive(helper));
    let doc = d.inspect(&id);
    assert_eq!(doc["status"], "failed");
    assert!(!mounted(&work), "inspect-run reconciled and unmounted it");
    assert_eq!(doc["workspace"]["state"], "not mounted", "{doc:#}");
    // The agent's file is kept in the upper layer.
    let upper = d.root().join("runs").join(&id).join("overlay/upper");
    assert!(upper.join("mine.txt").is_file());
    d.ok(&["rm", &id]);
    assert!(!mounted(&work) && !upper.exists());
}

#[test]
fn a_small_parcels_workspace_is_a_copy_and_a_large_ones_an_overlay_by_default() {
    let d = Dispatch::sandboxed();
    let small = d.agent_with(
        "small",
        "echo changed >> data.txt && echo CHANGED\n",
        "COPY data.txt\n",
    );
    std::fs::write(small.join("data.txt"), "data\n").expect("write");
    let id = d.ok(&[
        "run",
        small.to_str().expect("utf-8"),
        "--detach",
        "--keep-workspace",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let kind = doc["workspace"]["kind"].as_str().expect("kind");
    let work = work_of(&d, &id);
    assert!(!mounted(&work), "no mount for a small parcel");
    assert_eq!(
        std::fs::read_to_string(work.join("data.txt")).expect("read"),
        "data\nchanged\n"
    );
    if !is_root() {
        assert!(kind.contains("no overlayfs: not root"), "{kind}");
        return;
    }
    assert!(
        kind.starts_with("copies (a small parcel: 2 file(s)")
            || kind.starts_with("reflinks (a small parcel: 2 file(s)"),
        "{kind}"
    );
    // Over 1 MiB: an overlay, as before.
    let large = d.agent_with("large", "echo ok\n", "COPY big.bin\n");
    std::fs::write(large.join("big.bin"), vec![7u8; (1 << 20) + 1]).expect("write");
    let id = d.ok(&[
        "run",
        large.to_str().expect("utf-8"),
        "--detach",
        "--keep-workspace",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["workspace"]["kind"], "overlayfs", "{doc:#}");
    assert!(mounted(&work_of(&d, &id)));
    d.ok(&["rm", &id]);
}
