//! Local `ps` and `inspect-run` say why a queued run waits for its
//! project's quota (`--on-hard wait`), as a server's listing does: the
//! status `queued: project quota, tokens_per_day 110/100 tokens today
//! (UTC)`, `waiting` in the JSON, a `Waiting:` line; raised, the run goes.

use crate::common::Dispatch;
use crate::native_common::{Mock, native_agent, text};
use serde_json::{Value, json};

#[test]
fn a_run_held_by_its_projects_quota_says_why_in_ps_and_inspect() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        text("one", 100, 10),
        text("two", 100, 10),
        text("three", 100, 10)
    ]));
    let agent = native_agent(
        d.dir.path(),
        "billed",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nPRICE gpt-4o-mini INPUT 1000 OUTPUT 1000",
            mock.url()
        ),
    );
    let agent = agent.to_str().expect("utf-8");
    d.ok(&[
        "quota",
        "set",
        "search",
        "--tokens-per-day",
        "100",
        "--on-hard",
        "wait",
    ]);
    d.ok(&["run", agent, "--project", "search"]);
    let id = d.ok(&["run", agent, "--project", "search", "--detach"]);
    let why = "project quota, tokens_per_day 110/100 tokens today (UTC)";

    let table = d.ok(&["ps"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&id[..12]))
        .unwrap_or_else(|| panic!("the waiting run is listed: {table}"));
    assert!(row.contains(&format!("queued: {why}")), "{table}");
    let listed: Value = serde_json::from_str(&d.ok(&["ps", "--format", "json"])).expect("JSON");
    assert_eq!(listed[0]["id"], id.as_str(), "{listed:#}");
    assert_eq!(listed[0]["waiting"], why, "{listed:#}");

    let doc = d.inspect(&id);
    assert_eq!(doc["status"], "queued", "{doc:#}");
    assert_eq!(doc["waiting"], why, "{doc:#}");
    let human = d.ok(&["inspect-run", &id]);
    assert!(human.contains(&format!("Waiting:    {why}")), "{human}");

    // Another project's runs are not held back, and say nothing of it.
    let other = d.ok(&["run", agent, "--project", "payments", "--detach"]);
    assert_eq!(d.wait_terminal(&other)["status"], "succeeded");
    assert!(d.inspect(&other)["waiting"].is_null());
    assert_eq!(d.status(&id), "queued", "still held back");

    // Raised: the waiting run goes, and says nothing more.
    d.ok(&["quota", "set", "search", "--tokens-per-day", "1M"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert!(doc["waiting"].is_null(), "{doc:#}");
}
