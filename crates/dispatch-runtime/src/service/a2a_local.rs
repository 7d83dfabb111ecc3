//! The A2A host of `dispatch serve --a2a` on this machine: a task is a wake
//! of the service helper (under its overlap policy), a cancel is `dispatch
//! stop` of the task's run.

use async_trait::async_trait;
use dispatch_store::{Run, Store};
use hyper::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use super::a2a::{A2aHost, CANCEL_GRACE};
use super::exec::{Reason, Reply as WakeReply, Wake};
use crate::layout::Layout;

pub(super) struct LocalHost {
    pub wakes: mpsc::Sender<Wake>,
    pub store: Arc<dyn Store>,
    pub layout: Layout,
}

#[async_trait]
impl A2aHost for LocalHost {
    async fn admit(
        &self,
        payload: Value,
        detail: Value,
        session: &str,
    ) -> Result<Run, (StatusCode, String)> {
        let (tx, rx) = oneshot::channel();
        let wake = Wake {
            reason: Reason::A2a,
            detail,
            payload,
            request: None,
            timer: None,
            session: Some(session.to_string()),
            reply: Some(tx),
        };
        let stopping = || {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the service is stopping".to_string(),
            )
        };
        if self.wakes.send(wake).await.is_err() {
            return Err(stopping());
        }
        match rx.await {
            Ok(WakeReply::Accepted(id)) => self
                .store
                .get_run(&id)
                .await
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
            Ok(WakeReply::Busy(why)) => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the agent is busy: {why}"),
            )),
            Ok(WakeReply::Failed(why)) => Err((StatusCode::INTERNAL_SERVER_ERROR, why)),
            Err(_) => Err(stopping()),
        }
    }

    async fn cancel(&self, run: &Run) {
        let stop = crate::stop::stop(&*self.store, &self.layout, &run.id, CANCEL_GRACE, false);
        let _ = tokio::time::timeout(CANCEL_GRACE * 2, stop).await;
    }
}
