//! The container courier (`FROM image <ref>`): the parcel's COMMAND runs in
//! a container through the podman CLI, or docker's when only docker is
//! there (one code path, two binaries; see [`runtime`]).
//!
//! The supervised child is the runtime's `run` client itself, in its own
//! process group, attached (`-i`, never `-d`): its exit code is the
//! container's, its output goes to the run's log, the payload goes to its
//! stdin, and a SIGTERM to its group reaches the container (the client
//! proxies signals; `--init` passes them to the agent). Everything else —
//! the events file followed live, timeouts, budgets, approvals, artifacts,
//! output — is the process courier's, because every protocol path is
//! mounted at the same path inside the container.
//!
//! What the runtime does not see, this module cleans up: a container whose
//! client was killed is removed at once (`rm -f`); a container of a run
//! whose helper died is removed by reconciliation (its name is in
//! `runs/<id>/container.json`); a worker removes, when it starts, every
//! container whose owning process (label `dispatch.owner`) is gone. Nothing
//! is ever pulled: a missing image fails the run at once.

pub mod plan;
pub mod runtime;
pub mod tool;
pub mod usage;

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use dispatch_core::RunId;
use dispatch_core::isolation::configures_container_client;
use dispatch_core::units::format_size;
use serde::{Deserialize, Serialize};
use tokio::process::Child;

use crate::layout::Layout;
pub use plan::{Attempt, Plan, plan};
pub use runtime::{Kind, RUNTIME_ENV, Runtime};

/// Why a container could not be started, said so the user can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(
        "no container runtime found: neither podman nor docker is on PATH (hint: install podman, e.g. `apt-get install podman runc uidmap fuse-overlayfs`, or set {RUNTIME_ENV}=/path/to/podman)"
    )]
    NoRuntime,
    #[error(
        "container runtime `{0}` not found (hint: {RUNTIME_ENV} is podman, docker or the path of either)"
    )]
    RuntimeNotFound(String),
    #[error("the parcel's courier is image but it names no image (hint: FROM image <ref>)")]
    NoImage,
    #[error(
        "bad ulimit `{0}` in $DISPATCH_CONTAINER_ULIMITS (hint: name=soft[:hard],… e.g. nofile=1024:1024,nproc=1000:1000, or none)"
    )]
    BadUlimits(String),
    #[error(
        "cannot mount {0} into a container: its path contains `:` (hint: keep .dispatch and the workspace at paths without `:`)"
    )]
    UnmountablePath(PathBuf),
    #[error(
        "the value of {0} has a line break and cannot reach a container (its name configures the container client, so it goes through an env file; hint: give the variable another name)"
    )]
    MultilineValue(String),
    #[error("cannot start container runtime {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `runs/<id>/container.json`: the container of the run's current attempt,
/// for whoever must stop or remove it without the helper.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Marker {
    pub runtime: PathBuf,
    pub name: String,
    /// The variables that chose the engine the container runs on
    /// (`DOCKER_HOST`, `DOCKER_CONTEXT`, `CONTAINER_HOST`, …) as the helper
    /// had them: a `stop` or a reconciliation from a shell without them
    /// still reaches that engine.
    #[serde(default)]
    pub engine: Vec<(String, String)>,
}

/// The variables that choose which engine a runtime CLI talks to.
const ENGINE_VARS: [&str; 8] = [
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "CONTAINER_HOST",
    "CONTAINER_CONNECTION",
    "CONTAINERS_CONF",
];

impl Marker {
    fn path(layout: &Layout, id: &RunId) -> PathBuf {
        layout.run_dir(id).join("container.json")
    }

    pub fn read(layout: &Layout, id: &RunId) -> Option<Marker> {
        let bytes = std::fs::read(Marker::path(layout, id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// A command running the marker's runtime against the marker's engine.
    fn command(&self) -> (Runtime, tokio::process::Command) {
        let rt = Runtime::at(self.runtime.clone());
        let mut cmd = rt.command();
        for k in ENGINE_VARS {
            cmd.env_remove(k);
        }
        cmd.envs(self.engine.iter().map(|(k, v)| (k, v)));
        (rt, cmd)
    }
}

/// What the container's client runs with, beside its plan.
pub struct Job<'a> {
    pub cwd: &'a std::path::Path,
    /// The agent's environment, whose values `-e NAME` hands to the container.
    pub env: &'a [(String, String)],
    /// The run's log, where the client's output goes (unless `piped`).
    pub log: &'a std::path::Path,
    /// Output piped (for masking) instead of into `log`.
    pub piped: bool,
    /// The attempt's containment: the client enters the run's group, and
    /// when its keeper kills the group it removes the container too.
    pub jail: Option<&'a crate::sandbox::Plan>,
}

/// Starts the planned container's client in its own process group (and
/// the run's containment group, see [`Job::jail`]).
pub fn spawn(
    layout: &Layout,
    id: &RunId,
    plan: &Plan,
    job: &Job<'_>,
) -> Result<Child, ContainerError> {
    let marker = Marker {
        runtime: plan.runtime.path.clone(),
        name: plan.name.clone(),
        engine: ENGINE_VARS
            .iter()
            .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
            .collect(),
    };
    let spawn_err = |source| ContainerError::Spawn {
        path: plan.runtime.path.clone(),
        source,
    };
    let bytes = serde_json::to_vec(&marker).expect("a marker is JSON data");
    std::fs::write(Marker::path(layout, id), bytes).map_err(spawn_err)?;
    if let Some((path, lines)) = &plan.env_file {
        write_private(path, lines).map_err(spawn_err)?;
    }
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(job.log)
        .map_err(spawn_err)?;
    let mut cmd = plan.runtime.command();
    cmd.args(&plan.args)
        .current_dir(job.cwd)
        // The agent's variables for `-e NAME`; the client's own keep the
        // helper's values (see `configures_container_client`).
        .envs(
            job.env
                .iter()
                .filter(|(k, _)| !configures_container_client(k))
                .map(|(k, v)| (k, v)),
        )
        .stdin(Stdio::piped())
        .process_group(0);
    if let Some(jail) = job.jail {
        // The run's group first (see `sandbox::Plan::contain`); a killed
        // group takes the container with it through the keeper.
        jail.contain(&mut cmd);
        // execve(2) does not search PATH, nor resolve from the helper's cwd.
        let program =
            std::fs::canonicalize(&plan.runtime.path).unwrap_or_else(|_| plan.runtime.path.clone());
        let mut argv = vec![program.to_string_lossy().into_owned()];
        argv.extend(
            plan.runtime
                .force_remove_args()
                .iter()
                .map(|a| a.to_string()),
        );
        argv.push(plan.name.clone());
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k != crate::layout::ROOT_ENV)
            .collect();
        jail.after_kill(&argv, &env).map_err(spawn_err)?;
    }
    // A container holding our stdio itself could truncate or rewrite the
    // log file through it (`/proc/self/fd/1`): it gets pipes, copied to
    // the log by the helper.
    if job.piped || plan.own_stdio {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        let err = log.try_clone().map_err(spawn_err)?;
        cmd.stdout(log).stderr(err);
    }
    cmd.spawn().map_err(spawn_err)
}

/// After the client exited with `status`: removes the container (at once
/// when the client was killed and the container may still run; in the
/// background otherwise), and says why the run must fail without a retry
/// when the runtime could not run it (missing image, broken runtime) or
/// the memory limit killed it.
pub async fn finish(plan: &Plan, status: Option<&ExitStatus>, stopped: bool) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    let code = status.and_then(ExitStatus::code);
    let killed = status.is_none_or(|s| s.signal().is_some());
    if let Some((path, _)) = &plan.env_file {
        let _ = std::fs::remove_file(path);
    }
    let mut reason = None;
    if code == Some(125) {
        reason = diagnose(plan).await;
    }
    if code == Some(137)
        && !stopped
        && let Some(limit) = plan.memory_bytes
        && (plan.accounting.as_ref().is_some_and(|a| a.reached(limit)) || oom_killed(plan).await)
    {
        reason = Some(format!("out of memory (limit {})", format_size(limit)));
    }
    let mut rm = plan.runtime.command();
    rm.args(plan.runtime.force_remove_args())
        .arg(&plan.name)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match killed || plan.accounting.is_some() {
        // Waited for: a killed client's container may still run, and the
        // groups under the accounting parent go only with the container.
        true => {
            let _ = tokio::time::timeout(Duration::from_secs(30), rm.status()).await;
        }
        // The container has exited; the runtime reaps what is left of it.
        false => drop(rm.spawn()),
    }
    reason
}

/// Writes `lines` to `path`, readable by its owner only (a value may be a
/// secret).
fn write_private(path: &std::path::Path, lines: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(lines.as_bytes())
}

/// Why a `run` the runtime itself failed (exit 125) failed: the image is
/// not there, or the runtime does not work. `None`: something else (the
/// runtime's message is in the log).
async fn diagnose(plan: &Plan) -> Option<String> {
    let out = plan
        .runtime
        .command()
        .args(["image", "inspect", "--format", "{{.Id}}", &plan.image])
        .output()
        .await
        .ok()?;
    if out.status.success() {
        return None;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let lower = err.to_ascii_lowercase();
    let rt = plan.runtime.name();
    if ["image not known", "no such image", "no such object"]
        .iter()
        .any(|m| lower.contains(m))
    {
        return Some(format!(
            "image {} is not present (hint: {rt} build/pull/load it on this machine; Dispatch never pulls)",
            plan.image
        ));
    }
    let first = err
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    Some(format!(
        "container runtime {} is not working: {first} (hint: check `{rt} info`, or choose another with {RUNTIME_ENV}=podman|docker|/path)",
        plan.runtime.path.display()
    ))
}

async fn oom_killed(plan: &Plan) -> bool {
    let out = plan
        .runtime
        .command()
        .args(["inspect", "--format", "{{.State.OOMKilled}}", &plan.name])
        .output()
        .await;
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
}

/// Asks the runtime to stop the run's container: SIGTERM, then SIGKILL
/// after `grace` (whole seconds, rounded up; none with `force`). Returns
/// false when the run has no container. The stop runs in the background.
pub fn stop(layout: &Layout, id: &RunId, grace: Duration, force: bool) -> bool {
    let Some(marker) = Marker::read(layout, id) else {
        return false;
    };
    let secs = match force {
        true => 0,
        false => grace.as_millis().div_ceil(1000),
    };
    let (_, mut cmd) = marker.command();
    cmd.args(["stop", "-t", &secs.to_string(), &marker.name])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().is_ok()
}

/// Removes the container of a run whose helper is gone (the container
/// outlives the killed client). Returns whether the run had one.
pub async fn remove_for_run(layout: &Layout, id: &RunId) -> bool {
    let Some(marker) = Marker::read(layout, id) else {
        return false;
    };
    let (rt, mut cmd) = marker.command();
    cmd.args(rt.force_remove_args())
        .arg(&marker.name)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = tokio::time::timeout(Duration::from_secs(30), cmd.status()).await;
    true
}

/// Removes every Dispatch container whose owning helper or worker is no
/// longer alive (a worker calls this when it starts). Returns how many it
/// removed; nothing when no runtime is there.
pub async fn sweep_orphans() -> usize {
    let Ok(rt) = Runtime::detect() else {
        return 0;
    };
    let format = match rt.kind {
        Kind::Podman => {
            "{{.Names}} {{index .Labels \"dispatch.owner\"}} {{index .Labels \"dispatch.host\"}}"
        }
        Kind::Docker => "{{.Names}} {{.Label \"dispatch.owner\"}} {{.Label \"dispatch.host\"}}",
    };
    let listed = rt
        .command()
        .args([
            "ps",
            "-a",
            "--filter",
            "label=dispatch.owner",
            "--format",
            format,
        ])
        .output()
        .await;
    let Ok(listed) = listed else {
        return 0;
    };
    let text = String::from_utf8_lossy(&listed.stdout);
    let orphans = orphans(&text, this_boot());
    if orphans.is_empty() {
        return 0;
    }
    let mut cmd = rt.command();
    cmd.args(rt.force_remove_args())
        .args(&orphans)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = tokio::time::timeout(Duration::from_secs(60), cmd.status()).await;
    orphans.len()
}

/// The containers of a `ps` listing (`name owner host` a line) whose
/// owner is gone: only those started on this machine in this boot (or
/// with no `dispatch.host` label), since a pid means nothing elsewhere — an
/// engine may be shared by several machines (`DOCKER_HOST`, `CONTAINER_HOST`).
fn orphans<'a>(listing: &'a str, boot: &str) -> Vec<&'a str> {
    listing
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let name = fields.next()?;
            let owner = fields.next()?;
            // podman prints a missing label as `<no value>`.
            let host = fields.next().filter(|h| !h.starts_with('<'));
            Some((name, owner, host))
        })
        .filter(|(_, owner, host)| host.is_none_or(|h| h == boot) && !owner_alive(owner))
        .map(|(name, _, _)| name)
        .collect()
}

/// This machine's current boot (`/proc/sys/kernel/random/boot_id`), or
/// `unknown` where there is none.
fn this_boot() -> &'static str {
    static BOOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
            .unwrap_or_else(|| "unknown".to_string())
    })
}

/// The labels that say who owns a container: `dispatch.owner=<pid>.<start
/// ticks>` of this process and `dispatch.host=<boot id>` of this machine.
pub fn owner_labels() -> [String; 2] {
    let me = crate::os::this_process();
    [
        format!("dispatch.owner={}.{}", me.pid, me.start_ticks),
        format!("dispatch.host={}", this_boot()),
    ]
}

/// Whether the `<pid>.<start ticks>` owner label names a live process.
fn owner_alive(label: &str) -> bool {
    let Some((pid, ticks)) = label.trim().split_once('.') else {
        return false;
    };
    match (pid.parse(), ticks.parse()) {
        (Ok(pid), Ok(start_ticks)) => {
            crate::os::is_alive(dispatch_core::ProcRef { pid, start_ticks })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_label_names_a_live_process_or_not() {
        let me = crate::os::this_process();
        assert!(owner_alive(&format!("{}.{}", me.pid, me.start_ticks)));
        assert!(!owner_alive(&format!("{}.{}", me.pid, me.start_ticks + 1)));
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn only_this_machines_dead_owners_containers_are_orphans() {
        let me = crate::os::this_process();
        let live = format!("{}.{}", me.pid, me.start_ticks);
        let listing = format!(
            "mine-dead 4194303.1 boot-a\n\
             mine-live {live} boot-a\n\
             elsewhere 4194303.1 boot-b\n\
             unlabelled 4194303.1 <no value>\n\
             older 4194303.1\n"
        );
        assert_eq!(
            orphans(&listing, "boot-a"),
            vec!["mine-dead", "unlabelled", "older"]
        );
    }
}
