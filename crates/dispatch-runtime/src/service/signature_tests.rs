//! Signatures against values computed outside this code: GitHub's own
//! documented example, and `openssl dgst -sha256 -hmac` for the others.

use super::*;
use hyper::header::{HeaderName, HeaderValue};

/// GitHub's documentation example ("Validating webhook deliveries").
const GH_SECRET: &str = "It's a Secret to Everybody";
const GH_BODY: &[u8] = b"Hello, World!";
const GH_SIG: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
/// `printf '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac whsec_test`
const STRIPE_SIG: &str = "c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925";
/// `printf '1700000000.{"ticket":42}' | openssl dgst -sha256 -hmac s3cret`
const HMAC_SIG: &str = "769b9f24bc60ddf49f32d7782f1d294b76d3453f7f50a18451d2150136066813";
const T: i64 = 1_700_000_000;

fn verifier(scheme: SignatureScheme, key: &str) -> Verifier {
    let sig = ListenSignature {
        scheme,
        secret: "K".into(),
        tolerance_s: None,
    };
    Verifier::new(&sig, key.as_bytes())
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            HeaderName::from_static(k),
            HeaderValue::from_str(v).expect("a header value"),
        );
    }
    h
}

fn code(r: Result<Delivery, Rejection>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(r) => {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            r.code
        }
    }
}

#[test]
fn github_deliveries_verify_by_body_and_are_remembered_by_id_and_signature() {
    let v = verifier(SignatureScheme::Github, GH_SECRET);
    let sig = format!("sha256={GH_SIG}");
    let h = headers(&[("x-hub-signature-256", &sig), ("x-github-delivery", "d-1")]);
    let d = v
        .verify(&h, GH_BODY, T * 1000)
        .expect("GitHub's example verifies");
    assert_eq!(
        d.keys,
        vec!["github:d-1".to_string(), format!("sig:{GH_SIG}")]
    );
    assert_eq!(
        d.remember_until_ms,
        T * 1000 + GITHUB_REPLAY_WINDOW_S as i64 * 1000
    );
    assert_eq!(code(v.verify(&h, b"Hello, World?", 0)), "bad_signature");
    let wrong = verifier(SignatureScheme::Github, "another secret");
    assert_eq!(code(wrong.verify(&h, GH_BODY, 0)), "bad_signature");
    let no_id = headers(&[("x-hub-signature-256", &sig)]);
    assert_eq!(code(v.verify(&no_id, GH_BODY, 0)), "signature_missing");
    assert_eq!(
        code(v.verify(&HeaderMap::new(), GH_BODY, 0)),
        "signature_missing"
    );
    let bare = headers(&[("x-hub-signature-256", GH_SIG), ("x-github-delivery", "d")]);
    assert_eq!(code(v.verify(&bare, GH_BODY, 0)), "bad_signature");
}

#[test]
fn stripe_signatures_take_any_matching_v1_within_the_tolerance() {
    let v = verifier(SignatureScheme::Stripe, "whsec_test");
    let body = br#"{"id":"evt_1"}"#;
    let value = format!("t={T},v1={},v1={STRIPE_SIG},v0=abc", "00".repeat(32));
    let h = headers(&[("stripe-signature", &value)]);
    let d = v.verify(&h, body, (T + 299) * 1000).expect("within 300 s");
    assert_eq!(d.keys, vec![format!("stripe:{T}:{STRIPE_SIG}")]);
    assert_eq!(d.remember_until_ms, (T + 301) * 1000);
    assert_eq!(
        code(v.verify(&h, body, (T + 301) * 1000)),
        "stale_timestamp"
    );
    assert_eq!(
        code(v.verify(&h, body, (T - 301) * 1000)),
        "stale_timestamp"
    );
    assert_eq!(
        code(v.verify(&h, br#"{"id":"evt_2"}"#, T * 1000)),
        "bad_signature"
    );
    let moved = format!("t={},v1={STRIPE_SIG}", T + 1);
    let h2 = headers(&[("stripe-signature", &moved)]);
    assert_eq!(
        code(v.verify(&h2, body, T * 1000)),
        "bad_signature",
        "t is signed"
    );
    let no_t = headers(&[("stripe-signature", &format!("v1={STRIPE_SIG}"))]);
    assert_eq!(code(v.verify(&no_t, body, T * 1000)), "bad_signature");
    let sig = ListenSignature {
        scheme: SignatureScheme::Stripe,
        secret: "K".into(),
        tolerance_s: Some(600),
    };
    let lax = Verifier::new(&sig, b"whsec_test");
    assert_eq!(code(lax.verify(&h, body, (T + 500) * 1000)), "ok");
}

#[test]
fn the_generic_scheme_signs_timestamp_and_body() {
    let v = verifier(SignatureScheme::HmacSha256, "s3cret");
    let body = br#"{"ticket":42}"#;
    let sig = format!("sha256={HMAC_SIG}");
    let ts = T.to_string();
    let h = headers(&[
        ("x-dispatch-timestamp", &ts),
        ("x-dispatch-signature", &sig),
    ]);
    let d = v.verify(&h, body, T * 1000).expect("verifies");
    assert_eq!(d.keys, vec![format!("hmac:{T}:{HMAC_SIG}")]);
    assert_eq!(
        code(v.verify(&h, body, (T + 400) * 1000)),
        "stale_timestamp"
    );
    let no_ts = headers(&[("x-dispatch-signature", &sig)]);
    assert_eq!(code(v.verify(&no_ts, body, T * 1000)), "signature_missing");
    let nonsense = headers(&[
        ("x-dispatch-timestamp", "soon"),
        ("x-dispatch-signature", &sig),
    ]);
    assert_eq!(code(v.verify(&nonsense, body, T * 1000)), "bad_signature");
}

#[test]
fn a_delivery_is_taken_once_until_released_or_forgotten() {
    let seen = SeenDeliveries::default();
    let d = Delivery {
        keys: vec!["github:a".into(), "sig:x".into()],
        remember_until_ms: 1_000,
    };
    assert!(seen.claim(&d, 0));
    assert!(!seen.claim(&d, 10), "a replay");
    let same_body = Delivery {
        keys: vec!["github:b".into(), "sig:x".into()],
        remember_until_ms: 1_000,
    };
    assert!(
        !seen.claim(&same_body, 10),
        "a replay under a new delivery id"
    );
    seen.release(&d);
    assert!(seen.claim(&d, 20), "released: the sender may retry");
    assert!(seen.claim(&d, 1_000), "forgotten once expired");
}

#[test]
fn the_key_never_shows() {
    let v = verifier(SignatureScheme::Github, "top-secret-value");
    assert!(!format!("{v:?}").contains("top-secret"));
}
