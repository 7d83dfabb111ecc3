//! `dispatch-bench container [--dispatch PATH] [--runs N] [--image REF]`:
//! the container courier's start-up against the container runtime's own.
//!
//! Side by side, interleaved in the same minutes: `dispatch run --detach`
//! of a `FROM image` agent → the agent executing inside its container (it
//! touches a file in its state directory), and a bare `podman run -d` of the
//! same image with the same isolation flags → its command executing (it
//! touches a file in a mounted directory). Each start is timed from just
//! before the CLI is spawned to the file appearing (polled every 0.5 ms),
//! and waits for the previous container to be gone. The overhead is Dispatch's
//! time over podman's, as a ratio (target ≤ 10 %).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::flag_value;

const DEFAULT_IMAGE: &str = "localhost/dispatch-test-busybox:1";

pub fn main(dispatch: &Path, args: &[String]) {
    let runs: usize = flag_value(args, "--runs")
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    let image = flag_value(args, "--image").unwrap_or_else(|| DEFAULT_IMAGE.to_string());
    let podman = std::env::var("DISPATCH_CONTAINER_RUNTIME").unwrap_or_else(|_| "podman".into());
    if !image_present(&podman, &image) {
        if image == DEFAULT_IMAGE {
            import_busybox(&podman, &image);
        } else {
            eprintln!("image {image} is not present (hint: {podman} build/pull/load it)");
            std::process::exit(2);
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join(".dispatch");
    let agent = dir.path().join("touch");
    std::fs::create_dir_all(&agent).expect("mkdir agent");
    std::fs::write(
        agent.join("Agentfile"),
        format!(
            "FROM image {image}\nNAME touch\nCOMMAND [\"sh\", \"-c\", \"touch $DISPATCH_STATE_DIR/$DISPATCH_RUN_ID\"]\n"
        ),
    )
    .expect("write Agentfile");
    let state = root.join("state").join("touch");
    let bare = dir.path().join("bare");
    std::fs::create_dir_all(&bare).expect("mkdir bare");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    // Two warm-up rounds of each, not counted.
    for i in 0..runs + 2 {
        let t = Instant::now();
        let out = Command::new(dispatch)
            .env("DISPATCH_ROOT", &root)
            .args(["run", agent.to_str().expect("utf-8"), "--detach"])
            .stdin(Stdio::null())
            .output()
            .expect("run dispatch");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ms = until_exists(&state.join(&id), t);
        if i >= 2 {
            ours.push(ms);
        }
        let waited = Command::new(dispatch)
            .env("DISPATCH_ROOT", &root)
            .args(["wait", &id, "--timeout-ms", "60000"])
            .output()
            .expect("dispatch wait");
        assert!(waited.status.success(), "run {id} did not succeed");
        gone(&podman, &format!("label=dispatch.run={id}"));

        let marker = bare.join(format!("m{i}"));
        let name = format!("dispatch-bench-bare-{}-{i}", std::process::id());
        let t = Instant::now();
        let out = Command::new(&podman)
            .args(["run", "-d", "--rm", "--init", "--pull=never", "--read-only"])
            .args(["--tmpfs", "/tmp", "--network", "none", "--name", &name])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1000:1000",
            ])
            .arg("-v")
            .arg(format!("{0}:{0}", bare.display()))
            .args([&image, "sh", "-c"])
            .arg(format!("touch {}", marker.display()))
            .stdin(Stdio::null())
            .output()
            .expect("podman run -d");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ms = until_exists(&marker, t);
        if i >= 2 {
            theirs.push(ms);
        }
        gone(&podman, &format!("name={name}"));
    }
    let (o50, t50) = (p50(&ours), p50(&theirs));
    let (om, tm) = (mean(&ours), mean(&theirs));
    println!(
        "| measurement (n={runs} each, interleaved) | p50 | mean | target |\n|---|---|---|---|"
    );
    println!("| bare `{podman} run -d` → command executing | {t50:.1} ms | {tm:.1} ms | — |");
    println!(
        "| `dispatch run --detach` → agent executing in its container | {o50:.1} ms | {om:.1} ms | — |"
    );
    println!(
        "| overhead over {podman}'s own time | {:+.1} % (p50), {:+.1} % (mean) | | ≤ 10 % |",
        (o50 / t50 - 1.0) * 100.0,
        (om / tm - 1.0) * 100.0
    );
}

fn p50(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Milliseconds from `t` until `path` exists (panics after 60 s).
fn until_exists(path: &Path, t: Instant) -> f64 {
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_micros(500));
    }
    t.elapsed().as_secs_f64() * 1000.0
}

/// Waits until no container matches `filter`.
fn gone(podman: &str, filter: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        let out = Command::new(podman)
            .args(["ps", "-aq", "--filter", filter])
            .output()
            .expect("podman ps");
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("containers matching {filter} remain");
}

fn image_present(podman: &str, image: &str) -> bool {
    Command::new(podman)
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Imports a static busybox (`busybox-static`) as `image`, as the tests do.
fn import_busybox(podman: &str, image: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs: PathBuf = dir.path().join("rootfs");
    for d in ["bin", "tmp", "proc", "sys", "dev", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs");
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("copy /bin/busybox (hint: apt-get install busybox-static)");
    for a in ["sh", "touch", "cat", "sleep", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).expect("symlink");
    }
    let tar = dir.path().join("rootfs.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "tar the rootfs");
    let ok = Command::new(podman)
        .arg("import")
        .arg(&tar)
        .arg(image)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{podman} import");
}
