//! `dispatch-bench artifacts-server [--mb 100] [--rounds 3] [--database-url URL]`:
//! one artifact of `--mb` MiB downloaded through a real server's
//! `GET /v1/runs/{id}/artifacts/{sha256}` (HTTP on loopback, read whole and
//! hashed by the client), with the server's object store in the cluster's
//! PostgreSQL database (the default without `--artifacts`), in a real
//! S3-compatible server (`moto_server` on loopback, `--artifacts s3://…`)
//! and in a local directory (`--artifacts file://…`, the reference). Three
//! servers on one throwaway database, in process; rounds interleaved.
//! Prints a Markdown table of medians (MB/s = MiB/s).

use dispatch_test_support::http;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatch_runtime::Layout;
use dispatch_runtime::objects::Objects;
use dispatch_server::serve::{Backend, Server};
use dispatch_server::worker::WorkerConfig;
use dispatch_store::Artifact;
use dispatch_test_support::testdb::TestDatabase;
use sha2::{Digest, Sha256};

use crate::artifacts::Moto;
use crate::flag_value;

pub fn main(args: &[String]) {
    crate::use_database_url(args);
    let mb: usize = flag_value(args, "--mb")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rounds: usize = flag_value(args, "--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
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
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = rt.block_on(TestDatabase::create()) else {
        eprintln!("PostgreSQL is unreachable (hint: --database-url)");
        std::process::exit(1);
    };
    let size = mb * 1024 * 1024;
    let src = dir.path().join("artifact.bin");
    let mut rng = fastrand::Rng::with_seed(7);
    let mut bytes = vec![0u8; size];
    rng.fill(&mut bytes);
    std::fs::write(&src, &bytes).expect("write the artifact");
    let sha = hex::encode(Sha256::digest(&bytes));
    drop(bytes);

    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).expect("mkdir");
    let stores: [(&str, Option<Objects>); 3] = [
        ("PostgreSQL (the default: no `--artifacts`)", None),
        (
            "S3-compatible (`moto_server` on loopback)",
            Some(Objects::open("s3://bench/prefix").expect("s3 store")),
        ),
        (
            "local directory (`file://`, reference)",
            Some(Objects::open(&format!("file://{}", shared.display())).expect("file store")),
        ),
    ];
    let mut servers = Vec::new();
    for (n, (name, objects)) in stores.into_iter().enumerate() {
        let state = dir.path().join(format!("server-{n}"));
        let (base, path, upload) = rt.block_on(serve(db.url(), &state, objects, &src, &sha));
        eprintln!("{name}: uploaded in {:.1} s", upload.as_secs_f64());
        servers.push((name, base, path, Vec::new()));
    }
    for _ in 0..rounds {
        for (_, base, path, samples) in servers.iter_mut() {
            samples.push(download(base, path, size, &sha));
        }
    }
    let rate = |d: Duration| size as f64 / 1_048_576.0 / d.as_secs_f64();
    println!(
        "| {mb} MiB artifact through `GET /v1/runs/{{id}}/artifacts/{{sha256}}` (median of {rounds}) | download, checked | MB/s |"
    );
    println!("|---|---|---|");
    for (name, _, _, mut samples) in servers {
        samples.sort();
        let median = samples[samples.len() / 2];
        println!(
            "| {name} | {:.2} s | {:.0} |",
            median.as_secs_f64(),
            rate(median)
        );
    }
    drop(db);
}

/// A server (no worker slots) on the database at `url` with `objects` as
/// its store (`None`: the default, the database), holding one run that
/// recorded the artifact `src`. Returns its base URL, the download path and
/// how long the upload took.
async fn serve(
    url: &str,
    state: &std::path::Path,
    objects: Option<Objects>,
    src: &std::path::Path,
    sha: &str,
) -> (String, String, Duration) {
    let layout = Layout::new(state.join(".dispatch"));
    let backend = Backend::open(&layout, Some(url), 8)
        .await
        .expect("store opens");
    let store = backend.store.clone();
    let mut config = WorkerConfig::new(layout.clone());
    config.slots = 0;
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let server = Server::bind(listen, backend, layout, config)
        .await
        .expect("binds")
        .with_artifacts(objects.map(Arc::new));
    let objects = server.artifacts().expect("a cluster store").clone();
    let t = Instant::now();
    objects.put_artifact(sha, src).await.expect("upload");
    let upload = t.elapsed();
    let id = dispatch_core::RunId::new();
    let new = dispatch_store::NewRun {
        id: id.clone(),
        parcel_digest: "0".repeat(64),
        parcel_name: "bench".into(),
        operation: dispatch_core::Operation::Job,
        parent_id: None,
        origin_id: None,
        payload: serde_json::json!({}),
        brief_sha256: "0".repeat(64),
        created_at: dispatch_core::now_ms(),
        claimed_by: None,
        created: false,
        trigger: dispatch_core::Trigger::Manual,
        handoff_key: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    };
    store.create_run(&new).await.expect("a run");
    let size = std::fs::metadata(src).expect("the artifact").len();
    store
        .add_artifacts(
            &id,
            &[Artifact {
                name: "artifact.bin".into(),
                sha256: sha.to_string(),
                size,
            }],
        )
        .await
        .expect("recorded");
    let base = format!("http://{}", server.addr());
    // Served until the process exits.
    tokio::spawn(server.run(std::future::pending::<()>()));
    (base, format!("/v1/runs/{id}/artifacts/{sha}"), upload)
}

/// One whole download, read and hashed by the client.
fn download(base: &str, path: &str, size: usize, sha: &str) -> Duration {
    let t = Instant::now();
    let response = http::get(&format!("{base}{path}"))
        .call()
        .expect("the artifact downloads");
    let mut reader = response.into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0usize;
    loop {
        let n = reader.read(&mut buf).expect("the body reads");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        got += n;
    }
    let took = t.elapsed();
    assert_eq!(got, size, "the whole artifact");
    assert_eq!(hex::encode(hasher.finalize()), sha, "the right bytes");
    took
}
