//! Usage: tokens and cost per parcel and per day, and runs by state, over
//! the runs created in the last days (read a page at a time through
//! `api::runs::list_page`, like `GET /v1/runs`).

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use dispatch_core::now_ms;
use dispatch_core::time::format_rfc3339;
use dispatch_store::Run;
use maud::html;
use serde::Deserialize;

use super::charts;
use super::fmt;
use super::page::{self, Nav};
use super::session::Session;
use crate::api::runs::list_page;
use crate::api::{ApiResult, AppState};

/// The most runs the page adds up (the newest).
const MAX_RUNS: usize = 20_000;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    days: Option<u32>,
}

/// The runs created since `since` in the projects `token` may see, newest
/// first, at most `MAX_RUNS`.
async fn runs_since(
    state: &AppState,
    since: i64,
    token: Option<&dispatch_store::TokenRecord>,
) -> ApiResult<(Vec<Run>, bool)> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut pairs = vec![
            (
                "created_after".to_string(),
                format_rfc3339(since).unwrap_or_default(),
            ),
            ("limit".to_string(), "1000".to_string()),
        ];
        if let Some(c) = &cursor {
            pairs.push(("cursor".to_string(), c.clone()));
        }
        let (runs, next) = list_page(state, pairs, true, token).await?;
        all.extend(runs);
        if all.len() >= MAX_RUNS {
            all.truncate(MAX_RUNS);
            return Ok((all, true));
        }
        match next {
            Some(n) => cursor = Some(n),
            None => return Ok((all, false)),
        }
    }
}

fn day_of(ts: i64) -> String {
    format_rfc3339(ts).map_or_else(|| ts.to_string(), |s| s[..10].to_string())
}

/// `GET /ui/usage?days=N` (default 14, at most 90).
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Response {
    let days = match query {
        Ok(Query(q)) => q.days.unwrap_or(14).clamp(1, 90),
        Err(e) => return page::error(StatusCode::BAD_REQUEST, &format!("bad query string: {e}")),
    };
    let now = now_ms();
    let since = (now / DAY_MS - i64::from(days) + 1) * DAY_MS;
    let (runs, capped) = match runs_since(&state, since, session.token.as_ref()).await {
        Ok(r) => r,
        Err(e) => return page::error(e.status, &e.message),
    };
    let mut per_day: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
    for d in 0..i64::from(days) {
        per_day.insert(day_of(since + d * DAY_MS), (0.0, 0.0, 0.0));
    }
    let mut per_parcel: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
    let mut per_state: BTreeMap<String, f64> = BTreeMap::new();
    for r in &runs {
        let (tokens, cost) = (r.usage.total_tokens() as f64, r.usage.cost_usd);
        for entry in [
            per_day.entry(day_of(r.created_at)).or_default(),
            per_parcel.entry(r.parcel_name.clone()).or_default(),
        ] {
            entry.0 += tokens;
            entry.1 += cost;
            entry.2 += 1.0;
        }
        *per_state.entry(r.status().to_string()).or_default() += 1.0;
    }
    let series = |m: &BTreeMap<String, (f64, f64, f64)>, pick: fn(&(f64, f64, f64)) -> f64| {
        m.iter()
            .map(|(k, v)| (k.clone(), pick(v)))
            .collect::<Vec<_>>()
    };
    let mut parcels: Vec<(String, (f64, f64, f64))> = per_parcel.into_iter().collect();
    parcels.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(b.1.1.total_cmp(&a.1.1)));
    let tokens = |v: f64| fmt::count(v as u64);
    let cost = |v: f64| fmt::cost(v);
    let body = html! {
        h1 { "Usage" }
        form.filters method="get" action="/ui/usage" {
            div {
                label for="days" { "Days" }
                select #days name="days" {
                    @for d in [1u32, 7, 14, 30, 90] { option value=(d) selected[d == days] { (d) } }
                }
            }
            div.actions { button type="submit" { "Show" } }
        }
        p.muted {
            (runs.len()) " runs created since " (fmt::time(since))
            @if capped { " (the newest " (MAX_RUNS) " only)" }
        }
        div.grid2 {
            (charts::columns("Tokens per day", &series(&per_day, |v| v.0), tokens))
            (charts::columns("Cost per day (USD)", &series(&per_day, |v| v.1), cost))
            (charts::columns("Runs per day", &series(&per_day, |v| v.2), tokens))
            (charts::rows("Runs by state", &per_state.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>(), tokens))
        }
        (per_minute(&runs, now))
        h2 #parcels-title { "Per parcel" }
        div.table-wrap { table #per-parcel aria-labelledby="parcels-title" {
            thead { tr {
                th scope="col" { "Parcel" } th scope="col" .num { "Runs" }
                th scope="col" .num { "Tokens" } th scope="col" .num { "Cost" }
                th scope="col" .num { "Duration p50" } th scope="col" .num { "p95" } th scope="col" .num { "p99" }
            } }
            tbody { @for (name, (t, c, n)) in &parcels { tr {
                td { a href={ "/ui/runs?parcel=" (super::session::encode(name)) } { (name) } }
                td.num { (fmt::count(*n as u64)) }
                td.num { (fmt::count(*t as u64)) }
                td.num { (fmt::cost(*c)) }
                @let p = percentiles(&runs, name);
                td.num { (fmt::duration(p[0])) } td.num { (fmt::duration(p[1])) } td.num { (fmt::duration(p[2])) }
            } } }
        } }
        (charts::rows("Tokens per parcel", &parcels.iter().take(20).map(|(k, v)| (k.clone(), v.0)).collect::<Vec<_>>(), tokens))
    };
    page::page("Usage", Nav::Usage, &session, body)
}

/// The runs created in the last hour, per minute, by state.
fn per_minute(runs: &[Run], now: i64) -> maud::Markup {
    const MINUTE: i64 = 60_000;
    let first = now / MINUTE - 59;
    let labels: Vec<String> = (0..60)
        .map(|m| {
            let t = format_rfc3339((first + m) * MINUTE).unwrap_or_default();
            t.get(11..16).unwrap_or("").to_string()
        })
        .collect();
    let kinds = ["succeeded", "failed", "cancelled", "live"];
    let mut series: Vec<(&str, Vec<f64>)> = kinds.iter().map(|k| (*k, vec![0.0; 60])).collect();
    for r in runs {
        let Ok(m) = usize::try_from(r.created_at / MINUTE - first) else {
            continue;
        };
        let kind = match r.status() {
            dispatch_core::Status::Succeeded => 0,
            dispatch_core::Status::Failed | dispatch_core::Status::TimedOut => 1,
            s if s.is_terminal() => 2,
            _ => 3,
        };
        if let Some(n) = series[kind].1.get_mut(m) {
            *n += 1.0;
        }
    }
    charts::stacked("Runs per minute, the last hour, by state", &labels, &series)
}

/// The p50, p95 and p99 durations of parcel `name`'s finished runs.
fn percentiles(runs: &[Run], name: &str) -> [Option<i64>; 3] {
    let mut took: Vec<i64> = runs
        .iter()
        .filter(|r| r.parcel_name == name)
        .filter_map(|r| Some(r.state.ended_at()? - r.state.started_at()?))
        .collect();
    took.sort_unstable();
    let at = |q: f64| {
        let i = ((took.len() as f64 - 1.0) * q).round() as usize;
        took.get(i).copied()
    };
    [at(0.5), at(0.95), at(0.99)]
}
