//! The conformance suite: what every store backend promises, as plain async
//! test functions over the [`Store`] traits. A backend is done when it passes
//! all of them.
//!
//! [`conformance_suite!`](crate::conformance_suite) expands one
//! `#[tokio::test]` per function, each with a fresh store from the factory it is
//! given. The factory is an async function (or closure) returning
//! `(store, guard)`: the guard lives until the test ends and may clean up (a
//! temporary directory, a throwaway database).
//!
//! ```text
//! async fn fresh_store() -> (SqliteStore, tempfile::TempDir) { /* … */ }
//! dispatch_store::conformance_suite!(fresh_store);
//! ```
//!
//! This module is part of the library (not `cfg(test)`) so that every backend's
//! crate can run it; it uses only the library's own dependencies. The calling
//! crate provides `tokio` with the `macros` and `rt` features.
//!
//! Promises that need more than one handle on the same database (concurrent
//! processes, locks held by another process) are backend-specific and live
//! with each backend's tests.

mod appends_many;
mod blobs;
mod capacity;
mod created_claimed;
mod enqueue;
mod evals;
mod events;
mod fenced;
mod handoff;
mod limits;
mod messages;
mod notifications;
mod parcels;
mod projects;
mod queue;
mod queue_timeout;
mod quotas;
mod reliability;
mod retention;
mod review;
mod runs;
mod service;
mod sessions;
mod tokens;
mod traces;
mod transitions;
mod usage;
mod workers;

use dispatch_core::EventKind;
use dispatch_core::{NewEvent, Operation, ProcRef, RunId, Transition, Ts};
use serde_json::json;

use crate::{NewRun, Run, StateWrite, Store};

pub use appends_many::*;
pub use blobs::*;
pub use capacity::*;
pub use created_claimed::*;
pub use enqueue::*;
pub use evals::*;
pub use events::*;
pub use fenced::*;
pub use handoff::*;
pub use limits::*;
pub use messages::*;
pub use notifications::*;
pub use parcels::*;
pub use projects::*;
pub use queue::*;
pub use queue_timeout::*;
pub use quotas::*;
pub use reliability::*;
pub use retention::*;
pub use review::*;
pub use runs::*;
pub use service::*;
pub use sessions::*;
pub use tokens::*;
pub use traces::*;
pub use transitions::*;
pub use usage::*;
pub use workers::*;

/// Expands the conformance suite: one `#[tokio::test]` per promise, each with a
/// fresh store from `$factory` (an async fn or closure returning `(store, guard)`).
///
/// `conformance_suite!(optional: factory)` takes a factory returning
/// `Option<(store, guard)>` instead: `None` (a backend server that is not
/// running, outside CI) ends each test early, after the factory said why.
#[macro_export]
macro_rules! conformance_suite {
    (optional: $factory:expr) => {
        $crate::__conformance_names!(optional $factory);
    };
    ($factory:expr) => {
        $crate::__conformance_names!(required $factory);
    };
}

/// Expands the [`QueueStore`](crate::QueueStore) conformance suite, like
/// [`conformance_suite!`](crate::conformance_suite) (also with `optional:`).
#[macro_export]
macro_rules! queue_conformance_suite {
    (optional: $factory:expr) => {
        $crate::__queue_conformance_names!(optional $factory);
    };
    ($factory:expr) => {
        $crate::__queue_conformance_names!(required $factory);
    };
}

/// Expands the [`ParcelStore`](crate::ParcelStore) and
/// [`RunLogStore`](crate::RunLogStore) conformance suite (what a worker on
/// another machine relies on), like
/// [`conformance_suite!`](crate::conformance_suite) (also with `optional:`).
#[macro_export]
macro_rules! parcel_conformance_suite {
    (optional: $factory:expr) => {
        $crate::__parcel_conformance_names!(optional $factory);
    };
    ($factory:expr) => {
        $crate::__parcel_conformance_names!(required $factory);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __parcel_conformance_names {
    ($mode:ident $factory:expr) => {
        $crate::__conformance_tests!($mode $factory;
            a_parcel_is_stored_by_digest_and_a_put_writes_only_what_differs,
            a_brief_is_stored_by_sha256_and_a_put_writes_only_what_differs,
            a_brief_a_run_references_is_not_pruned,
            a_log_is_appended_in_order_and_read_from_any_offset,
            an_append_not_at_the_end_is_refused_unless_it_is_a_retry,
            deleting_a_run_removes_its_log,
            archiving_a_log_moves_its_bytes_out_and_appends_go_on_after_it,
            parcels_are_found_by_newest_name_or_digest_prefix,
            the_catalog_lists_parcels_newest_first_and_keeps_what_live_runs_use,
            evals_are_kept_once_found_by_prefix_and_the_newest_of_a_parcel,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __queue_conformance_names {
    ($mode:ident $factory:expr) => {
        $crate::__conformance_tests!($mode $factory;
            claims_take_the_highest_priority_then_the_oldest,
            workers_are_listed_with_the_live_runs_they_hold,
            a_live_workers_name_is_refused_to_another_process,
            three_claimers_racing_over_1000_runs_claim_each_exactly_once,
            runs_created_claimed_by_a_worker_are_leased_and_fenced_like_claimed_ones,
            creating_claimed_runs_is_all_or_none,
            a_stolen_lease_cannot_write,
            a_stolen_lease_cannot_write_several_transitions,
            stop_requests_are_found_among_the_runs_in_hand,
            many_held_runs_are_saved_at_once_each_with_its_own_answer,
            an_expired_lease_is_an_attempt_of_its_own_that_does_not_count,
            renewal_extends_only_the_leases_still_held,
            a_released_run_goes_back_to_the_queue_and_fences_its_holder,
            a_finished_run_ends_its_lease,
            a_suspended_run_ends_its_lease_and_is_never_swept,
            a_run_waiting_out_a_backoff_is_not_claimed_early,
            queue_times_name_the_next_backoff_end_and_lease_expiry,
            succeeding_at_once_finishes_only_runs_still_held_and_not_stopped,
            labelled_runs_go_only_to_workers_with_those_labels,
            workers_claim_only_runs_that_fit_their_free_capacity,
            a_claim_without_capacity_takes_any_run,
            list_filters_by_labels_and_runs_carry_theirs,
            a_run_requeued_by_someone_else_fences_its_old_holder,
            // a holder's log, artifacts and output are fenced too
            a_stale_token_appends_nothing_to_the_log,
            a_holders_racing_appends_land_once_each_until_its_run_ends,
            a_holders_usage_counts_toward_totals_marks_and_budgets,
            a_batch_of_held_runs_appends_answers_each_as_it_would_alone,
            a_batch_of_held_runs_log_chunks_answers_each_as_it_would_alone,
            a_stale_token_records_no_artifact,
            a_stale_token_asks_for_no_approval,
            a_stale_token_stores_no_output,
            a_run_nobody_claimed_in_time_times_out_in_the_queue,
            a_queue_timeout_counts_each_wait_in_the_queue_anew,
            callbacks_are_due_once_the_run_finished_and_held_while_delivered,
            approvals_failures_and_budget_marks_enqueue_notifications_once,
            a_review_denied_by_its_deadline_notifies_in_the_same_transaction,
            notifications_are_claimed_held_retried_and_settled,
            enqueue_with_stores_the_extras_and_the_queue_options,
            a_batch_is_enqueued_in_one_transaction_all_or_none,
            enqueue_with_a_duplicate_key_returns_the_existing_run_and_inserts_nothing,
            enqueue_with_a_busy_session_is_refused_and_inserts_nothing,
            // concurrency keys and rate limits
            claims_never_exceed_a_keys_max_and_keep_its_order,
            racing_claimers_never_exceed_a_keys_max,
            a_local_claim_waits_for_a_slot_of_its_key,
            drop_cancels_a_run_whose_key_is_full_at_once,
            cancel_in_progress_makes_room_for_the_newest_run,
            rate_limits_admit_no_more_than_their_window,
            // quotas per project
            quotas_are_kept_per_project_and_limit_replaced_and_removed,
            claims_never_take_a_project_over_its_live_run_cap,
            racing_claimers_never_exceed_a_projects_live_run_cap,
            budgets_count_the_periods_usage_notify_once_and_hold_claims,
            a_project_over_a_refusing_budget_takes_no_new_run_until_raised,
            // tokens (the cluster's other capability)
            tokens_are_found_by_hash_until_revoked,
            // the cost report
            usage_sums_billed_calls_by_parcel_model_label_and_day,
            the_cost_report_counts_only_the_projects_asked_for,
            a_token_keeps_its_scope_and_expiry,
            a_token_keeps_its_role_in_each_project,
            a_run_keeps_its_project_and_listings_filter_by_it,
            a_session_saves_by_compare_and_set_and_never_overwrites_a_newer_turn,
            sessions_list_newest_first_by_prefix_and_delete,
            large_sessions_round_trip_and_bad_keys_are_refused_alike,
            messages_are_stored_once_by_id_in_order_with_an_event,
            messages_of_a_missing_workflow_are_refused,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_names {
    ($mode:ident $factory:expr) => {
        $crate::__conformance_tests!($mode $factory;
            a_run_created_claimed_starts_held_by_its_helper,
            // runs
            create_then_get_round_trips,
            creating_a_duplicate_id_conflicts_and_keeps_the_first,
            an_unknown_run_is_not_found_everywhere,
            a_unique_prefix_resolves_to_its_run,
            an_ambiguous_prefix_is_refused_with_count_and_examples,
            an_unknown_prefix_is_not_found,
            list_is_newest_first,
            a_summary_listing_shows_what_the_full_one_does,
            list_filters_by_status,
            list_filters_by_parcel_name_or_digest_prefix,
            list_filters_by_operation_and_parent,
            list_filters_by_creation_time,
            list_honours_the_limit_after_filtering,
            list_pages_with_a_cursor,
            request_stop_is_idempotent_and_keeps_the_first_time,
            delete_refuses_a_live_run,
            delete_removes_a_terminal_run_and_everything_it_owns,
            // transitions
            a_transition_at_the_current_version_succeeds_and_bumps_it,
            a_stale_version_conflicts_and_leaves_run_and_log_unchanged,
            every_transition_appends_exactly_one_event,
            a_racing_writer_on_the_same_version_loses,
            a_terminal_run_refuses_further_transitions,
            an_attempt_opens_on_running_and_closes_with_the_exit_code,
            a_paused_run_keeps_its_attempt_open,
            a_requeue_starts_a_new_attempt_and_closes_the_old_one,
            a_suspended_run_holds_nothing_and_a_wake_is_its_next_attempt,
            output_is_stored_with_the_transition_and_kept_after,
            several_transitions_save_at_once_with_every_event_and_the_attempt,
            several_transitions_on_a_stale_version_save_nothing,
            every_local_claim_moves_the_token_on,
            // events, usage, artifacts
            usage_events_sum_into_totals_without_bumping_the_version,
            events_page_by_after_and_limit,
            artifacts_round_trip_and_a_name_recorded_again_is_replaced,
            // reliability: dedup, sessions, policy, approvals, dead letters
            extras_round_trip_with_the_run,
            a_live_or_succeeded_run_with_the_same_key_is_returned_instead,
            a_failed_run_with_the_key_does_not_block_and_force_skips_the_check,
            a_session_held_by_a_live_run_is_refused_until_it_ends,
            a_session_is_removed_whole_unless_a_live_run_holds_it,
            sessions_unused_since_a_time_expire_and_used_ones_stay,
            an_approval_is_requested_once_and_decided_once,
            a_pending_approval_ends_cancelled_with_its_run,
            a_run_created_in_review_waits_unclaimed_with_its_approval_pending,
            deciding_a_review_queues_or_cancels_the_run_with_the_decision_at_once,
            dead_letters_list_newest_first_and_record_their_replay,
            a_timed_out_attempt_requeued_keeps_its_status,
            // handoffs: triggers and one run per handoff
            a_run_keeps_its_trigger_and_list_filters_by_it,
            a_handoff_key_starts_one_run_per_origin_whatever_became_of_it,
            a_batch_creates_every_run_or_none,
        );
    };
}

/// Expands the [`RetentionStore`](crate::RetentionStore) promises, like
/// [`conformance_suite!`](crate::conformance_suite) (also with `optional:`).
#[macro_export]
macro_rules! retention_conformance_suite {
    (optional: $factory:expr) => {
        $crate::__retention_conformance_names!(optional $factory);
    };
    ($factory:expr) => {
        $crate::__retention_conformance_names!(required $factory);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __retention_conformance_names {
    ($mode:ident $factory:expr) => {
        $crate::__conformance_tests!($mode $factory;
            retention_deletes_old_finished_runs_of_a_status_in_batches_and_keeps_the_rest,
            retention_of_events_empties_old_finished_runs_logs_and_keeps_the_runs,
            retention_names_the_log_archives_no_remaining_run_has,
            retention_deletes_a_stopped_services_state_with_the_service,
            // batch reads for tracing (the other capability a cluster adds)
            finished_traces_read_a_batch_with_attempts_traced_events_and_traceparent,
        );
    };
}

/// Expands the [`BlobStore`](crate::BlobStore) promises (objects kept in
/// the database) and the artifact references a prune reads, like
/// [`conformance_suite!`](crate::conformance_suite) (also with `optional:`).
#[macro_export]
macro_rules! blob_conformance_suite {
    (optional: $factory:expr) => {
        $crate::__blob_conformance_names!(optional $factory);
    };
    ($factory:expr) => {
        $crate::__blob_conformance_names!(required $factory);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __blob_conformance_names {
    ($mode:ident $factory:expr) => {
        $crate::__conformance_tests!($mode $factory;
            an_object_is_its_parts_in_order_and_nothing_shows_before_its_commit,
            a_commit_replaces_the_object_whole_and_drops_the_old_parts,
            a_put_object_is_new_then_replaced_and_keeps_its_conditions,
            commits_keep_their_conditions_and_a_refused_one_changes_nothing,
            objects_list_by_prefix_in_key_order_a_page_at_a_time,
            abandoned_uploads_expire_and_committed_objects_stay,
            an_artifact_is_in_use_while_some_run_records_it,
        );
    };
}

/// Expands the service-state promises for a backend that implements
/// [`ServiceStore`](crate::ServiceStore) (an opt-in capability), like
/// [`conformance_suite!`](crate::conformance_suite) (also with `optional:`).
#[macro_export]
macro_rules! service_conformance_suite {
    (optional: $factory:expr) => {
        $crate::__service_conformance_names!(optional $factory);
    };
    ($factory:expr) => {
        $crate::__service_conformance_names!(required $factory);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __service_conformance_names {
    ($mode:ident $factory:expr) => {
        $crate::__conformance_tests!($mode $factory;
            service_state_round_trips_and_a_put_replaces_it,
            service_state_of_an_unknown_run_is_not_found,
            deleting_a_service_run_removes_its_state,
            a_service_name_is_held_by_one_running_service_at_a_time,
            named_services_lists_running_named_services_only,
            a_webhook_delivery_is_taken_once_until_it_expires,
            a_fire_is_taken_once_with_its_heartbeats,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($mode:ident $factory:expr; $($name:ident),+ $(,)?) => {
        $(
            #[::tokio::test]
            async fn $name() {
                $crate::__conformance_fresh!($mode $factory, store, {
                    $crate::conformance::$name(store).await;
                });
            }
        )+
    };
}

/// Binds `$store` to a fresh store from `$factory` (keeping its guard alive)
/// and runs `$body`; an `optional` factory's `None` skips the body.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_fresh {
    (required $factory:expr, $store:ident, $body:block) => {
        let ($store, _guard) = ($factory)().await;
        $body
    };
    (optional $factory:expr, $store:ident, $body:block) => {
        let Some(($store, _guard)) = ($factory)().await else {
            return;
        };
        $body
    };
}

/// The helper process used in test states.
pub const HELPER: ProcRef = ProcRef {
    pid: 4100,
    start_ticks: 7,
};

/// The agent process used in test states.
pub const AGENT: ProcRef = ProcRef {
    pid: 4101,
    start_ticks: 8,
};

/// A run id made from a number, so tests control ordering and prefixes.
pub fn id(n: u128) -> RunId {
    format!("{n:032x}")
        .parse()
        .expect("32 hex digits are a run id")
}

/// A stand-in parcel digest for a parcel name: 64 hex digits.
pub fn digest_of(name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex:0<64}").chars().take(64).collect()
}

/// A job run of parcel `parcel`, created at `created_at`.
pub fn new_run(id: RunId, parcel: &str, created_at: Ts) -> NewRun {
    NewRun {
        id,
        parcel_digest: digest_of(parcel),
        parcel_name: parcel.to_string(),
        operation: Operation::Job,
        parent_id: None,
        origin_id: None,
        payload: json!({"question": "what is 6 × 7?", "n": [1, 2, 3]}),
        brief_sha256: "b".repeat(64),
        created_at,
        claimed_by: None,
        created: false,
        trigger: dispatch_core::Trigger::Manual,
        handoff_key: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    }
}

/// When `t` happens.
pub fn at_of(t: &Transition) -> Ts {
    match t {
        Transition::Claim { at, .. }
        | Transition::AgentStarted { at, .. }
        | Transition::Pause { at, .. }
        | Transition::Resume { at }
        | Transition::Wake { at }
        | Transition::Start { at }
        | Transition::Approve { at }
        | Transition::Suspend { at, .. }
        | Transition::Exited { at, .. }
        | Transition::Fail { at, .. }
        | Transition::TimeOut { at, .. }
        | Transition::Cancel { at, .. }
        | Transition::Lost { at, .. }
        | Transition::Requeue { at, .. } => *at,
    }
}

/// The write a well-behaved caller makes for `t`: the next state from
/// [`dispatch_core::RunState::apply`] and one `state` event.
pub fn write_for(run: &Run, t: &Transition) -> StateWrite {
    let state = run
        .state
        .apply(run.operation, t)
        .expect("the test only asks for legal transitions");
    let event = NewEvent::new(
        EventKind::State,
        run.attempt,
        at_of(t),
        json!({"from": run.status(), "to": state.status()}),
    );
    StateWrite::new(state, event)
}

/// Applies `t` to `run` at its current version.
pub async fn step<S: Store>(store: &S, run: &Run, t: Transition) -> Run {
    store
        .transition(&run.id, run.version, &write_for(run, &t))
        .await
        .expect("a legal transition at the current version succeeds")
}

/// Takes a queued run to `running` (claim at `at`, agent up at `at + 1`).
pub async fn start<S: Store>(store: &S, run: &Run, at: Ts) -> Run {
    let run = step(store, run, Transition::Claim { helper: HELPER, at }).await;
    step(
        store,
        &run,
        Transition::AgentStarted {
            agent: AGENT,
            at: at + 1,
        },
    )
    .await
}

/// Creates a run and returns it.
pub async fn create<S: Store>(store: &S, new: NewRun) -> Run {
    store
        .create_run(&new)
        .await
        .expect("creating a fresh run succeeds")
}

/// The run's whole event log.
pub async fn all_events<S: Store>(store: &S, run: &RunId) -> Vec<crate::Event> {
    store
        .list_events(run, 0, usize::MAX)
        .await
        .expect("the events of an existing run list")
}
