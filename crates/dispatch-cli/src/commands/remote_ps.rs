//! `dispatch ps` against a server: the same filters as locally, sent to
//! `GET /v1/runs` page after page (each read as `dispatch_api::RunPage`).

use dispatch_api::RunPage;
use dispatch_core::now_ms;
use dispatch_core::time::format_rfc3339;

use crate::cli::PsArgs;
use crate::commands::ps::{self, Filters};
use crate::commands::remote::{Remote, encode, store_run};
use crate::error::{CliError, CliResult};

impl Remote {
    pub(super) fn ps(&self, args: &PsArgs) -> CliResult {
        let query = query(args)?;
        let mut runs = Vec::new();
        let mut waiting = ps::Waiting::new();
        let mut cursor: Option<String> = None;
        loop {
            let want = args
                .last
                .map_or(1000, |n| n.saturating_sub(runs.len()).min(1000));
            if want == 0 {
                break;
            }
            let mut q = query.clone();
            q.push(format!("limit={want}"));
            if let Some(c) = &cursor {
                q.push(format!("cursor={}", encode(c)));
            }
            let page: RunPage = self.typed("GET", &format!("/v1/runs?{}", q.join("&")), None)?;
            for r in page.runs {
                let why = r.waiting.clone();
                // The wire run, as the store's record the table is printed from.
                let run = store_run(r)?;
                if let Some(why) = why {
                    waiting.insert(run.id.clone(), why);
                }
                runs.push(run);
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        ps::print_runs(args, &runs, &waiting)
    }
}

/// The query of every page. Times are resolved here, once, so that an age
/// (`since=10m`) means the same instant on every page.
fn query(args: &PsArgs) -> CliResult<Vec<String>> {
    let Filters { filter, parent } = ps::filters(args, now_ms())?;
    let mut query = Vec::new();
    let statuses = if filter.statuses.is_empty() && !args.all {
        ps::LIVE.to_vec()
    } else {
        filter.statuses
    };
    if !statuses.is_empty() {
        let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        query.push(format!("status={}", names.join(",")));
    }
    for project in &filter.projects {
        query.push(format!("project={}", encode(project)));
    }
    if let Some(parcel) = &filter.parcel {
        query.push(format!("parcel={}", encode(parcel)));
    }
    if let Some(operation) = filter.operation {
        query.push(format!("operation={operation}"));
    }
    if let Some(parent) = parent {
        query.push(format!("parent={}", encode(parent)));
    }
    if let Some(trigger) = filter.trigger {
        query.push(format!("trigger={trigger}"));
    }
    for label in &filter.labels {
        query.push(format!("label={}", encode(label)));
    }
    for (name, at) in [
        ("created_after", filter.created_after),
        ("created_before", filter.created_before),
    ] {
        if let Some(at) = at {
            let time = format_rfc3339(at)
                .ok_or_else(|| CliError::input(format!("{name}: {at} is out of range")))?;
            query.push(format!("{name}={}", encode(&time)));
        }
    }
    Ok(query)
}
