use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::parcel;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// A parcel of `agent.sh` (executable) and `lib/data.txt`, built into a fresh root.
fn built() -> (tempfile::TempDir, tempfile::TempDir, Parcel) {
    let ctx = tempfile::tempdir().expect("tempdir");
    let d = ctx.path();
    fs::write(
        d.join("Agentfile"),
        "NAME sealed\nCOMMAND sh agent.sh\nCOPY agent.sh\nCOPY lib\n",
    )
    .expect("write");
    fs::write(d.join("agent.sh"), "#!/bin/sh\necho hi\n").expect("write");
    fs::set_permissions(d.join("agent.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::create_dir_all(d.join("lib")).expect("mkdir");
    fs::write(d.join("lib/data.txt"), "data\n").expect("write");
    let root = tempfile::tempdir().expect("tempdir");
    let p = parcel::build(d, root.path()).expect("build");
    (ctx, root, p)
}

/// Makes `rel` under the parcel writable and appends to it (as a careless user would).
fn tamper(p: &Parcel, rel: &str) {
    let path = p.dir.join(rel);
    fs::set_permissions(
        path.parent().expect("parent"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod dir");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut text = fs::read_to_string(&path).expect("read");
    text.push_str("echo changed\n");
    fs::write(&path, text).expect("write");
}

#[test]
fn a_built_parcel_is_read_only_stamped_and_checks() {
    let (_ctx, _root, p) = built();
    assert_eq!(mode(&p.dir), 0o555);
    assert_eq!(mode(&p.dir.join("files")), 0o555);
    assert_eq!(mode(&p.dir.join("files/lib")), 0o555);
    assert_eq!(mode(&p.dir.join("files/agent.sh")), 0o555);
    assert_eq!(mode(&p.dir.join("files/lib/data.txt")), 0o444);
    use std::os::unix::fs::MetadataExt;
    // Built as root (the context is root's): the parcel belongs to nobody.
    if fs::metadata(_ctx.path()).expect("meta").uid() == 0 {
        assert_eq!(
            fs::metadata(p.dir.join("files/agent.sh"))
                .expect("meta")
                .uid(),
            65534
        );
        assert_eq!(fs::metadata(&p.dir).expect("meta").uid(), 65534);
    }
    assert!(p.dir.join(STAMP).is_file());
    quick_check(&p).expect("unchanged");
    assert!(verify_fully(&p).is_empty());
}

#[test]
fn a_changed_file_is_refused_and_named() {
    let (_ctx, _root, p) = built();
    tamper(&p, "files/agent.sh");
    let e = quick_check(&p).expect_err("changed").to_string();
    assert!(e.contains("changed on disk: files/agent.sh"), "{e}");
    assert!(e.contains(p.short_digest()), "{e}");
    let problems = verify_fully(&p);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "files/agent.sh");
    assert_eq!(problems[0].kind, "modified");
}

#[test]
fn an_added_file_shows_in_the_full_verification() {
    let (_ctx, _root, p) = built();
    fs::set_permissions(p.dir.join("files"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(p.dir.join("files/extra"), "x").expect("write");
    let e = quick_check(&p).expect_err("added").to_string();
    assert!(e.contains("changed on disk: files/extra"), "{e}");
    let problems = verify_fully(&p);
    assert_eq!(problems[0].path, "files/extra");
    assert_eq!(problems[0].kind, "unexpected");
}

#[test]
fn building_again_replaces_a_changed_parcel() {
    let (ctx, root, p) = built();
    tamper(&p, "files/lib/data.txt");
    let again = parcel::build(ctx.path(), root.path()).expect("build again");
    assert_eq!(again.digest, p.digest);
    quick_check(&again).expect("written anew");
    assert!(verify_fully(&again).is_empty());
}

#[test]
fn a_parcel_without_a_stamp_is_verified_once_then_stamped() {
    let (_ctx, _root, p) = built();
    fs::set_permissions(&p.dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::remove_file(p.dir.join(STAMP)).expect("rm stamp");
    quick_check(&p).expect("verified and stamped");
    assert!(p.dir.join(STAMP).is_file());
    assert_eq!(mode(&p.dir), 0o555);
}

#[test]
fn a_sealed_parcel_can_be_removed() {
    let (_ctx, _root, p) = built();
    remove_tree(&p.dir).expect("remove");
    assert!(!p.dir.exists());
    remove_tree(&p.dir).expect("a missing tree is fine");
}
