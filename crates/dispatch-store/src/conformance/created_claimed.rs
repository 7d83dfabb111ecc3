//! What [`QueueStore::create_claimed`] promises: runs created already held
//! by a worker, leased and fenced like runs it claimed, never offered to
//! another worker while the lease holds, and back in the queue when it
//! runs out.

use dispatch_core::Status;

use super::queue::{WORKER, agent_up, claim_all, request};
use super::{id, new_run};
use crate::{ParcelStore, QueueStore, RunExtras, Store, StoreError};

pub async fn runs_created_claimed_by_a_worker_are_leased_and_fenced_like_claimed_ones<
    S: Store + QueueStore + ParcelStore,
>(
    store: S,
) {
    let batch = vec![
        (new_run(id(1), "p", 90), RunExtras::default()),
        (new_run(id(2), "p", 90), RunExtras::default()),
    ];
    let brief = ("c".repeat(64), b"the brief".to_vec());
    let held = store
        .create_claimed(&batch, std::slice::from_ref(&brief), &request("w1", 1, 100))
        .await
        .expect("creating claimed runs succeeds");
    let ids: Vec<_> = held.iter().map(|c| c.run.id.clone()).collect();
    assert_eq!(ids, vec![id(1), id(2)], "all of them, in order");
    for c in &held {
        assert_eq!(c.run.status(), Status::Starting);
        assert_eq!(c.run.state.helper(), Some(WORKER));
        assert_eq!(c.run.attempt, 1);
        let lease = store.lease(&c.run.id).await.expect("lease").expect("held");
        assert_eq!(lease.owner, "w1");
        assert_eq!(lease.expires_at, 1100);
        assert_eq!(lease.fence, c.fence);
        assert_eq!(store.get_run(&c.run.id).await.expect("get"), c.run);
    }
    assert_eq!(
        store.get_brief(&brief.0).await.expect("get brief"),
        Some(brief.1.clone()),
        "the brief is stored with them"
    );
    assert!(
        claim_all(&store, "w2", 10, 200).await.is_empty(),
        "no other worker is offered them"
    );
    // Its holder goes on as with a run it claimed.
    let running = agent_up(&store, &held[0], 300).await;
    assert_eq!(running.status(), Status::Running);
    assert_eq!(
        store
            .renew_leases("w1", &[(id(1), held[0].fence)], 2000)
            .await
            .expect("renew"),
        vec![id(1)]
    );

    // The holder dies: the other lease runs out, another worker takes the
    // run and the first one's token writes nothing any more.
    assert_eq!(store.sweep_expired(1101).await.expect("sweep"), vec![id(2)]);
    let taken = claim_all(&store, "w2", 10, 1200).await;
    assert_eq!(taken.len(), 1);
    assert!(taken[0].fence > held[1].fence, "a new token");
    let err = store
        .fenced_append_events(&id(2), held[1].fence, &[])
        .await
        .expect_err("the old token is fenced off");
    assert!(matches!(err, StoreError::Fenced { .. }), "got {err:?}");
}

pub async fn creating_claimed_runs_is_all_or_none<S: Store + QueueStore + ParcelStore>(store: S) {
    let first = vec![(new_run(id(1), "p", 90), RunExtras::default())];
    store
        .create_claimed(&first, &[], &request("w1", 1, 100))
        .await
        .expect("creating a claimed run succeeds");
    // A batch with a run that exists (a message delivered before) creates nothing.
    let again = vec![
        (new_run(id(2), "p", 90), RunExtras::default()),
        (new_run(id(1), "p", 90), RunExtras::default()),
    ];
    let brief = ("d".repeat(64), b"a brief".to_vec());
    store
        .create_claimed(&again, std::slice::from_ref(&brief), &request("w1", 2, 100))
        .await
        .expect_err("an id that exists fails the batch");
    assert_eq!(
        store.get_brief(&brief.0).await.expect("get brief"),
        None,
        "nor its brief"
    );
    assert!(
        matches!(store.get_run(&id(2)).await, Err(StoreError::NotFound(_))),
        "nothing of the batch was created"
    );
}
