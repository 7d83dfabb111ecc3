//! `dispatch usage`: the cost report, from real runs of native agents billed
//! by the scripted mock model server, locally (SQLite) and through a server
//! on PostgreSQL (`GET /v1/usage`).

use crate::common;
use crate::native_common;
use crate::remote_common;

use common::Dispatch;
use native_common::{Mock, native_agent, text};
use remote_common::{Client, Server, postgres};
use serde_json::{Value, json};

/// USD per million tokens: a call of 100 in and 10 out costs 0.11.
const PRICED: &str = "PRICE gpt-4o-mini INPUT 1000 OUTPUT 1000";

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A report's rows as (key, runs, calls, input, output, cost in micro-USD).
fn rows(report: &Value) -> Vec<(String, u64, u64, u64, u64, i64)> {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["key"].as_str().expect("key").to_string(),
                r["runs"].as_u64().expect("runs"),
                r["calls"].as_u64().expect("calls"),
                r["input_tokens"].as_u64().expect("input"),
                r["output_tokens"].as_u64().expect("output"),
                (r["cost_usd"].as_f64().expect("cost") * 1e6).round() as i64,
            )
        })
        .collect()
}

fn row(
    key: &str,
    runs: u64,
    calls: u64,
    i: u64,
    o: u64,
    micro_usd: i64,
) -> (String, u64, u64, u64, u64, i64) {
    (key.to_string(), runs, calls, i, o, micro_usd)
}

#[test]
fn usage_sums_what_runs_spent_by_parcel_model_label_and_day_as_a_table_json_and_csv() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        text("one", 100, 10),
        text("two", 200, 20),
        text("three", 300, 30),
    ]));
    let alpha = native_agent(
        d.dir.path(),
        "alpha",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n{PRICED}",
            mock.url()
        ),
    );
    // A model without a price: its calls are counted, their cost is not.
    let beta = native_agent(
        d.dir.path(),
        "beta",
        &format!(
            "MODEL local-model PROVIDER openai_chat BASE_URL {}",
            mock.url()
        ),
    );
    let alpha = alpha.to_str().expect("utf-8");
    let beta = beta.to_str().expect("utf-8");
    d.ok(&["run", alpha]);
    d.ok(&["run", alpha, "--project", "search"]);
    d.ok(&["run", beta]);

    let report = json_of(&d.ok(&["usage", "--format", "json"]));
    assert_eq!(report["by"], "parcel");
    assert_eq!(
        rows(&report),
        vec![
            row("alpha", 2, 2, 300, 30, 330_000),
            row("beta", 1, 1, 300, 30, 0)
        ],
        "{report}"
    );
    assert_eq!(report["total"]["runs"], 3, "{report}");
    assert_eq!(report["total"]["calls"], 3);
    assert_eq!(report["total"]["unpriced_calls"], 1);

    let by_model = json_of(&d.ok(&["usage", "--by", "model", "--format", "json"]));
    assert_eq!(
        rows(&by_model),
        vec![
            row("gpt-4o-mini", 2, 2, 300, 30, 330_000),
            row("local-model", 1, 1, 300, 30, 0)
        ],
        "{by_model}"
    );
    assert_eq!(by_model["rows"][1]["unpriced_calls"], 1);

    // Local runs have no labels (labels route runs to a cluster's workers).
    let by_label = json_of(&d.ok(&["usage", "--by", "label", "--format", "json"]));
    assert_eq!(
        rows(&by_label),
        vec![row("(none)", 3, 3, 600, 60, 330_000)],
        "{by_label}"
    );

    let by_project = json_of(&d.ok(&["usage", "--by", "project", "--format", "json"]));
    assert_eq!(
        rows(&by_project),
        vec![
            row("search", 1, 1, 200, 20, 220_000),
            row("default", 2, 2, 400, 40, 110_000),
        ],
        "{by_project}"
    );
    let search = json_of(&d.ok(&["usage", "--project", "search", "--format", "json"]));
    assert_eq!(
        rows(&search),
        vec![row("alpha", 1, 1, 200, 20, 220_000)],
        "{search}"
    );

    let by_day = json_of(&d.ok(&["usage", "--by", "day", "--format", "json"]));
    assert_eq!(
        by_day["rows"].as_array().map(Vec::len),
        Some(1),
        "one day: {by_day}"
    );
    assert_eq!(by_day["total"]["calls"], 3);

    let csv = d.ok(&["usage", "--by", "model", "--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "model,runs,calls,input_tokens,output_tokens,cost_usd,estimated_calls,unpriced_calls"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with("gpt-4o-mini,2,2,300,30,0.33"), "{csv}");
    assert_eq!(lines[2], "local-model,1,1,300,30,0,0,1");

    let out = d.run(&["usage"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().next().expect("a header");
    assert!(
        header.starts_with("PARCEL") && header.contains("COST (USD)"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("alpha ") && l.contains("0.3300")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("total ") && l.contains("600")),
        "{table}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 call(s) have no price") && stderr.contains("PRICE"),
        "the unpriced call is said: {stderr}"
    );

    // A period before any of it: nothing, and a total of nothing.
    let old = json_of(&d.ok(&[
        "usage",
        "--since",
        "2025-01-01",
        "--until",
        "2025-02-01",
        "--format",
        "json",
    ]));
    assert_eq!(rows(&old), vec![]);
    assert_eq!(old["total"]["calls"], 0);
    assert_eq!(old["since"], "2025-01-01T00:00:00.000Z", "{old}");
    // The last minute holds all three calls.
    let recent = json_of(&d.ok(&["usage", "--since", "10m", "--format", "json"]));
    assert_eq!(recent["total"]["calls"], 3);
}

#[test]
fn bad_periods_and_groupings_are_refused_in_one_line() {
    let d = Dispatch::new();
    let err = d.fails(&["usage", "--since", "yesterday"], 125);
    assert!(
        err.contains("--since yesterday") && err.contains("hint: an age such as 30d"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = d.fails(&["usage", "--since", "1d", "--until", "2d"], 125);
    assert!(err.contains("the period is empty"), "{err}");
    let err = d.fails(&["usage", "--project", "No Spaces"], 125);
    assert!(err.contains("--project No Spaces"), "{err}");
    let err = d.fails(&["usage", "--by", "team"], 2);
    assert!(err.contains("parcel, model, label, day, project"), "{err}");
}

#[test]
fn a_server_on_postgres_answers_the_same_report_over_http_and_the_cli() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--labels", "team-a,eu"]);
    let client = Client::new(&server);
    let mock = Mock::start(json!([
        text("one", 100, 10),
        text("two", 200, 20),
        text("three", 300, 30)
    ]));
    let dir = native_agent(
        client.dir.path(),
        "gamma",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n{PRICED}",
            mock.url()
        ),
    );
    let dir = dir.to_str().expect("utf-8");
    let labels: [&[&str]; 3] = [
        &["--label", "team-a"],
        &["--label", "team-a", "--label", "eu"],
        &[],
    ];
    for extra in labels {
        let mut args = vec!["run", dir, "--detach"];
        args.extend_from_slice(extra);
        let id = client.ok(&args);
        client.ok(&["wait", &id]);
    }
    let report = json_of(&client.ok(&["usage", "--by", "model", "--format", "json"]));
    assert_eq!(
        rows(&report),
        vec![row("gpt-4o-mini", 3, 3, 600, 60, 660_000)],
        "{report}"
    );
    let by_label = json_of(&client.ok(&["usage", "--by", "label", "--format", "json"]));
    assert_eq!(
        rows(&by_label),
        vec![
            row("(none)", 1, 1, 300, 30, 330_000),
            row("team-a", 2, 2, 300, 30, 330_000),
            row("eu", 1, 1, 200, 20, 220_000),
        ],
        "a run counts under each of its labels: {by_label}"
    );
    assert_eq!(
        by_label["total"]["runs"], 3,
        "the total counts each run once"
    );
    let (status, by_day) = server.call("GET", "/v1/usage?by=day&since=1h", None);
    assert_eq!(status, 200, "{by_day}");
    assert_eq!(by_day["by"], "day");
    assert_eq!(by_day["total"]["calls"], 3, "{by_day}");
    assert_eq!(by_day["rows"].as_array().map(Vec::len), Some(1), "{by_day}");

    let (status, err) = server.call("GET", "/v1/usage?by=team", None);
    assert_eq!(status, 400);
    assert_eq!(err["code"], "bad_request");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("expected parcel, model, label, day or project")),
        "{err}"
    );
    let (status, err) = server.call("GET", "/v1/usage?since=1h&until=2h", None);
    assert_eq!(status, 400, "{err}");
    let (status, err) = server.call("GET", "/v1/usage?team=x", None);
    assert_eq!(status, 400, "an unknown parameter is refused: {err}");
}
