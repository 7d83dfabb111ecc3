//! A container runtime and a local test image for the container courier's
//! tests: `localhost/dispatch-test-busybox:1`, imported from a rootfs of a
//! static busybox (the distribution's `busybox-static`) — no registry.
#![allow(dead_code)]

pub mod same;
pub mod sandbox;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

pub const IMAGE: &str = "localhost/dispatch-test-busybox:1";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "sleep", "env", "ls", "tr", "true", "false", "mkdir", "touch", "head",
    "dd", "rm", "nc", "wget", "ip", "pwd",
];

/// Whether containers can run here. Under `CI=true` a missing podman or
/// busybox is a failure; otherwise the test prints how to get them and skips.
pub fn available() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    match READY.get_or_init(prepare) {
        Ok(()) => true,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("container tests need podman under CI: {why}")
        }
        Err(why) => {
            eprintln!(
                "skipping: {why} (hint: apt-get install podman runc uidmap fuse-overlayfs busybox-static)"
            );
            false
        }
    }
}

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("podman runs")
}

fn prepare() -> Result<(), String> {
    match Command::new("podman").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => return Err("podman is not installed".into()),
    }
    if podman(&["image", "exists", IMAGE]).status.success() {
        return Ok(());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Err(format!("{BUSYBOX} (busybox-static) is not installed"));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("rootfs");
    for d in ["bin", "tmp", "proc", "sys", "dev", "etc"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).map_err(|e| e.to_string())?;
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a))
            .map_err(|e| e.to_string())?;
    }
    let tar = dir.path().join("rootfs.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err("tar failed".into());
    }
    // Parallel test binaries may import at once: same content, same tag.
    let out = podman(&["import", tar.to_str().expect("utf-8"), IMAGE]);
    if !out.status.success() && !podman(&["image", "exists", IMAGE]).status.success() {
        return Err(format!(
            "podman import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Names of the containers (any state) labelled with run `id`.
pub fn containers_of(id: &str) -> Vec<String> {
    let out = podman(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=dispatch.run={id}"),
        "--format",
        "{{.Names}}",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}
