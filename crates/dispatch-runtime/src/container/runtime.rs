//! Which container runtime runs containers: `$DISPATCH_CONTAINER_RUNTIME`
//! (`podman`, `docker`, or a path), else `podman` on `PATH`, else `docker`.
//! Both are driven through the same CLI flags; the few that differ are
//! chosen by [`Kind`].

use std::path::{Path, PathBuf};

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
    /// `container.rs` shows it). `--log-driver passthrough` makes conmon
    /// give the container our pipe or log file itself: nothing is relayed,
    /// so nothing is lost. A remote podman (`CONTAINER_HOST`,
    /// `CONTAINER_CONNECTION`) cannot pass descriptors, nor can docker: they
    /// keep the relay.
    pub fn stdio_args(&self) -> Vec<String> {
        let remote = ["CONTAINER_HOST", "CONTAINER_CONNECTION"]
            .iter()
            .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
        match (self.kind, remote, cfg!(target_os = "linux")) {
            (Kind::Podman, false, true) => vec!["--log-driver".into(), "passthrough".into()],
            _ => Vec::new(),
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

    #[test]
    fn a_runtime_that_is_not_there_is_named() {
        let err = Runtime::named("/no/such/podman").expect_err("no such file");
        assert!(err.to_string().contains("/no/such/podman"), "{err}");
    }
}
