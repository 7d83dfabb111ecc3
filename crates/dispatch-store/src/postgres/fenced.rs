//! [`crate::FencedArtifactStore`] on PostgreSQL: the token is read under
//! the run's row lock, so a claim that moves it on commits before or after
//! the write, never in between.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use dispatch_core::RunId;

use super::runs::not_found;
use super::{Fail, PgStore};
use crate::{Approval, Artifact, FencedArtifactStore, StoreError, StoreResult};

/// Locks the run's row and checks that `fence` is its current token.
pub(super) async fn check_token(tx: &Transaction<'_>, run: &RunId, fence: i64) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached("SELECT fence FROM runs WHERE id = $1 FOR UPDATE")
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&run.as_str()]).await? else {
        return Err(not_found(run));
    };
    match row.try_get::<_, i64>(0)? == fence {
        true => Ok(()),
        false => Err(Fail::Store(StoreError::Fenced {
            id: run.clone(),
            fence,
        })),
    }
}

async fn add_artifacts(
    tx: &Transaction<'_>,
    run: &RunId,
    fence: i64,
    artifacts: &[Artifact],
) -> Result<(), Fail> {
    check_token(tx, run, fence).await?;
    super::events::add_artifacts(tx, run, artifacts).await
}

#[async_trait]
impl FencedArtifactStore for PgStore {
    async fn fenced_add_artifacts(
        &self,
        run: &RunId,
        fence: i64,
        artifacts: &[Artifact],
    ) -> StoreResult<()> {
        in_tx!(self, |tx| add_artifacts(&tx, run, fence, artifacts))
    }

    async fn fenced_request_approval(
        &self,
        fence: i64,
        approval: &Approval,
    ) -> StoreResult<Approval> {
        in_tx!(self, |tx| request_approval(&tx, fence, approval))
    }
}

async fn request_approval(
    tx: &Transaction<'_>,
    fence: i64,
    a: &Approval,
) -> Result<Approval, Fail> {
    check_token(tx, &a.run_id, fence).await?;
    super::reliability::request_approval(tx, a).await
}
