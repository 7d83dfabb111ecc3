//! A database outage answers 503 `unavailable`, not a hang or a 500, and
//! says nothing about the database's address, user or name to the client.

use crate::common;

use common::{Db, TestServer, block_on};
use serde_json::json;

#[test]
fn a_lost_database_answers_503_unavailable() {
    let Some(server) = TestServer::start(Db::Postgres, 0) else {
        return;
    };
    let parcel = server.noop_parcel();
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);
    let name = server.db.as_ref().expect("a database").name().to_string();
    block_on(async {
        let admin = std::env::var("DISPATCH_TEST_PG")
            .unwrap_or_else(|_| dispatch_test_support::testdb::DEFAULT_ADMIN_URL.to_string());
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .expect("an admin connection");
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .await
            .expect("the database goes away");
        drop(client);
        let _ = driver.await;
    });
    let (status, body) = server.get("/healthz");
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    let (status, body) = server.post("/v1/runs", &json!({"parcel": parcel}));
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    // The answers name nothing of the connection: not the database, its
    // user, its host or port.
    let url = server.db.as_ref().expect("a database").url().to_string();
    let user = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['@', ':']).next())
        .unwrap_or("postgres")
        .to_string();
    for (path, text) in [
        ("/healthz", server.text("/healthz", &[]).1),
        ("/v1/runs", server.text("/v1/runs", &[]).1),
        ("/ui/approvals", server.text("/ui/approvals", &[]).1),
    ] {
        for secret in [
            name.as_str(),
            user.as_str(),
            "127.0.0.1",
            "5432",
            "postgres://",
        ] {
            assert!(
                !text.contains(secret),
                "{path} tells a client `{secret}`: {text}"
            );
        }
    }
}
