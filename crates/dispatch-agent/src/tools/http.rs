//! HTTP tools: one request per call, the arguments as its JSON body (as the
//! query string for GET and DELETE), headers whose values are declared
//! secrets. The response body is the result; a status of 400 or more is an
//! error the model sees, with the body.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::agent_loop::ToolOutcome;

/// The most of a response body read.
const MAX_BODY: usize = 16 << 20;

pub(super) async fn run(
    client: &reqwest::Client,
    method: &reqwest::Method,
    url: &str,
    headers: &[(String, String)],
    args: &Value,
    timeout: Duration,
) -> ToolOutcome {
    let mut request = client.request(method.clone(), url).timeout(timeout);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request = if matches!(*method, reqwest::Method::GET | reqwest::Method::DELETE) {
        let pairs: Vec<(String, String)> = args
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (k.clone(), v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        request.query(&pairs)
    } else {
        request.json(args)
    };
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            let mut o = ToolOutcome::error(format!(
                "error: {method} {url} did not answer within {} ms",
                timeout.as_millis()
            ));
            o.meta.insert("timed_out".into(), json!(true));
            return o;
        }
        Err(e) => {
            return ToolOutcome::error(format!("error: {method} {url} failed: {e}"));
        }
    };
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                body.extend_from_slice(&bytes);
                if body.len() >= MAX_BODY {
                    body.truncate(MAX_BODY);
                    break;
                }
            }
            Err(e) => {
                return ToolOutcome::error(format!(
                    "error: {method} {url}: the response broke off: {e}"
                ));
            }
        }
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut outcome = if status >= 400 {
        ToolOutcome::error(format!("error: HTTP {status}: {text}"))
    } else {
        ToolOutcome::ok(text)
    };
    outcome.meta.insert("status".into(), json!(status));
    outcome
}
