//! The database object store ([`super::db`]) through `object_store`'s own
//! calls and through [`Objects`], on a real SQLite file and a real
//! PostgreSQL database (127.0.0.1:5432; skipped outside CI without one).

use std::sync::Arc;

use dispatch_store::BlobStore;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use sha2::{Digest, Sha256};

use super::db::DbObjects;
use super::*;

fn sqlite() -> (Arc<dyn BlobStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dispatch_store::SqliteStore::open(
        &dir.path().join("dispatch.db"),
        std::time::Duration::from_secs(5),
    )
    .expect("a fresh database");
    (Arc::new(store), dir)
}

async fn postgres() -> Option<(
    Arc<dyn BlobStore>,
    dispatch_test_support::testdb::TestDatabase,
)> {
    let db = dispatch_test_support::testdb::TestDatabase::create().await?;
    let store = dispatch_store::PgStore::connect(db.url(), 4)
        .await
        .expect("a fresh database migrates");
    Some((Arc::new(store), db))
}

/// `object_store`'s promises: atomic puts with conditions, ranges, heads,
/// listings, copies, deletes; multipart parts in order.
async fn behaves_as_an_object_store(blobs: Arc<dyn BlobStore>) {
    let store = DbObjects::new(blobs);
    let key = Path::from("a/b/one");
    let put = store
        .put(&key, PutPayload::from_static(b"hello world"))
        .await
        .expect("put");
    let got = store.get(&key).await.expect("get");
    assert_eq!(got.meta.size, 11);
    assert_eq!(got.meta.e_tag, put.e_tag);
    assert_eq!(&got.bytes().await.expect("bytes")[..], b"hello world");
    let ranged = |range| GetOptions {
        range: Some(range),
        ..Default::default()
    };
    for (range, want) in [
        (GetRange::Bounded(2..5), &b"llo"[..]),
        (GetRange::Offset(6), b"world"),
        (GetRange::Suffix(3), b"rld"),
    ] {
        let got = store.get_opts(&key, ranged(range)).await.expect("range");
        assert_eq!(&got.bytes().await.expect("bytes")[..], want);
    }
    let head = store.head(&key).await.expect("head");
    assert_eq!(head.size, 11);
    let empty = Path::from("e/empty");
    store
        .put(&empty, PutPayload::from_static(b""))
        .await
        .expect("an empty object");
    let got = store.get(&empty).await.expect("get the empty object");
    assert_eq!(got.meta.size, 0);
    assert!(got.bytes().await.expect("bytes").is_empty());
    store.delete(&empty).await.expect("delete the empty object");
    assert!(matches!(
        store.get(&Path::from("a/nope")).await,
        Err(object_store::Error::NotFound { .. })
    ));
    // Create and update conditions.
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    assert!(matches!(
        store
            .put_opts(&key, PutPayload::from_static(b"x"), create.clone())
            .await,
        Err(object_store::Error::AlreadyExists { .. })
    ));
    let update = |etag: Option<String>| PutOptions {
        mode: PutMode::Update(UpdateVersion {
            e_tag: etag,
            version: None,
        }),
        ..Default::default()
    };
    assert!(matches!(
        store
            .put_opts(
                &key,
                PutPayload::from_static(b"x"),
                update(Some("stale".into()))
            )
            .await,
        Err(object_store::Error::Precondition { .. })
    ));
    store
        .put_opts(&key, PutPayload::from_static(b"updated"), update(put.e_tag))
        .await
        .expect("an update on the current etag");
    assert_eq!(
        &store
            .get(&key)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("b")[..],
        b"updated"
    );

    // A multipart upload: parts over one row each, read back in order.
    let big = Path::from("a/big");
    let part = |n: u8| vec![n; dispatch_store::MAX_PART + 1000];
    let mut upload = store.put_multipart(&big).await.expect("multipart");
    let (p0, p1, p2) = (part(1), part(2), vec![3u8; 10]);
    let futures = vec![
        upload.put_part(PutPayload::from(p0.clone())),
        upload.put_part(PutPayload::from(p1.clone())),
        upload.put_part(PutPayload::from(p2.clone())),
    ];
    // Completed out of order.
    for f in futures.into_iter().rev() {
        f.await.expect("a part");
    }
    assert!(matches!(
        store.head(&big).await,
        Err(object_store::Error::NotFound { .. })
    ));
    upload.complete().await.expect("complete");
    let whole = [p0, p1, p2].concat();
    let got = store.get(&big).await.expect("get");
    // Streamed a row at a time, never as one buffer.
    let chunks: Vec<bytes::Bytes> = got.into_stream().try_collect().await.expect("stream");
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    assert_eq!(chunks.concat(), whole);
    let start = dispatch_store::MAX_PART as u64 - 5;
    let across = store
        .get_range(&big, start..start + 10)
        .await
        .expect("a range across two rows");
    assert_eq!(&across[..], &whole[start as usize..start as usize + 10]);

    // Listings: under a prefix (not beside it), with and without a delimiter.
    store
        .put(&Path::from("a/bc"), PutPayload::from_static(b"1"))
        .await
        .expect("put");
    store
        .put(&Path::from("a/b/c/deep"), PutPayload::from_static(b"2"))
        .await
        .expect("put");
    let under_ab: Vec<String> = store
        .list(Some(&Path::from("a/b")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    assert_eq!(under_ab, ["a/b/c/deep", "a/b/one"]);
    let level = store
        .list_with_delimiter(Some(&Path::from("a")))
        .await
        .expect("list");
    let objects: Vec<String> = level
        .objects
        .iter()
        .map(|m| m.location.to_string())
        .collect();
    let prefixes: Vec<String> = level
        .common_prefixes
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(objects, ["a/bc", "a/big"]);
    assert_eq!(prefixes, ["a/b"]);

    // Copies and deletes.
    store
        .copy(&big, &Path::from("copy/big"))
        .await
        .expect("copy");
    assert_eq!(
        store
            .get(&Path::from("copy/big"))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes"),
        whole
    );
    assert!(matches!(
        store
            .copy_if_not_exists(&key, &Path::from("copy/big"))
            .await,
        Err(object_store::Error::AlreadyExists { .. })
    ));
    store.delete(&big).await.expect("delete");
    store.delete(&big).await.expect("deleting nothing is fine");
    assert!(store.head(&big).await.is_err());
    let all: Vec<_> = store.list(None).try_collect().await.expect("list");
    assert_eq!(all.len(), 4, "{all:?}");
}

/// What a cluster keeps there: artifacts (checked), state, probes.
async fn carries_what_objects_keep(blobs: Arc<dyn BlobStore>) {
    let objects = Objects::database(blobs, "postgresql (the cluster's database)");
    objects.probe().await.expect("the database is writable");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.bin");
    let bytes: Vec<u8> = (0..CHUNK * 2 + 777).map(|i| (i % 253) as u8).collect();
    std::fs::write(&src, &bytes).expect("write");
    let digest = hex::encode(Sha256::digest(&bytes));
    assert!(objects.put_artifact(&digest, &src).await.expect("put"));
    assert!(!objects.put_artifact(&digest, &src).await.expect("again"));
    let dest = dir.path().join("out.bin");
    assert_eq!(
        objects
            .download_artifact(&digest, &dest)
            .await
            .expect("get"),
        bytes.len() as u64
    );
    assert_eq!(std::fs::read(&dest).expect("read"), bytes);
    assert_eq!(
        objects.verify_artifact(&digest).await.expect("verify"),
        bytes.len() as u64
    );
    match objects.get_artifact(&"0".repeat(64)).await {
        Err(ObjectsError::NotFound { url, .. }) => {
            assert_eq!(url, "postgresql (the cluster's database)")
        }
        other => panic!("expected NotFound, got {:?}", other.map(|(n, _)| n)),
    }
    // State goes through it as through any store.
    let (state, record) = (dir.path().join("state"), dir.path().join("sync.json"));
    std::fs::create_dir_all(&state).expect("mkdir");
    let base = objects
        .pull_state("p", &state, &record)
        .await
        .expect("pull");
    std::fs::write(state.join("n"), b"1").expect("write");
    let pushed = objects
        .push_state("p", &state, &record, &base)
        .await
        .expect("push");
    assert_eq!(pushed.written, 1);
    let other = tempfile::tempdir().expect("tempdir");
    objects
        .pull_state("p", other.path(), &other.path().join("r.json"))
        .await
        .expect("pull elsewhere");
    assert_eq!(std::fs::read(other.path().join("n")).expect("read"), b"1");
    objects.delete_artifact(&digest).await.expect("delete");
    assert!(matches!(
        objects.get_artifact(&digest).await,
        Err(ObjectsError::NotFound { .. })
    ));
}

#[tokio::test]
async fn the_database_store_behaves_as_an_object_store_on_sqlite() {
    let (blobs, _dir) = sqlite();
    behaves_as_an_object_store(blobs.clone()).await;
    carries_what_objects_keep(blobs).await;
}

#[tokio::test]
async fn the_database_store_behaves_as_an_object_store_on_postgres() {
    let Some((blobs, _db)) = postgres().await else {
        return;
    };
    behaves_as_an_object_store(blobs.clone()).await;
    carries_what_objects_keep(blobs).await;
}

/// A put over the 2 GiB cap is refused before anything is written (the
/// payload is one 4 MiB buffer referenced 513 times: nothing that large
/// is allocated).
#[tokio::test]
async fn an_object_over_the_cap_is_refused_with_a_hint() {
    let (blobs, _dir) = sqlite();
    let store = DbObjects::new(blobs.clone());
    let piece = bytes::Bytes::from(vec![0u8; dispatch_store::MAX_PART]);
    let payload: PutPayload = std::iter::repeat_n(piece, 513).collect();
    let err = store
        .put(&Path::from("huge"), payload)
        .await
        .expect_err("over the cap")
        .to_string();
    assert!(err.contains("--artifacts URL"), "{err}");
    assert!(
        blobs
            .list_blobs("", None, 10)
            .await
            .expect("list")
            .is_empty()
    );
}

/// A verified stream never hands out the last chunk of a copy that does
/// not match: a reader that knows the length never gets all of it.
#[tokio::test]
async fn a_same_size_corrupt_copy_never_streams_whole() {
    let (blobs, _dir) = sqlite();
    let objects = Objects::database(blobs.clone(), "db");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.bin");
    let bytes: Vec<u8> = (0..dispatch_store::MAX_PART * 2 + 10)
        .map(|i| (i % 7) as u8)
        .collect();
    std::fs::write(&src, &bytes).expect("write");
    let digest = hex::encode(Sha256::digest(&bytes));
    objects.put_artifact(&digest, &src).await.expect("put");
    // Store other bytes of the same size under the digest.
    let mut flipped = bytes.clone();
    flipped[5] ^= 1;
    DbObjects::new(blobs)
        .put(
            &Path::from(format!("artifacts/{digest}")),
            PutPayload::from(flipped),
        )
        .await
        .expect("overwrite");
    let (size, mut stream) = objects.get_artifact(&digest).await.expect("get");
    assert_eq!(size, bytes.len() as u64);
    let mut passed = 0usize;
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => passed += c.len(),
            Err(ObjectsError::Corrupt { .. }) => failed = true,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(failed, "the stream ends in an error");
    assert!(
        passed < bytes.len(),
        "{passed} bytes of {} passed",
        bytes.len()
    );
    assert!(objects.verify_artifact(&digest).await.is_err());
}
