//! Parcels: the immutable, content-addressed build of an Agentfile and the
//! files it names, stored at `<parcels_root>/<sha256>/`:
//!
//! ```text
//! <digest>/manifest.json   the parsed Agentfile plus the file list (canonical JSON)
//! <digest>/files/...       the files named by COPY (each run works in a copy)
//! <digest>/stamp.json      size and mtime of every file, for the check before a run
//! ```
//!
//! A parcel is read-only once written (see [`crate::parcel_seal`]).
//!
//! The digest is the SHA-256 of the canonical manifest JSON, which lists every
//! file with its own SHA-256, so the same inputs always give the same digest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::Operation;

/// Which backend runs the parcel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Courier {
    /// Run the parcel's COMMAND as a child process.
    Process,
    /// Start nothing and succeed at once (benchmarks and wiring tests).
    Noop,
    /// The native model loop, inside the helper or worker (`FROM agent`).
    Agent,
    /// The parcel's COMMAND in a container (`FROM image <ref>`), through the
    /// podman (or docker) CLI.
    Image,
    /// A coordinator of other parcels (`FROM workflow`): each member's turn
    /// is a child run.
    Workflow,
}

/// Instructions that go into the brief.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Instructions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soul: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<Skill>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// The other instruction files upstream Dispatch's Agentfiles name
    /// (`AGENTS`, `USER`, `TOOLS`, `MEMORY POLICY`, `HEARTBEAT FILE`), in
    /// the order the Agentfile declares them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<Document>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skill {
    pub name: String,
    /// The instructions (for a bundle: `SKILL.md` without its frontmatter).
    pub content: String,
    /// An Agent Skills bundle's `description` (from its frontmatter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// An Agent Skills bundle: where its directory is under `files/`; its
    /// other files are read on demand with the `read_skill_file` built-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// One instruction file of a kind upstream Dispatch names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub kind: DocumentKind,
    pub content: String,
}

/// Which directive an instruction file came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    /// `AGENTS AGENTS.md` (outside workflows): operating procedures.
    Agents,
    /// `USER USER.md`: the operator's context and preferences.
    User,
    /// `TOOLS TOOLS.md`: guidance on using the tools.
    Tools,
    /// `MEMORY POLICY MEMORY.md`: what to remember and how.
    Memory,
    /// `HEARTBEAT FILE HEARTBEAT.md`: what to do on each heartbeat.
    Heartbeat,
}

impl DocumentKind {
    /// The directive that names it.
    pub fn directive(self) -> &'static str {
        match self {
            DocumentKind::Agents => "AGENTS",
            DocumentKind::User => "USER",
            DocumentKind::Tools => "TOOLS",
            DocumentKind::Memory => "MEMORY POLICY",
            DocumentKind::Heartbeat => "HEARTBEAT FILE",
        }
    }

    /// Its section's header in the system prompt.
    pub fn title(self) -> &'static str {
        match self {
            DocumentKind::Agents => "Operating procedures",
            DocumentKind::User => "User",
            DocumentKind::Tools => "Tools",
            DocumentKind::Memory => "Memory policy",
            DocumentKind::Heartbeat => "Heartbeat",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_max_cost_usd: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    pub name: String,
    pub url: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// The name of a declared SECRET holding the shared secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `LISTEN_SIGNATURE`: how the sender signs each request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ListenSignature>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u64>,
}

/// How a webhook's sender signs its requests (an HMAC-SHA256 of the body
/// under a shared key), as the platform that sends them does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignatureScheme {
    /// `X-Hub-Signature-256: sha256=<hex of hmac(body)>`, with the delivery
    /// id in `X-GitHub-Delivery` (GitHub sends no timestamp).
    #[serde(rename = "github")]
    Github,
    /// `Stripe-Signature: t=<unix>,v1=<hex of hmac("t.body")>[,v1=…]`.
    #[serde(rename = "stripe")]
    Stripe,
    /// `X-Dispatch-Timestamp: <unix>` and
    /// `X-Dispatch-Signature: sha256=<hex of hmac("ts.body")>`.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

impl SignatureScheme {
    pub const ALL: [SignatureScheme; 3] = [
        SignatureScheme::Github,
        SignatureScheme::Stripe,
        SignatureScheme::HmacSha256,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignatureScheme::Github => "github",
            SignatureScheme::Stripe => "stripe",
            SignatureScheme::HmacSha256 => "hmac-sha256",
        }
    }

    /// The scheme named `s` (case-insensitive), if it is one.
    pub fn parse(s: &str) -> Option<SignatureScheme> {
        let s = s.to_ascii_lowercase();
        SignatureScheme::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// `LISTEN_SIGNATURE <scheme> <SECRET> [<tolerance>]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenSignature {
    pub scheme: SignatureScheme,
    /// The name of a declared SECRET holding the signing key.
    pub secret: String,
    /// How far a signed timestamp may be from now, in seconds (schemes with
    /// a timestamp; 300 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance_s: Option<u64>,
}

/// A file copied into the parcel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path inside `files/`, with `/` separators.
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// Whether the file is executable.
    pub executable: bool,
}

/// Everything a parcel is, as stored in `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version (1).
    pub schema: u32,
    pub courier: Courier,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The default operation.
    pub entrypoint: Operation,
    /// The program and its arguments. Shell form becomes `["/bin/sh", "-c", "<line>"]`.
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of secrets the agent needs; values are never stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// The tools (by TOOL name) whose processes get each secret in their
    /// environment (`SECRET NAME TO tool1,tool2`). A native agent's LOCAL
    /// tools and MCP servers get no other secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_tools: BTreeMap<String, Vec<String>>,
    /// Variables of the environment the run starts in that the agent gets
    /// by name (`ENV_PASSTHROUGH`); every other one it does not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_passthrough: Vec<String>,
    #[serde(default)]
    pub instructions: Instructions,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Requirement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<ListenPolicy>,
    /// Files under `files/`, sorted by path.
    pub files: Vec<FileEntry>,
    /// The native agent's models and limits (`FROM agent` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::agent::AgentConfig>,
    /// The container image of `FROM image <ref>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `RESOURCES`: limits for every attempt.
    #[serde(default, skip_serializing_if = "crate::isolation::Resources::is_empty")]
    pub resources: crate::isolation::Resources,
    /// `NETWORK`: a container's network (containers only; `none` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::isolation::Network>,
    /// `NETWORK allow <host>` lines: the only hosts the run's sandboxed
    /// processes may reach, through the runtime's egress proxy (lowercase;
    /// `*.example.com` for its subdomains). Empty: no filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    /// `TOOL_SANDBOX image <ref>`: a native agent's LOCAL tools run in this image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_sandbox: Option<String>,
    /// `EVAL`: case files for `dispatch eval`, as paths under `files/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evals: Vec<String>,
    /// `FROM workflow`: the members (by digest, so this parcel's digest
    /// covers theirs) and how they are coordinated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<crate::workflow::Workflow>,
    /// `CONCURRENCY`: at most MAX live runs per value of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<crate::concurrency::ConcurrencySpec>,
    /// `MOUNT SESSION|MEMORY|ARTIFACTS <driver>` (upstream Dispatch's mounts).
    #[serde(default, skip_serializing_if = "crate::parcel_meta::Mounts::is_empty")]
    pub mounts: crate::parcel_meta::Mounts,
    /// Advisory metadata (`VISIBILITY`, `ROUTING`, `FRAMEWORK`, `COMPACTION`):
    /// recorded and shown, changing nothing about how the parcel runs.
    #[serde(
        default,
        skip_serializing_if = "crate::parcel_meta::Advisory::is_empty"
    )]
    pub advisory: crate::parcel_meta::Advisory,
    /// `FROM dispatch/wasm`: the agent's loop is this WebAssembly component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<crate::component::Component>,
}

/// A parcel on disk.
#[derive(Clone, Debug)]
pub struct Parcel {
    /// Hex SHA-256 of the canonical manifest.
    pub digest: String,
    /// `<parcels_root>/<digest>`.
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// When the parcel directory was created (ms since epoch).
    pub created_at: crate::time::Ts,
}

impl Parcel {
    /// The parcel's files: `<dir>/files` (read-only; a run works in a copy).
    pub fn files_dir(&self) -> PathBuf {
        self.dir.join("files")
    }

    pub fn short_digest(&self) -> &str {
        &self.digest[..12.min(self.digest.len())]
    }
}

/// Why a parcel could not be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ParcelError {
    #[error("no Agentfile in {0} (hint: a parcel directory needs a file named `Agentfile`)")]
    NoAgentfile(PathBuf),
    #[error("{0} does not exist (hint: pass the directory that holds the Agentfile)")]
    NoSuchPath(PathBuf),
    #[error("{path}:{source}")]
    Agentfile {
        path: PathBuf,
        #[source]
        source: crate::agentfile::AgentfileError,
    },
    #[error(
        "COPY {}: {} (Agentfile line {line})",
        crate::event::shorten(.src, 200),
        crate::event::shorten(.problem, 800)
    )]
    Copy {
        src: String,
        line: usize,
        problem: String,
    },
    #[error("{what} {}", crate::event::shorten(&.path.display().to_string(), 400))]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A parcel whose files differ from what was written (the check before
    /// a run: see [`crate::parcel_seal::quick_check`]).
    #[error(
        "parcel {digest} changed on disk: {path} (hint: rebuild it with `dispatch build <dir>`, or see which files with `dispatch images --verify`)"
    )]
    Changed { digest: String, path: String },
    #[error("parcel {digest} is corrupt: {problem} (hint: remove it and build again)")]
    Corrupt { digest: String, problem: String },
    /// A parcel that came from elsewhere (another machine, the cluster's
    /// database) is not what its digest says; nothing of it was used.
    #[error(
        "parcel {digest} failed verification: {problem} (hint: the copy it came from was modified or damaged; upload or build the parcel again to replace it)"
    )]
    Unverified { digest: String, problem: String },
}

/// Builds the parcel for the Agentfile in `context` (a directory, or an
/// Agentfile path) into `parcels_root`, unless a parcel with the same digest
/// exists already. Writes go to a temporary directory renamed into place, so a
/// parcel directory is always complete.
pub fn build(context: &Path, parcels_root: &Path) -> Result<Parcel, ParcelError> {
    crate::parcel_build::build(context, parcels_root)
}

/// Loads the parcel stored at `dir` (`<parcels_root>/<digest>`).
pub fn load(dir: &Path) -> Result<Parcel, ParcelError> {
    crate::parcel_build::load(dir)
}

/// The parcel as its canonical manifest text and a deterministic tar archive
/// of its `files/`, to move it to another machine. Every file is checked
/// against the manifest first: a damaged parcel is refused (`Corrupt`).
pub fn pack(parcel: &Parcel) -> Result<(String, Vec<u8>), ParcelError> {
    crate::parcel_archive::pack(parcel)
}

/// As [`pack`], the archive written to `out` as it is made (constant
/// memory, for parcels of any size); returns the manifest text.
pub fn pack_to(parcel: &Parcel, out: impl std::io::Write) -> Result<String, ParcelError> {
    crate::parcel_archive::pack_to(parcel, out)
}

/// Writes the parcel given as `manifest` bytes and `archive` (as [`pack`]
/// made them) to `<parcels_root>/<digest>`, after verifying that the
/// manifest hashes to `digest` and the archive holds exactly its files
/// (`Unverified` otherwise, leaving nothing behind). Atomic: written into a
/// temporary directory and renamed into place; a complete parcel already
/// there is kept.
pub fn unpack(
    digest: &str,
    manifest: &[u8],
    archive: impl std::io::Read,
    parcels_root: &Path,
) -> Result<Parcel, ParcelError> {
    crate::parcel_archive::unpack(digest, manifest, archive, parcels_root)
}

/// The cheap check before a run starts from `parcel` (`Changed` when it
/// changed on disk): see [`crate::parcel_seal::quick_check`].
pub fn quick_check(parcel: &Parcel) -> Result<(), ParcelError> {
    crate::parcel_seal::quick_check(parcel)
}

/// A fresh path for scratch work beside the parcels under `parcels_root`
/// (an upload being unpacked, an archive being packed or fetched): named
/// as the build's own temporaries, so one a crash left behind is swept
/// away an hour later, when a parcel is next built or unpacked there.
pub fn scratch_path(parcels_root: &Path) -> std::path::PathBuf {
    parcels_root.join(crate::parcel_build::temp_name())
}

/// Every parcel under `parcels_root`, newest first. Unreadable entries are skipped.
pub fn list(parcels_root: &Path) -> Vec<Parcel> {
    crate::parcel_build::list(parcels_root)
}
