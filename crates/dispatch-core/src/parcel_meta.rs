//! What upstream Dispatch's Agentfiles declare beyond our own directives:
//! state mounts (`MOUNT SESSION|MEMORY|ARTIFACTS <driver>`) and advisory
//! metadata (`VISIBILITY`, `ROUTING`, `FRAMEWORK`, `COMPACTION`). Pure data,
//! stored in the manifest. See `docs/agentfile-compat.md`.

use serde::{Deserialize, Serialize};

/// The state mounts a parcel declares. Each is a driver name; only the
/// drivers Dispatch honours are accepted at build (see
/// [`MOUNT_DRIVERS`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mounts {
    /// `MOUNT SESSION sqlite`: named checkpoints (`checkpoint_*`) are durable,
    /// in the run database, scoped to the run's session (else its parcel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// `MOUNT MEMORY sqlite|none`: the `memory_*` built-ins' store, or none
    /// (then a `memory_*` built-in is refused at build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// `MOUNT ARTIFACTS local`: the run's artifacts directory
    /// (`DISPATCH_ARTIFACTS`), collected with their sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<String>,
}

impl Mounts {
    pub fn is_empty(&self) -> bool {
        *self == Mounts::default()
    }

    /// Whether the `memory_*` built-ins have a store (`MOUNT MEMORY none` says not).
    pub fn has_memory(&self) -> bool {
        self.memory.as_deref() != Some("none")
    }
}

/// Each mount, the drivers it takes here, and why the others are refused.
pub const MOUNT_DRIVERS: &[(&str, &[&str], &str)] = &[
    (
        "SESSION",
        &["sqlite"],
        "sessions and named checkpoints live in the run database (SQLite locally, PostgreSQL in a cluster); `memory` (not durable) and remote drivers are not available",
    ),
    (
        "MEMORY",
        &["sqlite", "none"],
        "the memory_* built-ins keep their values in the run database; vector stores such as pgvector are not available",
    ),
    (
        "ARTIFACTS",
        &["local"],
        "artifacts are collected from the run's DISPATCH_ARTIFACTS directory into the artifact store; remote drivers such as s3 are not available",
    ),
];

/// Metadata upstream Dispatch documents as advisory: it is recorded in the
/// manifest and shown by `dispatch inspect`, and changes nothing at run time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advisory {
    /// `VISIBILITY open|opaque`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
    /// `ROUTING balanced|deep|fast`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
    /// `FRAMEWORK <name> [VERSION <v>] [TARGET <t>]`: authoring provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<Framework>,
    /// `COMPACTION <events> [OVERLAP <n>]`: a session compaction hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<Compaction>,
}

impl Advisory {
    pub fn is_empty(&self) -> bool {
        *self == Advisory::default()
    }
}

/// `FRAMEWORK adk-rust VERSION 0.5.0 TARGET wasm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Framework {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `COMPACTION 200 OVERLAP 32`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    pub events: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<u64>,
}
