//! `dispatch run SOURCE --batch FILE.jsonl --host URL`: one run per line of
//! the file (each line a job payload), sent to `POST /v1/runs/batch` 1,000
//! at a time (each request all or none); the ids are printed as they are
//! created, one per line, in the file's order.

use std::io::{BufRead, BufReader, Read};

use dispatch_core::Operation;
use dispatch_runtime::submit::check_session_name;
use serde_json::Value;

use super::remote::{Remote, add_reliability};
use crate::cli::RunArgs;
use crate::error::{CliError, CliResult};

/// Runs per request: the server's limit.
const PER_REQUEST: usize = 1000;

/// The payloads of `file` (`-`: stdin): one JSON value per non-blank line.
fn payloads(file: &str) -> CliResult<Vec<Value>> {
    let reader: Box<dyn Read> = match file {
        "-" => Box::new(std::io::stdin()),
        path => Box::new(
            std::fs::File::open(path)
                .map_err(|e| CliError::input(format!("--batch {path}: {e}")))?,
        ),
    };
    let mut out = Vec::new();
    for (n, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(|e| CliError::input(format!("--batch {file}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(&line).map_err(|e| {
            CliError::input(format!(
                "--batch {file}:{}: not a JSON payload ({e}; hint: one JSON value per line)",
                n + 1
            ))
        })?;
        out.push(value);
    }
    if out.is_empty() {
        return Err(CliError::input(format!(
            "--batch {file}: no payloads (hint: one JSON value per line)"
        )));
    }
    Ok(out)
}

impl Remote {
    pub(super) fn run_batch(&self, args: &RunArgs, file: &str) -> CliResult {
        if args.reliability.idempotency_key.is_some() {
            return Err(CliError::input(
                "--batch with --idempotency-key would make every run one (hint: --dedup keys each run by its payload)",
            ));
        }
        args.reliability.options()?;
        if let Some(name) = &args.reliability.session {
            check_session_name(name)?;
        }
        let payloads = payloads(file)?;
        let parcel = self.parcel_of(&args.source)?;
        let mut template = dispatch_api::CreateRun {
            parcel,
            operation: Some(Operation::Job),
            ..Default::default()
        };
        add_reliability(&mut template, &args.reliability)?;
        let (mut created, mut deduplicated) = (0, 0);
        for chunk in payloads.chunks(PER_REQUEST) {
            let runs = chunk
                .iter()
                .map(|p| dispatch_api::CreateRun {
                    payload: Some(p.clone()),
                    ..template.clone()
                })
                .collect();
            let body = dispatch_api::CreateRuns { runs };
            let answer: dispatch_api::CreatedRuns =
                self.typed_body("POST", "/v1/runs/batch", &body)?;
            for run in answer.runs {
                println!("{}", run.id);
                match run.deduplicated == Some(true) {
                    true => deduplicated += 1,
                    false => created += 1,
                }
            }
        }
        eprintln!(
            "{created} run(s) created{} in {} request(s)",
            if deduplicated > 0 {
                format!(", {deduplicated} matched existing ones")
            } else {
                String::new()
            },
            payloads.len().div_ceil(PER_REQUEST)
        );
        Ok(0)
    }
}
