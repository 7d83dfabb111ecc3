//! [`crate::FencedArtifactStore`] on SQLite: the token is read in the
//! write's own `BEGIN IMMEDIATE` transaction, under the database's single
//! writer lock, so no claim moves it on until the write commits.

use async_trait::async_trait;
use dispatch_core::RunId;
use rusqlite::{OptionalExtension, Transaction};

use super::{Fail, SqliteStore};
use crate::{Approval, Artifact, FencedArtifactStore, StoreError, StoreResult};

/// Checks that `fence` is the run's current token.
pub(super) fn check_token(tx: &Transaction<'_>, run: &RunId, fence: i64) -> Result<(), Fail> {
    let current: i64 = tx
        .prepare_cached("SELECT fence FROM runs WHERE id = ?1")?
        .query_row([run.as_str()], |row| row.get(0))
        .optional()?
        .ok_or_else(|| Fail::Store(StoreError::NotFound(run.to_string())))?;
    match current == fence {
        true => Ok(()),
        false => Err(Fail::Store(StoreError::Fenced {
            id: run.clone(),
            fence,
        })),
    }
}

#[async_trait]
impl FencedArtifactStore for SqliteStore {
    async fn fenced_add_artifacts(
        &self,
        run: &RunId,
        fence: i64,
        artifacts: &[Artifact],
    ) -> StoreResult<()> {
        self.write(|tx| {
            check_token(tx, run, fence)?;
            super::events::add_artifacts(tx, run, artifacts)
        })
    }

    async fn fenced_request_approval(
        &self,
        fence: i64,
        approval: &Approval,
    ) -> StoreResult<Approval> {
        self.write(|tx| {
            check_token(tx, &approval.run_id, fence)?;
            super::reliability::request_approval(tx, approval)
        })
    }
}
