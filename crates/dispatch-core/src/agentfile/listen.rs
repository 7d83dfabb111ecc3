//! `LISTEN_SIGNATURE` and the check that a webhook's secrets are declared.

use super::AgentfileError;
use super::duration_ms;
use crate::parcel::{ListenSignature, Manifest, SignatureScheme};

const HINT: &str = "(hint: `LISTEN_SIGNATURE github HOOK_SECRET`, or `stripe` / `hmac-sha256`, optionally followed by a timestamp tolerance such as `5m`)";

/// `LISTEN_SIGNATURE <github|stripe|hmac-sha256> <SECRET> [<tolerance>]`.
pub(super) fn parse_signature(args: &[String]) -> Result<ListenSignature, String> {
    let (scheme, secret, tolerance) = match args {
        [scheme, secret] => (scheme, secret, None),
        [scheme, secret, t] => (scheme, secret, Some(t)),
        _ => {
            return Err(format!(
                "LISTEN_SIGNATURE expects a scheme and a SECRET name {HINT}"
            ));
        }
    };
    let scheme = SignatureScheme::parse(scheme)
        .ok_or_else(|| format!("LISTEN_SIGNATURE: unknown scheme `{scheme}` {HINT}"))?;
    let secret = super::lex::env_name(secret, "secret")?;
    let tolerance_s = match tolerance {
        None => None,
        Some(_) if scheme == SignatureScheme::Github => {
            return Err(format!(
                "LISTEN_SIGNATURE github takes no tolerance: GitHub signs no timestamp {HINT}"
            ));
        }
        Some(t) => {
            let ms = duration_ms(t)?;
            if ms < 1_000 {
                return Err(format!(
                    "LISTEN_SIGNATURE tolerance `{t}` is under a second {HINT}"
                ));
            }
            Some(ms / 1_000)
        }
    };
    Ok(ListenSignature {
        scheme,
        secret,
        tolerance_s,
    })
}

/// LISTEN_SECRET and LISTEN_SIGNATURE must name declared SECRETs.
pub(super) fn check_secrets(
    m: &Manifest,
    secret_line: usize,
    signature_line: usize,
) -> Result<(), AgentfileError> {
    let Some(listen) = &m.listen else {
        return Ok(());
    };
    let named = [
        (listen.secret.as_ref(), "LISTEN_SECRET", secret_line),
        (
            listen.signature.as_ref().map(|s| &s.secret),
            "LISTEN_SIGNATURE",
            signature_line,
        ),
    ];
    for (secret, key, line) in named {
        if let Some(secret) = secret.filter(|s| !m.secrets.contains(s)) {
            return Err(AgentfileError::new(
                line,
                format!(
                    "{key} names `{secret}`, which is not a declared SECRET (hint: add `SECRET {secret}`)"
                ),
            ));
        }
    }
    Ok(())
}
