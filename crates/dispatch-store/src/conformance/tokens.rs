//! What a [`TokenStore`] promises.

use crate::{StoreError, TokenRecord, TokenScope, TokenStore};

fn token(id: &str, at: i64) -> TokenRecord {
    TokenRecord {
        id: id.to_string(),
        name: format!("name-{id}"),
        created_at: at,
        revoked_at: None,
        scope: TokenScope::Admin,
        expires_at: None,
        projects: Vec::new(),
    }
}

pub async fn tokens_are_found_by_hash_until_revoked<S: TokenStore>(store: S) {
    store
        .create_token(&token("a", 10), "hash-a")
        .await
        .expect("create");
    store
        .create_token(&token("b", 20), "hash-b")
        .await
        .expect("create");
    assert_eq!(
        store.find_token("hash-a").await.expect("find"),
        Some(token("a", 10))
    );
    assert_eq!(store.find_token("nope").await.expect("find"), None);
    let revoked = store.revoke_token("a", 30).await.expect("revoke");
    assert_eq!(revoked.revoked_at, Some(30));
    let again = store.revoke_token("a", 40).await.expect("revoke again");
    assert_eq!(again.revoked_at, Some(30), "the first revocation is kept");
    assert_eq!(store.find_token("hash-a").await.expect("find"), None);
    let all = store.list_tokens().await.expect("list");
    let ids: Vec<_> = all.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, vec!["a", "b"], "oldest first, revoked ones included");
    let err = store
        .revoke_token("zzz", 50)
        .await
        .expect_err("an unknown token");
    assert!(matches!(err, StoreError::NotFound(_)), "got {err:?}");
}

pub async fn a_token_keeps_its_scope_and_expiry<S: TokenStore>(store: S) {
    for (i, scope) in TokenScope::ALL.into_iter().enumerate() {
        let mut t = token(&format!("t{i}"), i as i64);
        t.scope = scope;
        t.expires_at = (scope != TokenScope::Admin).then_some(1_000 + i as i64);
        store
            .create_token(&t, &format!("hash-{i}"))
            .await
            .expect("create");
        let found = store
            .find_token(&format!("hash-{i}"))
            .await
            .expect("find")
            .expect("a live token");
        assert_eq!(found, t, "scope and expiry round-trip");
    }
    let expired = store
        .find_token("hash-0")
        .await
        .expect("find")
        .expect("an expired token is still found");
    assert!(expired.expired(1_000), "expired at its expiry");
    assert!(!expired.expired(999), "live before it");
    let listed = store.list_tokens().await.expect("list");
    let scopes: Vec<_> = listed.iter().map(|t| t.scope).collect();
    assert_eq!(scopes, TokenScope::ALL.to_vec(), "listings carry the scope");
    assert_eq!(listed[0].expires_at, Some(1_000), "and the expiry");
}
