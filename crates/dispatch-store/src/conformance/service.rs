//! Service state: what every backend that stores services promises.

use serde_json::json;

use super::{create, id, new_run};
use crate::{ServiceState, ServiceStore, Store, StoreError};

fn state_of(run: &dispatch_core::RunId, next_fire_at: i64) -> ServiceState {
    ServiceState {
        run_id: run.clone(),
        config: json!({"overlap": "queue", "interval_ms": null}),
        schedules: json!([{"expr": "*/10 * * * * *", "next_fire_at": next_fire_at, "last_fired_at": null}]),
        listeners: json!([{"addr": "127.0.0.1:0", "bound_addr": "127.0.0.1:4242", "requests_handled": 0}]),
        updated_at: next_fire_at - 1,
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
    let run = super::step(
        &store,
        &run,
        dispatch_core::Transition::Cancel {
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
