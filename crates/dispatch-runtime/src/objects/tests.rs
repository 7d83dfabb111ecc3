use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::*;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn read_all(objects: &Objects, sha256: &str) -> Result<Vec<u8>, ObjectsError> {
    let (_, mut stream) = objects.get_artifact(sha256).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[tokio::test]
async fn an_artifact_goes_in_by_its_digest_and_comes_back_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    let objects = Objects::open(&url).expect("a directory URL opens");
    objects.probe().await.expect("the directory is writable");
    let src = dir.path().join("src.bin");
    // Larger than one chunk: the multipart path.
    let bytes: Vec<u8> = (0..CHUNK + 12345).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &bytes).expect("write");
    let digest = sha(&bytes);
    assert!(objects.put_artifact(&digest, &src).await.expect("put"));
    assert!(
        !objects
            .put_artifact(&digest, &src)
            .await
            .expect("put again"),
        "stored once"
    );
    assert!(dir.path().join("artifacts").join(&digest).is_file());
    assert_eq!(read_all(&objects, &digest).await.expect("get"), bytes);

    // A stored copy that no longer matches its digest ends in an error.
    std::fs::write(dir.path().join("artifacts").join(&digest), b"tampered").expect("write");
    match read_all(&objects, &digest).await {
        Err(ObjectsError::Corrupt { expected, .. }) => assert_eq!(expected, digest),
        other => panic!("a corrupt artifact was served: {other:?}"),
    }
    let dest = dir.path().join("out.bin");
    assert!(objects.download_artifact(&digest, &dest).await.is_err());
    assert!(!dest.exists(), "a bad copy never lands");
    match read_all(&objects, &sha(b"nothing")).await {
        Err(ObjectsError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn urls_that_name_no_store_are_refused_with_a_hint() {
    for url in [
        "not a url",
        "ftp://host/x",
        "file:///no/such/directory/anywhere",
        "s3:///no-bucket",
    ] {
        let e = Objects::open(url).expect_err(url).to_string();
        assert!(e.contains("hint: file:///shared/dir"), "{url}: {e}");
    }
}

#[tokio::test]
async fn state_moves_between_machines_last_writer_per_file_and_deletions_too() {
    let store = tempfile::tempdir().expect("tempdir");
    let objects = Objects::open(&format!("file://{}", store.path().display())).expect("open");
    let (a, b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (dir_a, rec_a) = (a.path().join("state"), a.path().join("sync.json"));
    let (dir_b, rec_b) = (b.path().join("state"), b.path().join("sync.json"));
    std::fs::create_dir_all(&dir_a).expect("mkdir");
    std::fs::create_dir_all(&dir_b).expect("mkdir");

    // Machine A writes two files.
    let base = objects.pull_state("p", &dir_a, &rec_a).await.expect("pull");
    assert!(base.is_empty());
    std::fs::create_dir_all(dir_a.join("sub")).expect("mkdir");
    std::fs::write(dir_a.join("count"), b"1").expect("write");
    std::fs::write(dir_a.join("sub/odd name%.txt"), b"x").expect("write");
    let pushed = objects
        .push_state("p", &dir_a, &rec_a, &base)
        .await
        .expect("push");
    assert_eq!(
        pushed,
        state::Pushed {
            written: 2,
            deleted: 0
        }
    );

    // Machine B sees them, changes one and deletes the other.
    let base_b = objects.pull_state("p", &dir_b, &rec_b).await.expect("pull");
    assert_eq!(std::fs::read(dir_b.join("count")).expect("read"), b"1");
    assert_eq!(
        std::fs::read(dir_b.join("sub/odd name%.txt")).expect("read"),
        b"x"
    );
    std::fs::write(dir_b.join("count"), b"2").expect("write");
    std::fs::remove_file(dir_b.join("sub/odd name%.txt")).expect("rm");
    let pushed = objects
        .push_state("p", &dir_b, &rec_b, &base_b)
        .await
        .expect("push");
    assert_eq!(
        pushed,
        state::Pushed {
            written: 1,
            deleted: 1
        }
    );

    // A, meanwhile, wrote a file of its own that was never synchronized: it stays.
    std::fs::write(dir_a.join("local-only"), b"mine").expect("write");
    let base = objects.pull_state("p", &dir_a, &rec_a).await.expect("pull");
    assert_eq!(std::fs::read(dir_a.join("count")).expect("read"), b"2");
    assert!(
        !dir_a.join("sub/odd name%.txt").exists(),
        "the deletion propagates"
    );
    assert!(dir_a.join("local-only").exists());
    assert_eq!(base.len(), 1);
    // Another parcel's state is separate.
    let other = objects
        .pull_state("q", &dir_b, &b.path().join("q.json"))
        .await
        .expect("pull");
    assert!(other.is_empty());
}

#[tokio::test]
async fn a_runs_call_records_go_up_as_one_pack_and_come_down_on_another_machine() {
    let store = tempfile::tempdir().expect("tempdir");
    let objects = Objects::open(&format!("file://{}", store.path().display())).expect("open");
    let run: dispatch_core::RunId = "01a21ac84ae774b7b92d83c0114bac19".parse().expect("an id");
    let (worker, server) = (
        tempfile::tempdir().expect("worker"),
        tempfile::tempdir().expect("server"),
    );
    let texts = ["{\"model\":\"m\"}", "data: [DONE]", "{\"key\":\"k\"}"];
    for t in texts {
        crate::call_records::append(worker.path(), &sha(t.as_bytes()), t).expect("record");
    }
    assert_eq!(
        objects.put_calls(&run, worker.path()).await.expect("put"),
        3
    );
    let stored: Vec<_> = std::fs::read_dir(store.path().join("calls").join(run.as_str()))
        .expect("the run's records")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(stored, vec!["pack.json".to_string()], "one object per run");
    // The server has none of them: the first one asked for brings them all.
    let first = sha(texts[0].as_bytes());
    assert!(
        objects
            .fetch_call(&run, &first, server.path())
            .await
            .expect("fetch")
    );
    for t in texts {
        assert_eq!(
            crate::call_records::read(server.path(), &sha(t.as_bytes())).as_deref(),
            Some(t)
        );
    }
    assert!(
        !objects
            .fetch_call(&run, &sha(b"never"), server.path())
            .await
            .expect("fetch")
    );
    // A record a worker uploaded on its own, before the pack, is still found.
    let old = sha(b"old");
    let key = store
        .path()
        .join("calls")
        .join(run.as_str())
        .join(format!("{old}.json"));
    std::fs::write(&key, b"old").expect("an old record");
    assert!(
        objects
            .fetch_call(&run, &old, server.path())
            .await
            .expect("fetch")
    );
    assert_eq!(
        crate::call_records::read(server.path(), &old).as_deref(),
        Some("old")
    );
    objects.delete_calls(&run).await.expect("delete");
    assert!(
        std::fs::read_dir(store.path().join("calls").join(run.as_str()))
            .map_or(true, |mut d| d.next().is_none()),
        "nothing of the run's records left in the store"
    );
}

#[test]
fn runs_of_one_worker_saving_a_parcels_sync_record_at_once_all_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("state-sync").join("p.json");
    let synced: state::Synced = serde_json::from_value(serde_json::json!(
        {"files": {"notes.txt": {"sha256": sha(b"notes"), "version": "1"}}}
    ))
    .expect("a record");
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..50 {
                    synced.save(&record).expect("every save succeeds");
                }
            });
        }
    });
    assert!(record.is_file());
}
