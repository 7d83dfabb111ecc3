//! The store's records as the operations routes' answers (workers, usage,
//! quotas, sessions, notifications, parcels, services): `dispatch-api`
//! types built from `dispatch-store` and `dispatch-core` ones, beside
//! [`super::wire`]'s runs, events and approvals.

use dispatch_core::parcel::{Courier, Manifest};
use dispatch_store::{
    Notification, ParcelEntry, QuotaUse, Run, ServiceState, SessionContents, SessionSummary,
    UsageRow, WorkerInfo,
};

/// A worker as `GET /v1/workers` lists it; `state` is
/// [`super::workers::state_of`] it.
pub(crate) fn worker(w: &WorkerInfo, state: &str) -> dispatch_api::Worker {
    dispatch_api::Worker {
        host: w.beat.host.clone(),
        labels: w.beat.labels.clone(),
        lease_ms: w.beat.lease_ms,
        name: w.beat.name.clone(),
        pid: w.beat.pid,
        renewed_at: w.renewed_at,
        seen_at: w.beat.seen_at,
        slots: w.beat.slots,
        started_at: w.beat.started_at,
        state: state.to_string(),
        stopped_at: w.beat.stopped_at,
        used: w.held,
    }
}

/// One row of the cost report.
pub(crate) fn usage_row(r: UsageRow) -> dispatch_api::UsageRow {
    dispatch_api::UsageRow {
        calls: r.calls,
        cost_usd: r.cost_usd,
        estimated_calls: r.estimated_calls,
        input_tokens: r.input_tokens,
        key: r.key,
        output_tokens: r.output_tokens,
        runs: r.runs,
        unpriced_calls: r.unpriced_calls,
    }
}

/// One limit of a quota with what is used of it.
pub(crate) fn quota(u: QuotaUse) -> dispatch_api::QuotaRow {
    dispatch_api::QuotaRow {
        limit: u.quota.limit.as_str().to_string(),
        on_hard: u.quota.on_hard.as_str().to_string(),
        period: u.period,
        project: u.quota.project,
        soft_pct: u.quota.soft_pct,
        updated_at: u.quota.updated_at,
        used: u.used,
        value: u.quota.value,
    }
}

/// A session as `GET /v1/sessions` lists it.
pub(crate) fn session(s: SessionSummary) -> dispatch_api::SessionSummary {
    dispatch_api::SessionSummary {
        file: s.file,
        in_use_by: s.in_use_by.as_ref().map(ToString::to_string),
        last_run: s.last_run.as_ref().map(ToString::to_string),
        messages: s.messages,
        name: s.name,
        parcel: s.parcel,
        turns: s.turns,
        updated_at: s.updated_at,
    }
}

/// A session with everything it keeps (`GET /v1/sessions/{parcel}/{name}`
/// and local `dispatch session inspect`).
pub fn session_detail(c: SessionContents) -> dispatch_api::SessionDetail {
    let s = session(c.summary);
    dispatch_api::SessionDetail {
        checkpoints: c.checkpoints,
        conversation: c.conversation.filter(|v| !v.is_null()),
        file: s.file,
        file_text: c.file_text,
        in_use_by: s.in_use_by,
        last_run: s.last_run,
        memory: c.memory,
        messages: s.messages,
        name: s.name,
        parcel: s.parcel,
        turns: s.turns,
        updated_at: s.updated_at,
    }
}

/// A message of the notification outbox.
pub(crate) fn notification(n: Notification) -> dispatch_api::NotificationRow {
    dispatch_api::NotificationRow {
        created_at: n.created_at,
        data: n.data,
        done_at: n.done_at,
        due_at: n.due_at,
        key: n.key,
        kind: n.kind,
        last_error: n.last_error,
        outcome: n.outcome,
        run_id: n.run_id.to_string(),
        sent: n.sent,
        seq: n.seq,
        tries: n.tries,
    }
}

fn courier(c: Courier) -> dispatch_api::Courier {
    match c {
        Courier::Process => dispatch_api::Courier::Process,
        Courier::Noop => dispatch_api::Courier::Noop,
        Courier::Agent => dispatch_api::Courier::Agent,
        Courier::Image => dispatch_api::Courier::Image,
        Courier::Workflow => dispatch_api::Courier::Workflow,
    }
}

/// A stored parcel as `GET /v1/parcels` lists it; `None` when its manifest
/// does not parse (such a parcel is left out of the list).
pub(crate) fn parcel(p: &ParcelEntry) -> Option<dispatch_api::Parcel> {
    let m: Manifest = serde_json::from_str(&p.manifest).ok()?;
    Some(dispatch_api::Parcel {
        courier: courier(m.courier),
        created_at: p.created_at,
        digest: p.digest.clone(),
        entrypoint: m.entrypoint,
        files: m.files.len() as u64,
        labels: m.labels,
        name: m.name,
        size: m.files.iter().map(|f| f.size).sum(),
        version: m.version,
    })
}

/// The parcel an upload built.
pub(crate) fn parcel_built(p: &dispatch_core::parcel::Parcel) -> dispatch_api::ParcelBuilt {
    dispatch_api::ParcelBuilt {
        digest: p.digest.clone(),
        files: p.manifest.files.len() as u64,
        name: p.manifest.name.clone(),
        version: p.manifest.version.clone(),
    }
}

/// A service's stored state as `GET /v1/runs/{id}/service` answers it.
pub(crate) fn service_state(saved: &ServiceState) -> dispatch_api::ServiceState {
    dispatch_api::ServiceState {
        config: saved.config.clone(),
        listeners: saved.listeners.clone(),
        name: saved.name.clone(),
        schedules: saved.schedules.clone(),
        updated_at: saved.updated_at,
    }
}

/// A running service as `GET /v1/services` lists it.
pub(crate) fn service(run: &Run, saved: Option<&ServiceState>) -> dispatch_api::ServiceItem {
    dispatch_api::ServiceItem {
        created_at: run.created_at,
        id: run.id.to_string(),
        parcel_digest: run.parcel_digest.clone(),
        parcel_name: run.parcel_name.clone(),
        project: run.project.clone(),
        state: saved.map(service_state),
        status: run.status(),
    }
}
