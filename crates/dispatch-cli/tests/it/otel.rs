//! Traces over OTLP: `dispatch server --otlp-endpoint` sends the trace of
//! every finished run (run → attempts → steps, model calls, tool calls) to
//! a real OTLP/HTTP receiver on loopback, which decodes the protobuf with
//! `opentelemetry-proto`; a `traceparent` given on `POST /v1/runs` puts the
//! run in the caller's trace and reaches the agent as `TRACEPARENT`; an
//! endpoint that does not answer never holds runs up.

use crate::common;
use crate::native_common;
use crate::remote_common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Dispatch;
use native_common::{Mock, native_agent, text};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use remote_common::{Client, Server};
use serde_json::{Value, json};

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.as_ref()?.value.clone())
                            .map(|v| match v {
                                Any::StringValue(s) => s,
                                other => format!("{other:?}"),
                            })
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for span in ss.spans {
                                kept.lock().expect("lock").push((service.clone(), span));
                            }
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        rt.spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            spans,
            _rt: rt,
        }
    }

    /// The spans of trace `trace` (hex), once there are `n` of them.
    fn trace(&self, trace: &str, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: Vec<Span> = self
                .spans
                .lock()
                .expect("lock")
                .iter()
                .filter(|(_, s)| hex(&s.trace_id) == trace)
                .map(|(_, s)| s.clone())
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace}: {} of {n} spans arrived: {:#?}",
                got.len(),
                got.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span `{name}` in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

fn attr(span: &Span, key: &str) -> Option<Any> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.clone())
}

const GIVEN: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[test]
fn a_run_with_steps_and_a_tool_call_is_a_span_tree_in_the_callers_trace() {
    let receiver = Receiver::start();
    let server = Server::start(&["--otlp-endpoint", &receiver.url]);
    let client = Client::new(&server);
    let agent = client.agent(
        "traced",
        r#"echo '{"type":"step","name":"fetch"}' >> "$DISPATCH_EVENTS"
echo '{"type":"tool_call","name":"grep","duration_ms":60000,"ok":true}' >> "$DISPATCH_EVENTS"
echo '{"type":"step","name":"fetch","phase":"end"}' >> "$DISPATCH_EVENTS"
echo '{"type":"step","name":"answer"}' >> "$DISPATCH_EVENTS"
printf '{"traceparent":"%s"}' "$TRACEPARENT" > "$DISPATCH_OUTPUT"
"#,
    );
    // Published by a first run; then created through the API under a traceparent.
    let first = client.ok(&["run", "-d", &agent]);
    server.wait_for(&format!("/v1/runs/{first}"), |r| r["status"] == "succeeded");
    let body = json!({"parcel": "traced"}).to_string();
    let response = dispatch_server::client::request(
        &format!("http://{}", server.host),
        "POST",
        "/v1/runs",
        &[("traceparent", GIVEN), ("content-type", "application/json")],
        Some(body.as_bytes()),
    )
    .expect("the server answers");
    assert_eq!(response.status, 201);
    let run: Value = serde_json::from_str(&response.text().expect("text")).expect("JSON");
    let id = run["id"].as_str().expect("an id").to_string();
    let run = server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "succeeded");

    let spans = receiver.trace("0af7651916cd43dd8448eb211c80319c", 5);
    let root = named(&spans, "run traced");
    assert_eq!(
        hex(&root.parent_span_id),
        "b7ad6b7169203331",
        "a child of the caller's span"
    );
    assert_eq!(
        attr(root, "dispatch.run.id"),
        Some(Any::StringValue(id.clone()))
    );
    // The tool call says it took a minute, longer than its attempt has
    // lived: its span is still inside the attempt.
    let attempt = named(&spans, "attempt 1");
    assert_eq!(attempt.parent_span_id, root.span_id);
    for name in ["step fetch", "step answer", "execute_tool grep"] {
        let span = named(&spans, name);
        assert_eq!(
            span.parent_span_id, attempt.span_id,
            "{name} is in the attempt"
        );
        assert!(
            span.start_time_unix_nano >= attempt.start_time_unix_nano,
            "{name}"
        );
        assert!(
            span.end_time_unix_nano <= attempt.end_time_unix_nano + 1_000_000,
            "{name}"
        );
    }
    assert!(root.start_time_unix_nano <= attempt.start_time_unix_nano);
    // The agent's TRACEPARENT: the run's span in the caller's trace.
    assert_eq!(
        run["output"]["traceparent"],
        format!(
            "00-0af7651916cd43dd8448eb211c80319c-{}-01",
            hex(&root.span_id)
        ),
        "{run}"
    );
    // The first run, with no traceparent, has a trace of its own: its id.
    let own = receiver.trace(&first, 5);
    assert_eq!(named(&own, "run traced").parent_span_id, Vec::<u8>::new());
}

/// `POST /v1/runs` of parcel `parcel` with `payload`, under `traceparent`
/// when given; the new run's id.
fn post_run(server: &Server, parcel: &str, payload: Value, traceparent: Option<&str>) -> String {
    post(
        server,
        json!({"parcel": parcel, "payload": payload}),
        traceparent,
    )
}

/// `POST /v1/runs` with `body`; the new run's id.
fn post(server: &Server, body: Value, traceparent: Option<&str>) -> String {
    let body = body.to_string();
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(traceparent.map(|t| ("traceparent", t)));
    let response = dispatch_server::client::request(
        &format!("http://{}", server.host),
        "POST",
        "/v1/runs",
        &headers,
        Some(body.as_bytes()),
    )
    .expect("the server answers");
    let status = response.status;
    let text = response.text().expect("text");
    assert_eq!(status, 201, "{text}");
    let run: Value = serde_json::from_str(&text).expect("JSON");
    run["id"].as_str().expect("an id").to_string()
}

#[test]
fn noop_runs_finished_in_a_batch_are_traced_from_what_the_worker_held() {
    let receiver = Receiver::start();
    let server = Server::start(&["--otlp-endpoint", &receiver.url]);
    let client = Client::new(&server);
    let dir = client.dir.path().join("quiet");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("Agentfile"), "FROM noop\nNAME quiet\n").expect("Agentfile");
    let first = client.ok(&["run", "-d", dir.to_str().expect("utf-8")]);
    let given = post_run(&server, "quiet", json!({"n": 1}), Some(GIVEN));
    let plain = post_run(&server, "quiet", json!({"n": 2}), None);
    for id in [&first, &given, &plain] {
        server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "succeeded");
    }
    for (trace, id, parent) in [
        (
            "0af7651916cd43dd8448eb211c80319c",
            &given,
            "b7ad6b7169203331",
        ),
        (plain.as_str(), &plain, ""),
        (first.as_str(), &first, ""),
    ] {
        let spans = receiver.trace(trace, 2);
        let root = named(&spans, "run quiet");
        assert_eq!(hex(&root.parent_span_id), parent, "run {id}");
        assert_eq!(
            attr(root, "dispatch.run.id"),
            Some(Any::StringValue(id.clone()))
        );
        assert_eq!(
            attr(root, "dispatch.run.status"),
            Some(Any::StringValue("succeeded".into()))
        );
        let attempt = named(&spans, "attempt 1");
        assert_eq!(attempt.parent_span_id, root.span_id, "run {id}");
        assert_eq!(attr(attempt, "process.exit.code"), Some(Any::IntValue(0)));
        assert!(root.end_time_unix_nano >= attempt.end_time_unix_nano);
    }
}

#[test]
fn runs_that_end_without_a_worker_are_traced_with_their_end_status() {
    let receiver = Receiver::start();
    let server = Server::start(&["--otlp-endpoint", &receiver.url]);
    let client = Client::new(&server);
    let hello = client.agent("hello", "echo hello\n");
    let first = client.ok(&["run", "-d", &hello]);
    server.wait_for(&format!("/v1/runs/{first}"), |r| r["status"] == "succeeded");
    // The server's workers have no labels: nobody may take these.
    let cancelled = post(
        &server,
        json!({"parcel": "hello", "payload": {"n": 1}, "labels": ["gpu"]}),
        None,
    );
    let timed_out = post(
        &server,
        json!({"parcel": "hello", "payload": {"n": 2}, "labels": ["gpu"], "queue_timeout": "200ms"}),
        None,
    );
    let (status, run) = server.call("POST", &format!("/v1/runs/{cancelled}/cancel"), None);
    assert_eq!(status, 200, "{run}");
    server.wait_for(&format!("/v1/runs/{timed_out}"), |r| {
        r["status"] == "timed_out"
    });
    for (id, status) in [(&cancelled, "cancelled"), (&timed_out, "timed_out")] {
        let spans = receiver.trace(id, 1);
        let root = named(&spans, "run hello");
        assert_eq!(
            attr(root, "dispatch.run.status"),
            Some(Any::StringValue(status.into())),
            "run {id}"
        );
        let code = root.status.as_ref().map(|s| s.code);
        assert_eq!(code, Some(2), "run {id}: an error status (2), {root:?}");
    }
}

#[test]
fn a_native_run_traces_its_model_and_tool_calls_with_genai_attributes() {
    let receiver = Receiver::start();
    let server = Server::start(&["--otlp-endpoint", &format!("{}/", receiver.url)]);
    let client = Client::new(&server);
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "list_files", "arguments": {"path": "."}}],
         "usage": {"input_tokens": 21, "output_tokens": 4}},
        text("{\"done\":true}", 30, 7),
    ]));
    let dir = native_agent(
        client.dir.path(),
        "native",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL BUILTIN list_files",
            mock.url()
        ),
    );
    let id = client.ok(&["run", "-d", dir.to_str().expect("utf-8")]);
    server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "succeeded");
    let spans = receiver.trace(&id, 5);
    let root = named(&spans, "run native");
    // The tool call says it took a minute, longer than its attempt has
    // lived: its span is still inside the attempt.
    let attempt = named(&spans, "attempt 1");
    assert_eq!(attempt.parent_span_id, root.span_id);
    let chats: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "chat gpt-4o-mini")
        .collect();
    assert_eq!(chats.len(), 2, "one span per model call");
    for chat in &chats {
        assert_eq!(chat.parent_span_id, attempt.span_id);
        assert_eq!(
            attr(chat, "gen_ai.request.model"),
            Some(Any::StringValue("gpt-4o-mini".into()))
        );
    }
    let tokens: Vec<_> = chats
        .iter()
        .map(|c| {
            (
                attr(c, "gen_ai.usage.input_tokens"),
                attr(c, "gen_ai.usage.output_tokens"),
            )
        })
        .collect();
    assert!(
        tokens.contains(&(Some(Any::IntValue(30)), Some(Any::IntValue(7)))),
        "{tokens:?}"
    );
    let reasons: Vec<String> = chats
        .iter()
        .filter_map(|c| match attr(c, "gen_ai.response.finish_reasons") {
            Some(Any::ArrayValue(a)) => a.values.first().and_then(|v| match &v.value {
                Some(Any::StringValue(s)) => Some(s.clone()),
                _ => None,
            }),
            _ => None,
        })
        .collect();
    assert!(reasons.contains(&"stop".to_string()), "{reasons:?}");
    let tool = named(&spans, "execute_tool list_files");
    assert_eq!(tool.parent_span_id, attempt.span_id);
    assert_eq!(
        attr(tool, "gen_ai.tool.name"),
        Some(Any::StringValue("list_files".into()))
    );
    let services: Vec<String> = receiver
        .spans
        .lock()
        .expect("lock")
        .iter()
        .map(|(s, _)| s.clone())
        .collect();
    assert!(
        services.iter().all(|s| s == "dispatch-server"),
        "{services:?}"
    );
}

#[test]
fn an_endpoint_that_does_not_answer_never_holds_runs_up() {
    // Port 1 on loopback: nothing listens there.
    let server = Server::start(&["--otlp-endpoint", "http://127.0.0.1:1"]);
    let client = Client::new(&server);
    let agent = client.agent("quick", "echo hi\n");
    for _ in 0..3 {
        let out = client.run(&["run", &agent]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    let (status, _) = server.call("GET", "/healthz", None);
    assert_eq!(status, 200);
}

#[test]
fn bad_endpoints_and_traceparents_are_refused_in_one_line() {
    let d = Dispatch::new();
    for (endpoint, says) in [
        ("not a url", "not a URL"),
        ("https://collector:4318", "only http://"),
        ("ftp://collector", "only http://"),
    ] {
        for cmd in ["server", "worker"] {
            let mut args = vec![cmd, "--otlp-endpoint", endpoint];
            if cmd == "server" {
                args.extend(["--listen", "127.0.0.1:0"]);
            }
            let e = d.fails(&args, 125);
            assert!(e.contains(says), "{cmd} {endpoint}: {e}");
            assert_eq!(
                e.trim().lines().count(),
                1,
                "{cmd} {endpoint}: one line: {e}"
            );
        }
    }
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let agent = client.agent("plain", "echo hi\n");
    client.ok(&["run", &agent]);
    let body = json!({"parcel": "plain"}).to_string();
    for bad in [
        "00-xyz",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ] {
        let response = dispatch_server::client::request(
            &format!("http://{}", server.host),
            "POST",
            "/v1/runs",
            &[("traceparent", bad), ("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .expect("the server answers");
        assert_eq!(response.status, 400, "{bad}");
        let err: Value = serde_json::from_str(&response.text().expect("text")).expect("JSON");
        assert_eq!(err["code"], "bad_request");
        assert!(
            err["message"]
                .as_str()
                .expect("message")
                .contains("traceparent"),
            "{err}"
        );
    }
}
