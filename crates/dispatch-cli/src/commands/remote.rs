//! `--host` / `DISPATCH_HOST`: run, serve, wake, ps, logs, wait, stop, inspect-run,
//! signal, approve, deny, approvals ls, dlq ls, dlq replay, prune, eval,
//! build, images, rmi, usage, quota and notify ls against a `dispatch server`, with the same output
//! as locally.
//!
//! `dispatch run <dir>` uploads the Agentfile directory (a tar stream, see
//! `remote_parcels`) to be built on the server; `dispatch run <name|digest>` names a parcel the server
//! already has. Its reliability flags (`--retries`, `--timeout`,
//! `--idempotency-key`, `--session`, …) are checked as locally and sent with
//! the run. Stopping goes through the run's worker (SIGTERM to the agent).

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use dispatch_core::RunId;
use dispatch_core::policy::PolicyInput;
use dispatch_runtime::report::RunReport;
use dispatch_runtime::run_exit_code;
use dispatch_runtime::submit::check_session_name;
use dispatch_server::client::{Client, Response};
use dispatch_store::Run;
use serde_json::{Value, json};

use crate::cli::{Command, ContainerCommand, InspectArgs, LogsArgs, RunArgs};
use crate::cli::{StopArgs, WaitArgs};
use crate::commands::{inspect, run};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult, EXIT_WAIT_TIMEOUT, chain};
use crate::reliability_args::DispatchArgs;

/// How long one long-polling request of `wait` lasts.
const WAIT_PERIOD: Duration = Duration::from_secs(30);

/// How long a request answered 503 with `Retry-After` is tried again.
const RETRY_503_FOR: Duration = Duration::from_secs(30);
/// The API token sent to the server, when set.
pub const TOKEN_ENV: &str = "DISPATCH_TOKEN";

/// Runs `command` against the server at `host`; `None` for the commands that
/// stay local (server, worker, token).
pub async fn execute(
    ctx: &Ctx,
    host: &str,
    cacert: Option<&Path>,
    command: &Command,
) -> Option<CliResult> {
    let client = match Client::new(host, cacert) {
        Ok(client) => client,
        // Only the commands that go to the server need a good --host.
        Err(e) => return remote_command(command).then(|| Err(CliError::input(chain(&e)))),
    };
    let remote = Remote { client };
    Some(match command {
        Command::Run(a) => remote.run(a).await,
        Command::Ps(a) | Command::Container(ContainerCommand::Ls(a) | ContainerCommand::Ps(a)) => {
            remote.ps(a)
        }
        Command::Logs(a) | Command::Container(ContainerCommand::Logs(a)) => remote.logs(a),
        Command::Wait(a) | Command::Container(ContainerCommand::Wait(a)) => remote.wait(a),
        Command::Stop(a) | Command::Container(ContainerCommand::Stop(a)) => remote.stop(a),
        Command::InspectRun(a) | Command::Container(ContainerCommand::Inspect(a)) => {
            remote.inspect(a)
        }
        Command::Signal(a) => remote.signal(a),
        Command::Artifacts(a) => super::artifacts::remote(&remote, a),
        Command::Approve(a) => remote.decide(a, "approve"),
        Command::Deny(a) => remote.decide(a, "deny"),
        Command::Approvals(c) => remote.approvals(c),
        Command::Dlq(c) => remote.dlq(c),
        Command::Create(a) => remote.create(a),
        Command::Start(a) => remote.start(a),
        Command::Replay(a) => remote.replay(a),
        Command::Restart(a) | Command::Container(ContainerCommand::Restart(a)) => remote.restart(a),
        Command::Rm(a) | Command::Container(ContainerCommand::Rm(a)) => remote.rm(a),
        Command::Prune(a) | Command::Container(ContainerCommand::Prune(a)) => remote.prune(a),
        Command::Eval(a) => super::eval::remote::eval(ctx, &remote, a).await,
        Command::Serve(a) => remote.serve(a),
        Command::Wake(a) => remote.wake(a),
        Command::Ui(_) => Err(CliError::input(format!(
            "the server at {} serves its own dashboard at {}/ui/ (hint: open that, or unset DISPATCH_HOST for the local one)",
            remote.base(),
            remote.base()
        ))),
        Command::Build(a) => remote.build(a),
        Command::Images(a) => remote.images(a),
        Command::Rmi(a) => remote.rmi(a),
        Command::Usage(a) => remote.usage(a),
        Command::Quota(a) => remote.quota(a),
        Command::Session(a) => remote.session(a),
        Command::Notify(a) => remote.notify(a),
        Command::Server(_) | Command::Worker(_) | Command::Token(_) | Command::Internal(_) => {
            return None;
        }
        _ => Err(CliError::input(
            "this command works only on the local state (hint: unset DISPATCH_HOST or drop --host)",
        )),
    })
}

/// Whether `command` goes to the server under --host (the others stay local).
fn remote_command(command: &Command) -> bool {
    !matches!(
        command,
        Command::Server(_) | Command::Worker(_) | Command::Token(_) | Command::Internal(_)
    )
}

#[derive(Clone)]
pub(super) struct Remote {
    client: Client,
}

impl Remote {
    /// The server's base URL (`http(s)://host:port`).
    pub(super) fn base(&self) -> &str {
        self.client.base()
    }

    pub(super) fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> CliResult<Response> {
        let body = body.map(|b| b.to_string().into_bytes());
        self.send_body(method, path, body.as_deref(), None)
    }

    /// Sends the file `tar` (an archive) as the body, streamed.
    pub(super) fn send_tar(&self, method: &str, path: &str, tar: &Path) -> CliResult<Response> {
        self.send_body(method, path, None, Some(tar))
    }

    fn send_body(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        tar: Option<&Path>,
    ) -> CliResult<Response> {
        let bearer = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        let bearer = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("Authorization", b)])
            .unwrap_or_default();
        // A 503 with `Retry-After` (the server's database is out of reach;
        // nothing was done) is tried again for up to RETRY_503_FOR.
        let started = Instant::now();
        let mut said = false;
        let response = loop {
            let response = match tar {
                Some(file) => {
                    self.client
                        .request_file(method, path, &headers, "application/x-tar", file)
                }
                None => self.client.request(method, path, &headers, body),
            }
            .map_err(|e| CliError::input(chain(&e)))?;
            let after = (response.status == 503)
                .then(|| response.header("retry-after")?.trim().parse::<u64>().ok())
                .flatten();
            match after {
                Some(secs) if started.elapsed() < RETRY_503_FOR => {
                    if !said {
                        eprintln!(
                            "the server is unavailable (its database is out of reach); trying again for up to {} s",
                            RETRY_503_FOR.as_secs()
                        );
                        said = true;
                    }
                    std::thread::sleep(Duration::from_secs(secs.clamp(1, 5)));
                }
                _ => break response,
            }
        };
        if response.status >= 400 {
            let status = response.status;
            let text = response.text().unwrap_or_default();
            let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let message = answer["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("the server answered {status}: {text}"));
            return Err(CliError::input(message));
        }
        Ok(response)
    }

    pub(super) fn json(&self, method: &str, path: &str, body: Option<&Value>) -> CliResult<Value> {
        answer_json(self.send(method, path, body)?)
    }

    /// A successful answer read as its `dispatch-api` type: one line when
    /// the server sent something else.
    pub(super) fn typed<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> CliResult<T> {
        serde_json::from_value(self.json(method, path, body)?).map_err(|e| {
            CliError::input(format!(
                "the server's answer to {method} {path} is not what this dispatch reads: {e}"
            ))
        })
    }

    /// `typed`, sending `request` (a `dispatch-api` request body) as JSON.
    pub(super) fn typed_body<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        request: &impl serde::Serialize,
    ) -> CliResult<T> {
        self.typed(method, path, Some(&body(request)?))
    }

    pub(super) fn get_run(&self, id: &str) -> CliResult<Run> {
        parse_run(self.json("GET", &format!("/v1/runs/{id}"), None)?)
    }

    async fn run(&self, args: &RunArgs) -> CliResult {
        if let Some(file) = &args.batch {
            return self.run_batch(args, file);
        }
        let (operation, payload) = run::parse_payload(&args.payload)?;
        // Checked here first, for the same one-line errors as locally.
        args.reliability.options()?;
        if let Some(name) = &args.reliability.session {
            check_session_name(name)?;
        }
        let parcel = self.parcel_of(&args.source)?;
        let mut request = dispatch_api::CreateRun {
            parcel,
            payload: Some(payload),
            operation,
            ..Default::default()
        };
        add_reliability(&mut request, &args.reliability)?;
        let answer: dispatch_api::Run = self.typed_body("POST", "/v1/runs", &request)?;
        let deduplicated = answer.deduplicated == Some(true);
        let run = store_run(answer)?;
        if deduplicated {
            run::say_deduplicated(&run);
        } else {
            run::say_in_review(&run);
        }
        if args.detach {
            println!("{}", run.id);
            return Ok(0);
        }
        eprintln!("run {}", run.id);
        // The log streams on a thread of its own, so Ctrl-C can stop the run
        // (through its worker) as it does locally.
        let (remote, id) = (self.clone(), run.id.clone());
        let follow = tokio::task::spawn_blocking(move || remote.copy_log(&id, true, None));
        tokio::pin!(follow);
        tokio::select! {
            done = &mut follow => {
                done.map_err(|e| CliError::input(format!("following the log: {e}")))??;
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopping run {}…", run.id);
                self.json("POST", &format!("/v1/runs/{}/cancel", run.id), Some(&json!({})))?;
                let _ = follow.await;
            }
        }
        let finished = self.wait_end(run.id.as_str(), None)?;
        run::print_summary(&finished);
        Ok(run_exit_code(&finished.state))
    }

    /// The parcel a run of `source` names: a directory with an Agentfile is
    /// uploaded (built by the server); anything else is a name or digest.
    pub(super) fn parcel_of(&self, source: &str) -> CliResult<String> {
        if !Path::new(source).join("Agentfile").is_file() {
            return Ok(source.to_string());
        }
        Ok(self.upload(Path::new(source))?.digest)
    }

    fn logs(&self, args: &LogsArgs) -> CliResult {
        let run = self.get_run(&args.id)?;
        if let Some(n) = args.attempt {
            // As locally: that attempt's section of the whole log.
            super::logs::check_attempt(&run, n)?;
            let text = self
                .send("GET", &format!("/v1/runs/{}/logs", run.id), None)?
                .text()
                .unwrap_or_default();
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(super::logs::attempt_section(text.as_bytes(), n));
            let _ = out.flush();
            return Ok(0);
        }
        self.copy_log(&run.id, args.follow, args.tail)?;
        Ok(0)
    }

    /// Copies the run's log to stdout; following, until the run ends.
    fn copy_log(&self, id: &RunId, follow: bool, tail: Option<usize>) -> CliResult<()> {
        let path = format!(
            "/v1/runs/{id}/logs{}",
            if follow { "?follow=true" } else { "" }
        );
        let response = self.send("GET", &path, None)?;
        let mut out = std::io::stdout().lock();
        if let Some(n) = tail.filter(|_| !follow) {
            let text = response.text().unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(n)..] {
                let _ = writeln!(out, "{line}");
            }
            return Ok(());
        }
        let mut reader = response.into_reader();
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
            }
        }
        Ok(())
    }

    /// Polls until the run is terminal; `None` waits forever.
    /// Long-polls the run (`?wait=`, 30 s at a time) until it ends or the
    /// deadline passes: one request per run per 30 s while it runs.
    pub(super) fn wait_end(&self, id: &str, deadline: Option<(Instant, u64)>) -> CliResult<Run> {
        loop {
            let left = deadline.map_or(WAIT_PERIOD, |(at, _)| {
                at.saturating_duration_since(Instant::now())
                    .min(WAIT_PERIOD)
            });
            let path = format!("/v1/runs/{id}?wait={:.3}", left.as_secs_f64());
            let run = parse_run(self.json("GET", &path, None)?)?;
            if run.state.is_terminal() {
                return Ok(run);
            }
            if let Some((_, ms)) = deadline.filter(|(at, _)| Instant::now() >= *at) {
                return Err(CliError::new(
                    EXIT_WAIT_TIMEOUT,
                    format!(
                        "timed out after {ms} ms waiting for run {} (still {})",
                        run.id,
                        run.status()
                    ),
                ));
            }
        }
    }

    fn wait(&self, args: &WaitArgs) -> CliResult {
        let deadline = args
            .timeout_ms
            .map(|ms| (Instant::now() + Duration::from_millis(ms), ms));
        let mut ids = Vec::new();
        for arg in &args.ids.ids {
            ids.push(self.get_run(arg)?.id);
        }
        let mut code = 0;
        for id in ids {
            let run = self.wait_end(id.as_str(), deadline)?;
            code = run_exit_code(&run.state);
            println!("{code}");
        }
        Ok(code)
    }

    fn stop(&self, args: &StopArgs) -> CliResult {
        for arg in &args.ids.ids {
            let run = self.get_run(arg)?;
            if run.state.is_terminal() {
                return Err(CliError::input(format!(
                    "run {} is already {}; there is nothing to stop",
                    run.id,
                    run.status()
                )));
            }
            self.json(
                "POST",
                &format!("/v1/runs/{}/cancel", run.id),
                Some(&json!({})),
            )?;
            self.wait_end(run.id.as_str(), None)?;
            println!("{}", run.id);
        }
        Ok(0)
    }

    fn inspect(&self, args: &InspectArgs) -> CliResult {
        if let Some(how) = args.graph {
            return super::inspect_workflow::print_remote_graph(self, args, how);
        }
        let mut reports = Vec::new();
        for arg in &args.ids.ids {
            reports.push(self.report(arg)?);
        }
        inspect::print(&reports, args.format);
        Ok(0)
    }
}

impl Remote {
    /// The run's report (`GET /v1/runs/{id}/report`), as `inspect-run`
    /// prints it: the log is the server's URL of it.
    fn report(&self, id: &str) -> CliResult<RunReport> {
        let mut report: RunReport =
            self.typed("GET", &format!("/v1/runs/{}/report", encode(id)), None)?;
        report.log_path = format!("{}{}", self.base(), report.log_path);
        Ok(report)
    }
}

/// Adds the reliability flags to a `POST /v1/runs` body (only those given:
/// a flag left out stays out of the JSON).
pub(super) fn add_reliability(
    request: &mut dispatch_api::CreateRun,
    args: &DispatchArgs,
) -> CliResult<()> {
    request.project = args.project.clone();
    request.idempotency_key = args.idempotency_key.clone();
    request.dedup = args.dedup;
    request.force = args.force;
    request.session = args.session.clone();
    request.queue_timeout = args.queue_timeout.clone();
    request.labels = args.labels.clone();
    request.priority = args.priority;
    request.keep_workspace = args.keep_workspace;
    request.concurrency_key = args.concurrency_key.clone();
    request.concurrency_max = args.concurrency_max;
    request.concurrency_strategy = args.strategy()?;
    // The model, as a local run takes it: the flags over this shell's
    // LLM_MODEL / LLM_BASE_URL (checked here, written into the brief there).
    let choice = args.model_choice();
    let env = |k: &str| std::env::var(k).ok();
    if let Some(llm) = choice
        .context(env)
        .map_err(|e| CliError::input(e.to_string()))?
    {
        let text = |field: &str| llm.get(field).and_then(Value::as_str).map(str::to_string);
        request.model = text("model");
        request.base_url = text("base_url");
        request.provider = text("provider");
        request.reasoning_effort = text("reasoning_effort");
    }
    let policy = args.policy_input();
    request.policy = (policy != PolicyInput::default()).then_some(policy);
    Ok(())
}

/// A request body as the JSON the client sends.
pub(super) fn body(request: &impl serde::Serialize) -> CliResult<Value> {
    serde_json::to_value(request)
        .map_err(|e| CliError::input(format!("cannot write the request: {e}")))
}

/// Percent-encodes what a URL path segment or query value cannot hold as it
/// is (an approval id is the agent's own string; a parcel name, a label).
pub(super) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A run the server sent, read as its wire type (`dispatch_api::Run`),
/// as the store's record the commands print from.
pub(super) fn parse_run(value: Value) -> CliResult<Run> {
    store_run(serde_json::from_value(value).map_err(unreadable_run)?)
}

/// The wire run as the store's record (its state read as the run model's).
pub(super) fn store_run(run: dispatch_api::Run) -> CliResult<Run> {
    serde_json::to_value(run)
        .and_then(serde_json::from_value)
        .map_err(unreadable_run)
}

/// A wire answer (a `dispatch-api` type) as the store's record a command
/// prints from, where the two have the same JSON shape; `what` names it in
/// the one line said when they do not.
pub(super) fn as_record<W: serde::Serialize, R: serde::de::DeserializeOwned>(
    what: &str,
    wire: W,
) -> CliResult<R> {
    serde_json::to_value(wire)
        .and_then(serde_json::from_value)
        .map_err(|e| CliError::input(format!("the server's {what} does not parse: {e}")))
}

fn unreadable_run(e: serde_json::Error) -> CliError {
    CliError::input(format!(
        "the server sent a run this dispatch cannot read: {e}"
    ))
}

/// A successful answer's JSON body.
pub(super) fn answer_json(response: Response) -> CliResult<Value> {
    let text = response
        .text()
        .map_err(|e| CliError::input(format!("reading the server's answer: {e}")))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::input(format!("the server's answer is not JSON: {e}")))
}
