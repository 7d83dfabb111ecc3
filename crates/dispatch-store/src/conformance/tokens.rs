//! What a [`TokenStore`] promises.

use crate::{StoreError, TokenRecord, TokenStore};

fn token(id: &str, at: i64) -> TokenRecord {
    TokenRecord {
        id: id.to_string(),
        name: format!("name-{id}"),
        created_at: at,
        revoked_at: None,
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
