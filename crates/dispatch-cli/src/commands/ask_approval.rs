//! A foreground `dispatch run` asks for its tool calls' approvals on the
//! terminal (`--tool-approval ask`): each pending call is shown with its
//! tool, arguments and risk, and answered with `y` (approve), `n` (deny,
//! with an optional reason) or `e` (approve with edited arguments, checked
//! against the tool's schema). The decision is recorded like `dispatch
//! approve`'s, by `$USER`.

use std::collections::HashSet;
use std::time::Duration;

use dispatch_core::{RunId, now_ms};
use dispatch_runtime::Layout;
use dispatch_store::sqlite::SqliteStore;
use dispatch_store::{Approval, Decision, ReliabilityStore};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

/// How often pending approvals are looked for.
const POLL: Duration = Duration::from_millis(100);

/// Asks for every tool approval of `run` until stdin ends (then returns;
/// the run goes on waiting for decisions from elsewhere).
pub async fn ask_inline(store: &SqliteStore, layout: &Layout, run: &RunId) {
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let mut asked: HashSet<String> = HashSet::new();
    loop {
        let pending = store
            .list_approvals(Some(run), true)
            .await
            .unwrap_or_default();
        for a in pending {
            if asked.contains(&a.id) || !a.details.as_ref().is_some_and(|d| d["tool"].is_string()) {
                continue;
            }
            asked.insert(a.id.clone());
            match ask(&mut input, &a).await {
                Some(decision) => {
                    match dispatch_runtime::approvals::decide(store, layout, run, &a.id, &decision)
                        .await
                    {
                        Ok(decided) => {
                            super::approvals::say_decided(&decided);
                            // Daemonless: a run the decision woke needs a helper.
                            if let Ok(r) = dispatch_store::RunStore::get_run(store, run).await {
                                dispatch_runtime::suspend::start_woken(layout, &r);
                            }
                        }
                        Err(e) => {
                            eprintln!("error: {e}");
                            asked.remove(&a.id); // ask again
                        }
                    }
                }
                None => return,
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Says on stderr, once per approval, what a paused foreground run waits
/// for and how to decide it (tool calls are left to [`ask_inline`] when it
/// asks). Never returns.
pub async fn announce_pauses(store: &SqliteStore, run: &RunId, asking: bool) {
    let mut said: HashSet<String> = HashSet::new();
    loop {
        let pending = store
            .list_approvals(Some(run), true)
            .await
            .unwrap_or_default();
        for a in pending {
            let tool = a.details.as_ref().is_some_and(|d| d["tool"].is_string());
            // A run in review said so when it was created.
            let review = a.id == dispatch_store::REVIEW_APPROVAL;
            if (tool && asking) || review || !said.insert(a.id.clone()) {
                continue;
            }
            let what = if a.summary.is_empty() {
                String::new()
            } else {
                format!(": {}", a.summary)
            };
            eprintln!(
                "\nrun {} is paused, waiting for approval `{}`{what}\n  decide with: dispatch approve {} {} (or dispatch deny …)",
                run.short(),
                a.id,
                run.short(),
                a.id
            );
        }
        // A durable wait: said once per suspension.
        if let Ok(r) = dispatch_store::RunStore::get_run(store, run).await
            && let dispatch_core::RunState::Suspended { wait, since, .. } = &r.state
            && wait.wait_for == dispatch_core::WaitFor::Signal
            && said.insert(format!("suspended-{since}"))
        {
            eprintln!(
                "\nrun {} is suspended (no process), waiting for signal `{}`\n  resume with: dispatch signal {} {} --value JSON",
                run.short(),
                wait.name,
                run.short(),
                wait.name
            );
        }
        tokio::time::sleep(POLL * 3).await;
    }
}

/// Asks about one call; `None` when stdin ended.
async fn ask(input: &mut Lines<BufReader<Stdin>>, a: &Approval) -> Option<Decision> {
    let details = a.details.clone().unwrap_or_default();
    let by = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "terminal".into());
    eprintln!(
        "\napproval {}: {}({}) · risk {}",
        a.id,
        details["tool"].as_str().unwrap_or("?"),
        details["arguments"],
        details["risk"].as_str().unwrap_or("?")
    );
    loop {
        eprint!("run it? [y]es / [n]o / [e]dit arguments: ");
        let line = input.next_line().await.ok().flatten()?;
        let decision =
            |d: &str, rationale: Option<String>, edited: Option<serde_json::Value>| Decision {
                decision: d.into(),
                by: by.clone(),
                rationale,
                at: now_ms(),
                input: edited,
            };
        match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => {
                return Some(decision(
                    "approve",
                    Some("approved at the terminal".into()),
                    None,
                ));
            }
            "n" | "no" => {
                eprint!("why (optional): ");
                let why = input.next_line().await.ok().flatten()?;
                let why = Some(why.trim().to_string()).filter(|w| !w.is_empty());
                return Some(decision(
                    "deny",
                    why.or(Some("denied at the terminal".into())),
                    None,
                ));
            }
            "e" | "edit" => {
                eprint!("arguments (JSON): ");
                let text = input.next_line().await.ok().flatten()?;
                match serde_json::from_str(&text) {
                    Ok(v) => {
                        return Some(decision(
                            "approve",
                            Some("approved with edited arguments at the terminal".into()),
                            Some(v),
                        ));
                    }
                    Err(e) => eprintln!("not JSON: {e}"),
                }
            }
            _ => eprintln!("answer y, n or e"),
        }
    }
}
