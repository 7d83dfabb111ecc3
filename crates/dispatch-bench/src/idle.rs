//! `dispatch-bench idle [--dispatch PATH] [--secs N]`: the database load of
//! an idle cluster. On a fresh PostgreSQL database: `dispatch server
//! --workers 0` (with a callback secret, so its outbox dispatcher runs too)
//! and four `dispatch worker --slots 2`, left idle; the database's
//! transactions (`xact_commit + xact_rollback` in `pg_stat_database`, read
//! with `psql` from another database) are counted over `--secs` seconds
//! (default 60) after 15 s of settling (idle sessions report their statistics
//! up to 10 s late).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dispatch_test_support::testdb::TestDatabase;

pub fn run(dispatch: &Path, secs: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = rt.block_on(TestDatabase::create()) else {
        eprintln!(
            "PostgreSQL is unreachable at 127.0.0.1:5432 (start it: service postgresql start)"
        );
        std::process::exit(1);
    };
    let url = db.url().to_string();
    let name = url.rsplit('/').next().expect("a database name").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join(".dispatch");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let spawn = |args: &[&str]| -> Child {
        Command::new(dispatch)
            .args(args)
            .env("DISPATCH_ROOT", &root)
            .env("DISPATCH_CALLBACK_SECRET", "bench")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dispatch starts")
    };
    let listen = format!("127.0.0.1:{port}");
    let mut children = vec![spawn(&[
        "server",
        "--database-url",
        &url,
        "--workers",
        "0",
        "--listen",
        &listen,
    ])];
    for n in 0..4 {
        let worker = format!("idle-{n}");
        children.push(spawn(&[
            "worker",
            "--database-url",
            &url,
            "--slots",
            "2",
            "--name",
            &worker,
        ]));
    }
    // Idle sessions report their statistics up to 10 s late.
    std::thread::sleep(Duration::from_secs(15));
    let before = transactions(&name);
    std::thread::sleep(Duration::from_secs(secs));
    let after = transactions(&name);
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(rt);
    let per_sec = (after - before) as f64 / secs as f64;
    println!(
        "| idle cluster (server + 4 workers, PostgreSQL) over {secs} s | {} transactions ({per_sec:.2}/s) | no queries but lease renewals |",
        after - before
    );
}

/// The database's committed and rolled-back transactions so far (read from
/// the `postgres` database, so reading does not count).
fn transactions(db: &str) -> i64 {
    // The statistics of idle sessions are flushed within a second.
    std::thread::sleep(Duration::from_millis(1500));
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-Atc",
            &format!(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{db}'"
            ),
        ])
        .output()
        .expect("psql runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a transaction count")
}
