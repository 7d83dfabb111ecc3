//! The HTTP side every provider shares: POST a JSON body, classify an error
//! status, and hand each server-sent event of a successful answer to the
//! provider's parser. reqwest does the HTTP, `eventsource-stream` the SSE.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::Value;

use crate::provider::{Delta, Exchange, Flow, ModelResponse, ProviderError};

/// A provider's stream parser: fed each event's data, then asked for the whole answer.
pub(crate) trait StreamParser {
    fn feed(
        &mut self,
        data: &str,
        on_delta: &mut dyn FnMut(Delta<'_>) -> Flow,
    ) -> Result<Flow, ProviderError>;
    fn finish(self) -> Result<ModelResponse, ProviderError>;
}

/// A request body as the JSON text sent: built as a `Value` by the
/// provider, serialized once, and the `Value` dropped before the call goes
/// out. The text is shared (not copied) between the HTTP client, which
/// keeps it until the answer comes, and the [`Exchange`]: a call waiting on
/// its model holds its request once.
pub(crate) fn encode(body: &Value) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(body).unwrap_or_default())
}

/// One streamed call: POST `body` (see [`encode`]), feed the events to
/// `parser`, pass its fragments to `on_delta` (timing the first), and
/// return the whole answer.
pub(crate) async fn call<P: StreamParser>(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: bytes::Bytes,
    exchange: &mut Exchange,
    on_delta: &mut (dyn for<'d> FnMut(Delta<'d>) -> Flow + Send),
    mut parser: P,
) -> Result<ModelResponse, ProviderError> {
    let started = std::time::Instant::now();
    let mut first = None;
    let result = post_stream(client, url, headers, body, exchange, |_, data| {
        parser.feed(data, &mut |d: Delta<'_>| {
            first.get_or_insert_with(|| started.elapsed().as_millis() as u64);
            on_delta(d)
        })
    })
    .await;
    exchange.first_token_ms = first;
    result?;
    parser.finish()
}

/// At most this much of a body is quoted in an error.
const QUOTE: usize = 300;

fn quote(text: &str) -> String {
    dispatch_core::event::shorten(text.trim(), QUOTE)
}

/// POSTs `body` to `url` and feeds each event (`event` name, `data`) of the
/// answer to `on_event` until the stream ends or it says [`Flow::Abort`].
/// Fills `exchange` with what went over the wire.
pub(crate) async fn post_stream(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: bytes::Bytes,
    exchange: &mut Exchange,
    mut on_event: impl FnMut(&str, &str) -> Result<Flow, ProviderError>,
) -> Result<(), ProviderError> {
    exchange.url = url.to_string();
    exchange.sending(&body);
    let response = send(client, url, headers, body)
        .await
        .map_err(ProviderError::Connect)?;
    let status = response.status();
    exchange.status = status.as_u16();
    if !status.is_success() {
        let retry_after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        exchange.response_body = text.clone();
        return Err(naming_url(
            classify(status.as_u16(), retry_after, &text),
            url,
        ));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut bytes = response.bytes_stream();
    if let Some(ct) = content_type.filter(|ct| !is_event_stream(ct)) {
        let head = first_bytes(&mut bytes).await;
        exchange.response_body = head.clone();
        return Err(ProviderError::Protocol(format!(
            "POST {url} answered {status} with content type `{ct}`, not a text/event-stream (hint: is BASE_URL right? a proxy or captive portal may be in the way); it begins: {}",
            quote(&head)
        )));
    }
    let mut events = bytes.eventsource();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(eventsource_stream::EventStreamError::Transport(e)) => {
                return Err(ProviderError::Connect(format!(
                    "the stream broke: {}",
                    describe(&e)
                )));
            }
            Err(e) => {
                return Err(ProviderError::Protocol(format!(
                    "the stream is not valid server-sent events: {e}"
                )));
            }
        };
        if event.event != "message" {
            exchange
                .response_body
                .push_str(&format!("event: {}\n", event.event));
        }
        exchange
            .response_body
            .push_str(&format!("data: {}\n\n", event.data));
        if on_event(&event.event, &event.data)? == Flow::Abort {
            return Err(ProviderError::Aborted);
        }
    }
    Ok(())
}

/// POSTs `body`: over the origin's own HTTP/2 connection when it has one
/// (see [`dispatch_http::h2`]: a call waiting on its answer holds ~2.5 KB
/// of it, not reqwest's futures), else through `client`.
/// The error is a line saying why the call got no answer.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: bytes::Bytes,
) -> Result<reqwest::Response, String> {
    const FIXED: [(&str, &str); 2] = [
        ("content-type", "application/json"),
        ("accept", "text/event-stream"),
    ];
    // The body moves to whichever client sends it (the direct one gives it
    // back when it did not): a call waiting on its answer does not hold it.
    let body = match dispatch_http::h2::direct("agent") {
        Some(direct) => {
            let all = FIXED.iter().chain(headers).copied();
            match direct.post(url, all, body).await {
                Ok(Ok(response)) => return Ok(response.map(reqwest::Body::wrap).into()),
                Ok(Err(e)) => {
                    return Err(format!(
                        "error sending request for url ({url}): {}",
                        chain(&e)
                    ));
                }
                Err(body) => body,
            }
        }
        None => body,
    };
    // As a body of known length that reqwest streams: given `Bytes`, it
    // keeps a copy to send again after a redirect, which a call waiting
    // on its answer would hold as long as it waits (a model API answers a
    // call, it does not redirect it).
    let mut request = client
        .post(url)
        .body(reqwest::Body::wrap(http_body_util::Full::new(body)));
    for (k, v) in FIXED.iter().chain(headers) {
        request = request.header(*k, *v);
    }
    // Boxed: laid out only for the calls that take this way.
    Box::pin(request.send()).await.map_err(|e| describe(&e))
}

/// Whether a `Content-Type` is the server-sent events every streamed call needs.
fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// The first bytes of a body (about [`QUOTE`]), as text, for an error.
async fn first_bytes<S, B>(body: &mut S) -> String
where
    S: futures_util::Stream<Item = Result<B, reqwest::Error>> + Unpin,
    B: AsRef<[u8]>,
{
    let mut head = Vec::new();
    while head.len() < QUOTE {
        match body.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(chunk.as_ref()),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// An error status's error, saying which URL answered it (a 404 is most
/// often a BASE_URL that is wrong).
fn naming_url(e: ProviderError, url: &str) -> ProviderError {
    let hint = |status: u16| {
        if status == 404 {
            " (hint: is BASE_URL right?)"
        } else {
            ""
        }
    };
    match e {
        ProviderError::RateLimited {
            retry_after,
            message,
        } => ProviderError::RateLimited {
            retry_after,
            message: format!("{message} (POST {url})"),
        },
        ProviderError::Server { status, message } => ProviderError::Server {
            status,
            message: format!("{message} (POST {url})"),
        },
        ProviderError::Refused { status, message } => ProviderError::Refused {
            status,
            message: format!("{message} (POST {url}){}", hint(status)),
        },
        other => other,
    }
}

fn describe(e: &reqwest::Error) -> String {
    chain(e)
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// `Retry-After`: delta-seconds or an HTTP-date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// What an error status means for the loop, quoting the provider's message.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> ProviderError {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .or(v["message"].as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| quote(body));
    let message = if message.is_empty() {
        format!("HTTP {status}")
    } else {
        message
    };
    match status {
        429 => ProviderError::RateLimited {
            retry_after,
            message,
        },
        500..=599 => ProviderError::Server { status, message },
        _ => ProviderError::Refused { status, message },
    }
}

/// Parses one event's data as JSON, or says the answer is broken.
pub(crate) fn json(data: &str) -> Result<Value, ProviderError> {
    serde_json::from_str(data).map_err(|e| {
        ProviderError::Protocol(format!("a stream event is not JSON ({e}): {}", quote(data)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_and_messages_quoted() {
        let e = classify(
            401,
            None,
            r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#,
        );
        assert_eq!(
            e,
            ProviderError::Refused {
                status: 401,
                message: "Incorrect API key provided".into()
            }
        );
        assert!(!e.retryable());
        let e = classify(429, Some(Duration::from_secs(2)), "{}");
        assert!(
            matches!(e, ProviderError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 2)
        );
        assert!(classify(503, None, "<html>down</html>").retryable());
        assert!(
            classify(
                529,
                None,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            )
            .retryable()
        );
        let long = "x".repeat(5_000);
        let ProviderError::Refused { message, .. } = classify(400, None, &long) else {
            panic!("refused")
        };
        assert!(message.len() < 400);
    }
}
