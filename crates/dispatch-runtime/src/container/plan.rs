//! The `run` command line of one attempt's container: the image, the mounts
//! that keep every `DISPATCH_*` path valid inside (host paths mounted at the
//! same paths), the network, a read-only root, the run's limits, ulimits,
//! labels and a name derived from the run and attempt.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dispatch_core::isolation::{Network, container_env};
use dispatch_core::parcel::Manifest;
use dispatch_core::units::format_size;
use dispatch_store::Run;

use super::{ContainerError, Runtime};

/// The environment variable that sets the containers' ulimits.
pub const ULIMITS_ENV: &str = "DISPATCH_CONTAINER_ULIMITS";
/// Ulimits that work where the runtime's own defaults do not (podman as root
/// on cgroup v1 fails to raise `nofile`/`nproc` to its defaults).
pub const DEFAULT_ULIMITS: &str = "nofile=1024:1024,nproc=1000:1000";

/// Variables the container does not take from the host: its own image says
/// where programs are, it has its own `/tmp`, and `HOME` is its workdir.
const NOT_PASSED: [&str; 3] = ["PATH", "TMPDIR", "HOME"];

/// How to start one attempt's container.
#[derive(Clone, Debug)]
pub struct Plan {
    pub runtime: Runtime,
    /// `dispatch-<run id>-<attempt>`.
    pub name: String,
    pub image: String,
    /// Everything after the runtime binary.
    pub args: Vec<String>,
    pub memory_bytes: Option<u64>,
    /// Where the container's usage is read from, when it can be.
    pub accounting: Option<super::usage::Accounting>,
    /// What the log says about this container (limits, what is not applied).
    pub notes: Vec<String>,
    /// `--env-file`'s path and lines: the agent's values of variables the
    /// client reads itself (`HTTPS_PROXY`, `DOCKER_HOST`, …), which may be
    /// secrets and so never go on a command line. Written (mode 0600) just
    /// before the client starts, removed when the container is done.
    pub env_file: Option<(PathBuf, String)>,
    /// Whether the container holds the client's stdio itself
    /// ([`Runtime::stdio_args`]): then it gets pipes, never the log file.
    pub own_stdio: bool,
}

/// What [`plan`] needs of the attempt.
pub struct Attempt<'a> {
    pub run: &'a Run,
    pub manifest: &'a Manifest,
    pub cwd: &'a Path,
    pub run_dir: &'a Path,
    pub root: &'a Path,
    /// The agent's environment (values reach the container through the
    /// runtime client's environment, never its command line).
    pub env: &'a [(String, String)],
    pub command: &'a [String],
}

/// The container name for attempt `attempt` of run `id`.
pub fn name_for(id: &str, attempt: u32) -> String {
    let id: String = id
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                true => c,
                false => '-',
            },
        )
        .collect();
    format!("dispatch-{id}-{attempt}")
}

pub fn plan(runtime: Runtime, a: &Attempt<'_>) -> Result<Plan, ContainerError> {
    let m = a.manifest;
    let image = m.image.clone().ok_or(ContainerError::NoImage)?;
    let name = name_for(a.run.id.as_str(), a.run.attempt);
    let network = m.network.unwrap_or(Network::None);
    let mut args: Vec<String> = [
        "run",
        "-i",
        "--init",
        "--pull=never",
        "--read-only",
        "--tmpfs",
        "/tmp",
    ]
    .map(String::from)
    .to_vec();
    let stdio = runtime.stdio_args();
    let own_stdio = !stdio.is_empty();
    args.extend(stdio);
    args.extend(["--name".into(), name.clone()]);
    args.extend(["--network".into(), network.as_str().into()]);
    let mut notes = vec![format!("network {network}")];
    for u in ulimits()? {
        args.extend(["--ulimit".into(), u]);
    }
    let r = &m.resources;
    if let Some(cpus) = r.cpus {
        args.extend(["--cpus".into(), cpus.to_string()]);
        notes.push(format!("cpus {cpus}"));
    }
    if let Some(bytes) = r.memory_bytes {
        // Swap counts too: the limit is a limit.
        args.extend(["--memory".into(), bytes.to_string()]);
        args.extend(["--memory-swap".into(), bytes.to_string()]);
        notes.push(format!("memory {}", format_size(bytes)));
    }
    if let Some(pids) = r.pids {
        args.extend(["--pids-limit".into(), pids.to_string()]);
        notes.push(format!("pids {pids}"));
    }
    if let Some(disk) = r.disk_bytes {
        notes.push(format!(
            "DISK {} is NOT applied to containers (the workspace is a host directory; no per-container quota on this machine)",
            format_size(disk)
        ));
    }
    let accounting = super::usage::Accounting::new(&name, runtime.kind == super::Kind::Podman);
    if let Some(acc) = &accounting {
        args.extend(acc.args());
    }
    args.extend(labels(a));
    for (src, ro) in mounts(a)? {
        let src = src.to_string_lossy();
        args.extend([
            "-v".into(),
            match ro {
                true => format!("{src}:{src}:ro"),
                false => format!("{src}:{src}"),
            },
        ]);
    }
    let cwd = a.cwd.to_string_lossy().into_owned();
    args.extend(["-w".into(), cwd.clone(), "-e".into(), format!("HOME={cwd}")]);
    // `-e NAME` takes the value from the client's environment: secrets never
    // appear on a command line. The client's own variables (where it
    // connects, its home, its proxy) keep the helper's values, so an
    // agent's value of one of those goes in a file only the owner reads.
    let names: BTreeSet<&str> = a
        .env
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(m.secrets.iter().map(String::as_str))
        .filter(|k| !NOT_PASSED.contains(k) && *k != crate::layout::ROOT_ENV)
        .collect();
    let value = |k: &str| {
        a.env
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    let (by_name, by_value) = container_env(names.into_iter().map(|k| (k, value(k))))
        .map_err(|k| ContainerError::MultilineValue(k.to_string()))?;
    for k in by_name {
        args.extend(["-e".into(), k.to_string()]);
    }
    let env_file =
        (!by_value.is_empty()).then(|| (a.run_dir.join(format!("{name}.env")), by_value));
    if let Some((path, _)) = &env_file {
        args.extend(["--env-file".into(), path.to_string_lossy().into_owned()]);
    }
    args.push(image.clone());
    args.extend(a.command.iter().cloned());
    Ok(Plan {
        runtime,
        name,
        image,
        args,
        memory_bytes: r.memory_bytes,
        accounting,
        notes,
        env_file,
        own_stdio,
    })
}

/// `$DISPATCH_CONTAINER_ULIMITS` (`name=soft[:hard],…`, or `none` for the
/// runtime's own defaults), else [`DEFAULT_ULIMITS`].
pub fn ulimits() -> Result<Vec<String>, ContainerError> {
    let spec = std::env::var(ULIMITS_ENV).unwrap_or_else(|_| DEFAULT_ULIMITS.to_string());
    parse_ulimits(&spec)
}

fn parse_ulimits(spec: &str) -> Result<Vec<String>, ContainerError> {
    let spec = spec.trim();
    if spec.is_empty() || spec.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    spec.split(',')
        .map(str::trim)
        .map(|u| {
            let ok = u.split_once('=').is_some_and(|(name, limits)| {
                !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_lowercase())
                    && !limits.is_empty()
                    && limits
                        .split(':')
                        .all(|n| n == "-1" || n.parse::<u64>().is_ok())
                    && limits.split(':').count() <= 2
            });
            match ok {
                true => Ok(u.to_string()),
                false => Err(ContainerError::BadUlimits(u.to_string())),
            }
        })
        .collect()
}

fn labels(a: &Attempt<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for l in a.run.labels.iter().filter(|l| !l.starts_with("dispatch.")) {
        out.extend(["--label".into(), l.clone()]);
    }
    let [owner, host] = super::owner_labels();
    for l in [
        format!("dispatch.run={}", a.run.id),
        format!("dispatch.attempt={}", a.run.attempt),
        owner,
        host,
        format!("dispatch.root={}", a.root.display()),
    ] {
        out.extend(["--label".into(), l]);
    }
    out
}

/// Host paths to mount at the same paths, and whether read-only: the
/// working directory and the run's directory (events, output, artifacts,
/// approvals, payload, checkpoint) read-write, then whatever other
/// `DISPATCH_*` path is not under them — a directory read-write (the state
/// directory), the parcel and the brief read-only, a file that does not
/// exist yet through its directory.
fn mounts(a: &Attempt<'_>) -> Result<Vec<(PathBuf, bool)>, ContainerError> {
    let mut wanted: Vec<(PathBuf, bool)> = vec![(abs(a.cwd), false), (abs(a.run_dir), false)];
    for (k, v) in a.env.iter().filter(|(k, _)| k.starts_with("DISPATCH_")) {
        let p = Path::new(v);
        if !p.is_absolute() {
            continue;
        }
        let read_only = matches!(k.as_str(), "DISPATCH_PARCEL_DIR" | "DISPATCH_BRIEF");
        if p.is_dir() {
            wanted.push((p.to_path_buf(), read_only));
        } else if p.is_file() && read_only {
            wanted.push((p.to_path_buf(), true));
        } else if let Some(parent) = p.parent().filter(|d| d.is_dir()) {
            wanted.push((parent.to_path_buf(), read_only));
        }
    }
    // Parents first; a path under a read-write mount is there already.
    wanted.sort_by_key(|(p, _)| p.components().count());
    let mut out: Vec<(PathBuf, bool)> = Vec::new();
    for (p, ro) in wanted {
        let covered = out
            .iter()
            .any(|(q, q_ro)| p.starts_with(q) && (!q_ro || ro));
        if covered {
            continue;
        }
        if p.to_string_lossy().contains(':') {
            return Err(ContainerError::UnmountablePath(p));
        }
        out.push((p, ro));
    }
    Ok(out)
}

fn abs(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_read_as_the_runtime_takes_them() {
        assert_eq!(
            parse_ulimits(DEFAULT_ULIMITS).expect("defaults parse"),
            vec!["nofile=1024:1024", "nproc=1000:1000"]
        );
        assert!(parse_ulimits("none").expect("none").is_empty());
        assert_eq!(
            parse_ulimits("nofile=-1").expect("unlimited"),
            vec!["nofile=-1"]
        );
        for bad in ["nofile", "nofile=lots", "=1", "nofile=1:2:3", "NOFILE=1"] {
            assert!(parse_ulimits(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_what_container_names_may_be() {
        assert_eq!(name_for("01JX.a/b", 2), "dispatch-01JX-a-b-2");
    }
}
