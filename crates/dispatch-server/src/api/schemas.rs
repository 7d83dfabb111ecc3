//! The answers' and query strings' shapes, from the `dispatch-api` crate
//! (the wire contract; its request bodies are used by name where they are
//! read).

pub use dispatch_api::answers::*;
pub use dispatch_api::operations::*;
