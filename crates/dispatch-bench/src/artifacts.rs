//! `dispatch-bench artifacts [--mb 10] [--rounds 7]`: one artifact of
//! `--mb` MiB uploaded to the artifact store and downloaded back (checked
//! against its sha256), through the same `Objects` calls a worker and a
//! server make, against a local directory (`file://`) and a real
//! S3-compatible server (`moto_server` on loopback, from PyPI's
//! `moto[server]`). The baseline, measured in the same run, is a plain
//! `std::fs::copy` of the file there and back. Each round writes new bytes,
//! so nothing is skipped as already stored. Prints a Markdown table of
//! medians.

use dispatch_test_support::http;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dispatch_runtime::objects::Objects;
use sha2::{Digest, Sha256};

use crate::flag_value;

pub fn main(args: &[String]) {
    let mb: usize = flag_value(args, "--mb")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rounds: usize = flag_value(args, "--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start();
    // SAFETY: no other thread yet; the S3 client reads these when it is built.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", &moto.endpoint);
        std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
        std::env::set_var("AWS_DEFAULT_REGION", "us-east-1");
    }
    http::put(&format!("{}/bench", moto.endpoint))
        .call()
        .expect("the bucket is created");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).expect("mkdir");
    let local = Objects::open(&format!("file://{}", shared.display())).expect("file store");
    let s3 = Objects::open("s3://bench/prefix").expect("s3 store");
    rt.block_on(async {
        local.probe().await.expect("the directory is writable");
        s3.probe().await.expect("moto is writable");
    });
    let size = mb * 1024 * 1024;
    let mut copy = Vec::new();
    let mut by_local = Vec::new();
    let mut by_s3 = Vec::new();
    for round in 0..rounds {
        // Interleaved, so the three share the machine's load.
        let src = dir.path().join("src.bin");
        let sha = write_random(&src, size, round);
        copy.push(plain_copy(&src, &dir.path().join("copy")));
        by_local.push(rt.block_on(through(&local, &src, &sha, &dir.path().join("l.bin"))));
        by_s3.push(rt.block_on(through(&s3, &src, &sha, &dir.path().join("s.bin"))));
    }
    let (copy_up, copy_down) = medians(&copy);
    let (local_up, local_down) = medians(&by_local);
    let (s3_up, s3_down) = medians(&by_s3);
    let rate = |d: Duration| size as f64 / 1_048_576.0 / d.as_secs_f64();
    let base_round = rate(copy_up + copy_down);
    println!(
        "| {mb} MiB artifact (median of {rounds}) | upload | download (checked) | up+down | MB/s up+down | ratio to the plain copy |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, up, down) in [
        (
            "plain `std::fs::copy` there and back (baseline)",
            copy_up,
            copy_down,
        ),
        ("local directory (`file://`)", local_up, local_down),
        ("S3-compatible (`moto_server` on loopback)", s3_up, s3_down),
    ] {
        println!(
            "| {name} | {:.1} ms ({:.0} MB/s) | {:.1} ms ({:.0} MB/s) | {:.1} ms | {:.0} | {:.2} |",
            ms(up),
            rate(up),
            ms(down),
            rate(down),
            ms(up + down),
            rate(up + down),
            base_round / rate(up + down),
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median upload and the median download.
fn medians(samples: &[(Duration, Duration)]) -> (Duration, Duration) {
    let mut up: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let mut down: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    up.sort();
    down.sort();
    (up[up.len() / 2], down[down.len() / 2])
}

/// `size` bytes that differ per round; returns their sha256.
fn write_random(path: &Path, size: usize, round: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(round as u64 + 1);
    let mut bytes = vec![0u8; size];
    rng.fill(&mut bytes);
    std::fs::write(path, &bytes).expect("write the artifact");
    hex::encode(Sha256::digest(&bytes))
}

fn plain_copy(src: &Path, dest: &Path) -> (Duration, Duration) {
    let t = Instant::now();
    std::fs::copy(src, dest).expect("copy");
    let up = t.elapsed();
    let t = Instant::now();
    std::fs::copy(dest, dest.with_extension("back")).expect("copy back");
    (up, t.elapsed())
}

async fn through(objects: &Objects, src: &Path, sha: &str, dest: &Path) -> (Duration, Duration) {
    let t = Instant::now();
    assert!(
        objects.put_artifact(sha, src).await.expect("upload"),
        "new bytes each round"
    );
    let up = t.elapsed();
    let t = Instant::now();
    objects
        .download_artifact(sha, dest)
        .await
        .expect("download");
    (up, t.elapsed())
}

/// `moto_server` on a free loopback port, killed when dropped.
pub(crate) struct Moto {
    child: Child,
    pub(crate) endpoint: String,
}

impl Moto {
    pub(crate) fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts (pip install 'moto[server]')");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http::get(&format!("{}/moto-api/", moto.endpoint))
            .call()
            .is_err()
        {
            assert!(Instant::now() < deadline, "moto_server did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
