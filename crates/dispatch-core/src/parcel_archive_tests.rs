use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::parcel;

fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).expect("write");
}

/// A parcel with an executable, a nested file and a long path, built into
/// a fresh root.
fn built() -> (tempfile::TempDir, Parcel) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    write(
        &ctx,
        "Agentfile",
        "NAME demo\nCOMMAND sh agent.sh\nCOPY agent.sh\nCOPY lib\n",
    );
    write(&ctx, "agent.sh", "#!/bin/sh\necho hi\n");
    fs::set_permissions(ctx.join("agent.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    write(&ctx, "lib/util.sh", "util\n");
    let long = format!("lib/{}/{}.txt", "d".repeat(90), "n".repeat(80));
    write(&ctx, &long, "a long path\n");
    let p = parcel::build(&ctx, &dir.path().join("parcels")).expect("build");
    (dir, p)
}

fn entries(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A file in an archive: path and content.
type Entry<'a> = (&'a str, &'a [u8]);

/// An archive with the given entries, as `pack` writes them.
fn archive_of(files: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, path, *data)
            .expect("append");
    }
    builder.into_inner().expect("finish")
}

#[test]
fn a_parcel_packs_to_the_same_bytes_every_time() {
    let (_dir, p) = built();
    let (manifest, first) = parcel::pack(&p).expect("pack");
    let (_, second) = parcel::pack(&p).expect("pack again");
    assert_eq!(first, second, "deterministic");
    assert_eq!(
        manifest.as_bytes(),
        fs::read(p.dir.join(MANIFEST)).expect("manifest"),
        "the manifest travels byte for byte"
    );
    let (_other, q) = built();
    assert_eq!(q.digest, p.digest);
    assert_eq!(
        parcel::pack(&q).expect("pack").1,
        first,
        "on another build too"
    );
}

#[test]
fn an_unpacked_parcel_is_the_same_parcel() {
    let (_dir, p) = built();
    let (manifest, archive) = parcel::pack(&p).expect("pack");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let root = elsewhere.path().join("parcels");
    let q =
        parcel::unpack(&p.digest, manifest.as_bytes(), archive.as_slice(), &root).expect("unpack");
    assert_eq!(q.digest, p.digest);
    assert_eq!(q.manifest, p.manifest);
    assert_eq!(q.dir, root.join(&p.digest));
    for f in &p.manifest.files {
        let (a, b) = (p.files_dir().join(&f.path), q.files_dir().join(&f.path));
        assert_eq!(
            fs::read(&a).expect("a"),
            fs::read(&b).expect("b"),
            "{}",
            f.path
        );
        let mode = fs::metadata(&b).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, if f.executable { 0o555 } else { 0o444 }, "{}", f.path);
    }
    assert_eq!(entries(&root), vec![p.digest.clone()], "no temporary left");
    // Unpacking again keeps what is there.
    parcel::unpack(&p.digest, manifest.as_bytes(), archive.as_slice(), &root).expect("again");
}

#[test]
fn a_tampered_file_is_refused_and_nothing_is_left_behind() {
    let (_dir, p) = built();
    let (manifest, archive) = parcel::pack(&p).expect("pack");
    let original = fs::read(p.files_dir().join("agent.sh")).expect("agent.sh");
    // Same length, other content: only the hash can tell.
    let mut tampered = archive.clone();
    let at = tampered
        .windows(original.len())
        .position(|w| w == original.as_slice())
        .expect("the file's bytes are in the archive");
    tampered[at + original.len() - 3] = b'X';
    let root = tempfile::tempdir().expect("tempdir");
    let err = parcel::unpack(
        &p.digest,
        manifest.as_bytes(),
        tampered.as_slice(),
        root.path(),
    )
    .expect_err("refused");
    let msg = err.to_string();
    assert!(matches!(err, ParcelError::Unverified { .. }), "got {err:?}");
    assert!(msg.contains("failed verification"), "{msg}");
    assert!(msg.contains("agent.sh"), "names the file: {msg}");
    assert!(
        entries(root.path()).is_empty(),
        "nothing left: {:?}",
        entries(root.path())
    );
}

#[test]
fn a_manifest_that_does_not_match_the_digest_is_refused() {
    let (_dir, p) = built();
    let (manifest, archive) = parcel::pack(&p).expect("pack");
    let root = tempfile::tempdir().expect("tempdir");
    let edited = manifest.replace("demo", "evil");
    let err = parcel::unpack(
        &p.digest,
        edited.as_bytes(),
        archive.as_slice(),
        root.path(),
    )
    .expect_err("refused");
    assert!(err.to_string().contains("manifest hashes to"), "{err}");
    for bad in ["../../etc", "ABC", ""] {
        let err = parcel::unpack(bad, manifest.as_bytes(), archive.as_slice(), root.path())
            .expect_err("not a digest");
        assert!(err.to_string().contains("64 lowercase hex"), "{err}");
    }
    assert!(entries(root.path()).is_empty());
}

#[test]
fn an_archive_with_more_or_fewer_files_than_the_manifest_is_refused() {
    let (_dir, p) = built();
    let (manifest, _) = parcel::pack(&p).expect("pack");
    let read = |rel: &str| fs::read(p.files_dir().join(rel)).expect("file");
    let (agent, util) = (read("agent.sh"), read("lib/util.sh"));
    let long = p
        .manifest
        .files
        .iter()
        .find(|f| f.path.len() > 100)
        .expect("long path");
    let long_data = read(&long.path);
    let complete = [
        ("agent.sh", agent.as_slice()),
        (long.path.as_str(), long_data.as_slice()),
        ("lib/util.sh", util.as_slice()),
    ];
    let root = tempfile::tempdir().expect("tempdir");
    let cases: [(&[Entry<'_>], &str); 3] = [
        (&complete[..2], "lacks `lib/util.sh`"),
        (
            &[complete[0], complete[1], complete[2], ("extra.sh", b"x")],
            "`extra.sh`, which the manifest does not list",
        ),
        (
            &[complete[0], complete[1], complete[2], ("agent.sh", b"x")],
            "does not list (or lists once)",
        ),
    ];
    for (files, says) in cases {
        let err = parcel::unpack(
            &p.digest,
            manifest.as_bytes(),
            archive_of(files).as_slice(),
            root.path(),
        )
        .expect_err("refused");
        assert!(err.to_string().contains(says), "{says}: {err}");
    }
    let err = parcel::unpack(
        &p.digest,
        manifest.as_bytes(),
        &b"not a tar"[..],
        root.path(),
    )
    .expect_err("garbage");
    assert!(matches!(err, ParcelError::Unverified { .. }), "{err:?}");
    assert!(entries(root.path()).is_empty());
}

#[test]
fn a_manifest_naming_a_path_outside_the_parcel_is_refused() {
    let (_dir, p) = built();
    let mut m = p.manifest.clone();
    m.files[0].path = "../escape.sh".into();
    let bytes = serde_json::to_vec(&m).expect("json");
    let digest = hex::encode(Sha256::digest(&bytes));
    // (The tar crate will not even write such a path; the manifest is checked first.)
    let archive = archive_of(&[]);
    let root = tempfile::tempdir().expect("tempdir");
    let err = parcel::unpack(
        &digest,
        &bytes,
        archive.as_slice(),
        &root.path().join("parcels"),
    )
    .expect_err("refused");
    assert!(
        err.to_string().contains("not a plain relative path"),
        "{err}"
    );
    assert!(!root.path().join("escape.sh").exists());
}
