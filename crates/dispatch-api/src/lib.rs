//! The wire contract of Dispatch's HTTP API: the bodies its requests take
//! ([`requests`]; those the server reads by hand in [`bodies`]), the
//! answers, query strings and errors it gives ([`answers`]; the operations
//! routes' in [`operations`], and the parts of a run listed beside it in
//! [`run_parts`]), with serde and utoipa derives. The server reads its
//! requests with these types and generates its OpenAPI document
//! (`GET /v1/openapi.json`) from them; the CLI's remote mode sends its
//! requests as them, and clients may read its answers with them. It
//! depends on `dispatch-core` only.

pub mod answers;
pub mod bodies;
pub mod operations;
pub mod requests;
pub mod run_parts;

pub use answers::*;
pub use bodies::*;
pub use operations::*;
pub use requests::*;
pub use run_parts::*;
