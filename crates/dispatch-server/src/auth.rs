//! Bearer tokens: `dsp_<id>_<secret>`, stored as the SHA-256 of the whole
//! token. Required on every route but `/healthz` when the server listens on a
//! non-loopback address (or with `--require-auth`).

use std::io::Read;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dispatch_core::now_ms;
use dispatch_store::{StoreResult, TokenRecord};
use sha2::{Digest, Sha256};

use crate::SharedStore;
use crate::api::{ApiError, AppState, codes};

/// The hash stored for `token`.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}

/// Creates a token named `name`; returns the record and the token itself,
/// which is shown once and never stored.
pub async fn create(store: &SharedStore, name: &str) -> StoreResult<(TokenRecord, String)> {
    let random = |n| {
        random_hex(n).map_err(|e| dispatch_store::StoreError::Unavailable {
            path: "/dev/urandom".into(),
            message: e.to_string(),
        })
    };
    let id = random(6)?;
    let token = format!("dsp_{id}_{}", random(24)?);
    let record = TokenRecord {
        id,
        name: name.to_string(),
        created_at: now_ms(),
        revoked_at: None,
        scope: dispatch_store::TokenScope::Admin,
        expires_at: None,
    };
    store.create_token(&record, &hash(&token)).await?;
    Ok((record, token))
}

/// Lets a request through when auth is off, for `/healthz`, or with a live token.
pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Webhooks check the service's own shared secret instead.
    let open = request.uri().path() == "/healthz" || request.uri().path().starts_with("/hooks/");
    if !state.require_auth || open {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let Some(token) = presented else {
        return unauthorized(
            "this server needs a token: `Authorization: Bearer <token>` (hint: `dispatch token create`, then DISPATCH_TOKEN)",
        );
    };
    match state.store.find_token(&hash(token)).await {
        Ok(Some(_)) => next.run(request).await,
        Ok(None) => unauthorized("the token is unknown or revoked"),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn unauthorized(message: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for v in [
            "Bearer dsp_a_b",
            "bearer dsp_a_b",
            "BEARER  dsp_a_b ",
            "  bEaReR\tdsp_a_b",
        ] {
            assert_eq!(bearer(v), Some("dsp_a_b"), "{v:?}");
        }
        for v in [
            "Basic dsp_a_b",
            "Bearer",
            "Bearer   ",
            "dsp_a_b",
            "Bearerdsp_a_b",
        ] {
            assert_eq!(bearer(v), None, "{v:?}");
        }
    }
}
