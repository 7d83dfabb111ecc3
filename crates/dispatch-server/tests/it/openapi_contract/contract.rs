//! The contract checker: calls operations on a server and checks each
//! answer against the OpenAPI document.

use std::time::{Duration, Instant};

use dispatch_server::client;

use super::*;

/// What `schema` (of the document, its `$ref`s into its components)
/// finds wrong with `value`.
pub(super) fn problems(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    let validator = jsonschema::draft202012::new(&root)
        .unwrap_or_else(|e| panic!("the schema {schema} compiles: {e}"));
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Calls operations on a server and checks each answer against the document.
pub(super) struct Contract<'a> {
    pub(super) doc: Value,
    pub(super) server: &'a TestServer,
    pub(super) token: Option<String>,
    /// operationId → statuses seen.
    pub(super) seen: BTreeMap<String, BTreeSet<u16>>,
}

impl Contract<'_> {
    /// Calls `method path` (`path` the concrete form of the document's
    /// `template`) and checks the answer; returns its status and JSON body
    /// (null for other content).
    pub(super) fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (u16, Value) {
        let base = format!("http://{}", self.server.addr);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(auth) = &auth {
            all.push(("authorization", auth));
        }
        let response = client::request(&base, method, path, &all, body).expect("an answer");
        let status = response.status;
        let media = response
            .header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let text = response.text().expect("a text body");
        self.check(method, template, path, status, &media, &text)
    }

    /// Checks an answer against the document.
    pub(super) fn check(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        status: u16,
        media: &str,
        text: &str,
    ) -> (u16, Value) {
        let op = &self.doc["paths"][template][method.to_lowercase()];
        let at = format!("{method} {path} ({template}) answered {status} {media}");
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: not documented"))
            .to_string();
        let response = &op["responses"][status.to_string()];
        assert!(response.is_object(), "{at}: status not documented: {text}");
        let schema = &response["content"][media]["schema"];
        assert!(schema.is_object(), "{at}: media type not documented");
        self.seen.entry(id).or_default().insert(status);
        if media != "application/json" {
            return (status, Value::Null);
        }
        let value: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{at}: not JSON ({e}): {text}"));
        let problems = problems(&self.doc, schema, &value);
        assert!(problems.is_empty(), "{at}: {problems:?} in {value}");
        (status, value)
    }

    /// POSTs a 3 MiB body: the server answers before it has read it, so
    /// write it as curl would, ignoring a closed pipe, then read the answer.
    pub(super) fn too_big(&mut self, template: &str, path: &str) -> u16 {
        use std::io::{Read, Write};
        let addr = self.server.addr;
        let size = 3 << 20;
        let mut conn = std::net::TcpStream::connect(addr).expect("connects");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).expect("headers");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < size && conn.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        let mut text = String::new();
        let _ = conn.read_to_string(&mut text);
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let media = head
            .lines()
            .find_map(|l| {
                l.to_lowercase()
                    .strip_prefix("content-type:")
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default();
        self.check("POST", template, path, status, &media, body).0
    }

    pub(super) fn get(&mut self, template: &str, path: &str) -> (u16, Value) {
        self.call("GET", template, path, &[], None)
    }

    pub(super) fn post(&mut self, template: &str, path: &str, body: &str) -> (u16, Value) {
        self.call("POST", template, path, &[], Some(body.as_bytes()))
    }

    /// Polls `GET path` until `done` holds.
    pub(super) fn wait_for(
        &mut self,
        template: &str,
        path: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = self.get(template, path);
            if done(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "timed out on {path}: {body}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// An agent that asks for approval `send-email` and waits for the decision.
pub(super) const ASKING: &str = "echo '{\"type\":\"tool_call\",\"name\":\"grep\",\"ok\":true,\"duration_ms\":3,\"kind\":\"cli\",\"input\":{\"q\":\"refund\"},\"output\":\"2 hits\",\"bytes\":6,\"truncated\":false}' >> \"$DISPATCH_EVENTS\"\n\
echo '{\"type\":\"approval\",\"id\":\"send-email\",\"summary\":\"Send refund email?\",\"timeout_s\":3600}' >> \"$DISPATCH_EVENTS\"\n\
while [ ! -e \"$DISPATCH_APPROVALS/send-email.json\" ]; do sleep 0.02; done\n\
grep -q '\"decision\":\"approve\"' \"$DISPATCH_APPROVALS/send-email.json\"\n";

pub(super) fn upload_body(files: &[(&str, &str)]) -> String {
    let files: serde_json::Map<String, Value> = files
        .iter()
        .map(|(p, c)| (p.to_string(), json!(c)))
        .collect();
    json!({ "files": files }).to_string()
}
