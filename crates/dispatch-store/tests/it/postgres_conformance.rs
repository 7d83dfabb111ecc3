//! The conformance suite on PostgreSQL (127.0.0.1:5432, or `DISPATCH_TEST_PG`),
//! each test in a fresh database dropped afterwards.

use dispatch_store::PgStore;
use dispatch_test_support::testdb::TestDatabase;

async fn fresh_store() -> Option<(PgStore, TestDatabase)> {
    let db = TestDatabase::create().await?;
    let store = PgStore::connect(db.url(), 4)
        .await
        .expect("a fresh database connects and migrates");
    Some((store, db))
}

dispatch_store::conformance_suite!(optional: fresh_store);
dispatch_store::queue_conformance_suite!(optional: fresh_store);
dispatch_store::parcel_conformance_suite!(optional: fresh_store);
dispatch_store::service_conformance_suite!(optional: fresh_store);
dispatch_store::retention_conformance_suite!(optional: fresh_store);
dispatch_store::blob_conformance_suite!(optional: fresh_store);

// What follows is PostgreSQL-specific: connection failures and schema versions.

use dispatch_store::StoreError;

#[tokio::test]
async fn an_unreachable_server_is_unavailable_naming_the_database() {
    // Port 1 on loopback: nothing listens there.
    let err = PgStore::connect("postgres://postgres:secret@127.0.0.1:1/none", 1)
        .await
        .expect_err("nothing listens on port 1");
    match &err {
        StoreError::Unavailable { path, .. } => {
            assert!(
                path.contains("127.0.0.1:1/none"),
                "names the database: {path}"
            );
            assert!(!path.contains("secret"), "never shows the password: {path}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_database_from_a_newer_dispatch_is_refused_untouched() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    drop(
        PgStore::connect(db.url(), 1)
            .await
            .expect("first open migrates"),
    );
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .expect("a raw connection");
    let driver = tokio::spawn(connection);
    client
        .batch_execute("UPDATE dispatch_schema SET version = 999")
        .await
        .expect("bump the schema version");
    let err = PgStore::connect(db.url(), 1)
        .await
        .expect_err("a newer schema is refused");
    assert!(
        matches!(err, StoreError::TooNew { found: 999, .. }),
        "TooNew, got {err:?}"
    );
    let version: i64 = client
        .query_one("SELECT version FROM dispatch_schema", &[])
        .await
        .expect("read the version")
        .get(0);
    assert_eq!(version, 999, "left untouched");
    drop(client);
    let _ = driver.await;
}

#[tokio::test]
async fn ten_processes_opening_an_empty_database_at_once_all_succeed() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    for round in 0..3 {
        // Each round on a database emptied again, so every open races the first migration.
        if round > 0 {
            let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
                .await
                .expect("a raw connection");
            let driver = tokio::spawn(connection);
            client
                .batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
                .await
                .expect("empty the database");
            drop(client);
            let _ = driver.await;
        }
        let url = db.url().to_string();
        let opens: Vec<_> = (0..10)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PgStore::connect(&url, 1).await.map(drop) })
            })
            .collect();
        for (i, open) in opens.into_iter().enumerate() {
            let result = open.await.expect("the task ran");
            assert!(result.is_ok(), "round {round}, open {i}: {result:?}");
        }
    }
}

#[tokio::test]
async fn runs_and_tokens_made_before_projects_are_in_the_default_project() {
    use dispatch_store::conformance::{id, new_run};
    use dispatch_store::{RunStore, TokenRecord, TokenScope, TokenStore};
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = PgStore::connect(db.url(), 1)
        .await
        .expect("first open migrates");
    store
        .create_run(&new_run(id(1), "p", 1))
        .await
        .expect("create");
    let old = TokenRecord {
        id: "old".into(),
        name: "ci".into(),
        created_at: 5,
        revoked_at: None,
        scope: TokenScope::Run,
        expires_at: None,
        projects: Vec::new(),
    };
    store.create_token(&old, "h").await.expect("token");
    drop(store);
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .expect("a raw connection");
    let driver = tokio::spawn(connection);
    // Back to the version before projects (quotas, the live-run index
    // dropped, then the partial indexes came after them).
    client
        .batch_execute(
            "DROP TABLE project_quotas, quota_usage; \
             DROP TABLE token_projects; ALTER TABLE runs DROP COLUMN project; \
             UPDATE dispatch_schema SET version = version - 4;",
        )
        .await
        .expect("a database from before projects");
    let store = PgStore::connect(db.url(), 1).await.expect("migrates");
    let run = store.get_run(&id(1)).await.expect("the old run");
    assert_eq!(run.project, "default");
    let token = store
        .find_token("h")
        .await
        .expect("find")
        .expect("the old token still works");
    assert!(token.projects.is_empty(), "bound to no project");
    assert_eq!(
        token.role_in("payments"),
        Some(TokenScope::Run),
        "its scope everywhere"
    );
    drop(client);
    let _ = driver.await;
}

#[tokio::test]
async fn tokens_made_before_scopes_are_admin_and_never_expire_after_the_migration() {
    use dispatch_store::{TokenScope, TokenStore};
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    drop(
        PgStore::connect(db.url(), 1)
            .await
            .expect("first open migrates"),
    );
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .expect("a raw connection");
    let driver = tokio::spawn(connection);
    // Back to version 22, as the binary before scopes (and worker hosts,
    // and objects in the database) left it, with a token.
    client
        .batch_execute(
            "DROP TABLE webhook_deliveries; \
             DROP TABLE blob_uploads, blob_parts, blobs; \
             DROP TABLE project_quotas, quota_usage; \
             DROP TABLE token_projects; ALTER TABLE runs DROP COLUMN project; \
             DROP TABLE notifications; \
             ALTER TABLE tokens DROP COLUMN scope, DROP COLUMN expires_at; \
             ALTER TABLE workers DROP COLUMN host, DROP COLUMN pid; \
             INSERT INTO tokens (id, name, hash, created_at) VALUES ('old', 'ci', 'h', 5); \
             UPDATE dispatch_schema SET version = 22;",
        )
        .await
        .expect("a version 22 database");
    let store = PgStore::connect(db.url(), 1).await.expect("migrates");
    let old = store
        .find_token("h")
        .await
        .expect("find")
        .expect("the old token still works");
    assert_eq!(
        (old.scope, old.expires_at),
        (TokenScope::Admin, None),
        "an old token keeps all its powers"
    );
    drop(client);
    let _ = driver.await;
}

/// An object may not grow past `MAX_BLOB`: the part that would take it
/// over is refused and the upload stays as it was. (The upload's size is
/// set near the limit by hand: 2 GiB of parts is no test.)
#[tokio::test]
async fn a_part_that_takes_an_object_over_the_limit_is_refused() {
    use dispatch_store::{BlobExpect, BlobStore, MAX_BLOB};
    let Some((store, db)) = fresh_store().await else {
        return;
    };
    store.begin_blob_upload("big", 1).await.expect("begin");
    store.put_blob_part("big", 0, b"abc").await.expect("part");
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .expect("a raw connection");
    let driver = tokio::spawn(connection);
    client
        .execute(
            "UPDATE blob_uploads SET size = $1 WHERE upload = 'big'",
            &[&(MAX_BLOB as i64 - 10)],
        )
        .await
        .expect("near the limit");
    drop(client);
    let _ = driver.await;
    let err = store
        .put_blob_part("big", 1, &[0u8; 11])
        .await
        .expect_err("over the limit");
    assert!(
        matches!(err, StoreError::BlobTooLarge { limit, .. } if limit == MAX_BLOB),
        "{err:?}"
    );
    assert!(err.to_string().contains("--artifacts"), "{err}");
    store
        .put_blob_part("big", 1, &[0u8; 10])
        .await
        .expect("at the limit");
    store
        .put_blob_part("big", 1, &[1u8; 10])
        .await
        .expect("rewritten");
    let meta = store
        .commit_blob("k", "big", &BlobExpect::Any, 2)
        .await
        .expect("commit")
        .expect("committed");
    assert_eq!(meta.size, MAX_BLOB);
}
