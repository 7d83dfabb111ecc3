//! Throwaway PostgreSQL databases for tests: one fresh database per test,
//! dropped when its guard goes.
//!
//! The server is `DISPATCH_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`, an existing database used only to
//! create and drop the throwaway ones). When it cannot be reached, tests fail
//! under `CI=true` (the contract: CI has PostgreSQL) and are skipped with a
//! message saying how to start it otherwise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

/// The admin URL used when `DISPATCH_TEST_PG` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How to start the local server, shown when it is not running.
pub const START_HINT: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

/// A database that exists until this guard is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database. `None` (after printing why) when the
    /// server is unreachable outside CI; panics when it is unreachable in CI.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url =
            std::env::var("DISPATCH_TEST_PG").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string());
        let client = match connect(&admin_url).await {
            Ok(client) => client,
            Err(e) => {
                let message = format!(
                    "PostgreSQL at {admin_url} is unreachable ({e}); start it with `{START_HINT}` \
                     or point DISPATCH_TEST_PG at a server"
                );
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{message}");
                }
                eprintln!("skipping: {message}");
                return None;
            }
        };
        let name = unique_name();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        // The admin URL ends in `/<database>`: swap in the fresh one.
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// The URL of the fresh database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first column of the first row `sql` answers, as text, asked
    /// from synchronous code on a connection of its own (the test's, which
    /// `pg_stat_activity` shows as `dispatch-test`).
    pub fn scalar_blocking(&self, sql: &str) -> String {
        let url = self.url.clone();
        let sql = sql.to_string();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the query");
            runtime.block_on(async {
                let client = connect(&format!("{url}?application_name=dispatch-test"))
                    .await
                    .expect("the test connects to its database");
                let rows = client.simple_query(&sql).await.expect("the query runs");
                rows.iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(row) => {
                            row.get(0).map(str::to_string)
                        }
                        _ => None,
                    })
                    .unwrap_or_default()
            })
        })
        .join()
        .expect("the query's thread")
    }

    /// [`TestDatabase::create`] from synchronous code, on a runtime of its own.
    pub fn create_blocking() -> Option<TestDatabase> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for creating the test database")
            .block_on(TestDatabase::create())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let client = connect(&admin_url).await.map_err(|e| e.to_string())?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped; an error here has already failed a query.
        let _ = connection.await;
    });
    Ok(client)
}

fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "dispatch_test_{}_{nanos:x}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
