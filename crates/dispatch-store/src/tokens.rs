//! API tokens, stored hashed: the token itself is shown once at creation and
//! never stored; a request's token is looked up by its hash.

use async_trait::async_trait;
use dispatch_core::Ts;
use serde::{Deserialize, Serialize};

use crate::StoreResult;

/// A token as stored (no secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id, shown in listings and used to revoke.
    pub id: String,
    pub name: String,
    pub created_at: Ts,
    pub revoked_at: Option<Ts>,
}

/// Creating, listing, revoking and checking API tokens.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a new token by the hash of its secret.
    async fn create_token(&self, token: &TokenRecord, hash: &str) -> StoreResult<()>;

    /// Every token, oldest first.
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;

    /// Revokes the token with this id (idempotent: the first time is kept).
    /// `NotFound` for an unknown id.
    async fn revoke_token(&self, id: &str, at: Ts) -> StoreResult<TokenRecord>;

    /// The live (not revoked) token with this hash, if any.
    async fn find_token(&self, hash: &str) -> StoreResult<Option<TokenRecord>>;
}
