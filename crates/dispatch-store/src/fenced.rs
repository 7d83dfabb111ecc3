//! What a run's holder records besides its state and events, fenced like
//! them: the artifacts its agent left (a large output among them, see
//! `OUTPUT_ARTIFACT` in the runtime) and the approvals its agent asks for.
//! An opt-in capability next to [`crate::ArtifactStore`] and
//! [`crate::ReliabilityStore::request_approval`], which a local helper uses
//! unfenced.
//!
//! The rule is the run log's ([`crate::RunLogStore::append_log`]): the
//! writer's token must be the run's current one ([`crate::Run::fence`]),
//! checked in the write's own transaction. A live lease is not required:
//! the token only moves on when someone else may hold the run (a claim, a
//! sweep, a release), so a holder's last writes after its own final state
//! still land, and a holder whose run was taken over writes nothing.

use async_trait::async_trait;
use dispatch_core::RunId;

use crate::{Approval, Artifact, StoreResult};

/// Artifacts recorded by the holder of a fencing token.
#[async_trait]
pub trait FencedArtifactStore: Send + Sync {
    /// Records `artifacts` as [`crate::ArtifactStore::add_artifacts`] does,
    /// for the holder of token `fence`: `Fenced`, with nothing recorded,
    /// unless it is the run's current token; `NotFound` for an unknown run.
    async fn fenced_add_artifacts(
        &self,
        run: &RunId,
        fence: i64,
        artifacts: &[Artifact],
    ) -> StoreResult<()>;

    /// Asks for `approval` as [`crate::ReliabilityStore::request_approval`]
    /// does, for the holder of token `fence`: `Fenced`, with nothing asked
    /// (no pending approval, no event), unless it is the run's current
    /// token. A holder cut off from its run while its agent waited for a
    /// tool's approval must not leave a request nobody will act on.
    async fn fenced_request_approval(
        &self,
        fence: i64,
        approval: &Approval,
    ) -> StoreResult<Approval>;
}
