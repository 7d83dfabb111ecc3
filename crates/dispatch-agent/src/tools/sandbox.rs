//! `TOOL_SANDBOX image <ref>`: a LOCAL tool runs in a container of that
//! image (`<runtime> run --rm -i …`), with its arguments on stdin and in
//! `TOOL_INPUT` as outside one. The runtime prepares the flags (network,
//! mounts, ulimits, labels); this only adds the call's name, its variables
//! (by name: values stay off the command line; the few the client reads
//! itself, like `DOCKER_HOST`, by value) and the program.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use dispatch_core::isolation::configures_container_client;
use tokio::process::Command;

/// How LOCAL tools run in a container.
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// The container runtime's binary (podman or docker).
    pub runtime: PathBuf,
    /// The flags after `run` and before the image (`--rm -i`, network,
    /// read-only root, mounts, ulimits, labels).
    pub args: Vec<String>,
    pub image: String,
    /// The arguments that remove a container at once (`rm -f …`).
    pub remove: Vec<String>,
    /// The client's own variables (`DOCKER_HOST`, `HOME`, …; see
    /// [`configures_container_client`]) as the runtime has them: a tool's
    /// client reaches the runtime the run's removals reach.
    pub client_env: Vec<(String, String)>,
}

/// Variables a container takes from its image, not from the host.
const NOT_PASSED: [&str; 3] = ["PATH", "TMPDIR", "HOME"];

impl Sandbox {
    /// The command running `program` (through `sh` when not `executable`)
    /// in a container named `name`, handed `env`'s variables by name.
    pub(super) fn command(
        &self,
        name: &str,
        program: &Path,
        executable: bool,
        env: &[(String, String)],
    ) -> Command {
        let mut c = Command::new(&self.runtime);
        c.arg("run").args(&self.args).args(["--name", name]);
        for (k, v) in env
            .iter()
            .filter(|(k, _)| !NOT_PASSED.contains(&k.as_str()))
        {
            match configures_container_client(k) {
                true => c.args(["-e", &format!("{k}={v}")]),
                false => c.args(["-e", k]),
            };
        }
        c.args(["-e", "TOOL_INPUT"]).arg(&self.image);
        if !executable {
            c.arg("sh");
        }
        c.arg(program);
        c
    }

    /// Gives the client `env` (what `-e NAME` hands on), less the client's
    /// own variables, which are [`Sandbox::client_env`]'s.
    pub(super) fn client_env(&self, command: &mut Command, env: &[(String, String)]) {
        command
            .env_clear()
            .envs(
                env.iter()
                    .filter(|(k, _)| !configures_container_client(k))
                    .map(|(k, v)| (k, v)),
            )
            .envs(self.client_env.iter().map(|(k, v)| (k, v)));
    }

    /// Removes container `name` in the background (a call abandoned or
    /// timed out: its client is killed, the container would live on).
    pub(super) fn remove_later(&self, name: &str) {
        let mut c = std::process::Command::new(&self.runtime);
        c.args(&self.remove)
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Ok(mut child) = c.spawn() {
            std::thread::spawn(move || child.wait());
        }
    }
}

/// Removes a call's container when dropped before the call ended on its own.
pub(super) struct Guard<'a> {
    pub(super) sandbox: Option<&'a Sandbox>,
    pub(super) name: String,
}

impl Guard<'_> {
    /// The call ended on its own: `--rm` removes its container.
    pub(super) fn disarm(&mut self) {
        self.sandbox = None;
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.sandbox {
            s.remove_later(&self.name);
        }
    }
}
