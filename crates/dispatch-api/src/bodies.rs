//! Request bodies that the server reads as JSON by hand, for its own
//! one-line errors (a limit's name, a field's type), and that the CLI's
//! remote mode sends: one definition of their shape for both, and for the
//! OpenAPI document. Unlike [`crate::requests`] they carry no
//! `deny_unknown_fields`: the handler refuses an unknown field itself, and
//! the document has always described them without `additionalProperties`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The body of `PUT /v1/quotas/{project}`: the limits to set (each given
/// replaces that limit; the others stay), as numbers or as `dispatch quota
/// set` writes them (`"2M"`, `"$500"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub max_live_runs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub tokens_per_day: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub tokens_per_month: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub usd_per_day: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub usd_per_month: Option<Value>,
    /// The soft mark for these limits: `80%` or 80 (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub soft: Option<Value>,
    /// `wait` (default) or `refuse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_hard: Option<String>,
}

/// The body of `POST /v1/sessions/prune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PruneSessions {
    /// Sessions unused since this go: an age (`24h`, `30m`, `7d`) or an
    /// RFC 3339 time.
    pub until: String,
    /// Only sessions whose name starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}
