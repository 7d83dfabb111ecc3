//! Parcels, briefs and shipped run logs: what every cluster backend promises.

use dispatch_core::Transition;

use super::{create, id, new_run, start, step};
use crate::{LogArchive, ParcelStore, RunLogStore, Store, StoreError, StoredParcel};

fn parcel(digest: char, archive: &[u8]) -> StoredParcel {
    StoredParcel {
        digest: digest.to_string().repeat(64),
        name: "hello".into(),
        manifest: r#"{"schema":1,"name":"hello","files":[]}"#.into(),
        archive: archive.to_vec(),
        created_at: 1_000,
    }
}

pub async fn a_parcel_is_stored_by_digest_and_a_put_writes_only_what_differs<S: ParcelStore>(
    store: S,
) {
    let first = parcel('a', &[0, 1, 2, 255, 0, 7]);
    assert!(!store.has_parcel(&first.digest).await.expect("has"));
    assert_eq!(store.get_parcel(&first.digest).await.expect("get"), None);
    assert!(store.put_parcel(&first).await.expect("put"), "stored now");
    assert!(store.has_parcel(&first.digest).await.expect("has"));
    assert_eq!(
        store.get_parcel(&first.digest).await.expect("get"),
        Some(first.clone()),
        "every byte of the archive round-trips"
    );
    let mut later = first.clone();
    later.created_at = 2_000;
    assert!(
        !store.put_parcel(&later).await.expect("put again"),
        "the same content again writes nothing"
    );
    assert_eq!(
        store.get_parcel(&first.digest).await.expect("get"),
        Some(first.clone()),
        "and keeps the first time"
    );
    let mut repaired = first.clone();
    repaired.archive = b"the right bytes".to_vec();
    assert!(
        store.put_parcel(&repaired).await.expect("put"),
        "other content replaces a damaged copy"
    );
    assert_eq!(
        store.get_parcel(&first.digest).await.expect("get"),
        Some(repaired)
    );
    let other = parcel('b', &[]);
    assert!(store.put_parcel(&other).await.expect("put"));
    assert_eq!(
        store.get_parcel(&other.digest).await.expect("get"),
        Some(other)
    );
}

pub async fn a_brief_is_stored_by_sha256_and_a_put_writes_only_what_differs<S: ParcelStore>(
    store: S,
) {
    let sha = "c".repeat(64);
    assert_eq!(store.get_brief(&sha).await.expect("get"), None);
    assert!(
        store
            .put_brief(&sha, b"{\"payload\":1}\n\0")
            .await
            .expect("put")
    );
    assert!(
        !store
            .put_brief(&sha, b"{\"payload\":1}\n\0")
            .await
            .expect("again")
    );
    assert_eq!(
        store.get_brief(&sha).await.expect("get"),
        Some(b"{\"payload\":1}\n\0".to_vec()),
        "byte for byte"
    );
    assert!(store.put_brief(&sha, b"fixed").await.expect("put other"));
    assert_eq!(
        store.get_brief(&sha).await.expect("get"),
        Some(b"fixed".to_vec())
    );
    assert_eq!(store.get_brief(&"d".repeat(64)).await.expect("get"), None);
    // No run references it: a prune removes it, once.
    let both = [sha.clone(), "d".repeat(64)];
    assert_eq!(
        store
            .delete_unreferenced_briefs(&both)
            .await
            .expect("delete"),
        5
    );
    assert_eq!(store.get_brief(&sha).await.expect("get"), None);
    assert_eq!(
        store
            .delete_unreferenced_briefs(&both)
            .await
            .expect("again"),
        0
    );
}

pub async fn a_brief_a_run_references_is_not_pruned<S: Store + ParcelStore>(store: S) {
    let run = create(&store, new_run(id(1), "p", 10)).await;
    let sha = run.brief_sha256.clone();
    store.put_brief(&sha, b"{}").await.expect("put");
    assert_eq!(
        store
            .delete_unreferenced_briefs(std::slice::from_ref(&sha))
            .await
            .expect("delete"),
        0
    );
    assert_eq!(
        store.get_brief(&sha).await.expect("get"),
        Some(b"{}".to_vec())
    );
}

pub async fn a_log_is_appended_in_order_and_read_from_any_offset<S: Store + RunLogStore>(store: S) {
    let run = create(&store, new_run(id(1), "p", 10)).await;
    let neighbour = create(&store, new_run(id(2), "p", 11)).await;
    assert_eq!(store.log_length(&run.id).await.expect("length"), 0);
    assert!(
        store
            .read_log(&run.id, 0, 100)
            .await
            .expect("read")
            .is_empty()
    );
    store
        .append_log(&run.id, run.fence, 0, b"hello ")
        .await
        .expect("append");
    store
        .append_log(&run.id, run.fence, 6, b"")
        .await
        .expect("nothing to append");
    store
        .append_log(&run.id, run.fence, 6, b"world\n")
        .await
        .expect("append");
    store
        .append_log(&run.id, run.fence, 12, b"bye\n")
        .await
        .expect("append");
    store
        .append_log(&neighbour.id, neighbour.fence, 0, b"other")
        .await
        .expect("append");
    assert_eq!(store.log_length(&run.id).await.expect("length"), 16);
    let all = store.read_log(&run.id, 0, 1 << 20).await.expect("read");
    assert_eq!(all, b"hello world\nbye\n");
    for from in 0..=16u64 {
        let rest = store.read_log(&run.id, from, 1 << 20).await.expect("read");
        assert_eq!(rest, &all[from as usize..], "from byte {from}");
    }
    assert_eq!(store.read_log(&run.id, 3, 5).await.expect("read"), b"lo wo");
    assert!(
        store
            .read_log(&run.id, 99, 10)
            .await
            .expect("read")
            .is_empty()
    );
    // Paging by what was read gets every byte once.
    let mut paged = Vec::new();
    loop {
        let page = store
            .read_log(&run.id, paged.len() as u64, 4)
            .await
            .expect("read");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert_eq!(
        store.read_log(&neighbour.id, 0, 100).await.expect("read"),
        b"other"
    );
}

pub async fn an_append_not_at_the_end_is_refused_unless_it_is_a_retry<S: Store + RunLogStore>(
    store: S,
) {
    let run = create(&store, new_run(id(1), "p", 10)).await;
    store
        .append_log(&run.id, run.fence, 0, b"first\n")
        .await
        .expect("append");
    store
        .append_log(&run.id, run.fence, 0, b"first\n")
        .await
        .expect("a retry of a committed append succeeds");
    assert_eq!(store.log_length(&run.id).await.expect("length"), 6, "once");
    for (offset, bytes) in [(0, &b"other\n"[..]), (3, b"st\n"), (9, b"gap"), (2, b"")] {
        let err = store
            .append_log(&run.id, run.fence, offset, bytes)
            .await
            .expect_err("not at the end");
        assert!(
            matches!(err, StoreError::LogMoved { length: 6, offset: o, .. } if o == offset),
            "got {err:?}"
        );
    }
    assert_eq!(
        store.read_log(&run.id, 0, 100).await.expect("read"),
        b"first\n",
        "refused appends wrote nothing"
    );
    let err = store
        .append_log(&id(77), 0, 0, b"x")
        .await
        .expect_err("an unknown run");
    assert!(matches!(err, StoreError::NotFound(_)), "got {err:?}");
    assert_eq!(store.log_length(&id(77)).await.expect("length"), 0);
}

pub async fn deleting_a_run_removes_its_log<S: Store + RunLogStore>(store: S) {
    let run = start(&store, &create(&store, new_run(id(1), "p", 10)).await, 20).await;
    store
        .append_log(&run.id, run.fence, 0, b"bye\n")
        .await
        .expect("append");
    step(&store, &run, Transition::Exited { code: 0, at: 30 }).await;
    store.delete_run(&run.id).await.expect("delete");
    assert_eq!(store.log_length(&run.id).await.expect("length"), 0);
    // A new run with the same id starts with an empty log.
    let again = create(&store, new_run(id(1), "p", 40)).await;
    store
        .append_log(&again.id, again.fence, 0, b"new\n")
        .await
        .expect("append");
    assert_eq!(
        store.read_log(&again.id, 0, 100).await.expect("read"),
        b"new\n"
    );
}

pub async fn archiving_a_log_moves_its_bytes_out_and_appends_go_on_after_it<
    S: Store + RunLogStore,
>(
    store: S,
) {
    let run = start(&store, &create(&store, new_run(id(1), "p", 10)).await, 20).await;
    let run = step(&store, &run, Transition::Exited { code: 0, at: 30 }).await;
    let archive = |size: u64| LogArchive {
        sha256: "a".repeat(64),
        size,
    };
    store
        .append_log(&run.id, run.fence, 0, b"hello ")
        .await
        .expect("append");
    store
        .append_log(&run.id, run.fence, 6, b"world\n")
        .await
        .expect("append");
    assert_eq!(store.log_archive(&run.id).await.expect("archive"), None);
    // Not the stored length: something was appended since it was read.
    assert!(
        !store
            .archive_log(&run.id, &archive(6))
            .await
            .expect("archive")
    );
    assert!(
        store
            .archive_log(&run.id, &archive(12))
            .await
            .expect("archive")
    );
    assert!(
        !store
            .archive_log(&run.id, &archive(12))
            .await
            .expect("archive"),
        "archived once"
    );
    assert_eq!(
        store.log_archive(&run.id).await.expect("archive"),
        Some(archive(12))
    );
    assert_eq!(store.log_length(&run.id).await.expect("length"), 12);
    assert!(
        store
            .read_log(&run.id, 12, 100)
            .await
            .expect("read")
            .is_empty()
    );
    // An append at the archive's end goes on there; a stale one is refused.
    let err = store
        .append_log(&run.id, run.fence, 0, b"again")
        .await
        .expect_err("stale offset");
    assert!(
        matches!(err, StoreError::LogMoved { length: 12, .. }),
        "got {err:?}"
    );
    store
        .append_log(&run.id, run.fence, 12, b"more\n")
        .await
        .expect("append");
    assert_eq!(store.log_length(&run.id).await.expect("length"), 17);
    assert_eq!(
        store.read_log(&run.id, 12, 100).await.expect("read"),
        b"more\n"
    );
    assert_eq!(
        store.read_log(&run.id, 14, 100).await.expect("read"),
        b"re\n"
    );
    let err = store
        .archive_log(&id(77), &archive(1))
        .await
        .expect_err("an unknown run");
    assert!(matches!(err, StoreError::NotFound(_)), "got {err:?}");
    assert!(
        store
            .log_archive_in_use(&"a".repeat(64))
            .await
            .expect("in use")
    );
    store.delete_run(&run.id).await.expect("delete");
    assert_eq!(store.log_archive(&run.id).await.expect("archive"), None);
    assert!(
        !store
            .log_archive_in_use(&"a".repeat(64))
            .await
            .expect("in use")
    );
}

pub async fn the_catalog_lists_parcels_newest_first_and_keeps_what_live_runs_use<
    S: ParcelStore + crate::ParcelCatalog + Store,
>(
    store: S,
) {
    use crate::ParcelRemoval;
    let mut older = parcel('a', b"old");
    older.digest = super::digest_of("busy");
    older.name = "busy".into();
    let mut newer = parcel('b', b"new");
    newer.created_at = 5_000;
    store.put_parcel(&older).await.expect("put");
    store.put_parcel(&newer).await.expect("put");
    let listed = store.list_parcels().await.expect("list");
    let digests: Vec<&str> = listed.iter().map(|p| p.digest.as_str()).collect();
    assert_eq!(digests, [newer.digest.as_str(), older.digest.as_str()]);
    assert_eq!(listed[1].name, "busy");
    assert_eq!(listed[1].manifest, older.manifest);

    // A run of `busy` that has not ended keeps it; once it ends, it goes.
    let run = create(&store, new_run(id(1), "busy", 1_000)).await;
    let run = start(&store, &run, 1_100).await;
    assert_eq!(
        store.remove_parcel(&older.digest).await.expect("remove"),
        ParcelRemoval::InUse(vec![run.id.to_string()])
    );
    assert!(store.has_parcel(&older.digest).await.expect("has"));
    step(&store, &run, Transition::Exited { code: 0, at: 1_200 }).await;
    assert_eq!(
        store.remove_parcel(&older.digest).await.expect("remove"),
        ParcelRemoval::Removed
    );
    assert!(!store.has_parcel(&older.digest).await.expect("has"));
    assert_eq!(
        store.remove_parcel(&older.digest).await.expect("again"),
        ParcelRemoval::NotFound
    );
    let listed = store.list_parcels().await.expect("list");
    assert_eq!(listed.len(), 1);

    // Pruning: of three `hello`s, the newest stays, the one a finished run
    // used stays, the other goes.
    let mut used = parcel('c', b"used");
    used.created_at = 3_000;
    let mut unused = parcel('d', b"unused");
    unused.created_at = 4_000;
    store.put_parcel(&used).await.expect("put");
    store.put_parcel(&unused).await.expect("put");
    let mut run = new_run(id(2), "hello", 3_100);
    run.parcel_digest = used.digest.clone();
    let run = create(&store, run).await;
    let run = start(&store, &run, 3_200).await;
    step(&store, &run, Transition::Exited { code: 0, at: 3_300 }).await;
    assert_eq!(
        store.prune_parcels().await.expect("prune"),
        vec![unused.digest.clone()]
    );
    let left: Vec<String> = store
        .list_parcels()
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.digest)
        .collect();
    assert_eq!(left, [newer.digest.clone(), used.digest.clone()]);
    assert!(store.prune_parcels().await.expect("again").is_empty());
}
