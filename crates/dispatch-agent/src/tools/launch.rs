//! A LOCAL tool's process started by the runtime rather than by
//! `Command::spawn` (see [`super::ToolContext::launcher`]): the runtime
//! starts it from a small process instead of forking its own, large one
//! (see dispatch-runtime's `sandbox::stage`).

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;

/// What to start: as `Command::new(program).args(args).env_clear().envs(env)
/// .current_dir(cwd)`, in a process group of its own, with its three
/// standard streams piped.
pub struct LaunchRequest {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
}

/// Resolves when the process exited (and was reaped). Dropped before, it
/// kills the process (SIGKILL) and reaps it later.
pub type ExitFuture = Pin<Box<dyn Future<Output = std::io::Result<ExitStatus>> + Send>>;

/// A started process: its pid (and process group), its streams, its end.
pub struct Launched {
    pub pid: u32,
    pub stdin: tokio::net::unix::pipe::Sender,
    pub stdout: tokio::net::unix::pipe::Receiver,
    pub stderr: tokio::net::unix::pipe::Receiver,
    pub exit: ExitFuture,
}

/// Starts a LOCAL tool's process; an error is what `spawn` would have
/// returned (the program not found, a sandbox step refused).
pub type Launcher = Arc<
    dyn Fn(LaunchRequest) -> Pin<Box<dyn Future<Output = std::io::Result<Launched>> + Send>>
        + Send
        + Sync,
>;
