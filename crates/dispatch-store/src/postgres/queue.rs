//! Queue and leases on PostgreSQL (see [`crate::QueueStore`]).
