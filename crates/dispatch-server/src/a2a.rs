//! `dispatch serve --a2a --host`: a cluster service as an A2A agent, served
//! by every server at its webhook (`/hooks/<name>[/<path>]`): the card at
//! `/hooks/<name>/.well-known/agent-card.json`, JSON-RPC at the hook, behind
//! its shared secret. The JSON-RPC side is the local one
//! (`dispatch_runtime::service::a2a`); here a task is a wake of the cluster
//! service — a heartbeat run in the context's session, queued for the
//! workers — and `tasks/cancel` cancels its run as `POST
//! /v1/runs/{id}/cancel` does. A context's session is in the store, so its
//! next task continues it on whichever worker claims it.
//!
//! Each server keeps the agents of the services it answered for (their
//! cards, and the push notification configs of the tasks it took: the
//! server that took a config sends its notifications). A push
//! notification goes only where a completion callback may
//! (`crate::callback_guard`: no loopback, link-local or metadata address
//! unless `--allow-private-callbacks`), through the guard's client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use dispatch_core::{RunId, Status, Transition, now_ms};
use dispatch_runtime::service::ServiceDoc;
use dispatch_runtime::service::a2a::{A2aAgent, A2aHost, CANCEL_GRACE};
use dispatch_store::{Run, StoreError};
use serde_json::Value;

use crate::callback_guard::CallbackPolicy;
use crate::services::{Services, WakeError, WakeSpec};

/// The agents this server answered for, by service run.
fn agents() -> &'static Mutex<HashMap<RunId, Arc<A2aAgent>>> {
    static AGENTS: OnceLock<Mutex<HashMap<RunId, Arc<A2aAgent>>>> = OnceLock::new();
    AGENTS.get_or_init(Default::default)
}

/// The agent of the cluster service `service` (named `name`, with `doc`),
/// built once per server; `base` is where this request reached it
/// (`http://host:port/hooks/<name>`), for the card's default URL.
pub async fn agent(
    services: &Services,
    callbacks: CallbackPolicy,
    service: &RunId,
    name: &str,
    doc: &ServiceDoc,
    base: &str,
) -> Result<Arc<A2aAgent>, String> {
    if let Some(a) = agents()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(service)
    {
        return Ok(a.clone());
    }
    let (Some(serve), Some(policy)) = (&doc.config.a2a, &doc.config.listen) else {
        return Err(format!("service `{name}` is not an A2A agent"));
    };
    let run = services
        .store
        .get_run(service)
        .await
        .map_err(|e| e.to_string())?;
    let parcel = services
        .parcel(&run.parcel_digest)
        .await
        .map_err(|e| format!("cannot read the parcel for the agent card: {e}"))?;
    let rpc_paths = match &policy.path {
        Some(p) => vec![p.clone()],
        None => vec!["/".to_string(), "/a2a".to_string()],
    };
    let endpoint = serve
        .url
        .clone()
        .unwrap_or_else(|| match rpc_paths[0].as_str() {
            // `/hooks/<name>/` is no route: the hook itself takes it.
            "/" => base.to_string(),
            p => format!("{base}{p}"),
        });
    let card = dispatch_runtime::service::a2a_task::card(
        &parcel.manifest,
        &endpoint,
        policy.secret_sha256.is_some(),
    );
    let host = ClusterHost {
        services: services.clone(),
        service: service.clone(),
        callbacks,
    };
    let store: Arc<dyn dispatch_store::Store> = services.store.clone();
    let agent = Arc::new(A2aAgent::new(
        &card,
        rpc_paths,
        store,
        service.clone(),
        Arc::new(host),
    ));
    let mut all = agents().lock().unwrap_or_else(PoisonError::into_inner);
    Ok(all.entry(service.clone()).or_insert(agent).clone())
}

/// Tasks as wakes of the cluster service.
struct ClusterHost {
    services: Services,
    service: RunId,
    /// Push notifications go where completion callbacks may go.
    callbacks: CallbackPolicy,
}

#[async_trait::async_trait]
impl A2aHost for ClusterHost {
    async fn admit(
        &self,
        payload: Value,
        detail: Value,
        session: &str,
    ) -> Result<Run, (StatusCode, String)> {
        let spec = WakeSpec {
            reason: "a2a",
            detail,
            payload,
            request: None,
            session: Some(session.to_string()),
        };
        let busy = StatusCode::SERVICE_UNAVAILABLE;
        match self.services.wake(&self.service, spec).await {
            Ok(run) => Ok(run),
            Err(WakeError::NotRunning(_)) => Err((busy, "the service is stopping".into())),
            Err(WakeError::Busy(why)) => Err((busy, format!("the agent is busy: {why}"))),
            Err(WakeError::Store(StoreError::SessionBusy { run, .. })) => Err((
                busy,
                format!(
                    "the agent is busy: its conversation is in use by task {run} until that ends"
                ),
            )),
            Err(e) => Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not create the task's run: {e}"),
            )),
        }
    }

    fn check_push_url(&self, url: &str) -> Result<(), String> {
        crate::callback_guard::check_url(url, self.callbacks).map(drop)
    }

    /// The callback guard's client: it connects only to addresses that pass.
    fn push_client(&self) -> reqwest::Client {
        crate::callback_guard::client(self.callbacks).unwrap_or_else(|_| dispatch_http::fallback())
    }

    /// Asks the run to stop (its worker stops it; a queued one ends here)
    /// and waits a little for its end.
    async fn cancel(&self, run: &Run) {
        let store = &self.services.store;
        let Ok(mut now) = store.request_stop(&run.id, now_ms()).await else {
            return;
        };
        if matches!(now.status(), Status::Queued | Status::Created) {
            let t = Transition::Cancel {
                reason: "cancelled before it started".into(),
                exit_code: None,
                at: now_ms(),
            };
            if let Ok(done) = crate::services::transition(&**store, now.clone(), t).await {
                now = done;
            }
        }
        let deadline = tokio::time::Instant::now() + CANCEL_GRACE * 2;
        while !now.state.is_terminal() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match store.get_run(&run.id).await {
                Ok(r) => now = r,
                Err(_) => return,
            }
        }
    }
}
