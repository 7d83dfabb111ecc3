//! Service state: what every backend that stores services promises.

use serde_json::json;

use dispatch_core::{Operation, Status, Transition};

use super::{create, id, new_run, start, step};
use crate::{QueueOptions, QueuedWake, ServiceState, ServiceStore, Store, StoreError};

fn state_of(run: &dispatch_core::RunId, next_fire_at: i64) -> ServiceState {
    ServiceState {
        run_id: run.clone(),
        config: json!({"overlap": "queue", "interval_ms": null}),
        schedules: json!([{"expr": "*/10 * * * * *", "next_fire_at": next_fire_at, "last_fired_at": null}]),
        listeners: json!([{"addr": "127.0.0.1:0", "bound_addr": "127.0.0.1:4242", "requests_handled": 0}]),
        updated_at: next_fire_at - 1,
        name: None,
    }
}

pub async fn service_state_round_trips_and_a_put_replaces_it<S: Store + ServiceStore>(store: S) {
    let run = create(&store, new_run(id(1), "svc", 10)).await;
    assert_eq!(
        store.get_service_state(&run.id).await.expect("get"),
        None,
        "a run starts without service state"
    );
    let first = state_of(&run.id, 1_000);
    store.put_service_state(&first).await.expect("first put");
    assert_eq!(
        store.get_service_state(&run.id).await.expect("get"),
        Some(first)
    );
    let mut second = state_of(&run.id, 2_000);
    second.listeners =
        json!([{"addr": "127.0.0.1:0", "bound_addr": "127.0.0.1:4242", "requests_handled": 7}]);
    store.put_service_state(&second).await.expect("second put");
    assert_eq!(
        store.get_service_state(&run.id).await.expect("get"),
        Some(second),
        "the second put replaced the whole row"
    );
    let after = store
        .get_run(&run.id)
        .await
        .expect("the run is still there");
    assert_eq!(
        after.version, run.version,
        "service state does not bump the run version"
    );
}

pub async fn service_state_of_an_unknown_run_is_not_found<S: Store + ServiceStore>(store: S) {
    let ghost = id(99);
    match store.put_service_state(&state_of(&ghost, 5)).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(store.get_service_state(&ghost).await.expect("get"), None);
}

pub async fn deleting_a_service_run_removes_its_state<S: Store + ServiceStore>(store: S) {
    let run = create(&store, new_run(id(2), "svc", 10)).await;
    store
        .put_service_state(&state_of(&run.id, 5))
        .await
        .expect("put");
    let run = step(
        &store,
        &run,
        Transition::Cancel {
            reason: "done".into(),
            exit_code: None,
            at: 20,
        },
    )
    .await;
    store.delete_run(&run.id).await.expect("delete");
    assert_eq!(store.get_service_state(&run.id).await.expect("get"), None);
    // The id can be reused by a fresh run without inheriting anything.
    let again = create(&store, new_run(id(2), "svc", 30)).await;
    assert_eq!(store.get_service_state(&again.id).await.expect("get"), None);
}

/// A running service named `name` (a cluster service), with its state at `at`.
async fn named_service<S: Store + ServiceStore>(
    store: &S,
    n: u128,
    name: &str,
    at: i64,
) -> (crate::Run, ServiceState) {
    let mut new = new_run(id(n), name, at);
    new.operation = Operation::Service;
    let run = start(store, &create(store, new).await, at).await;
    let mut state = state_of(&run.id, at + 1_000);
    state.name = Some(name.to_string());
    state.updated_at = at;
    store
        .put_service_state(&state)
        .await
        .expect("put a named service");
    (run, state)
}

fn stop(at: i64) -> Transition {
    Transition::Cancel {
        reason: "stopped by user".into(),
        exit_code: None,
        at,
    }
}

pub async fn a_service_name_is_held_by_one_running_service_at_a_time<S: Store + ServiceStore>(
    store: S,
) {
    let (first, _) = named_service(&store, 10, "monitor", 100).await;
    let (second, _) = {
        let mut new = new_run(id(11), "monitor", 200);
        new.operation = Operation::Service;
        let run = start(&store, &create(&store, new).await, 200).await;
        let mut state = state_of(&run.id, 1_200);
        state.name = Some("monitor".into());
        match store.put_service_state(&state).await {
            Err(StoreError::ServiceNameTaken { name, run: holder }) => {
                assert_eq!(name, "monitor");
                assert_eq!(holder, first.id, "names the running holder");
            }
            other => panic!("expected ServiceNameTaken, got {other:?}"),
        }
        (run, state)
    };
    assert_eq!(
        store
            .service_named("monitor")
            .await
            .expect("lookup")
            .map(|s| s.run_id),
        Some(first.id.clone())
    );
    // Once the holder stopped, the name is free for the other service.
    step(&store, &first, stop(300)).await;
    assert_eq!(store.service_named("monitor").await.expect("lookup"), None);
    let mut state = state_of(&second.id, 1_300);
    state.name = Some("monitor".into());
    store
        .put_service_state(&state)
        .await
        .expect("a stopped service's name is taken over");
    let named = store.named_services().await.expect("list");
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].run_id, second.id);
    assert_eq!(
        store
            .get_service_state(&first.id)
            .await
            .expect("get")
            .and_then(|s| s.name),
        None,
        "the stopped service let go of its name"
    );
}

pub async fn named_services_lists_running_named_services_only<S: Store + ServiceStore>(store: S) {
    let (a, _) = named_service(&store, 20, "alpha", 100).await;
    let (b, _) = named_service(&store, 21, "beta", 100).await;
    // A local service (no name) and a queued one are not listed.
    let local = create(&store, new_run(id(22), "local", 100)).await;
    store
        .put_service_state(&state_of(&local.id, 5))
        .await
        .expect("put");
    let names: Vec<_> = store
        .named_services()
        .await
        .expect("list")
        .into_iter()
        .map(|s| (s.name.unwrap_or_default(), s.run_id))
        .collect();
    assert_eq!(
        names,
        vec![("alpha".to_string(), a.id), ("beta".to_string(), b.id)]
    );
}

pub async fn a_fire_is_taken_once_with_its_heartbeats<S: Store + ServiceStore>(store: S) {
    let (service, state) = named_service(&store, 30, "ticker", 100).await;
    let wake = |n: u128| {
        let mut new = new_run(id(n), "ticker", 150);
        new.operation = Operation::Heartbeat;
        new.parent_id = Some(service.id.clone());
        QueuedWake {
            run: new,
            options: QueueOptions::default(),
            extras: crate::RunExtras::default(),
        }
    };
    let mut next = state.clone();
    next.updated_at = 150;
    next.schedules = json!([{"expr": "* * * * * *", "next_fire_at": 2_000}]);
    let won = store
        .fire_service(&next, state.updated_at, &[wake(31)])
        .await
        .expect("fire")
        .expect("the first fire at the expected version wins");
    assert_eq!(won.len(), 1);
    assert_eq!(won[0].status(), Status::Queued, "the heartbeat is queued");
    assert_eq!(won[0].parent_id.as_ref(), Some(&service.id));
    // A second server that read the same version loses, creating nothing.
    let mut other = state.clone();
    other.updated_at = 151;
    let lost = store
        .fire_service(&other, state.updated_at, &[wake(32)])
        .await
        .expect("fire");
    assert_eq!(lost, None, "a stale version fires nothing");
    assert!(matches!(
        store.get_run(&id(32)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.get_service_state(&service.id).await.expect("get"),
        Some(next.clone())
    );
    // A stopped service fires nothing either.
    step(&store, &service, stop(160)).await;
    let mut late = next.clone();
    late.updated_at = 170;
    assert_eq!(
        store
            .fire_service(&late, next.updated_at, &[wake(33)])
            .await
            .expect("fire"),
        None
    );
}

pub async fn a_webhook_delivery_is_taken_once_until_it_expires<S: Store + ServiceStore>(store: S) {
    assert!(
        store
            .claim_delivery("hooks", "sig:a", 1_000, 10)
            .await
            .expect("first claim"),
        "a new delivery is taken"
    );
    assert!(
        !store
            .claim_delivery("hooks", "sig:a", 2_000, 20)
            .await
            .expect("replay"),
        "the same delivery again is a replay"
    );
    assert!(
        store
            .claim_delivery("other", "sig:a", 1_000, 20)
            .await
            .expect("another service"),
        "deliveries are per service"
    );
    store
        .release_delivery("other", "sig:a")
        .await
        .expect("release");
    assert!(
        store
            .claim_delivery("other", "sig:a", 1_000, 30)
            .await
            .expect("after release"),
        "a released delivery may be taken again (its wake was refused)"
    );
    assert!(
        store
            .claim_delivery("hooks", "sig:a", 5_000, 1_000)
            .await
            .expect("after expiry"),
        "an expired delivery is forgotten"
    );
}
