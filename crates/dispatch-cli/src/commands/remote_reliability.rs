//! `--host`: approve, deny, approvals ls, dlq ls and dlq replay against a
//! `dispatch server`, printed by the local commands' own functions.

use dispatch_store::Approval;
use serde_json::Value;

use crate::commands::remote::{Remote, body, encode, parse_run};
use crate::commands::{approvals, dlq};
use crate::error::{CliError, CliResult};
use crate::reliability_args::{ApprovalsCommand, DecideArgs, DlqCommand};

impl Remote {
    /// `POST /v1/runs/{id}/approvals/{approval_id}`.
    pub(super) fn decide(&self, args: &DecideArgs, decision: &str) -> CliResult {
        // A bad `--input` is refused before anything is asked of the server.
        let input = approvals::input_of(args)?;
        let run = self.get_run(&args.run)?;
        if run.state.is_terminal() {
            return Err(approvals::finished(&run, decision));
        }
        // The approver's edit of a tool call's arguments (checked by the
        // server against the tool's schema) goes as `input`.
        let request = dispatch_api::DecideBody {
            decision: decision.to_string(),
            by: approvals::decider(args),
            rationale: args.rationale.clone(),
            input,
        };
        let approval = match &args.approval {
            Some(a) => a.clone(),
            None => {
                let path = format!("/v1/approvals?run={}", run.id);
                let pending = self.approvals_at(&path)?;
                approvals::only_pending(&run, &pending, decision)?
            }
        };
        let path = format!("/v1/runs/{}/approvals/{}", run.id, encode(&approval));
        let decided: dispatch_api::Approval = self.typed_body("POST", &path, &request)?;
        let decided: Approval = parse(wire(decided), "an approval")?;
        approvals::say_decided(&decided);
        Ok(0)
    }

    /// `POST /v1/runs/{id}/signal`.
    pub(super) fn signal(&self, args: &crate::cli::SignalArgs) -> CliResult {
        let value = crate::commands::signal::value_of(args)?;
        let run = self.get_run(&args.run)?;
        let request = dispatch_api::SignalBody {
            name: args.name.clone(),
            value,
        };
        let path = format!("/v1/runs/{}/signal", run.id);
        let answer: dispatch_api::SignalAnswer = self.typed_body("POST", &path, &request)?;
        crate::commands::signal::say(&run.id.to_string(), &args.name, &answer.delivered);
        Ok(0)
    }

    /// `GET /v1/approvals`.
    pub(super) fn approvals(&self, cmd: &ApprovalsCommand) -> CliResult {
        let ApprovalsCommand::Ls(args) = cmd;
        let mut path = format!("/v1/approvals?pending={}", !args.all);
        if let Some(p) = crate::reliability_args::listed_project(&args.project)? {
            path.push_str(&format!("&project={}", super::remote::encode(p)));
        }
        let list = self.approvals_at(&path)?;
        approvals::print_approvals(args.format, &list)
    }

    /// The approvals `GET path` lists (read as `dispatch_api::ApprovalList`),
    /// as the store's records the local commands print.
    fn approvals_at(&self, path: &str) -> CliResult<Vec<Approval>> {
        let answer: dispatch_api::ApprovalList = self.typed("GET", path, None)?;
        parse(wire(answer.approvals), "approvals")
    }

    /// `GET /v1/dead-letters` and `POST /v1/dead-letters/{id}/replay`.
    pub(super) fn dlq(&self, cmd: &DlqCommand) -> CliResult {
        match cmd {
            DlqCommand::Ls(args) => {
                let path = match crate::reliability_args::listed_project(&args.project)? {
                    Some(p) => format!("/v1/dead-letters?project={}", super::remote::encode(p)),
                    None => "/v1/dead-letters".to_string(),
                };
                let answer: dispatch_api::DeadLetterList = self.typed("GET", &path, None)?;
                dlq::print_dead_letters(args.format, answer.dead_letters)
            }
            DlqCommand::Replay(args) => {
                let payload = dlq::replay_payload(args.payload.as_deref())?;
                let old = self.get_run(&args.run)?;
                let request = dispatch_api::ReplayBody { payload };
                let path = format!("/v1/dead-letters/{}/replay", old.id);
                let run = parse_run(self.json("POST", &path, Some(&body(&request)?))?)?;
                println!("{}", run.id);
                Ok(0)
            }
        }
    }
}

/// A wire answer as JSON again, to be read as the store's record.
fn wire(answer: impl serde::Serialize) -> Value {
    serde_json::to_value(answer).unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> CliResult<T> {
    serde_json::from_value(value).map_err(|e| {
        CliError::input(format!(
            "the server sent {what} this dispatch cannot read: {e}"
        ))
    })
}
