//! API tokens on SQLite (see [`crate::TokenStore`]).

use dispatch_core::Ts;
use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::Fail;
use crate::{ProjectRole, StoreError, StoreResult, TokenRecord, TokenScope};

const COLUMNS: &str = "id, name, created_at, revoked_at, scope, expires_at";

fn record(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let scope: String = row.get(4)?;
    Ok(TokenRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        created_at: row.get(2)?,
        revoked_at: row.get(3)?,
        // A scope this binary does not know grants the least.
        scope: TokenScope::parse(&scope).unwrap_or(TokenScope::Read),
        expires_at: row.get(5)?,
        projects: Vec::new(),
    })
}

/// The token's project bindings, by project name.
fn projects(tx: &Transaction<'_>, id: &str) -> Result<Vec<ProjectRole>, Fail> {
    Ok(tx
        .prepare_cached(
            "SELECT project, role FROM token_projects WHERE token_id = ?1 ORDER BY project",
        )?
        .query_map([id], |row| {
            let role: String = row.get(1)?;
            Ok(ProjectRole {
                project: row.get(0)?,
                // A role this binary does not know grants the least.
                role: TokenScope::parse(&role).unwrap_or(TokenScope::Read),
            })
        })?
        .collect::<Result<_, _>>()?)
}

/// `record` with its project bindings.
fn with_projects(tx: &Transaction<'_>, mut record: TokenRecord) -> Result<TokenRecord, Fail> {
    record.projects = projects(tx, &record.id)?;
    Ok(record)
}

pub(super) fn create(tx: &Transaction<'_>, t: &TokenRecord, hash: &str) -> Result<(), Fail> {
    tx.prepare_cached(
        "INSERT INTO tokens (id, name, hash, created_at, scope, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        t.id,
        t.name,
        hash,
        t.created_at,
        t.scope.as_str(),
        t.expires_at
    ])?;
    let mut bind = tx.prepare_cached(
        "INSERT INTO token_projects (token_id, project, role) VALUES (?1, ?2, ?3)",
    )?;
    for p in &t.projects {
        bind.execute(params![t.id, p.project, p.role.as_str()])?;
    }
    Ok(())
}

pub(super) fn list(tx: &Transaction<'_>) -> Result<Vec<TokenRecord>, Fail> {
    let tokens: Vec<TokenRecord> = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tokens ORDER BY created_at, id"
        ))?
        .query_map([], record)?
        .collect::<Result<_, _>>()?;
    tokens.into_iter().map(|t| with_projects(tx, t)).collect()
}

pub(super) fn revoke(tx: &Transaction<'_>, id: &str, at: Ts) -> Result<TokenRecord, Fail> {
    tx.prepare_cached("UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?
        .execute(params![id, at])?;
    let found = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE id = ?1"))?
        .query_row([id], record)
        .optional()?
        .ok_or_else(|| Fail::Store(StoreError::NotFound(format!("token {id}"))))?;
    with_projects(tx, found)
}

pub(super) fn find(tx: &Transaction<'_>, hash: &str) -> Result<Option<TokenRecord>, Fail> {
    tx.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tokens WHERE hash = ?1 AND revoked_at IS NULL"
    ))?
    .query_row([hash], record)
    .optional()?
    .map(|t| with_projects(tx, t))
    .transpose()
}

#[async_trait::async_trait]
impl crate::TokenStore for super::SqliteStore {
    async fn create_token(&self, token: &TokenRecord, hash: &str) -> StoreResult<()> {
        self.write(|tx| create(tx, token, hash))
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.read(list)
    }

    async fn revoke_token(&self, id: &str, at: Ts) -> StoreResult<TokenRecord> {
        self.write(|tx| revoke(tx, id, at))
    }

    async fn find_token(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        self.read(|tx| find(tx, hash))
    }
}
