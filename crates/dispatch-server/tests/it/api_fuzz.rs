//! Property tests of the API's inputs over real HTTP on SQLite, one server
//! per test: whatever JSON body, query string, raw bytes or content type a
//! client sends to `POST /v1/runs`, an approval decision, `GET /v1/runs` or
//! a parcel upload, the server answers (a panicking handler would drop the
//! connection), never with a 5xx, every error in the `{code, message}`
//! shape, and it still answers `/healthz` afterwards.

use crate::common;
mod fuzz_http;

use std::time::Duration;

use common::{Db, TestServer, block_on};
use dispatch_store::{Approval, ReliabilityStore, SqliteStore};
use fuzz_http::{Body, check, encode, healthy, queued_run, run_cases, send, shorten};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};

/// Cases per endpoint family.
pub(crate) const CASES: u32 = 200;

/// The longest string a generated field holds (the body limit is 2 MiB).
const HUGE: usize = 100 * 1024;

/// Approvals the decision test asks for on its queued run.
const APPROVAL_IDS: &[&str] = &["send-email", "ünïcødé", "with space", "a:b*?<>|", "x.json"];

// ---------------------------------------------------------- generators ---

/// Strings that need care: control characters, NUL, a byte-order mark,
/// path tricks, non-ASCII, and (rarely) up to `long` bytes.
fn text_up_to(long: usize) -> BoxedStrategy<String> {
    prop_oneof![
        6 => "\\PC{0,16}",
        2 => "[\\x00-\\x1f\\x7f]{1,4}",
        2 => select(vec![
            "", " ", "\0", "a\0b", "\u{feff}", "💥", ".", "..", "/", "a/b", "%00", "\\", "\"",
            "null", "true", "0", "-1", "bench",
        ])
        .prop_map(str::to_string),
        1 => (1..long).prop_map(|n| "x".repeat(n)),
    ]
    .boxed()
}

/// For JSON fields: up to 100 KB (the body limit is 2 MiB).
fn text() -> BoxedStrategy<String> {
    text_up_to(HUGE)
}

/// For paths and query strings: up to 8 KB, well within the longest request
/// target hyper takes (see [`a_request_target_too_long_for_hyper_gets_the_error_shape`]).
fn uri_text() -> BoxedStrategy<String> {
    text_up_to(8 * 1024)
}

/// Any JSON value, a few levels deep, with small strings.
fn junk() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        "\\PC{0,8}".prop_map(Value::from),
        "[\\x00-\\x1f]{0,3}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// `[[[…]]]` or `{"a":{"a":…}}`, `depth` levels.
fn nested(depth: usize, arrays: bool) -> Value {
    (0..depth).fold(json!(1), |v, _| {
        if arrays {
            json!([v])
        } else {
            json!({ "a": v })
        }
    })
}

/// Durations as the API spells them, and near misses.
#[rustfmt::skip]
const DURATIONS: &[&str] = &[
    "30s", "1ms", "500ms", "5m", "2h", "1d", "0", "0s", "-1s", "1_000s", "1 s", " 30s", "", "s",
    "1w", "1.5s", "1S", "99999999999999999999d", "9223372036854775807ms",
    "9223372036854775808ms", "18446744073709551615ms", "106751991167d", "213503982336d",
    "1s..30s", "30s..1s", "..", "1s..", "..1s",
];

fn duration() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => select(DURATIONS).prop_map(Value::from),
        1 => (any::<u64>(), select(vec!["", "ms", "s", "m", "h", "d"]))
            .prop_map(|(n, u)| Value::from(format!("{n}{u}"))),
    ]
    .boxed()
}

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(vec![
            0i64,
            1,
            -1,
            i64::MAX,
            i64::MIN,
            u32::MAX as i64,
            u32::MAX as i64 + 1
        ])
        .prop_map(Value::from),
        select(vec![0.5f64, -0.0, 1e300, -1e300, 2.5, f64::MIN_POSITIVE]).prop_map(Value::from),
    ]
    .boxed()
}

/// A value where some field belongs that is most likely wrong for it: the
/// wrong type, text with NUL bytes or 100 KB, a number out of range, a bad
/// duration, deep nesting.
fn wrong() -> BoxedStrategy<Value> {
    prop_oneof![
        junk(),
        text().prop_map(Value::from),
        number(),
        duration(),
        (1usize..200, any::<bool>()).prop_map(|(d, arrays)| nested(d, arrays)),
    ]
    .boxed()
}

/// `object` with up to two of its fields (or unknown ones) given wrong
/// values: a third of the cases stay valid, the others are wrong in a way
/// that still looks like a request.
fn corrupted(
    object: BoxedStrategy<Map<String, Value>>,
    fields: &'static [&'static str],
) -> BoxedStrategy<Value> {
    let mut names = fields.to_vec();
    names.extend(["", "\0", "Parcel", "unknown"]);
    let damage = proptest::collection::vec((select(names), wrong()), 0..3);
    (object, damage)
        .prop_map(|(mut object, damage)| {
            for (k, v) in damage {
                object.insert(k.to_string(), v);
            }
            Value::Object(object)
        })
        .boxed()
}

/// The fields that are `Some`, as an object.
fn object(fields: Vec<(&'static str, Option<Value>)>) -> Map<String, Value> {
    fields
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .collect()
}

fn maybe<S: Strategy + 'static>(s: S) -> BoxedStrategy<Option<Value>>
where
    S::Value: Into<Value>,
{
    proptest::option::weighted(0.4, s.prop_map(Into::into)).boxed()
}

const POLICY_FIELDS: &[&str] = &[
    "retries",
    "backoff",
    "timeout",
    "step_timeout",
    "max_tokens",
    "max_cost",
];

/// `policy`: valid overrides of the parcel's RETRY / TIMEOUT / LIMIT.
fn policy() -> BoxedStrategy<Map<String, Value>> {
    (
        maybe(0u32..10),
        maybe(select(vec!["1s..30s", "500ms", "2s..2s"])),
        maybe(select(vec!["30s", "5m", "1h"])),
        maybe(select(vec!["5s", "1m"])),
        maybe(1u64..1_000_000),
        maybe(0.01f64..100.0),
    )
        .prop_map(|(retries, backoff, timeout, step, tokens, cost)| {
            let values = [retries, backoff, timeout, step, tokens, cost];
            object(POLICY_FIELDS.iter().copied().zip(values).collect())
        })
        .boxed()
}

const CREATE_FIELDS: &[&str] = &[
    "parcel",
    "payload",
    "operation",
    "parent_id",
    "priority",
    "labels",
    "callback_url",
    "queue_timeout",
    "idempotency_key",
    "dedup",
    "force",
    "session",
    "policy",
];

/// A valid `POST /v1/runs` request: a parcel reference (name, digest,
/// digest prefix) and any of the other fields.
fn run_request(parcels: Vec<String>, runs: Vec<String>) -> BoxedStrategy<Map<String, Value>> {
    let payload = prop_oneof![
        4 => junk(),
        1 => text().prop_map(Value::from),
        1 => (1usize..100, any::<bool>()).prop_map(|(d, arrays)| nested(d, arrays)),
    ];
    let key = prop_oneof![3 => "\\PC{1,32}", 1 => (1usize..HUGE).prop_map(|n| "k".repeat(n))];
    let first = (
        select(parcels),
        maybe(payload),
        maybe(select(vec!["job", "heartbeat", "chat"])),
        maybe(select(runs)),
        maybe(any::<i64>()),
        maybe(proptest::collection::vec("[a-z0-9]{1,8}", 0..3)),
        maybe(Just("http://127.0.0.1:9/done")),
    );
    let second = (
        maybe(select(vec!["30s", "5m", "1h", "2d", "1000"])),
        maybe(key),
        maybe(any::<bool>()),
        maybe(any::<bool>()),
        maybe("[a-z0-9][a-z0-9._-]{0,20}"),
        maybe(policy().prop_map(Value::Object)),
    );
    (first, second)
        .prop_map(
            |((parcel, payload, op, parent, priority, labels, callback), rest)| {
                let (queue_timeout, key, dedup, force, session, policy) = rest;
                let values = [
                    Some(Value::from(parcel)),
                    payload,
                    op,
                    parent,
                    priority,
                    labels,
                    callback,
                    queue_timeout,
                    key,
                    dedup,
                    force,
                    session,
                    policy,
                ];
                object(CREATE_FIELDS.iter().copied().zip(values).collect())
            },
        )
        .boxed()
}

/// A `POST /v1/runs` body: a run request, valid or with wrong fields (also
/// inside `policy`); or any other JSON; or JSON nested past any limit.
fn create_body(parcels: Vec<String>, runs: Vec<String>) -> BoxedStrategy<Value> {
    let bad_policy = corrupted(policy(), POLICY_FIELDS);
    let with_bad_policy = (run_request(parcels.clone(), runs.clone()), bad_policy).prop_map(
        |(mut request, policy)| {
            request.insert("policy".into(), policy);
            Value::Object(request)
        },
    );
    prop_oneof![
        8 => corrupted(run_request(parcels, runs), CREATE_FIELDS),
        2 => with_bad_policy,
        1 => junk(),
        1 => (1usize..300, any::<bool>()).prop_map(|(d, arrays)| nested(d, arrays)),
    ]
    .boxed()
}

// --------------------------------------------------------------- tests ---

/// The ways a run request may name a parcel: name, digest, digest prefix.
fn parcel_refs(server: &TestServer, name: &str) -> Vec<String> {
    let (_, list) = server.get("/v1/parcels");
    let digest = list["parcels"][0]["digest"].as_str().expect("a digest");
    vec![
        name.to_string(),
        digest.to_string(),
        digest[..8].to_string(),
    ]
}

#[test]
fn any_run_request_is_answered_without_a_5xx() {
    let server = TestServer::start(Db::Sqlite, 0).expect("a SQLite server");
    let parcel = server.noop_parcel();
    let parcels = parcel_refs(&server, &parcel);
    let run = queued_run(&server, &parcel, json!({}));
    let runs = vec![run.clone(), run[..8].to_string()];
    let addr = server.addr;
    let bodies = create_body(parcels, runs).prop_map(|v| Body::from(&v));
    run_cases(bodies, |body| {
        let answer = send(addr, "POST", "/v1/runs", Some("application/json"), &body.0);
        let (status, answer) = check(answer, "POST /v1/runs")?;
        if (200..300).contains(&status) {
            let id = answer["id"].as_str();
            prop_assert!(id.is_some(), "{} without an id: {}", status, answer);
        }
        Ok(())
    });
    healthy(&server);
}

/// A path segment: mostly one of `known`, else text (percent-encoded), an
/// encoding trick, or a long name.
fn segment(known: Vec<String>) -> BoxedStrategy<String> {
    prop_oneof![
        8 => select(known).prop_map(|s| encode(&s)),
        2 => uri_text().prop_map(|s| encode(&s)),
        1 => select(vec![
            "", ".", "..", ".hidden", "%00", "%2F", "a%2Fb", "%2E%2E", "%C3%28", "%", "x%zz",
        ])
        .prop_map(str::to_string),
        1 => (129usize..400).prop_map(|n| "y".repeat(n)),
    ]
    .boxed()
}

const DECISION_FIELDS: &[&str] = &["decision", "by", "rationale"];

/// A decision, valid or with wrong fields; or other JSON; or bytes.
fn decision_body() -> BoxedStrategy<Body> {
    let valid = (
        select(vec!["approve", "deny"]),
        prop_oneof!["[a-z]{1,8}", "\\PC{1,12}"],
        maybe(prop_oneof![Just(Value::Null), text().prop_map(Value::from)]),
    )
        .prop_map(|(decision, by, rationale)| {
            let values = [Some(decision.into()), Some(by.into()), rationale];
            object(DECISION_FIELDS.iter().copied().zip(values).collect())
        })
        .boxed();
    prop_oneof![
        8 => corrupted(valid, DECISION_FIELDS).prop_map(|v| Body::from(&v)),
        1 => junk().prop_map(|v| Body::from(&v)),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Body),
    ]
    .boxed()
}

#[test]
fn any_approval_decision_is_answered_without_a_5xx() {
    let server = TestServer::start(Db::Sqlite, 0).expect("a SQLite server");
    let parcel = server.noop_parcel();
    let waiting = queued_run(&server, &parcel, json!({}));
    let done = queued_run(&server, &parcel, json!({}));
    let (status, body) = server.post(&format!("/v1/runs/{done}/cancel"), &json!({}));
    assert_eq!(status, 200, "{body}");
    let store = SqliteStore::open(&server.layout().db(), Duration::from_secs(5)).expect("opens");
    let ask = |run: &str, id: &str| {
        let approval = Approval {
            run_id: run.parse().expect("a run id"),
            id: id.to_string(),
            attempt: 1,
            summary: "fuzz".into(),
            requested_at: dispatch_core::now_ms(),
            deadline: None,
            decision: None,
            decided_by: None,
            rationale: None,
            decided_at: None,
            details: None,
            input: None,
        };
        block_on(store.request_approval(&approval)).expect("an approval is recorded");
    };
    for id in APPROVAL_IDS {
        ask(&waiting, id);
    }
    ask(&done, "late");
    let long_id = "z".repeat(128);
    ask(&waiting, &long_id);

    let runs = vec![
        waiting.clone(),
        waiting[..8].to_string(),
        done.clone(),
        "0".into(),
    ];
    let mut approvals: Vec<String> = APPROVAL_IDS.iter().map(|s| s.to_string()).collect();
    approvals.extend(["late".to_string(), long_id, "nope".into()]);
    let addr = server.addr;
    let case = (segment(runs), segment(approvals), decision_body());
    run_cases(case, |(run, approval, body)| {
        let target = format!("/v1/runs/{run}/approvals/{approval}");
        let answer = send(addr, "POST", &target, Some("application/json"), &body.0);
        let (status, answer) = check(answer, &target)?;
        if status == 200 {
            prop_assert!(answer["decision"].is_string(), "{}", answer);
        }
        Ok(())
    });
    healthy(&server);
}

/// Values for any list filter: statuses, times, ages, limits, ids, names.
#[rustfmt::skip]
const FILTER_VALUES: &[&str] = &[
    "queued", "running", "succeeded,failed", "queued,bogus", ",", "bogus", "QUEUED", "job",
    "heartbeat", "gpu", "gpu,eu", "a,,b", "30s", "0s", "10m", "7d", "99999999999d",
    "9223372036854775807s", "-1s", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00",
    "2026-01-01T00:00:00+01:00", "2026-01-01T00:00:00 01:00", "+262143-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "0", "1", "-1", "1000", "1001",
    "18446744073709551616", "1.5", "", "true", "false", "ffffffffffffffffffffffffffffffff",
    "00000000000000000000000000000000", "fff", "zz", "bench",
];

fn query(run: String) -> BoxedStrategy<String> {
    let key = prop_oneof![
        6 => select(vec![
            "status", "label", "created_after", "created_before", "limit", "cursor", "parcel",
            "operation", "parent", "pending", "run",
        ])
        .prop_map(str::to_string),
        1 => "\\PC{0,6}",
    ];
    let mut values: Vec<String> = FILTER_VALUES.iter().map(|s| s.to_string()).collect();
    values.extend([run.clone(), run[..6].to_string()]);
    let value = prop_oneof![4 => select(values), 1 => uri_text()];
    let pair = (key, value).prop_map(|(k, v)| format!("{}={}", encode(&k), encode(&v)));
    let raw = select(vec![
        "", "&", "=", "k", "=v", "a=b=c", "%", "%zz", "%F0%9F", "+", "%00=x",
    ])
    .prop_map(str::to_string);
    proptest::collection::vec(prop_oneof![6 => pair, 1 => raw], 0..6)
        .prop_map(|parts| parts.join("&"))
        .boxed()
}

#[test]
fn any_list_query_is_answered_without_a_5xx() {
    let server = TestServer::start(Db::Sqlite, 0).expect("a SQLite server");
    let parcel = server.noop_parcel();
    let run = queued_run(&server, &parcel, json!({"labels": ["gpu"]}));
    queued_run(
        &server,
        &parcel,
        json!({"labels": ["gpu", "eu"], "priority": 3}),
    );
    queued_run(&server, &parcel, json!({"operation": "heartbeat"}));
    let addr = server.addr;
    let case = (select(vec!["/v1/runs", "/v1/approvals"]), query(run));
    run_cases(case, |(path, query)| {
        let target = format!("{path}?{query}");
        let (status, answer) = check(send(addr, "GET", &target, None, b""), &target)?;
        if status == 200 {
            let list = if path == "/v1/runs" {
                "runs"
            } else {
                "approvals"
            };
            prop_assert!(answer[list].is_array(), "{}", answer);
        }
        Ok(())
    });
    healthy(&server);
}

/// Bodies that are not JSON, or nearly are.
#[rustfmt::skip]
const RAW_BODIES: &[&str] = &[
    "", " ", "\n", "null", "[]", "{}", "{", "}", "{\"parcel\":", "{\"parcel\":\"bench\"",
    "{\"parcel\":\"bench\"}}", "{\"parcel\":\"bench\"} trailing", "{\"parcel\":\"a\",\"parcel\":\"bench\"}",
    "{\"parcel\":\"bench\",\"payload\":NaN}", "{\"parcel\":\"bench\",\"priority\":1e999}",
    "{\"parcel\":\"bench\",\"priority\":-0}", "{\"parcel\":\"bench\",\"priority\":01}",
    "{\"parcel\":\"ben\u{0}ch\"}", "{\"parcel\":\"bench\\u0000\"}", "{\"\\u0000\":1}",
    "{\"parcel\":\"\\ud800\"}", "{'parcel':'bench'}", "parcel=bench", "\u{feff}{\"parcel\":\"bench\"}",
    "{\"decision\":\"approve\",\"by\":\"ada\"}", "{\"files\":{\"Agentfile\":\"NAME a\\nFROM noop\\n\"}}",
    "{\"files\":{\"../Agentfile\":\"x\"}}", "{\"files\":[]}", "{\"payload\":{}}",
];

fn raw_body() -> BoxedStrategy<Body> {
    prop_oneof![
        3 => select(RAW_BODIES).prop_map(|s| Body(s.as_bytes().to_vec())),
        2 => proptest::collection::vec(any::<u8>(), 0..256).prop_map(Body),
        1 => "\\PC{0,64}".prop_map(|s| Body(s.into_bytes())),
        1 => select(RAW_BODIES).prop_map(|s| {
            // UTF-16LE, as a client on the wrong encoding would send it.
            Body(s.encode_utf16().flat_map(u16::to_le_bytes).collect())
        }),
        1 => (1usize..512).prop_map(|n| Body(format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes())),
    ]
    .boxed()
}

#[test]
fn raw_bodies_and_wrong_content_types_are_answered_without_a_5xx() {
    let server = TestServer::start(Db::Sqlite, 0).expect("a SQLite server");
    let parcel = server.noop_parcel();
    let run = queued_run(&server, &parcel, json!({}));
    let targets = vec![
        "/v1/runs".to_string(),
        format!("/v1/runs/{run}/approvals/send-email"),
        format!("/v1/dead-letters/{run}/replay"),
        "/v1/parcels".to_string(),
    ];
    let content_types = vec![
        Some("application/json"),
        Some("application/json; charset=utf-16"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/octet-stream"),
        Some(""),
        None,
    ];
    let addr = server.addr;
    let case = (select(targets), select(content_types), raw_body());
    run_cases(case, |(target, content_type, body)| {
        let answer = send(addr, "POST", &target, content_type, &body.0);
        check(answer, &target)?;
        Ok(())
    });
    healthy(&server);
}

/// An uploaded parcel's files: an Agentfile of directive soup, and files
/// with odd names and contents.
fn upload_body() -> BoxedStrategy<Body> {
    let line = (
        select(vec![
            "NAME", "FROM", "COMMAND", "COPY", "SKILL", "PROMPT", "IDENTITY", "SECRET", "ENV",
            "LIMIT", "RETRY", "TIMEOUT", "SCHEDULE", "LISTEN", "MODEL", "REQUIRES", "BOGUS",
        ]),
        select(vec![
            "a",
            "noop",
            "agent",
            "sh a.sh",
            "a.sh",
            "a.md",
            "dir/",
            ".",
            "..",
            "../x",
            "/etc",
            "K",
            "A=1",
            "TOKENS 5",
            "COST -1",
            "3 BACKOFF 1s..30s",
            "0",
            "30s",
            "@hourly",
            "\"unterminated",
            "m KEY K",
        ]),
    )
        .prop_map(|(d, a)| format!("{d} {a}"));
    let agentfile = (
        select(vec!["", "NAME a\nFROM noop\n", "NAME a\nCOMMAND sh a.sh\n"]),
        proptest::collection::vec(line, 0..6),
    )
        .prop_map(|(head, lines)| format!("{head}{}\n", lines.join("\n")));
    let name = prop_oneof![
        3 => select(vec!["a.sh", "a.md", "dir/x", "Agentfile/x", "x/../y", "./z", ".git/c"])
            .prop_map(str::to_string),
        1 => text(),
    ];
    let files = (
        agentfile,
        proptest::collection::btree_map(name, text(), 0..3),
    )
        .prop_map(|(agentfile, mut files)| {
            files.insert("Agentfile".to_string(), agentfile);
            Body::from(&json!({ "files": files }))
        });
    prop_oneof![
        6 => files,
        1 => junk().prop_map(|v| Body::from(&json!({ "files": v }))),
    ]
    .boxed()
}

#[test]
fn any_parcel_upload_is_answered_without_a_5xx() {
    let server = TestServer::start(Db::Sqlite, 0).expect("a SQLite server");
    let addr = server.addr;
    run_cases(upload_body(), |body| {
        let answer = send(
            addr,
            "POST",
            "/v1/parcels",
            Some("application/json"),
            &body.0,
        );
        let (status, answer) = check(answer, "POST /v1/parcels")?;
        if status == 201 {
            prop_assert!(answer["digest"].is_string(), "{}", answer);
        }
        Ok(())
    });
    healthy(&server);
}

/// A run request for `parcel` whose payload is `depth` arrays deep.
fn deep_payload(parcel: &str, depth: usize) -> (Vec<u8>,) {
    let payload = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let parcel = serde_json::to_string(parcel).expect("a JSON string");
    (format!(r#"{{"parcel":{parcel},"payload":{payload}}}"#).into_bytes(),)
}

/// Every payload `POST /v1/runs` accepts can be read back by a client
/// parsing JSON as the CLI does (serde_json's default depth limit, 128).
#[test]
fn an_accepted_payload_of_any_depth_can_be_read_back() {
    let server = TestServer::start(Db::Sqlite, 0).expect("a SQLite server");
    let parcel = server.noop_parcel();
    let addr = server.addr;
    run_cases(1usize..160, |depth| {
        let body = deep_payload(&parcel, depth);
        let answer = send(addr, "POST", "/v1/runs", Some("application/json"), &body.0);
        let (status, run) = check(answer, &format!("a payload {depth} deep"))?;
        if status != 201 {
            return Ok(());
        }
        let id = run["id"].as_str().unwrap_or_default().to_string();
        prop_assert!(
            !id.is_empty(),
            "201 without an id: {}",
            shorten(&run.to_string())
        );
        for target in [format!("/v1/runs/{id}"), "/v1/runs?limit=1".to_string()] {
            let (status, text) = send(addr, "GET", &target, None, b"")
                .map_err(|e| TestCaseError::fail(format!("no answer to {target}: {e}")))?;
            prop_assert_eq!(status, 200);
            let parsed = serde_json::from_str::<Value>(&text);
            prop_assert!(
                parsed.is_ok(),
                "GET {} after a payload {} deep: {:?}",
                target,
                depth,
                parsed.err()
            );
        }
        Ok(())
    });
    healthy(&server);
}
