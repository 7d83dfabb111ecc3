//! What a service persists in its `service_state` row: its configuration
//! (`config`), its timers (`schedules`) and its listeners (`listeners`).

use dispatch_core::parcel::ListenSignature;
use dispatch_core::{RunId, Ts};
use dispatch_store::ServiceState;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happens when a wake arrives while earlier wakes still run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// One wake at a time; later ones wait in a bounded FIFO (a timer that is
    /// already waiting is not queued twice).
    #[default]
    Queue,
    /// One wake at a time; a wake that arrives meanwhile is dropped (an HTTP
    /// request gets 503).
    Skip,
    /// Up to `max_concurrent` wakes at once; beyond that they queue.
    Concurrent,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Queue => "queue",
            Overlap::Skip => "skip",
            Overlap::Concurrent => "concurrent",
        }
    }
}

/// The ingress policy: where to listen and what to accept. Holds the shared
/// secret's SHA-256 only, never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressPolicy {
    /// The address asked for (`127.0.0.1:0` binds a free port).
    pub addr: String,
    /// Only this path is served (404 otherwise); any path when `None`.
    pub path: Option<String>,
    /// Only these methods are accepted (405 otherwise); any when empty.
    pub methods: Vec<String>,
    /// Hex SHA-256 of the shared secret; requests must present the secret
    /// (401 otherwise). No authentication when `None`.
    pub secret_sha256: Option<String>,
    /// Where the secret came from: `--listen-shared-secret` or `SECRET <NAME>`.
    pub secret_source: Option<String>,
    /// How each request must be signed (`LISTEN_SIGNATURE`); the key is the
    /// value of the environment variable it names, read where the webhook
    /// is served, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ListenSignature>,
    /// Served without any secret nor signature (`--public`).
    #[serde(default)]
    pub public: bool,
    /// Larger bodies get 413.
    pub max_body_bytes: u64,
    /// Larger header sections get 431.
    pub max_header_bytes: u64,
}

/// How a service was asked to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// The plain heartbeat interval, when there is one.
    pub interval_ms: Option<u64>,
    pub overlap: Overlap,
    /// How many wakes may run at once under `concurrent`.
    pub max_concurrent: u32,
    /// How many wakes may wait for their turn.
    pub max_pending: u32,
    pub listen: Option<IngressPolicy>,
    /// `--a2a`: the listener speaks the A2A protocol (agent card and
    /// JSON-RPC) instead of taking plain webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a: Option<A2aServe>,
}

/// How a service is exposed as an A2A agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct A2aServe {
    /// The endpoint URL its card announces (`--a2a-url`); else
    /// `http://<bound address><path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `--session-ttl`: a context's session unused this long is removed
    /// (none a live task holds); kept for ever when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_ttl_ms: Option<u64>,
}

/// What fires a timer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// A cron expression (5 fields, or 6 with seconds first), in UTC.
    Cron { expr: String },
    /// A plain interval.
    Interval { every_ms: u64 },
}

/// One timer and where it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    #[serde(flatten)]
    pub trigger: Trigger,
    /// The payload each of its wakes carries.
    #[serde(default)]
    pub payload: Value,
    pub next_fire_at: Option<Ts>,
    pub last_fired_at: Option<Ts>,
    #[serde(default)]
    pub fires: u64,
    /// Fires dropped because of the overlap policy.
    #[serde(default)]
    pub skipped: u64,
}

impl ScheduleState {
    pub fn new(trigger: Trigger, payload: Value) -> Self {
        ScheduleState {
            trigger,
            payload,
            next_fire_at: None,
            last_fired_at: None,
            fires: 0,
            skipped: 0,
        }
    }

    /// How the timer is shown: the cron expression, or `every 30000ms`.
    pub fn label(&self) -> String {
        match &self.trigger {
            Trigger::Cron { expr } => expr.clone(),
            Trigger::Interval { every_ms } => format!("every {every_ms}ms"),
        }
    }
}

/// One HTTP listener and what it has served.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListenerState {
    pub addr: String,
    /// The address actually bound (the port chosen for `:0`).
    pub bound_addr: Option<String>,
    /// Requests accepted (answered 202).
    pub requests_handled: u64,
    /// Requests answered with anything else.
    pub requests_rejected: u64,
    pub last_request_at: Option<Ts>,
}

/// The whole persisted document of a service, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceDoc {
    pub config: ServiceConfig,
    pub schedules: Vec<ScheduleState>,
    pub listeners: Vec<ListenerState>,
}

impl ServiceDoc {
    pub fn encode(&self, run_id: &RunId, at: Ts) -> ServiceState {
        let json = |v: serde_json::Result<Value>| v.expect("service state is plain JSON data");
        ServiceState {
            run_id: run_id.clone(),
            config: json(serde_json::to_value(&self.config)),
            schedules: json(serde_json::to_value(&self.schedules)),
            listeners: json(serde_json::to_value(&self.listeners)),
            updated_at: at,
            name: None,
        }
    }

    pub fn decode(state: &ServiceState) -> Result<ServiceDoc, String> {
        fn part<T: serde::de::DeserializeOwned>(
            state: &ServiceState,
            what: &str,
            v: &Value,
        ) -> Result<T, String> {
            serde_json::from_value(v.clone()).map_err(|e| {
                format!(
                    "the service state of run {} has an unreadable {what}: {e}",
                    state.run_id
                )
            })
        }
        Ok(ServiceDoc {
            config: part(state, "config", &state.config)?,
            schedules: part(state, "schedules", &state.schedules)?,
            listeners: part(state, "listeners", &state.listeners)?,
        })
    }
}
