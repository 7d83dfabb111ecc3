//! `TOOL_SANDBOX image <ref>`: a LOCAL tool runs in a container of that
//! image (`<runtime> run --rm -i …`), with its arguments on stdin and in
//! `TOOL_INPUT` as outside one. The runtime prepares the flags (network,
//! mounts, ulimits, labels); this only adds the call's name, its variables
//! (by name: values stay off the command line; the few the client reads
//! itself, like `DOCKER_HOST`, by value) and the program.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use dispatch_core::isolation::{configures_container_client, container_env};
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
    /// in a container named `name`, handed `env`'s variables by name; the
    /// client's own variables (`HTTPS_PROXY`, `DOCKER_HOST`, …) by value in
    /// an env file only the owner reads, kept until the call is done (a
    /// value may be a secret: never on a command line).
    pub(super) fn command(
        &self,
        name: &str,
        program: &Path,
        executable: bool,
        env: &[(String, String)],
    ) -> Result<(Command, Option<tempfile::TempPath>), String> {
        let mut c = Command::new(&self.runtime);
        c.arg("run").args(&self.args).args(["--name", name]);
        let vars = env
            .iter()
            .filter(|(k, _)| !NOT_PASSED.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), Some(v.as_str())));
        let (by_name, by_value) = container_env(vars).map_err(|k| {
            format!(
                "the value of {k} has a line break and cannot reach a sandboxed tool (its name configures the container client; hint: give the variable another name)"
            )
        })?;
        for k in by_name {
            c.args(["-e", k]);
        }
        let file = match by_value.is_empty() {
            true => None,
            false => Some(
                env_file(&by_value)
                    .map_err(|e| format!("cannot write the tool's env file: {e}"))?,
            ),
        };
        if let Some(path) = &file {
            c.arg("--env-file").arg(path.as_os_str());
        }
        c.args(["-e", "TOOL_INPUT"]).arg(&self.image);
        if !executable {
            c.arg("sh");
        }
        c.arg(program);
        Ok((c, file))
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

/// A temporary file holding `lines`, mode 0600, removed when dropped.
fn env_file(lines: &str) -> std::io::Result<tempfile::TempPath> {
    use std::io::Write;
    let mut file = tempfile::Builder::new()
        .prefix("dispatch-tool-")
        .suffix(".env")
        .tempfile()?;
    file.write_all(lines.as_bytes())?;
    Ok(file.into_temp_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Sandbox {
        Sandbox {
            runtime: "podman".into(),
            args: vec!["--rm".into(), "-i".into()],
            image: "localhost/tools:1".into(),
            remove: vec!["rm".into(), "-f".into()],
            client_env: Vec::new(),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_clients_own_variables_go_in_a_private_file_never_on_the_command_line() {
        let env = env(&[("API_KEY", "k-1"), ("HTTPS_PROXY", "http://u:s3cret@p:1")]);
        let (command, file) = sandbox()
            .command("c1", Path::new("/t/tool.sh"), false, &env)
            .expect("a command");
        let args: Vec<String> = command
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.iter().all(|a| !a.contains("s3cret")), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["-e", "API_KEY"]), "{args:?}");
        let path = file.expect("an env file");
        let at = args
            .iter()
            .position(|a| a == "--env-file")
            .expect("--env-file");
        assert_eq!(args[at + 1], path.to_string_lossy());
        let text = std::fs::read_to_string(&path).expect("env file");
        assert_eq!(text, "HTTPS_PROXY=http://u:s3cret@p:1\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let kept = path.to_path_buf();
        drop(path);
        assert!(!kept.exists(), "removed when the call is done");
    }

    #[test]
    fn without_such_variables_there_is_no_file_and_a_line_break_is_refused() {
        let (_, file) = sandbox()
            .command("c2", Path::new("/t/tool"), true, &env(&[("A", "1")]))
            .expect("a command");
        assert!(file.is_none());
        let err = sandbox()
            .command(
                "c3",
                Path::new("/t/tool"),
                true,
                &env(&[("DOCKER_HOST", "a\nb")]),
            )
            .expect_err("refused");
        assert!(
            err.contains("DOCKER_HOST") && err.contains("line break"),
            "{err}"
        );
    }
}
