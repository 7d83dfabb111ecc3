//! The events of a run, typed: one [`RunEvent`] variant per event type the
//! runtime, the agents and the server write, each with its JSON payload, and
//! [`RunEvent::Other`] for a type this build does not know (an event of an
//! older or newer Dispatch reads back as it was written, never as an error).
//!
//! The wire and storage shape is unchanged: an event is still
//! `{"type": "<kind>", "data": {...}}` inside a [`NewEvent`] (`type`,
//! `attempt`, `at`, `data`), so existing databases and API clients keep
//! working. Code that writes an event names its variant
//! ([`NewEvent::of`]); code that reads one asks for its [`EventKind`]
//! ([`NewEvent::is`], [`NewEvent::event_kind`]) instead of spelling the
//! type as a string.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::NewEvent;
use crate::time::Ts;

macro_rules! run_events {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// A run's event: its type (the variant) and its payload.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(from = "Parts", into = "Parts")]
        pub enum RunEvent {
            $($(#[$doc])* $variant(Value),)*
            /// An event type this build does not know, kept as it was.
            Other { kind: String, data: Value },
        }

        /// The known event types (what [`RunEvent`]'s variants are named).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $($(#[$doc])* $variant,)*
        }

        impl EventKind {
            /// Every known type.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The type as stored and sent (`model_call`, `tool_call`, …).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }

            /// The known type named `name`, if there is one.
            pub fn parse(name: &str) -> Option<EventKind> {
                match name {
                    $($name => Some(EventKind::$variant),)*
                    _ => None,
                }
            }
        }

        impl RunEvent {
            /// An event of type `kind` with payload `data`.
            pub fn new(kind: EventKind, data: Value) -> RunEvent {
                match kind {
                    $(EventKind::$variant => RunEvent::$variant(data),)*
                }
            }

            /// Its known type; `None` for [`RunEvent::Other`].
            pub fn kind(&self) -> Option<EventKind> {
                match self {
                    $(RunEvent::$variant(_) => Some(EventKind::$variant),)*
                    RunEvent::Other { .. } => None,
                }
            }

            /// Its payload.
            pub fn data(&self) -> &Value {
                match self {
                    $(RunEvent::$variant(d))|* => d,
                    RunEvent::Other { data, .. } => data,
                }
            }

            /// The type as stored and its payload.
            pub fn into_parts(self) -> (String, Value) {
                match self {
                    $(RunEvent::$variant(d) => ($name.to_string(), d),)*
                    RunEvent::Other { kind, data } => (kind, data),
                }
            }
        }
    };
}

run_events! {
    /// A state transition (`from`, `to`, `reason`).
    State = "state",
    /// Tokens and cost.
    Usage = "usage",
    /// A named step began or ended (`name`, `phase`).
    Step = "step",
    /// A model call ended (model, provider, tokens, cost, latency, …).
    ModelCall = "model_call",
    /// A model call was sent (billed as an estimate if it never ends).
    ModelCallSent = "model_call_sent",
    /// A tool call ended (`name`, `ok`, `input`, `output`, `duration_ms`, …).
    ToolCall = "tool_call",
    /// The agent's state to resume from.
    Checkpoint = "checkpoint",
    /// The agent named a file it produced.
    Artifact = "artifact",
    /// The agent asked for an approval (`id`, `summary`).
    Approval = "approval",
    /// An approval was recorded as pending.
    ApprovalRequested = "approval_requested",
    /// An approval was decided.
    ApprovalDecided = "approval_decided",
    /// A message to another agent of a workflow.
    Message = "message",
    /// A handoff to a built parcel (a new run).
    Handoff = "handoff",
    /// An error the agent reported.
    Error = "error",
    /// The agent's output.
    Output = "output",
    /// A log line the agent wrote as an event.
    Log = "log",
    /// A durable wait (signal, approval, timer).
    Wait = "wait",
    /// Something the runtime says is wrong but not fatal.
    Warning = "warning",
    /// An attempt's limits and what it used.
    Resources = "resources",
    /// A native attempt's bill of materials.
    Bom = "bom",
    /// The run was created.
    Created = "created",
    /// The run was dead-lettered.
    DeadLettered = "dead_lettered",
    /// A completion callback was sent.
    Callback = "callback",
    /// A completion callback was registered.
    CallbackRegistered = "callback_registered",
    /// A signal was sent to the run.
    Signal = "signal",
    /// How the attempt was sandboxed.
    Sandbox = "sandbox",
    /// The egress proxy's decision on a connection of the run's sandboxed
    /// processes (`host`, `port`, `method`, `allowed`), for `NETWORK allow`.
    Network = "network",
    /// A stop was requested.
    StopRequested = "stop_requested",
    /// The run waits for a provider's rate limit.
    RateLimitWaiting = "rate_limit_waiting",
    /// A native agent waits for its model's rate limit.
    RateLimitWait = "rate_limit_wait",
    /// A CLI agent (claude, codex, …) was started.
    CliStarted = "cli_started",
    /// A service was woken.
    Wake = "wake",
    /// A service's wake was skipped.
    WakeSkipped = "wake_skipped",
    /// A WASM agent's guest was entered (`at_us`, on the guest's thread).
    GuestStarted = "guest_started",
    /// The run's usage took its project past a quota's soft mark or hard
    /// limit (`project`, `limit`, `mark`, `used`, `value`, `period`).
    Quota = "quota",
    /// The policy's decision on creating the run (`decision`, `who`, `modify`, `policy_sha256`).
    Policy = "policy",
}

/// The stored shape: `{"type": kind, "data": data}`.
#[derive(Serialize, Deserialize)]
struct Parts {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

impl From<Parts> for RunEvent {
    fn from(p: Parts) -> RunEvent {
        RunEvent::from_parts(p.kind, p.data)
    }
}

impl From<RunEvent> for Parts {
    fn from(e: RunEvent) -> Parts {
        let (kind, data) = e.into_parts();
        Parts { kind, data }
    }
}

impl RunEvent {
    /// The event stored as type `kind` with payload `data`; a type this
    /// build does not know is [`RunEvent::Other`].
    pub fn from_parts(kind: String, data: Value) -> RunEvent {
        match EventKind::parse(&kind) {
            Some(k) => RunEvent::new(k, data),
            None => RunEvent::Other { kind, data },
        }
    }

    /// The type as stored (`model_call`, or an unknown type's own name).
    pub fn kind_str(&self) -> &str {
        match self {
            RunEvent::Other { kind, .. } => kind,
            known => known.kind().map_or("", EventKind::as_str),
        }
    }
}

impl From<EventKind> for String {
    fn from(k: EventKind) -> String {
        k.as_str().to_string()
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl NewEvent {
    /// Event `event` of attempt `attempt` at `at`.
    pub fn of(event: RunEvent, attempt: u32, at: Ts) -> NewEvent {
        let (kind, data) = event.into_parts();
        NewEvent {
            kind,
            attempt,
            at,
            data,
        }
    }

    /// Whether it is an event of type `kind`.
    pub fn is(&self, kind: EventKind) -> bool {
        self.kind == kind.as_str()
    }

    /// Its known type; `None` for a type this build does not know.
    pub fn event_kind(&self) -> Option<EventKind> {
        EventKind::parse(&self.kind)
    }

    /// The event, typed (a copy of its payload).
    pub fn to_event(&self) -> RunEvent {
        RunEvent::from_parts(self.kind.clone(), self.data.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_and_unknown_types_round_trip_unchanged() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(*kind));
        }
        let stored = json!({"type": "model_call", "data": {"model": "m"}});
        let e: RunEvent = serde_json::from_value(stored.clone()).expect("a known event");
        assert_eq!(e, RunEvent::ModelCall(json!({"model": "m"})));
        assert_eq!(serde_json::to_value(&e).expect("json"), stored);
        let newer = json!({"type": "teleported", "data": {"to": "mars"}});
        let e: RunEvent = serde_json::from_value(newer.clone()).expect("an unknown event");
        assert_eq!(e.kind(), None);
        assert_eq!(e.kind_str(), "teleported");
        assert_eq!(serde_json::to_value(&e).expect("json"), newer);
    }

    #[test]
    fn a_typed_event_is_stored_as_the_strings_were() {
        let typed = NewEvent::of(RunEvent::ToolCall(json!({"name": "search"})), 2, 7);
        let spelled = NewEvent::new("tool_call", 2, 7, json!({"name": "search"}));
        assert_eq!(typed, spelled);
        assert_eq!(
            serde_json::to_string(&typed).expect("json"),
            serde_json::to_string(&spelled).expect("json")
        );
        assert!(typed.is(EventKind::ToolCall));
        assert_eq!(typed.event_kind(), Some(EventKind::ToolCall));
        assert_eq!(typed.to_event().data()["name"], "search");
    }
}
