//! Objects kept in the database ([`BlobStore`]), and the artifact
//! references a prune reads before it deletes one.

use crate::{Artifact, BlobExpect, BlobStore, Store, StoreError};

use super::{create, id, new_run};

async fn write<S: BlobStore>(store: &S, upload: &str, parts: &[(i64, &[u8])]) {
    store
        .begin_blob_upload(upload, 1_000)
        .await
        .expect("an upload begins");
    for (seq, bytes) in parts {
        store
            .put_blob_part(upload, *seq, bytes)
            .await
            .expect("a part of a begun upload is written");
    }
}

async fn read_all<S: BlobStore>(store: &S, key: &str) -> Option<Vec<u8>> {
    let meta = store.head_blob(key).await.expect("head")?;
    let mut out = Vec::new();
    for part in store.blob_parts(&meta.upload).await.expect("parts") {
        let bytes = store
            .read_blob_part(&meta.upload, part.seq)
            .await
            .expect("read")
            .expect("a listed part is there");
        assert_eq!(bytes.len() as u64, part.len);
        out.extend_from_slice(&bytes);
    }
    assert_eq!(out.len() as u64, meta.size, "the size is the parts' sum");
    Some(out)
}

pub async fn an_object_is_its_parts_in_order_and_nothing_shows_before_its_commit<S: BlobStore>(
    store: S,
) {
    // Parts written out of order are read in `seq` order.
    write(&store, "u1", &[(2, b"cc"), (0, b"a"), (1, b"bbb")]).await;
    assert_eq!(store.head_blob("k").await.expect("head"), None);
    assert!(
        store
            .list_blobs("", None, 10)
            .await
            .expect("list")
            .is_empty()
    );
    // Writing a part again replaces it.
    store.put_blob_part("u1", 1, b"BB").await.expect("rewrite");
    let meta = store
        .commit_blob("k", "u1", &BlobExpect::Any, 2_000)
        .await
        .expect("commit")
        .expect("nothing expected");
    assert_eq!((meta.size, meta.modified_at), (5, 2_000));
    assert_eq!(meta.etag, "u1");
    assert_eq!(store.head_blob("k").await.expect("head"), Some(meta));
    assert_eq!(read_all(&store, "k").await.as_deref(), Some(&b"aBBcc"[..]));
    // An empty object is an object.
    write(&store, "u0", &[]).await;
    store
        .commit_blob("empty", "u0", &BlobExpect::Any, 2_000)
        .await
        .expect("commit")
        .expect("committed");
    assert_eq!(read_all(&store, "empty").await, Some(Vec::new()));
    // A committed upload takes no more parts and is not committed twice.
    for result in [
        store.put_blob_part("u1", 9, b"x").await.map(|_| ()),
        store
            .commit_blob("k2", "u1", &BlobExpect::Any, 3_000)
            .await
            .map(|_| ()),
        store.put_blob_part("never", 0, b"x").await,
    ] {
        assert!(
            matches!(result, Err(StoreError::UploadGone { .. })),
            "{result:?}"
        );
    }
}

pub async fn a_commit_replaces_the_object_whole_and_drops_the_old_parts<S: BlobStore>(store: S) {
    write(&store, "old", &[(0, b"old bytes")]).await;
    store
        .commit_blob("k", "old", &BlobExpect::Any, 1)
        .await
        .expect("commit")
        .expect("committed");
    write(&store, "new", &[(0, b"new"), (1, b" bytes!")]).await;
    // Until the new upload commits, readers see the old object.
    assert_eq!(
        read_all(&store, "k").await.as_deref(),
        Some(&b"old bytes"[..])
    );
    let meta = store
        .commit_blob("k", "new", &BlobExpect::Any, 2)
        .await
        .expect("commit")
        .expect("committed");
    assert_eq!(meta.upload, "new");
    assert_eq!(
        read_all(&store, "k").await.as_deref(),
        Some(&b"new bytes!"[..])
    );
    assert!(
        store.blob_parts("old").await.expect("parts").is_empty(),
        "the replaced upload's parts went with the commit"
    );
    assert_eq!(store.read_blob_part("old", 0).await.expect("read"), None);
    // Deleting removes the object and its parts.
    assert!(store.delete_blob("k").await.expect("delete"));
    assert!(!store.delete_blob("k").await.expect("delete again"));
    assert_eq!(store.head_blob("k").await.expect("head"), None);
    assert!(store.blob_parts("new").await.expect("parts").is_empty());
}

/// `put_blob`, the one-call write (a run's call records): a new key, the
/// same key again (the old parts go), a condition that does not hold
/// (nothing changes), an empty object.
pub async fn a_put_object_is_new_then_replaced_and_keeps_its_conditions<S: BlobStore>(store: S) {
    let first = store
        .put_blob("k", "u1", b"first", &BlobExpect::Any, 1)
        .await
        .expect("put")
        .expect("written");
    assert_eq!((first.upload.as_str(), first.size), ("u1", 5));
    assert_eq!(read_all(&store, "k").await.as_deref(), Some(&b"first"[..]));
    let refused = store
        .put_blob("k", "u2", b"second", &BlobExpect::Absent, 2)
        .await
        .expect("put");
    assert_eq!(refused, None, "the key is taken");
    assert!(store.blob_parts("u2").await.expect("parts").is_empty());
    assert_eq!(read_all(&store, "k").await.as_deref(), Some(&b"first"[..]));
    let second = store
        .put_blob("k", "u3", b"second!", &BlobExpect::Any, 3)
        .await
        .expect("put")
        .expect("written");
    assert_eq!((second.upload.as_str(), second.size), ("u3", 7));
    assert_eq!(
        read_all(&store, "k").await.as_deref(),
        Some(&b"second!"[..])
    );
    assert!(
        store.blob_parts("u1").await.expect("parts").is_empty(),
        "the replaced object's parts went"
    );
    let fresh = store
        .put_blob("new", "u4", b"x", &BlobExpect::Absent, 4)
        .await
        .expect("put");
    assert!(fresh.is_some(), "an absent key is written");
    let empty = store
        .put_blob("empty", "u5", b"", &BlobExpect::Any, 5)
        .await
        .expect("put")
        .expect("written");
    assert_eq!(empty.size, 0);
    assert_eq!(read_all(&store, "empty").await.as_deref(), Some(&b""[..]));
    assert_eq!(
        store
            .head_blob("empty")
            .await
            .expect("head")
            .map(|m| m.size),
        Some(0)
    );
}

pub async fn commits_keep_their_conditions_and_a_refused_one_changes_nothing<S: BlobStore>(
    store: S,
) {
    write(&store, "a", &[(0, b"first")]).await;
    let first = store
        .commit_blob("k", "a", &BlobExpect::Absent, 1)
        .await
        .expect("commit")
        .expect("the key was free");
    // A second create is refused; its upload is gone with its parts.
    write(&store, "b", &[(0, b"second")]).await;
    assert_eq!(
        store
            .commit_blob("k", "b", &BlobExpect::Absent, 2)
            .await
            .expect("commit"),
        None
    );
    assert!(store.blob_parts("b").await.expect("parts").is_empty());
    // An update on a stale etag is refused; on the current one it goes through.
    write(&store, "c", &[(0, b"third")]).await;
    assert_eq!(
        store
            .commit_blob("k", "c", &BlobExpect::Etag("stale".into()), 3)
            .await
            .expect("commit"),
        None
    );
    write(&store, "d", &[(0, b"fourth")]).await;
    let fourth = store
        .commit_blob("k", "d", &BlobExpect::Etag(first.etag), 4)
        .await
        .expect("commit")
        .expect("the etag was current");
    assert_eq!(read_all(&store, "k").await.as_deref(), Some(&b"fourth"[..]));
    assert_ne!(fourth.etag, "a");
    // An update of a missing key is refused.
    write(&store, "e", &[(0, b"x")]).await;
    assert_eq!(
        store
            .commit_blob("missing", "e", &BlobExpect::Etag(fourth.etag), 5)
            .await
            .expect("commit"),
        None
    );
    assert_eq!(store.head_blob("missing").await.expect("head"), None);
}

pub async fn objects_list_by_prefix_in_key_order_a_page_at_a_time<S: BlobStore>(store: S) {
    let keys = [
        "artifacts/b",
        "artifacts/a",
        "artifacts0",
        "artifact",
        "state/p/x",
        "artifacts/c/d",
    ];
    for (n, key) in keys.iter().enumerate() {
        let upload = format!("u{n}");
        write(&store, &upload, &[(0, key.as_bytes())]).await;
        store
            .commit_blob(key, &upload, &BlobExpect::Any, n as i64)
            .await
            .expect("commit")
            .expect("committed");
    }
    let names =
        |metas: Vec<crate::BlobMeta>| -> Vec<String> { metas.into_iter().map(|m| m.key).collect() };
    let all = names(
        store
            .list_blobs("artifacts/", None, 100)
            .await
            .expect("list"),
    );
    assert_eq!(all, ["artifacts/a", "artifacts/b", "artifacts/c/d"]);
    let page = names(store.list_blobs("artifacts/", None, 2).await.expect("list"));
    assert_eq!(page, ["artifacts/a", "artifacts/b"]);
    let rest = names(
        store
            .list_blobs("artifacts/", Some("artifacts/b"), 2)
            .await
            .expect("list"),
    );
    assert_eq!(rest, ["artifacts/c/d"]);
    assert_eq!(
        store.list_blobs("", None, 100).await.expect("list").len(),
        keys.len()
    );
    let meta = &store.list_blobs("state/", None, 10).await.expect("list")[0];
    assert_eq!((meta.key.as_str(), meta.size), ("state/p/x", 9));
}

pub async fn abandoned_uploads_expire_and_committed_objects_stay<S: BlobStore>(store: S) {
    store.begin_blob_upload("old", 100).await.expect("begin");
    store.put_blob_part("old", 0, b"x").await.expect("part");
    store.begin_blob_upload("recent", 900).await.expect("begin");
    store.put_blob_part("recent", 0, b"y").await.expect("part");
    store.begin_blob_upload("done", 100).await.expect("begin");
    store.put_blob_part("done", 0, b"z").await.expect("part");
    store
        .commit_blob("k", "done", &BlobExpect::Any, 150)
        .await
        .expect("commit")
        .expect("committed");
    assert_eq!(store.expire_blob_uploads(500).await.expect("expire"), 1);
    assert!(store.blob_parts("old").await.expect("parts").is_empty());
    assert!(matches!(
        store.put_blob_part("old", 1, b"late").await,
        Err(StoreError::UploadGone { .. })
    ));
    assert_eq!(store.blob_parts("recent").await.expect("parts").len(), 1);
    assert_eq!(read_all(&store, "k").await.as_deref(), Some(&b"z"[..]));
    // An abort drops an upload at once.
    store.abort_blob_upload("recent").await.expect("abort");
    assert!(store.blob_parts("recent").await.expect("parts").is_empty());
    store
        .abort_blob_upload("recent")
        .await
        .expect("abort again");
    assert_eq!(
        store.expire_blob_uploads(i64::MAX).await.expect("expire"),
        0
    );
}

pub async fn an_artifact_is_in_use_while_some_run_records_it<S: Store>(store: S) {
    let (a, b) = (id(1), id(2));
    create(&store, new_run(a.clone(), "p", 1)).await;
    create(&store, new_run(b.clone(), "p", 2)).await;
    let (one, two) = ("1".repeat(64), "2".repeat(64));
    let record = |sha: &str| Artifact {
        name: format!("{sha}.bin"),
        sha256: sha.to_string(),
        size: 3,
    };
    store
        .add_artifacts(&a, &[record(&one)])
        .await
        .expect("record");
    store
        .add_artifacts(&b, &[record(&one), record(&two)])
        .await
        .expect("record");
    assert!(store.artifact_in_use(&one).await.expect("in use"));
    assert!(store.artifact_in_use(&two).await.expect("in use"));
    assert!(
        !store
            .artifact_in_use(&"3".repeat(64))
            .await
            .expect("in use")
    );
}
