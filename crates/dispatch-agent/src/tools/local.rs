//! LOCAL tools: a program in the parcel, run in the run's working directory
//! with the arguments as JSON on stdin and in `TOOL_INPUT`. Its stdout is
//! the result; a non-zero exit is an error the model sees (with the end of
//! its stderr). Each call runs in a process group of its own, killed whole
//! at its timeout, or when the call is abandoned (the run stopped).

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;

use super::ToolContext;
use super::launch::{ExitFuture, LaunchRequest};
use crate::agent_loop::ToolOutcome;

/// The most output read from one call (the model sees at most LIMIT
/// TOOL_OUTPUT of it; the artifact keeps this much).
const MAX_READ: usize = 16 << 20;
/// How much of stderr is kept for an error.
const STDERR_TAIL: usize = 4096;

/// Kills a call's process group when dropped (its timeout, or the run's
/// loop abandoning the call).
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.filter(|p| *p > 1) {
            let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
        }
    }
}

pub(super) async fn run(
    program: &Path,
    using: &[String],
    env: &[(String, String)],
    args: &Value,
    ctx: &ToolContext<'_>,
    timeout: Duration,
) -> ToolOutcome {
    let input = args.to_string();
    let _ = std::fs::create_dir_all(&ctx.work_dir);
    let executable = is_executable(program);
    let name = format!(
        "dispatch-tool-{}-{:08x}",
        std::process::id(),
        fastrand_u32()
    );
    let mut container = super::sandbox::Guard {
        sandbox: ctx.sandbox.as_ref(),
        name,
    };
    // Kept until the call is done: the client reads it as it starts.
    let mut _env_file = None;
    let started = match (&ctx.sandbox, &ctx.launcher) {
        // The runtime starts it from a small process (no fork of this one).
        (None, Some(launcher)) => {
            let (prog, args) = program_and_args(program, using, executable);
            let mut env: Vec<(OsString, OsString)> = env
                .iter()
                .filter(|(k, _)| k != "TOOL_INPUT" && k != "DISPATCH_TOOL_INPUT")
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
            env.push(("TOOL_INPUT".into(), input.clone().into()));
            // Upstream Dispatch's name for it.
            env.push(("DISPATCH_TOOL_INPUT".into(), input.clone().into()));
            let request = LaunchRequest {
                program: prog,
                args,
                env,
                cwd: ctx.work_dir.clone(),
            };
            launcher(request).await.map(|l| Started {
                pid: Some(l.pid),
                stdin: Some(Box::new(l.stdin)),
                stdout: Some(Box::new(l.stdout)),
                stderr: Some(Box::new(l.stderr)),
                exit: l.exit,
            })
        }
        _ => {
            let mut command = match &ctx.sandbox {
                Some(s) => match s.command(&container.name, program, executable, env) {
                    Ok((command, file)) => {
                        _env_file = file;
                        command
                    }
                    Err(e) => {
                        container.disarm();
                        return ToolOutcome::error(format!("error: {e}"));
                    }
                },
                None => {
                    let (prog, args) = program_and_args(program, using, executable);
                    let mut c = Command::new(prog);
                    c.args(args);
                    c
                }
            };
            match &ctx.sandbox {
                Some(s) => s.client_env(&mut command, env),
                None => {
                    command.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
                }
            }
            command
                .current_dir(&ctx.work_dir)
                .env("TOOL_INPUT", &input)
                // Upstream Dispatch's name for it.
                .env("DISPATCH_TOOL_INPUT", &input)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            // The container runtime's client needs root's powers to set the
            // container up; the tool inside runs with the container's own (and the
            // parcel and workspace mounted read-only), under the container's limits.
            match ctx.sandbox {
                Some(_) => keep_powers_die_with_parent(&mut command),
                None => die_with_parent(&mut command),
            }
            if let (None, Some(hook)) = (&ctx.sandbox, &ctx.spawn_hook) {
                hook(&mut command);
            }
            command.spawn().map(|mut child| Started {
                pid: child.id(),
                stdin: child.stdin.take().map(|s| Box::new(s) as _),
                stdout: child.stdout.take().map(|s| Box::new(s) as _),
                stderr: child.stderr.take().map(|s| Box::new(s) as _),
                exit: Box::pin(async move { child.wait().await }),
            })
        }
    };
    let started = match started {
        Ok(c) => c,
        Err(e) => {
            return ToolOutcome::error(format!("error: cannot start {}: {e}", program.display()));
        }
    };
    let group = Group(started.pid);
    let Started {
        mut stdin,
        stdout,
        stderr,
        exit,
        ..
    } = started;
    let work = async {
        if let Some(mut w) = stdin.take() {
            // A program that does not read its input is fine.
            let _ = w.write_all(input.as_bytes()).await;
            drop(w);
        }
        let (out, err, status) = tokio::join!(read_up_to(stdout), read_up_to(stderr), exit);
        (out, err, status)
    };
    let (out, err, status) = match tokio::time::timeout(timeout, work).await {
        Ok(done) => done,
        Err(_) => {
            drop(group);
            let mut o = ToolOutcome::error(format!(
                "error: the tool did not finish within its timeout of {} and was stopped",
                human(timeout)
            ));
            o.meta.insert("timed_out".into(), json!(true));
            return o;
        }
    };
    drop(group); // anything it left running in its group goes too
    if status.as_ref().is_ok_and(|s| s.code().is_some()) {
        container.disarm(); // it exited: `--rm` removed it
    }
    let out = String::from_utf8_lossy(&out).into_owned();
    let code = status.ok().and_then(|s| s.code());
    let mut outcome = match code {
        Some(0) => ToolOutcome::ok(out),
        _ => {
            let err = String::from_utf8_lossy(&err);
            let tail = tail(&err, STDERR_TAIL);
            let how = code.map_or("was killed by a signal".to_string(), |c| {
                format!("exited with status {c}")
            });
            let mut text = format!("error: the tool {how}");
            if !tail.trim().is_empty() {
                text.push_str(&format!("; stderr: {}", tail.trim_end()));
            } else if !out.trim().is_empty() {
                text.push_str(&format!("; stdout: {}", out.trim_end()));
            }
            ToolOutcome::error(text)
        }
    };
    outcome.meta.insert("exit_code".into(), json!(code));
    outcome
}

/// A started tool process, however it was started.
struct Started {
    pid: Option<u32>,
    stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    exit: ExitFuture,
}

/// What to execute for `program`: itself, its `USING` command with it
/// (`USING python3 -u`: the interpreter, its arguments, then the program),
/// or `sh` with it when it is not executable.
fn program_and_args(
    program: &Path,
    using: &[String],
    executable: bool,
) -> (OsString, Vec<OsString>) {
    match using.split_first() {
        Some((first, rest)) => {
            let mut args: Vec<OsString> = rest.iter().map(OsString::from).collect();
            args.push(program.into());
            (first.into(), args)
        }
        None if executable => (program.into(), Vec::new()),
        None => ("sh".into(), vec![program.into()]),
    }
}

/// The child is killed when the process that started it dies (a helper or
/// worker killed with SIGKILL cannot kill its tools' groups itself). Only the
/// child: what it started itself is left to its group's kill.
pub(crate) fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // Never write into the parcel, even as root (see `powers`).
            super::powers::drop_write_powers();
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// As [`die_with_parent`], without dropping the powers: for a container
/// runtime's client, which mounts and sets up the sandbox.
fn keep_powers_die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

async fn read_up_to<R: AsyncRead + Unpin>(stream: Option<R>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(s) = stream {
        let _ = s.take(MAX_READ as u64).read_to_end(&mut buf).await;
    }
    buf
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A name suffix for a call's container (unique enough among one process's calls).
fn fastrand_u32() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ NEXT.fetch_add(1, Ordering::Relaxed).rotate_left(16)
}
