//! API tokens, stored hashed: the token itself is shown once at creation and
//! never stored; a request's token is looked up by its hash. Each token has a
//! scope and may expire; tokens made before scopes existed are `admin` and
//! never expire. A token may be bound to projects with a role in each
//! (the role is a scope by another name); bound to none, its scope holds in
//! every project.

use async_trait::async_trait;
use dispatch_core::Ts;
use serde::{Deserialize, Serialize};

use crate::StoreResult;

/// What a token may do. Each scope includes the ones before it:
/// `read` < `run` < `approve` < `admin`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    /// Read anything (GET).
    Read,
    /// Also create, stop, restart, wake and signal runs.
    Run,
    /// Also decide approvals.
    Approve,
    /// Everything, tokens, prune and workers included.
    #[default]
    Admin,
}

impl TokenScope {
    pub const ALL: [TokenScope; 4] = [
        TokenScope::Read,
        TokenScope::Run,
        TokenScope::Approve,
        TokenScope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Run => "run",
            TokenScope::Approve => "approve",
            TokenScope::Admin => "admin",
        }
    }

    /// The same, as a role in a project: `viewer`, `runner`, `approver`, `admin`.
    pub fn role(self) -> &'static str {
        match self {
            TokenScope::Read => "viewer",
            TokenScope::Run => "runner",
            TokenScope::Approve => "approver",
            TokenScope::Admin => "admin",
        }
    }

    /// What it allows, as a verb: "read", "run", "approve", "administer".
    pub fn verb(self) -> &'static str {
        match self {
            TokenScope::Admin => "administer",
            other => other.as_str(),
        }
    }

    /// The scope named `s`, if it is one: by scope (`read`) or by role
    /// (`viewer`).
    pub fn parse(s: &str) -> Option<TokenScope> {
        TokenScope::ALL
            .into_iter()
            .find(|t| t.as_str() == s || t.role() == s)
    }

    /// Whether a token of this scope may do what `needed` allows.
    pub fn allows(self, needed: TokenScope) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for TokenScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token as stored (no secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id, shown in listings and used to revoke.
    pub id: String,
    pub name: String,
    pub created_at: Ts,
    pub revoked_at: Option<Ts>,
    /// What it may do (`admin` for tokens made before scopes).
    #[serde(default)]
    pub scope: TokenScope,
    /// When it stops working; never when `None`.
    #[serde(default)]
    pub expires_at: Option<Ts>,
    /// The projects it is bound to, with its role in each, by project
    /// name. None: its scope holds in every project (every token made
    /// before projects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<ProjectRole>,
}

/// A token's role in one project.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProjectRole {
    pub project: String,
    /// What it may do there (shown as a role: `viewer`, `runner`, …).
    pub role: TokenScope,
}

impl TokenRecord {
    /// Whether the token has expired at `now`.
    pub fn expired(&self, now: Ts) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// What the token may do in `project`: its scope when it is bound to
    /// no project, else its role there (`None`: not bound to it).
    pub fn role_in(&self, project: &str) -> Option<TokenScope> {
        if self.projects.is_empty() {
            return Some(self.scope);
        }
        self.projects
            .iter()
            .find(|p| p.project == project)
            .map(|p| p.role)
    }

    /// The projects it may see: `None` for all (bound to none).
    pub fn visible_projects(&self) -> Option<Vec<String>> {
        (!self.projects.is_empty())
            .then(|| self.projects.iter().map(|p| p.project.clone()).collect())
    }
}

/// Creating, listing, revoking and checking API tokens.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a new token by the hash of its secret, with its project
    /// bindings ([`TokenRecord::projects`]), in one transaction.
    async fn create_token(&self, token: &TokenRecord, hash: &str) -> StoreResult<()>;

    /// Every token, oldest first, with its project bindings (by project
    /// name).
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;

    /// Revokes the token with this id (idempotent: the first time is kept).
    /// `NotFound` for an unknown id.
    async fn revoke_token(&self, id: &str, at: Ts) -> StoreResult<TokenRecord>;

    /// The live (not revoked) token with this hash, if any; an expired one
    /// is returned too (the caller says it expired). With its project
    /// bindings, by project name.
    async fn find_token(&self, hash: &str) -> StoreResult<Option<TokenRecord>>;
}
