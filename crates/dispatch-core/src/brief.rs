//! The brief: the JSON package an agent receives (instructions, configs,
//! context, payload). It is content-addressed: stored under its SHA-256 and
//! verified against it before the agent starts. Secrets are never in it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::parcel::{Instructions, Parcel};
use crate::state::Operation;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BriefParcel {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub digest: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Brief {
    pub parcel: BriefParcel,
    pub operation: Operation,
    pub instructions: Instructions,
    /// Non-secret configuration: the parcel's ENV and labels.
    pub configs: BTreeMap<String, String>,
    /// Context the dispatcher supplies (empty for now).
    pub context: Value,
    pub payload: Value,
}

impl Brief {
    pub fn assemble(parcel: &Parcel, operation: Operation, payload: Value) -> Brief {
        let m = &parcel.manifest;
        Brief {
            parcel: BriefParcel {
                name: m.name.clone(),
                version: m.version.clone(),
                digest: parcel.digest.clone(),
            },
            operation,
            instructions: m.instructions.clone(),
            configs: m.env.clone(),
            context: Value::Object(Default::default()),
            payload,
        }
    }

    /// The stored bytes and their hex SHA-256.
    pub fn encode(&self) -> (Vec<u8>, String) {
        let bytes = serde_json::to_vec_pretty(self).expect("a brief is plain JSON data");
        let digest = sha256_hex(&bytes);
        (bytes, digest)
    }
}

/// A brief whose bytes do not match the digest recorded for the run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "brief {expected} failed verification: its content hashes to {actual} (the file was modified after dispatch; dispatch the run again)"
)]
pub struct BriefMismatch {
    pub expected: String,
    pub actual: String,
}

/// Checks that `bytes` hash to `expected`.
pub fn verify(bytes: &[u8], expected: &str) -> Result<(), BriefMismatch> {
    let actual = sha256_hex(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(BriefMismatch {
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tampered_brief_fails_verification() {
        let (bytes, digest) = (
            br#"{"payload":1}"#.to_vec(),
            sha256_hex(br#"{"payload":1}"#),
        );
        assert!(verify(&bytes, &digest).is_ok());
        let err = verify(br#"{"payload":2}"#, &digest).expect_err("tampered");
        assert!(err.to_string().contains("failed verification"));
    }
}
