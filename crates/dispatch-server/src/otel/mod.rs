//! OpenTelemetry traces over OTLP (HTTP/protobuf), built from the run's
//! recorded events when it has finished (see [`spans`]): every courier is
//! covered and nothing is added to a run's hot path but handing its id (or,
//! for a batch of noop runs, what the worker already holds) to a channel.
//! The exporter reads a whole batch of runs with one statement per table
//! ([`dispatch_store::TraceStore`]). Off (no task, no channel) unless an
//! endpoint is given.
//!
//! The exporter is the `opentelemetry-otlp` crate's; it runs on its own
//! task, a batch of finished runs at a time. An endpoint that does not
//! answer is warned about once (and once more when it answers again); runs
//! never wait for it: when the channel is full, traces are dropped.

pub mod spans;

use std::time::Duration;

use dispatch_core::{RunId, Ts};
use dispatch_store::{Run, RunTrace};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
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

/// A finished run as handed to the exporter.
enum Finished {
    /// Read it (with the rest of its batch) from the store.
    Id(RunId),
    /// Already known: nothing to read.
    Held(Box<RunTrace>),
}

/// Hands finished runs to the exporter task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tracer {
    tx: mpsc::Sender<Finished>,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finished::Id(id) => write!(f, "Id({id})"),
            Finished::Held(t) => write!(f, "Held({})", t.run.id),
        }
    }
}

impl Tracer {
    /// Starts the exporter task for `url` (from [`traces_url`]) as
    /// `service` (`dispatch-server`, `dispatch-worker`). Needs a Tokio runtime.
    pub fn start(store: SharedStore, url: &str, service: &'static str) -> Result<Tracer, String> {
        // The workspace's client (`dispatch_http`), the timeout the
        // exporter would have set on its own.
        let http = dispatch_http::builder("otlp")
            .and_then(|b| {
                b.timeout(TIMEOUT)
                    .build()
                    .map_err(dispatch_http::HttpError::Build)
            })
            .map_err(|e| format!("OTLP endpoint `{url}`: {e}"))?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(http)
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
    /// exported once the run is in a final state, read from the store with
    /// the rest of its batch. Never waits.
    pub fn finished(&self, id: &RunId) {
        let _ = self.tx.try_send(Finished::Id(id.clone()));
    }

    /// A run this process claimed (`run`, as claimed) and saved succeeded
    /// at `at` with [`dispatch_store::NoopStore::succeed_at_once`]: its
    /// trace is built from what the caller holds, without reading the
    /// store. Never waits.
    pub fn succeeded_at_once(&self, run: Run, traceparent: Option<String>, at: Ts) {
        let trace = RunTrace::succeeded_at_once(run, traceparent, at);
        let _ = self.tx.try_send(Finished::Held(Box::new(trace)));
    }
}

async fn export(
    store: SharedStore,
    exporter: opentelemetry_otlp::SpanExporter,
    scope: InstrumentationScope,
    url: String,
    mut rx: mpsc::Receiver<Finished>,
) {
    let mut failing = false;
    let mut received = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut received, BATCH).await > 0 {
        let mut traces = Vec::with_capacity(received.len());
        let mut ids = Vec::new();
        for finished in received.drain(..) {
            match finished {
                Finished::Id(id) => ids.push(id),
                Finished::Held(trace) => traces.push(*trace),
            }
        }
        if !ids.is_empty() {
            // One read per table for the whole batch; a run not finished
            // yet (a retry's attempt ended) is left out: its trace goes
            // when its last attempt does.
            match store.finished_traces(&ids).await {
                Ok(read) => traces.extend(read),
                Err(e) => tracing::warn!(
                    "[dispatch] cannot read {} finished runs to trace them: {e}",
                    ids.len()
                ),
            }
        }
        let batch: Vec<SpanData> = traces
            .iter()
            .flat_map(|t| {
                spans::spans(
                    &spans::Recorded {
                        run: &t.run,
                        attempts: &t.attempts,
                        events: &t.events,
                        traceparent: t.traceparent.as_deref(),
                    },
                    &scope,
                )
            })
            .collect();
        if batch.is_empty() {
            continue;
        }
        match exporter.export(batch).await {
            Ok(()) if failing => {
                tracing::info!("[dispatch] exporting traces to {url} again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(
                    "cannot export traces to {url}: {e} (runs go on; their traces are dropped until it answers)"
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
}
