//! A worker's database calls, bounded in time.

use std::future::Future;
use std::time::Duration;

use dispatch_store::StoreError;

/// `call`, or `Unavailable` when it takes longer than `limit` (a database
/// cut off by a partition answers nothing, and the loop must go on).
pub(super) async fn bounded<T>(
    call: impl Future<Output = dispatch_store::StoreResult<T>>,
    limit: Duration,
    what: &str,
) -> dispatch_store::StoreResult<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(answer) => answer,
        Err(_) => Err(StoreError::Unavailable {
            // Said as "the run database in use is unavailable: …".
            path: "in use".into(),
            message: format!("{what} got no answer within {} ms", limit.as_millis()),
        }),
    }
}
