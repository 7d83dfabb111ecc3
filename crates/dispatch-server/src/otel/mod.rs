//! OpenTelemetry traces over OTLP (HTTP/protobuf), built from the run's
//! recorded events when it has finished (see [`spans`]): every courier is
//! covered and nothing is added to a run's hot path but handing its id to a
//! channel. Off (no task, no channel) unless an endpoint is given.
//!
//! The exporter is the `opentelemetry-otlp` crate's; it runs on its own
//! task, a batch of finished runs at a time. An endpoint that does not
//! answer is warned about once (and once more when it answers again); runs
//! never wait for it: when the channel is full, traces are dropped.

pub mod spans;

use std::time::Duration;

use dispatch_core::RunId;
use dispatch_store::StoreResult;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::sync::mpsc;

use crate::SharedStore;

/// Finished runs waiting for export; past this, traces are dropped.
const QUEUE: usize = 8192;

/// Runs exported per request at most.
const BATCH: usize = 256;

/// How long one export may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The OTLP traces URL for `endpoint`, an OTLP/HTTP base URL as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` takes it (`http://collector:4318`):
/// `/v1/traces` is appended (a URL already ending in it is kept). One line
/// on error.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let url = url::Url::parse(endpoint.trim()).map_err(|e| {
        format!("OTLP endpoint `{endpoint}` is not a URL: {e} (hint: http://127.0.0.1:4318)")
    })?;
    if url.scheme() != "http" {
        return Err(format!(
            "OTLP endpoint `{endpoint}`: only http:// is supported (hint: a collector on this machine or network, http://127.0.0.1:4318)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("OTLP endpoint `{endpoint}` has no host"));
    }
    let base = url.as_str().trim_end_matches('/');
    Ok(match base.ends_with("/v1/traces") {
        true => base.to_string(),
        false => format!("{base}/v1/traces"),
    })
}

/// Hands finished runs to the exporter task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tracer {
    tx: mpsc::Sender<RunId>,
}

impl Tracer {
    /// Starts the exporter task for `url` (from [`traces_url`]) as
    /// `service` (`dispatch-server`, `dispatch-worker`). Needs a Tokio runtime.
    pub fn start(store: SharedStore, url: &str, service: &'static str) -> Result<Tracer, String> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(TIMEOUT)
            .build()
            .map_err(|e| format!("OTLP endpoint `{url}`: {e}"))?;
        let resource = Resource::builder_empty()
            .with_service_name(service)
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        exporter.set_resource(&resource);
        let scope = InstrumentationScope::builder("dispatch")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(export(store, exporter, scope, url.to_string(), rx));
        Ok(Tracer { tx })
    }

    /// Run `id` has finished (or an attempt of it ended): its trace is
    /// exported once the run is in a final state. Never waits.
    pub fn finished(&self, id: &RunId) {
        let _ = self.tx.try_send(id.clone());
    }
}

async fn export(
    store: SharedStore,
    exporter: opentelemetry_otlp::SpanExporter,
    scope: InstrumentationScope,
    url: String,
    mut rx: mpsc::Receiver<RunId>,
) {
    let mut failing = false;
    let mut ids = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut ids, BATCH).await > 0 {
        let mut batch = Vec::new();
        for id in ids.drain(..) {
            match trace_of(&store, &id, &scope).await {
                Ok(spans) => batch.extend(spans),
                Err(e) => eprintln!("[dispatch] run {id}: cannot read it to trace it: {e}"),
            }
        }
        if batch.is_empty() {
            continue;
        }
        match exporter.export(batch).await {
            Ok(()) if failing => {
                eprintln!("[dispatch] exporting traces to {url} again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                eprintln!(
                    "warning: cannot export traces to {url}: {e} (runs go on; their traces are dropped until it answers)"
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// The spans of run `id`; none while it has not finished (a retry's
/// attempt ended: the run's trace goes when its last attempt does).
async fn trace_of(
    store: &SharedStore,
    id: &RunId,
    scope: &InstrumentationScope,
) -> StoreResult<Vec<SpanData>> {
    let run = store.get_run(id).await?;
    if !run.status().is_terminal() {
        return Ok(Vec::new());
    }
    let attempts = store.list_attempts(id).await?;
    let extras = store.run_extras(id).await?;
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list_events(id, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        let full = page.len() == 1000;
        events.extend(
            page.into_iter()
                .filter(|e| matches!(e.event.kind.as_str(), "step" | "model_call" | "tool_call")),
        );
        if !full {
            break;
        }
    }
    Ok(spans::spans(
        &spans::Recorded {
            run: &run,
            attempts: &attempts,
            events: &events,
            traceparent: extras.traceparent.as_deref(),
        },
        scope,
    ))
}
