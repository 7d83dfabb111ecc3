//! `create`, `start`, `replay`, `restart` and `rm` against a server
//! (`--host` / `DISPATCH_HOST`): the same arguments, outputs and exit codes
//! as on the local state, through `POST /v1/runs` (`"start": false`),
//! `POST /v1/runs/{id}/start`, `POST /v1/runs/{id}/replay` and
//! `DELETE /v1/runs/{id}`.

use dispatch_core::Operation;
use serde_json::json;

use super::remote::{Remote, add_reliability, body, parse_run, store_run};
use super::run;
use crate::cli::{CreateArgs, IdsArgs, RmArgs, StopArgs};
use crate::error::{CliError, CliResult};
use crate::reliability_args::ReplayArgs;

impl Remote {
    /// `dispatch create --host`: the run is `created`, out of the queue.
    pub(super) fn create(&self, args: &CreateArgs) -> CliResult {
        let (operation, payload) = run::parse_payload(&args.payload)?;
        args.reliability.options()?;
        let parcel = self.parcel_of(&args.source)?;
        let mut request = dispatch_api::CreateRun {
            parcel,
            payload: Some(payload),
            operation,
            start: Some(false),
            ..Default::default()
        };
        add_reliability(&mut request, &args.reliability)?;
        let answer: dispatch_api::Run = self.typed_body("POST", "/v1/runs", &request)?;
        let deduplicated = answer.deduplicated == Some(true);
        let run = store_run(answer)?;
        if deduplicated {
            run::say_deduplicated(&run);
        }
        println!("{}", run.id);
        Ok(0)
    }

    /// `dispatch start --host`: each created run joins the queue.
    pub(super) fn start(&self, args: &IdsArgs) -> CliResult {
        for arg in &args.ids {
            let run = self.get_run(arg)?;
            if run.status() != dispatch_core::Status::Created || run.stop_requested_at.is_some() {
                return Err(CliError::input(format!(
                    "run {} is {}; only a created run can be started (hint: `dispatch restart {}` runs it again)",
                    run.id,
                    run.status(),
                    run.id.short()
                )));
            }
            let path = format!("/v1/runs/{}/start", run.id);
            let started = parse_run(self.json("POST", &path, Some(&json!({})))?)?;
            println!("{}", started.id);
        }
        Ok(0)
    }

    /// `dispatch replay --host`: the exact parcel, brief and payload again.
    pub(super) fn replay(&self, args: &ReplayArgs) -> CliResult {
        let old = self.get_run(&args.run)?;
        if !args.allow_side_effects {
            return Err(CliError::input(format!(
                "refusing to replay run {}: the agent runs again for real and may repeat its side effects (hint: add --allow-side-effects)",
                old.id.short()
            )));
        }
        if args.strict {
            return Err(CliError::input(
                "--strict compares MCP servers' tools where the run executes, which a server cannot do for its workers (hint: drop --strict)",
            ));
        }
        let new = self.replay_run(&old.id)?;
        eprintln!(
            "replaying run {} as {} (parcel {}, brief {})",
            old.id.short(),
            new.id.short(),
            &old.parcel_digest[..12.min(old.parcel_digest.len())],
            &old.brief_sha256[..12.min(old.brief_sha256.len())]
        );
        println!("{}", new.id);
        Ok(0)
    }

    fn replay_run(&self, id: &dispatch_core::RunId) -> CliResult<dispatch_store::Run> {
        let path = format!("/v1/runs/{id}/replay");
        let request = dispatch_api::ReplayRunBody {
            allow_side_effects: true,
        };
        parse_run(self.json("POST", &path, Some(&body(&request)?))?)
    }

    /// `dispatch restart --host`: stop the run if it is live (through its
    /// worker), then run it again as a new linked run; prints the new id.
    pub(super) fn restart(&self, args: &StopArgs) -> CliResult {
        for arg in &args.ids.ids {
            let old = self.get_run(arg)?;
            if !old.state.is_terminal() {
                let path = format!("/v1/runs/{}/cancel", old.id);
                self.json("POST", &path, Some(&json!({})))?;
                self.wait_end(old.id.as_str(), None)?;
            }
            if old.operation == Operation::Service {
                // A cluster service: the same name, configuration and timers.
                let request = dispatch_api::CreateService {
                    restart_of: Some(old.id.to_string()),
                    ..Default::default()
                };
                let answer: dispatch_api::ServiceCreated =
                    self.typed_body("POST", "/v1/services", &request)?;
                println!("{}", answer.run.id);
                continue;
            }
            println!("{}", self.replay_run(&old.id)?.id);
        }
        Ok(0)
    }

    /// `dispatch rm --host [-f]`: prints each removed run's id.
    pub(super) fn rm(&self, args: &RmArgs) -> CliResult {
        for arg in &args.ids.ids {
            let run = self.get_run(arg)?;
            let force = if args.force { "?force=true" } else { "" };
            self.send("DELETE", &format!("/v1/runs/{}{force}", run.id), None)?;
            println!("{}", run.id);
        }
        Ok(0)
    }
}
