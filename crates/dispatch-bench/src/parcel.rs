//! `dispatch-bench parcel [--dispatch PATH] [--mb N] [--database-url URL]`:
//! a parcel of one N MiB binary file (1,024 by default) through a cluster
//! with no shared disk: `dispatch build DIR --host` to a `dispatch server`
//! (PostgreSQL, no `--artifacts`: the archive goes into the database), then
//! `dispatch run NAME --host` on a `dispatch worker` with a directory of its
//! own, which fetches and verifies the parcel before its agent checks the
//! file's SHA-256. Prints MB/s of each step and the peak RSS of the server
//! and the worker (both stream: neither holds the parcel in memory).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::service_cluster::host_of;

pub fn main(dispatch: &Path, args: &[String]) {
    let mb: u64 = crate::flag_value(args, "--mb")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024);
    let db = crate::fresh_database(args, "parcel");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("big");
    std::fs::create_dir_all(&src).expect("mkdir");
    let sum = write_file(&src.join("data.bin"), mb);
    std::fs::write(
        src.join("Agentfile"),
        format!(
            "FROM process\nNAME big\nCOPY data.bin\nCOMMAND [\"sh\", \"-c\", \"sha256sum data.bin | grep -q {sum} && echo intact\"]\n"
        ),
    )
    .expect("write");

    let spawn = |what: &str, extra: &[&str]| -> Child {
        Command::new(dispatch)
            .arg(what)
            .args(extra)
            .args(["--database-url", db.url()])
            .env("DISPATCH_ROOT", dir.path().join(what).join(".dispatch"))
            .env_remove("DISPATCH_HOST")
            .env_remove("DISPATCH_ARTIFACTS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dispatch starts")
    };
    let mut server = spawn("server", &["--listen", "127.0.0.1:0", "--workers", "0"]);
    let host = host_of(&mut server);
    let mut worker = spawn("worker", &["--slots", "1"]);
    let client = |args: &[&str]| {
        let out = Command::new(dispatch)
            .args(args)
            .env("DISPATCH_HOST", &host)
            .env("DISPATCH_ROOT", dir.path().join("client"))
            .current_dir(dir.path())
            .output()
            .expect("dispatch runs");
        assert!(out.status.success(), "dispatch {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let t = Instant::now();
    let digest = client(&["build", &src.to_string_lossy(), "-q"]);
    let upload = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out = client(&["run", "big"]);
    let run = t.elapsed().as_secs_f64();
    assert!(
        out.contains("intact"),
        "the worker's copy checks out: {out}"
    );
    let (server_rss, worker_rss) = (peak_rss(&server), peak_rss(&worker));
    for child in [&mut server, &mut worker] {
        let _ = child.kill();
        let _ = child.wait();
    }
    println!(
        "| a {mb} MiB parcel ({}) through a cluster on PostgreSQL, no shared disk | seconds | MB/s |\n|---|---|---|",
        &digest.trim()[..12]
    );
    println!(
        "| `dispatch build DIR --host` (tar upload, build, archive into the database) | {upload:.1} | {:.0} |",
        mb as f64 * 1.048_576 / upload
    );
    println!(
        "| `dispatch run big --host` (a worker fetches, verifies, unpacks, runs `sha256sum`) | {run:.1} | {:.0} |",
        mb as f64 * 1.048_576 / run
    );
    println!("| peak RSS: server {server_rss} MB, worker {worker_rss} MB | | |");
}

/// Writes `mb` MiB of pseudo-random bytes to `path`; their SHA-256.
fn write_file(path: &Path, mb: u64) -> String {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut hasher = Sha256::new();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mb {
        rng.fill(&mut buf);
        hasher.update(&buf);
        file.write_all(&buf).expect("write");
    }
    file.flush().expect("flush");
    hex::encode(hasher.finalize())
}

/// The process's peak resident set (VmHWM), in MB.
fn peak_rss(child: &Child) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}
