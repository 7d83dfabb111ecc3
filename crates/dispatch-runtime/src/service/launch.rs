//! `dispatch serve` and `dispatch restart` of a service: check everything,
//! create the service run and its `service_state` row, spawn its helper.

use std::time::{Duration, Instant};

use dispatch_core::{Operation, RunId, Status, now_ms};
use dispatch_store::{Run, ServiceStore, Store};

use super::ServiceError;
use super::config::{ServeOptions, check_not_open, check_port_free, check_signature_key, resolve};
use super::model::ServiceDoc;
use crate::error::RuntimeResult;
use crate::launch::{LaunchRequest, check_secrets, create, resolve_parcel};
use crate::layout::Layout;
use crate::reconcile::reconcile;

const UP_POLL: Duration = Duration::from_millis(5);

/// Creates a service run of `source` with `opts` merged over its Agentfile.
/// Every bad option is refused before anything is created.
pub async fn create_service<S: Store + ServiceStore + ?Sized>(
    store: &S,
    layout: &Layout,
    source: &str,
    opts: &ServeOptions,
) -> RuntimeResult<Run> {
    let parcel = resolve_parcel(layout, source)?;
    check_secrets(&parcel)?;
    let (config, schedules) = resolve(&parcel.manifest, opts)?;
    let req = LaunchRequest {
        source: parcel.digest.clone(),
        operation: Some(Operation::Service),
        payload: opts.payload.clone(),
        parent_id: None,
        origin_id: None,
        project: opts
            .project
            .clone()
            .unwrap_or_else(|| dispatch_core::project::DEFAULT_PROJECT.to_string()),
    };
    let (run, _) = create(store, layout, &req).await?;
    let doc = ServiceDoc {
        config,
        schedules,
        listeners: Vec::new(),
    };
    store
        .put_service_state(&doc.encode(&run.id, now_ms()))
        .await?;
    Ok(run)
}

/// Creates the service that restarts `old` (already ended): the same parcel,
/// payload, configuration and timers (with their last and next fire times, so
/// a fire missed meanwhile is caught up once), fresh listener counters.
pub async fn recreate_service<S: Store + ServiceStore + ?Sized>(
    store: &S,
    layout: &Layout,
    old: &Run,
) -> RuntimeResult<Run> {
    let saved = store.get_service_state(&old.id).await?.ok_or_else(|| {
        ServiceError::new(format!(
            "service {} has no saved configuration (hint: start it again with `dispatch serve`)",
            old.id
        ))
    })?;
    let doc = ServiceDoc::decode(&saved).map_err(ServiceError::new)?;
    if let Some(l) = &doc.config.listen {
        check_port_free(&l.addr)?;
        check_not_open(l, &format!("`LISTEN {}`", l.addr))?;
        check_signature_key(l)?;
    }
    let req = LaunchRequest {
        source: old.parcel_digest.clone(),
        operation: Some(Operation::Service),
        payload: old.payload.clone(),
        parent_id: old.parent_id.clone(),
        origin_id: Some(old.id.clone()),
        project: old.project.clone(),
    };
    let (run, _) = create(store, layout, &req).await?;
    let doc = ServiceDoc {
        listeners: Vec::new(),
        ..doc
    };
    store
        .put_service_state(&doc.encode(&run.id, now_ms()))
        .await?;
    Ok(run)
}

/// Waits until the service `id` is up (`running`: listeners bound) or has
/// ended, at most `timeout`; returns it as it stands.
pub async fn wait_up<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    id: &RunId,
    timeout: Duration,
) -> RuntimeResult<Run> {
    let deadline = Instant::now() + timeout;
    loop {
        let run = reconcile(store, layout, store.get_run(id).await?).await?;
        if run.status() == Status::Running || run.state.is_terminal() {
            return Ok(run);
        }
        if Instant::now() >= deadline {
            return Ok(run);
        }
        tokio::time::sleep(UP_POLL).await;
    }
}
