//! API tokens on PostgreSQL (see [`crate::TokenStore`]).

use deadpool_postgres::Transaction;
use dispatch_core::Ts;
use tokio_postgres::Row;

use super::Fail;
use crate::{ProjectRole, StoreError, StoreResult, TokenRecord, TokenScope};

const COLUMNS: &str = "id, name, created_at, revoked_at, scope, expires_at";

fn record(row: &Row) -> Result<TokenRecord, Fail> {
    let scope: String = row.try_get(4)?;
    Ok(TokenRecord {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        created_at: row.try_get(2)?,
        revoked_at: row.try_get(3)?,
        // A scope this binary does not know grants the least.
        scope: TokenScope::parse(&scope).unwrap_or(TokenScope::Read),
        expires_at: row.try_get(5)?,
        projects: Vec::new(),
    })
}

/// `record` with its project bindings, by project name.
async fn with_projects(tx: &Transaction<'_>, mut record: TokenRecord) -> Result<TokenRecord, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT project, role FROM token_projects WHERE token_id = $1 ORDER BY project",
        )
        .await?;
    for row in tx.query(&stmt, &[&record.id]).await? {
        let role: String = row.try_get(1)?;
        record.projects.push(ProjectRole {
            project: row.try_get(0)?,
            // A role this binary does not know grants the least.
            role: TokenScope::parse(&role).unwrap_or(TokenScope::Read),
        });
    }
    Ok(record)
}

pub(super) async fn create(tx: &Transaction<'_>, t: &TokenRecord, hash: &str) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO tokens (id, name, hash, created_at, scope, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    let scope = t.scope.as_str();
    tx.execute(
        &stmt,
        &[&t.id, &t.name, &hash, &t.created_at, &scope, &t.expires_at],
    )
    .await?;
    let bind = tx
        .prepare_cached("INSERT INTO token_projects (token_id, project, role) VALUES ($1, $2, $3)")
        .await?;
    for p in &t.projects {
        tx.execute(&bind, &[&t.id, &p.project, &p.role.as_str()])
            .await?;
    }
    Ok(())
}

pub(super) async fn list(tx: &Transaction<'_>) -> Result<Vec<TokenRecord>, Fail> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tokens ORDER BY created_at, id"
        ))
        .await?;
    let mut tokens = Vec::new();
    for row in tx.query(&stmt, &[]).await? {
        tokens.push(with_projects(tx, record(&row)?).await?);
    }
    Ok(tokens)
}

pub(super) async fn revoke(tx: &Transaction<'_>, id: &str, at: Ts) -> Result<TokenRecord, Fail> {
    let stmt = tx
        .prepare_cached("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .await?;
    tx.execute(&stmt, &[&id, &at]).await?;
    let stmt = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE id = $1"))
        .await?;
    match tx.query_opt(&stmt, &[&id]).await? {
        Some(row) => with_projects(tx, record(&row)?).await,
        None => Err(Fail::Store(StoreError::NotFound(format!("token {id}")))),
    }
}

pub(super) async fn find(tx: &Transaction<'_>, hash: &str) -> Result<Option<TokenRecord>, Fail> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tokens WHERE hash = $1 AND revoked_at IS NULL"
        ))
        .await?;
    match tx.query_opt(&stmt, &[&hash]).await? {
        Some(row) => Ok(Some(with_projects(tx, record(&row)?).await?)),
        None => Ok(None),
    }
}

#[async_trait::async_trait]
impl crate::TokenStore for super::PgStore {
    async fn create_token(&self, token: &TokenRecord, hash: &str) -> StoreResult<()> {
        in_tx!(self, |tx| create(&tx, token, hash))
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        in_tx!(self, |tx| list(&tx))
    }

    async fn revoke_token(&self, id: &str, at: Ts) -> StoreResult<TokenRecord> {
        in_tx!(self, |tx| revoke(&tx, id, at))
    }

    async fn find_token(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        in_tx!(self, |tx| find(&tx, hash))
    }
}
