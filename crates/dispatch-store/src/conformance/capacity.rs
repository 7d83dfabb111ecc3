//! Capacity-aware claiming: a worker claims only runs whose `RESOURCES`
//! (CPUS, MEMORY) fit its free capacity, and never more together than fits.

use super::{id, new_run};
use crate::{Capacity, QueueOptions, QueueStore, Store};

const MIB: u64 = 1 << 20;

fn asking(cpus_milli: u64, memory_mib: u64) -> QueueOptions {
    QueueOptions {
        requests: Capacity {
            cpus_milli,
            memory_bytes: memory_mib * MIB,
        },
        ..QueueOptions::default()
    }
}

fn free(cpus_milli: u64, memory_mib: u64) -> Option<Capacity> {
    Some(Capacity {
        cpus_milli,
        memory_bytes: memory_mib * MIB,
    })
}

pub async fn workers_claim_only_runs_that_fit_their_free_capacity<S: Store + QueueStore>(store: S) {
    // 1: 512M; 2: 512M; 3: 2 cores; 4: asks nothing.
    for (n, opts) in [
        (1, asking(0, 512)),
        (2, asking(0, 512)),
        (3, asking(2000, 0)),
        (4, QueueOptions::default()),
    ] {
        store
            .enqueue(&new_run(id(n), "p", n as i64), &opts)
            .await
            .expect("enqueue");
    }
    let claim = |worker: &str, capacity: Option<Capacity>| {
        let mut r = super::request(worker, 10, 100);
        r.free = capacity;
        r
    };
    let ids = |claimed: Vec<crate::Claimed>| {
        let mut v: Vec<_> = claimed.into_iter().map(|c| c.run.id).collect();
        v.sort();
        v
    };
    // 256M and one core free: only the run that asks nothing fits.
    let small = store
        .claim(&claim("small", free(1000, 256)))
        .await
        .expect("claim");
    assert_eq!(ids(small), vec![id(4)], "only what fits in 256M and 1 core");
    // 600M and one core: one 512M run fits, never both together.
    let one = store
        .claim(&claim("one-slot", free(1000, 600)))
        .await
        .expect("claim");
    assert_eq!(ids(one), vec![id(1)], "one 512M run, not two");
    // Plenty: the rest.
    let big = store
        .claim(&claim("big", free(4000, 4096)))
        .await
        .expect("claim");
    assert_eq!(ids(big), vec![id(2), id(3)]);
}

pub async fn a_claim_without_capacity_takes_any_run<S: Store + QueueStore>(store: S) {
    store
        .enqueue(&new_run(id(1), "p", 1), &asking(64_000, 1 << 20))
        .await
        .expect("enqueue");
    let claimed = store
        .claim(&super::request("any", 10, 100))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "no capacity given: no capacity check");
}
