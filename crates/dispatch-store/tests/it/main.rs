//! The crate's integration tests, one binary (each module was a test
//! binary of its own): one link instead of one per file.

mod postgres_conformance;
mod postgres_renew;
mod sqlite_conformance;
mod sqlite_status_update;
mod sqlite_wal_reset;
