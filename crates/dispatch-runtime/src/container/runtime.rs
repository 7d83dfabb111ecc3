//! Which container runtime runs containers: `$DISPATCH_CONTAINER_RUNTIME`
//! (`podman`, `docker`, or a path), else `podman` on `PATH`, else `docker`.
//! Both are driven through the same CLI flags; the few that differ are
//! chosen by [`Kind`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::ContainerError;

/// The environment variable that chooses the container runtime.
pub const RUNTIME_ENV: &str = "DISPATCH_CONTAINER_RUNTIME";

/// Which CLI dialect a runtime binary speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Podman,
    Docker,
}

/// A container runtime binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    pub path: PathBuf,
    pub kind: Kind,
}

impl Runtime {
    /// The runtime this process uses (see the module docs).
    pub fn detect() -> Result<Runtime, ContainerError> {
        match std::env::var(RUNTIME_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            Some(choice) => Runtime::named(choice.trim()),
            None => ["podman", "docker"]
                .iter()
                .find_map(|name| on_path(name))
                .map(Runtime::at)
                .ok_or(ContainerError::NoRuntime),
        }
    }

    /// `podman`, `docker` (looked up on `PATH`) or a path to either.
    pub fn named(choice: &str) -> Result<Runtime, ContainerError> {
        let path = if choice.contains('/') {
            Some(PathBuf::from(choice)).filter(|p| p.is_file())
        } else {
            on_path(choice)
        };
        path.map(Runtime::at)
            .ok_or_else(|| ContainerError::RuntimeNotFound(choice.to_string()))
    }

    /// The runtime at `path`; its dialect is read from its file name.
    pub fn at(path: PathBuf) -> Runtime {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let kind = match name.contains("docker") {
            true => Kind::Docker,
            false => Kind::Podman,
        };
        Runtime { path, kind }
    }

    /// The runtime's short name for messages (`podman`, `docker`).
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Podman => "podman",
            Kind::Docker => "docker",
        }
    }

    /// A command running this runtime.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.path);
        cmd.env_remove(crate::layout::ROOT_ENV)
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// The arguments of a `run` that hand the container the client's own
    /// stdio. Podman's attach relays output through a socket, and podman
    /// 4.3's relay now and then drops the whole output of a container that
    /// exits without reading its stdin (~1 % of quick runs; a test in
    /// `container.rs` shows it). `--log-driver passthrough` (podman 4.0 and
    /// later) makes conmon give the container our pipes themselves (never
    /// the log file: see `spawn`): nothing is relayed, so nothing is lost.
    /// An older podman, a remote one
    /// (`CONTAINER_HOST`, `CONTAINER_CONNECTION`: it cannot pass
    /// descriptors) and docker keep the relay.
    pub fn stdio_args(&self) -> Vec<String> {
        let remote = ["CONTAINER_HOST", "CONTAINER_CONNECTION"]
            .iter()
            .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
        let passes = self.kind == Kind::Podman
            && !remote
            && cfg!(target_os = "linux")
            && major_version(&self.path).is_some_and(|v| v >= 4);
        match passes {
            true => vec!["--log-driver".into(), "passthrough".into()],
            false => Vec::new(),
        }
    }

    /// `rm -f` of containers, killing them at once (podman's `rm -f` would
    /// otherwise wait 10 s for a stop; docker's kills at once).
    pub fn force_remove_args(&self) -> Vec<&'static str> {
        match self.kind {
            Kind::Podman => vec!["rm", "-f", "-t", "0"],
            Kind::Docker => vec!["rm", "-f"],
        }
    }
}

/// The major version `path --version` reports (`podman version 4.3.1`),
/// asked once per binary and process (~20 ms a question; a binary that
/// does not answer is asked again next time).
fn major_version(path: &Path) -> Option<u32> {
    static SEEN: Mutex<Vec<(PathBuf, u32)>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, v)) = seen.iter().find(|(p, _)| p == path) {
        return Some(*v);
    }
    let asked = std::process::Command::new(path)
        .arg("--version")
        .env_remove(crate::layout::ROOT_ENV)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| parse_major(&String::from_utf8_lossy(&o.stdout)));
    if let Some(v) = asked {
        seen.push((path.to_path_buf(), v));
    }
    asked
}

/// `podman version 4.3.1` → 4.
fn parse_major(text: &str) -> Option<u32> {
    text.split_whitespace()
        .last()?
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dialect_follows_the_binary_name() {
        assert_eq!(Runtime::at("/usr/bin/podman".into()).kind, Kind::Podman);
        assert_eq!(
            Runtime::at("/usr/local/bin/docker".into()).kind,
            Kind::Docker
        );
    }

    /// A podman that says it is `version` (a script answering `--version`).
    fn podman_of(version: &str) -> (tempfile::TempDir, Runtime) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("podman");
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho 'podman version {version}'\n"),
        )
        .expect("script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        (dir, Runtime::at(path))
    }

    #[test]
    fn only_a_podman_4_or_later_gets_the_passthrough_log_driver() {
        if std::env::var_os("CONTAINER_HOST").is_some()
            || std::env::var_os("CONTAINER_CONNECTION").is_some()
        {
            return;
        }
        // A script just written may be busy (ETXTBSY) while a process
        // another test forks still holds it open: ask again.
        let answers = |r: &Runtime| {
            for _ in 0..50 {
                if major_version(&r.path).is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r.stdio_args()
        };
        let (_new, new) = podman_of("4.3.1");
        assert_eq!(answers(&new), ["--log-driver", "passthrough"]);
        let (_old, old) = podman_of("3.4.4");
        assert!(answers(&old).is_empty());
        assert_eq!(major_version(&old.path), Some(3));
        let docker = Runtime::at("/usr/bin/docker".into());
        assert!(docker.stdio_args().is_empty());
        assert_eq!(parse_major("podman version 5.0.0-dev\n"), Some(5));
        assert_eq!(parse_major("garbage"), None);
    }

    #[test]
    fn a_runtime_that_is_not_there_is_named() {
        let err = Runtime::named("/no/such/podman").expect_err("no such file");
        assert!(err.to_string().contains("/no/such/podman"), "{err}");
    }
}
