//! Sending one message to one channel: a signed POST, a Slack POST, or an
//! e-mail over SMTP. Every send has a deadline; an error is one line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use lettre::AsyncTransport;
use sha2::Sha256;

use crate::config::{Channel, Smtp, SmtpTls};
use crate::message::{self, Message};
use dispatch_core::error_chain as chain;

/// The header carrying a webhook's signature.
pub const SIGNATURE_HEADER: &str = "Dispatch-Signature";

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: the
/// scheme of Dispatch's completion callbacks (and Stripe's).
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends `m` (notification `key` of kind `event`) to `channel`.
pub async fn send(
    http: &reqwest::Client,
    channel: &Channel,
    m: &Message,
    event: &str,
    key: &str,
    timeout: Duration,
) -> Result<(), String> {
    let sent = async {
        match channel {
            Channel::Webhook { url, secret } => {
                let body = serde_json::to_vec(&m.document).expect("a document is plain JSON");
                let t = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let req = http
                    .post(url.clone())
                    .header("content-type", "application/json")
                    .header("Dispatch-Event", event)
                    .header("Dispatch-Delivery", key)
                    .header(SIGNATURE_HEADER, signature(secret.as_bytes(), t, &body))
                    .body(body);
                post(req).await
            }
            Channel::Slack { url } => {
                let req = http.post(url.clone()).json(&message::slack(m, event));
                post(req).await
            }
            Channel::Email(smtp) => mail(smtp, m, event, key, timeout).await,
        }
    };
    match tokio::time::timeout(timeout, sent).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

async fn post(req: reqwest::RequestBuilder) -> Result<(), String> {
    let answer = req.send().await.map_err(|e| chain(&e))?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let body = answer.text().await.unwrap_or_default();
    let body: String = body.chars().take(200).collect();
    Err(format!("answered {status}: {}", body.trim()))
}

async fn mail(
    smtp: &Smtp,
    m: &Message,
    event: &str,
    key: &str,
    timeout: Duration,
) -> Result<(), String> {
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, Message as Mail, Tokio1Executor};
    let (subject, body) = message::email(m, event, key);
    let mut builder = Mail::builder()
        .from(smtp.from.clone())
        .subject(subject)
        .header(lettre::message::header::ContentType::TEXT_PLAIN);
    for to in &smtp.to {
        builder = builder.to(to.clone());
    }
    let mail = builder
        .body(body)
        .map_err(|e| format!("cannot build the message: {e}"))?;
    let tls = || -> Result<TlsParameters, String> {
        let mut b = TlsParameters::builder(smtp.host.clone());
        if let Some(path) = std::env::var_os(dispatch_http::CA_ENV).filter(|p| !p.is_empty()) {
            let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let cert = lettre::transport::smtp::client::Certificate::from_pem(&pem)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            b = b.add_root_certificate(cert);
        }
        b.build_rustls().map_err(|e| e.to_string())
    };
    let tls = match smtp.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::Starttls => Tls::Required(tls()?),
        SmtpTls::Tls => Tls::Wrapper(tls()?),
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some((user, password)) = &smtp.credentials {
        transport =
            transport.credentials(lettre::transport::smtp::authentication::Credentials::new(
                user.clone(),
                password.clone(),
            ));
    }
    transport
        .build()
        .send(mail)
        .await
        .map(|_| ())
        .map_err(|e| format!("smtp {}:{}: {}", smtp.host, smtp.port, chain(&e)))
}
