//! Webhook signatures, checked as the platforms that send them sign
//! (`LISTEN_SIGNATURE <scheme> <SECRET>`), by a local service's listener and
//! the cluster servers' `/hooks/…` alike. Every scheme is an HMAC-SHA256
//! under the SECRET's value, compared in constant time (`Mac::verify_slice`):
//!
//! - `github`: `X-Hub-Signature-256: sha256=<hex of hmac(body)>`. GitHub
//!   signs no timestamp, so a delivery is refused as a replay by its
//!   `X-GitHub-Delivery` id and by its signature, each remembered for
//!   [`GITHUB_REPLAY_WINDOW_S`] (GitHub redelivers up to three days back); a
//!   delivery captured and replayed after that window is accepted again.
//! - `stripe`: `Stripe-Signature: t=<unix>,v1=<hex of hmac("{t}.{body}")>`
//!   (several `v1` allowed: one of them must match, as while a secret is
//!   rolled). `t` must be within the tolerance of this machine's clock
//!   (300 s by default); each `(t, signature)` is taken once.
//! - `hmac-sha256` (ours, for any other sender): `X-Dispatch-Timestamp:
//!   <unix>` and `X-Dispatch-Signature: sha256=<hex of hmac("{ts}.{body}")>`
//!   (several, comma-separated, allowed), with the same tolerance and replay
//!   rule as Stripe's.
//!
//! A request that fails gets 401 with a code saying why (`signature_missing`,
//! `bad_signature`, `stale_timestamp`, `replayed`); the secret is never
//! logged nor put in an answer.

use std::collections::HashMap;
use std::sync::Mutex;

use dispatch_core::parcel::{ListenSignature, SignatureScheme};
use hmac::{Hmac, Mac};
use hyper::{HeaderMap, StatusCode};
use sha2::Sha256;

use super::check::Rejection;

/// How far a signed timestamp may be from this machine's clock by default.
pub const DEFAULT_TOLERANCE_S: u64 = 300;
/// How long a GitHub delivery is remembered (GitHub redelivers up to three
/// days back).
pub const GITHUB_REPLAY_WINDOW_S: u64 = 3 * 86_400;
/// How many deliveries a local listener remembers at most (the oldest are
/// forgotten first beyond that).
const MAX_REMEMBERED: usize = 100_000;

/// Checks the signatures of one webhook. Holds the key; shows no part of it.
pub struct Verifier {
    scheme: SignatureScheme,
    key: Vec<u8>,
    tolerance_s: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("tolerance_s", &self.tolerance_s)
            .finish_non_exhaustive()
    }
}

/// A verified request: the keys its replay is refused by, and until when
/// they must be remembered (unix ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub keys: Vec<String>,
    pub remember_until_ms: i64,
}

impl Verifier {
    pub fn new(sig: &ListenSignature, key: &[u8]) -> Self {
        Verifier {
            scheme: sig.scheme,
            key: key.to_vec(),
            tolerance_s: sig.tolerance_s.unwrap_or(DEFAULT_TOLERANCE_S),
        }
    }

    /// The verifier whose key is the value of the environment variable the
    /// signature names; the one line to say when it is unset.
    pub fn from_env(sig: &ListenSignature) -> Result<Self, String> {
        match std::env::var(&sig.secret).ok().filter(|v| !v.is_empty()) {
            Some(v) => Ok(Verifier::new(sig, v.as_bytes())),
            None => Err(format!(
                "LISTEN_SIGNATURE names `{}`, which is not set (hint: export {}=... where the webhook is served)",
                sig.secret, sig.secret
            )),
        }
    }

    /// Checks `body` against the request's signature headers at `now_ms`.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_ms: i64,
    ) -> Result<Delivery, Rejection> {
        match self.scheme {
            SignatureScheme::Github => self.github(headers, body, now_ms),
            SignatureScheme::Stripe => {
                let value = header(headers, "stripe-signature")?;
                let mut t = None;
                let mut sigs = Vec::new();
                for (k, v) in value.split(',').filter_map(|kv| kv.trim().split_once('=')) {
                    match k {
                        "t" => t = Some(v),
                        "v1" => sigs.push(v),
                        _ => {}
                    }
                }
                let (Some(t), false) = (t, sigs.is_empty()) else {
                    return Err(bad(
                        "Stripe-Signature needs t=<unix time> and v1=<signature>",
                    ));
                };
                self.timestamped(t, &sigs, body, now_ms, "stripe")
            }
            SignatureScheme::HmacSha256 => {
                let ts = header(headers, "x-dispatch-timestamp")?;
                let value = header(headers, "x-dispatch-signature")?;
                let sigs: Vec<&str> = value
                    .split(',')
                    .filter_map(|s| s.trim().strip_prefix("sha256="))
                    .collect();
                if sigs.is_empty() {
                    return Err(bad("X-Dispatch-Signature must be `sha256=<hex>`"));
                }
                self.timestamped(ts, &sigs, body, now_ms, "hmac")
            }
        }
    }

    fn github(&self, headers: &HeaderMap, body: &[u8], now_ms: i64) -> Result<Delivery, Rejection> {
        let value = header(headers, "x-hub-signature-256")?;
        let Some(sig) = value.strip_prefix("sha256=") else {
            return Err(bad("X-Hub-Signature-256 must be `sha256=<hex>`"));
        };
        if !self.matches(&[body], sig) {
            return Err(bad(
                "X-Hub-Signature-256 does not match the body (a wrong secret, or a changed body)",
            ));
        }
        let delivery = header(headers, "x-github-delivery")?;
        Ok(Delivery {
            keys: vec![
                format!("github:{delivery}"),
                format!("sig:{}", sig.to_ascii_lowercase()),
            ],
            remember_until_ms: now_ms + (GITHUB_REPLAY_WINDOW_S * 1000) as i64,
        })
    }

    /// Stripe's and ours: an HMAC of `{t}.{body}`, `t` within the tolerance.
    fn timestamped(
        &self,
        t: &str,
        sigs: &[&str],
        body: &[u8],
        now_ms: i64,
        kind: &str,
    ) -> Result<Delivery, Rejection> {
        let Ok(at) = t.trim().parse::<i64>() else {
            return Err(bad(format!(
                "the signed timestamp `{t}` is not a unix time in seconds"
            )));
        };
        let t = t.trim();
        let Some(sig) = sigs
            .iter()
            .find(|s| self.matches(&[t.as_bytes(), b".", body], s))
        else {
            return Err(bad(
                "no signature matches the timestamp and body (a wrong secret, or a changed body)",
            ));
        };
        let skew = (now_ms / 1000).abs_diff(at);
        if skew > self.tolerance_s {
            return Err(Rejection::new(
                StatusCode::UNAUTHORIZED,
                "stale_timestamp",
                format!(
                    "the signed timestamp is {skew} s away from this server's clock (tolerance {} s): a replay, or a clock out of sync",
                    self.tolerance_s
                ),
            ));
        }
        Ok(Delivery {
            keys: vec![format!("{kind}:{at}:{}", sig.to_ascii_lowercase())],
            remember_until_ms: (at + self.tolerance_s as i64 + 1) * 1000,
        })
    }

    /// Whether `hex_sig` is the HMAC of `parts`, in constant time.
    fn matches(&self, parts: &[&[u8]], hex_sig: &str) -> bool {
        let Ok(presented) = hex::decode(hex_sig.trim()) else {
            return false;
        };
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        for p in parts {
            mac.update(p);
        }
        mac.verify_slice(&presented).is_ok()
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Rejection> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Rejection::new(
                StatusCode::UNAUTHORIZED,
                "signature_missing",
                format!("missing {name}: this webhook takes signed requests only"),
            )
        })
}

fn bad(message: impl Into<String>) -> Rejection {
    Rejection::new(StatusCode::UNAUTHORIZED, "bad_signature", message)
}

/// The 401 for a delivery already taken.
pub fn replayed() -> Rejection {
    Rejection::new(
        StatusCode::UNAUTHORIZED,
        "replayed",
        "this delivery was already taken (a replay is refused)",
    )
}

/// The deliveries a local listener has taken, in memory (a restarted
/// service forgets them; a cluster service's are in the store).
#[derive(Debug, Default)]
pub struct SeenDeliveries {
    seen: Mutex<HashMap<String, i64>>,
}

impl SeenDeliveries {
    /// Remembers every key of `d`; `false` (and nothing remembered) when one
    /// is already remembered and not expired at `now_ms`.
    pub fn claim(&self, d: &Delivery, now_ms: i64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if d.keys
            .iter()
            .any(|k| seen.get(k).is_some_and(|until| *until > now_ms))
        {
            return false;
        }
        if seen.len() + d.keys.len() > MAX_REMEMBERED {
            seen.retain(|_, until| *until > now_ms);
        }
        while seen.len() + d.keys.len() > MAX_REMEMBERED {
            let oldest = seen
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => seen.remove(&k),
                None => break,
            };
        }
        for k in &d.keys {
            seen.insert(k.clone(), d.remember_until_ms);
        }
        true
    }

    /// Forgets `d` (its wake was refused: the sender may retry).
    pub fn release(&self, d: &Delivery) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for k in &d.keys {
            seen.remove(k);
        }
    }
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
