use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::parcel::{self, Courier};
use crate::state::Operation;

fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).expect("write");
}

fn chmod(dir: &Path, rel: &str, mode: u32) {
    fs::set_permissions(dir.join(rel), fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// A context with an Agentfile and a few files.
fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(
        d,
        "Agentfile",
        "NAME demo\nENTRYPOINT heartbeat\nCOMMAND sh agent.sh\nCOPY agent.sh\nCOPY lib\n\
         COPY notes.txt docs/\nIDENTITY identity.md\nSOUL be brief\nSKILL skills/review.md\n\
         PROMPT prompt.md\nPROMPT \"do the thing.md\"\nSECRET API_KEY\n",
    );
    write(d, "agent.sh", "#!/bin/sh\necho hi\n");
    chmod(d, "agent.sh", 0o755);
    write(d, "lib/util.sh", "util\n");
    write(d, "lib/deep/data.json", "{}\n");
    write(d, "lib/.git/config", "skip me\n");
    write(d, "lib/.dispatch/x", "skip me\n");
    write(d, "notes.txt", "notes\n");
    write(d, "identity.md", "I am demo.\n");
    write(d, "skills/review.md", "Review carefully.\n");
    write(d, "prompt.md", "Do it.\n");
    dir
}

fn build_ok(ctx: &Path, root: &Path) -> Parcel {
    parcel::build(ctx, root).expect("build")
}

fn entries(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn builds_the_full_manifest_and_files() {
    let ctx = context();
    let root = tempfile::tempdir().expect("tempdir");
    let p = build_ok(ctx.path(), root.path());
    let m = &p.manifest;
    assert_eq!(
        (m.schema, m.courier, m.entrypoint),
        (1, Courier::Process, Operation::Heartbeat)
    );
    assert_eq!(m.name, "demo");
    assert_eq!(m.command, vec!["/bin/sh", "-c", "sh agent.sh"]);
    assert_eq!(m.secrets, vec!["API_KEY"]);
    assert_eq!(m.instructions.identity.as_deref(), Some("I am demo.\n"));
    assert_eq!(m.instructions.soul.as_deref(), Some("be brief"));
    assert_eq!(
        m.instructions.skills,
        vec![Skill {
            name: "review".into(),
            content: "Review carefully.\n".into(),
            description: None,
            dir: None,
        }]
    );
    assert_eq!(m.instructions.prompts, vec!["Do it.\n", "do the thing.md"]);
    let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "agent.sh",
            "docs/notes.txt",
            "lib/deep/data.json",
            "lib/util.sh"
        ]
    );
    let agent = &m.files[0];
    assert!(agent.executable);
    assert_eq!(agent.size, 18);
    assert_eq!(
        agent.sha256,
        hex::encode(Sha256::digest(b"#!/bin/sh\necho hi\n"))
    );
    assert!(!m.files[1].executable);

    assert_eq!(p.dir, root.path().join(&p.digest));
    assert_eq!(p.digest.len(), 64);
    assert_eq!(p.short_digest().len(), 12);
    let files = p.files_dir();
    assert_eq!(
        fs::read_to_string(files.join("lib/deep/data.json")).expect("read"),
        "{}\n"
    );
    assert_eq!(mode(&files.join("agent.sh")), 0o555);
    assert_eq!(mode(&files.join("lib/util.sh")), 0o444);
    assert_eq!(mode(&p.dir.join("manifest.json")), 0o444);
    assert!(!files.join("lib/.git").exists() && !files.join("lib/.dispatch").exists());
    let bytes = fs::read(p.dir.join("manifest.json")).expect("manifest");
    assert_eq!(bytes, serde_json::to_vec(m).expect("json"));
    assert!(p.created_at > 0);
    assert_eq!(
        entries(root.path()),
        vec![p.digest.clone()],
        "no temp dir left behind"
    );
}

#[test]
fn context_may_be_the_agentfile_path() {
    let ctx = context();
    let root = tempfile::tempdir().expect("tempdir");
    let a = build_ok(ctx.path(), root.path());
    let b = build_ok(&ctx.path().join("Agentfile"), root.path());
    assert_eq!(a.digest, b.digest);
}

#[test]
fn creates_the_parcels_root() {
    let ctx = context();
    let root = tempfile::tempdir().expect("tempdir");
    let nested = root.path().join("a/b/parcels");
    let p = build_ok(ctx.path(), &nested);
    assert!(nested.join(&p.digest).join("manifest.json").is_file());
}

#[test]
fn digest_is_deterministic_and_content_addressed() {
    let ctx = context();
    let root = tempfile::tempdir().expect("tempdir");
    let a = build_ok(ctx.path(), root.path());
    let b = build_ok(ctx.path(), root.path());
    assert_eq!(a.digest, b.digest);

    // The same files elsewhere, written later: same digest.
    let other = tempfile::tempdir().expect("tempdir");
    for rel in [
        "Agentfile",
        "agent.sh",
        "lib/util.sh",
        "lib/deep/data.json",
        "notes.txt",
        "identity.md",
        "skills/review.md",
        "prompt.md",
    ] {
        write(
            other.path(),
            rel,
            &fs::read_to_string(ctx.path().join(rel)).expect("read"),
        );
    }
    chmod(other.path(), "agent.sh", 0o700);
    let other_root = tempfile::tempdir().expect("tempdir");
    assert_eq!(build_ok(other.path(), other_root.path()).digest, a.digest);

    // One byte changed: another parcel.
    write(other.path(), "lib/util.sh", "utiL\n");
    let changed = build_ok(other.path(), other_root.path());
    assert_ne!(changed.digest, a.digest);
    // The executable bit is part of the digest too.
    write(other.path(), "lib/util.sh", "util\n");
    chmod(other.path(), "agent.sh", 0o600);
    assert_ne!(build_ok(other.path(), other_root.path()).digest, a.digest);
}

#[test]
fn an_existing_parcel_is_reused_without_copying() {
    let ctx = context();
    let root = tempfile::tempdir().expect("tempdir");
    let a = build_ok(ctx.path(), root.path());
    let b = build_ok(ctx.path(), root.path());
    assert_eq!(a.digest, b.digest);
    assert_eq!(
        a.created_at, b.created_at,
        "the existing parcel was not rewritten"
    );
}

#[test]
fn an_existing_parcel_that_lost_a_file_is_written_anew() {
    let ctx = context();
    let root = tempfile::tempdir().expect("tempdir");
    let a = build_ok(ctx.path(), root.path());
    let util = a.files_dir().join("lib/util.sh");
    fs::remove_file(&util).expect("rm");
    let b = build_ok(ctx.path(), root.path());
    assert_eq!(a.digest, b.digest);
    assert!(util.is_file(), "the damaged parcel was rewritten");
}

#[test]
fn a_leftover_without_manifest_is_replaced() {
    let ctx = context();
    let root = tempfile::tempdir().expect("tempdir");
    let a = build_ok(ctx.path(), root.path());
    fs::remove_file(a.dir.join("manifest.json")).expect("rm");
    let b = build_ok(ctx.path(), root.path());
    assert_eq!(a.digest, b.digest);
    assert!(b.files_dir().join("agent.sh").is_file());
}

#[test]
fn concurrent_builds_agree() {
    let ctx = context();
    let root = tempfile::tempdir().expect("tempdir");
    let digests: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| build_ok(ctx.path(), root.path()).digest))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(entries(root.path()), vec![digests[0].clone()]);
}

#[test]
fn load_detects_corruption() {
    let ctx = context();
    let root = tempfile::tempdir().expect("tempdir");
    let p = build_ok(ctx.path(), root.path());
    assert_eq!(parcel::load(&p.dir).expect("load").manifest, p.manifest);

    let manifest = p.dir.join("manifest.json");
    chmod(&p.dir, "manifest.json", 0o644);
    let text = fs::read_to_string(&manifest)
        .expect("read")
        .replace("demo", "dem0");
    fs::write(&manifest, text).expect("write");
    let e = parcel::load(&p.dir).expect_err("corrupt");
    assert!(
        matches!(&e, ParcelError::Corrupt { digest, .. } if *digest == p.digest),
        "{e}"
    );
    assert!(
        e.to_string().contains("hint: remove it and build again"),
        "{e}"
    );

    // Renamed directory: the name no longer matches.
    let moved = root.path().join("not-a-digest");
    fs::create_dir(&moved).expect("mkdir");
    fs::write(
        moved.join("manifest.json"),
        serde_json::to_vec(&p.manifest).expect("json"),
    )
    .expect("write");
    assert!(matches!(
        parcel::load(&moved),
        Err(ParcelError::Corrupt { .. })
    ));
    // No manifest at all.
    let empty = root.path().join("empty");
    fs::create_dir(&empty).expect("mkdir");
    let e = parcel::load(&empty).expect_err("missing manifest");
    assert!(e.to_string().contains("manifest.json is missing"), "{e}");
    assert!(matches!(
        parcel::load(&root.path().join("nope")),
        Err(ParcelError::NoSuchPath(_))
    ));
    // A manifest whose digest matches but which is not a manifest.
    let junk = b"{\"schema\":1}";
    let junk_dir = root.path().join(hex::encode(Sha256::digest(junk)));
    fs::create_dir(&junk_dir).expect("mkdir");
    fs::write(junk_dir.join("manifest.json"), junk).expect("write");
    assert!(
        parcel::load(&junk_dir)
            .expect_err("invalid")
            .to_string()
            .contains("not a valid manifest")
    );
}

#[test]
fn list_is_newest_first_and_skips_junk() {
    let ctx = context();
    let root = tempfile::tempdir().expect("tempdir");
    let a = build_ok(ctx.path(), root.path());
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(ctx.path(), "notes.txt", "newer\n");
    let b = build_ok(ctx.path(), root.path());
    fs::create_dir(root.path().join(".tmp-123-456-0")).expect("mkdir");
    fs::create_dir(root.path().join("junk")).expect("mkdir");
    fs::write(root.path().join("file"), "x").expect("write");
    let listed: Vec<String> = parcel::list(root.path())
        .into_iter()
        .map(|p| p.digest)
        .collect();
    assert_eq!(listed, vec![b.digest, a.digest]);
    assert!(parcel::list(&root.path().join("missing")).is_empty());
}

#[test]
fn path_errors() {
    let root = tempfile::tempdir().expect("tempdir");
    let missing = root.path().join("nope");
    assert!(
        matches!(parcel::build(&missing, root.path()), Err(ParcelError::NoSuchPath(p)) if p == missing)
    );
    let empty = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        parcel::build(empty.path(), root.path()),
        Err(ParcelError::NoAgentfile(_))
    ));
}

/// Builds a context holding `agentfile` plus `files`, returning the error.
fn build_err(agentfile: &str, files: &[(&str, &str)]) -> ParcelError {
    let ctx = tempfile::tempdir().expect("tempdir");
    write(ctx.path(), "Agentfile", agentfile);
    for (rel, content) in files {
        write(ctx.path(), rel, content);
    }
    let root = tempfile::tempdir().expect("tempdir");
    parcel::build(ctx.path(), root.path()).expect_err("build fails")
}

#[test]
fn parse_errors_name_the_file_and_line() {
    let e = build_err("NAME a\nCOMAND x\n", &[]);
    let ParcelError::Agentfile { path, source } = &e else {
        panic!("unexpected {e}")
    };
    assert!(path.ends_with("Agentfile"));
    assert_eq!(source.line, 2);
    assert!(
        e.to_string()
            .ends_with("Agentfile:line 2: unknown directive `COMAND` (did you mean `COMMAND`?)"),
        "{e}"
    );
}

#[test]
fn missing_files_are_errors_with_lines() {
    let e = build_err("NAME a\nCOMMAND x\nCOPY gone.sh\n", &[]);
    assert!(
        matches!(&e, ParcelError::Copy { line: 3, src, .. } if src == "gone.sh"),
        "{e}"
    );
    assert!(e.to_string().contains("no such file or directory"), "{e}");
    let e = build_err("NAME a\nCOMMAND x\nCOPY *.sh\n", &[]);
    assert!(e.to_string().contains("wildcards are not supported"), "{e}");

    let e = build_err("NAME a\nCOMMAND x\n\nSKILL skills/gone.md\n", &[]);
    assert!(
        matches!(&e, ParcelError::Agentfile { source, .. } if source.line == 4),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("SKILL file `skills/gone.md` not found"),
        "{e}"
    );

    let e = build_err("NAME a\nCOMMAND x\nIDENTITY identity.md\n", &[]);
    assert!(
        e.to_string()
            .contains("line 3: IDENTITY file `identity.md` not found"),
        "{e}"
    );
    let ctx = tempfile::tempdir().expect("tempdir");
    write(
        ctx.path(),
        "Agentfile",
        "NAME a\nCOMMAND x\nIDENTITY \"identity.md\"\nSOUL '../soul.md'\n",
    );
    let root = tempfile::tempdir().expect("tempdir");
    let p = build_ok(ctx.path(), root.path());
    assert_eq!(
        p.manifest.instructions.identity.as_deref(),
        Some("identity.md")
    );
    assert_eq!(p.manifest.instructions.soul.as_deref(), Some("../soul.md"));
    write(
        ctx.path(),
        "Agentfile",
        "NAME a\nCOMMAND x\nSOUL ../soul.md\n",
    );
    let e = parcel::build(ctx.path(), root.path()).expect_err("outside");
    assert!(
        e.to_string()
            .contains("line 3: SOUL file `../soul.md` is outside the build context"),
        "{e}"
    );
}

#[test]
fn a_non_utf8_agentfile_names_the_line() {
    let ctx = tempfile::tempdir().expect("tempdir");
    fs::write(ctx.path().join("Agentfile"), b"NAME a\nCOMMAND \xff\n").expect("write");
    let root = tempfile::tempdir().expect("tempdir");
    let e = parcel::build(ctx.path(), root.path()).expect_err("not utf-8");
    assert!(
        matches!(&e, ParcelError::Agentfile { source, .. } if source.line == 2),
        "{e}"
    );
    assert!(e.to_string().contains("not valid UTF-8"), "{e}");
}

#[test]
fn stale_temp_dirs_are_removed_by_the_next_build() {
    let ctx = context();
    let root = tempfile::tempdir().expect("tempdir");
    let stale = root.path().join(".tmp-1-2-3");
    let fresh = root.path().join(".tmp-4-5-6");
    fs::create_dir_all(stale.join("files")).expect("mkdir");
    fs::create_dir(&fresh).expect("mkdir");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    fs::File::open(&stale)
        .expect("open")
        .set_modified(old)
        .expect("set mtime");
    build_ok(ctx.path(), root.path());
    assert!(!stale.exists());
    assert!(fresh.exists(), "a build in progress is left alone");
}

#[test]
fn stale_scratch_files_are_removed_by_the_next_build() {
    let ctx = context();
    let root = tempfile::tempdir().expect("tempdir");
    // An upload or archive a killed server or worker left (see scratch_path).
    let stale = crate::parcel::scratch_path(root.path());
    let fresh = crate::parcel::scratch_path(root.path());
    fs::write(&stale, b"half a tar").expect("write");
    fs::write(&fresh, b"a tar in progress").expect("write");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    fs::File::options()
        .write(true)
        .open(&stale)
        .expect("open")
        .set_modified(old)
        .expect("set mtime");
    build_ok(ctx.path(), root.path());
    assert!(!stale.exists());
    assert!(fresh.exists(), "work in progress is left alone");
}

#[test]
fn instruction_files_must_be_text() {
    let ctx = tempfile::tempdir().expect("tempdir");
    write(ctx.path(), "Agentfile", "NAME a\nCOMMAND x\nSKILL s.md\n");
    fs::write(ctx.path().join("s.md"), [0xff, 0xfe, 0x00]).expect("write");
    let root = tempfile::tempdir().expect("tempdir");
    let e = parcel::build(ctx.path(), root.path()).expect_err("binary skill");
    assert!(
        e.to_string()
            .contains("line 3: SKILL file `s.md` is not valid UTF-8 text"),
        "{e}"
    );
}

#[test]
fn duplicate_destinations_are_refused() {
    let e = build_err(
        "NAME a\nCOMMAND x\nCOPY a.sh\nCOPY b/a.sh .\n",
        &[("a.sh", "1"), ("b/a.sh", "2")],
    );
    assert!(matches!(&e, ParcelError::Copy { line: 4, .. }), "{e}");
    assert!(
        e.to_string()
            .contains("destination `a.sh` is also written by COPY a.sh on line 3"),
        "{e}"
    );
    let e = build_err("NAME a\nCOMMAND x\nCOPY . \nCOPY a.sh\n", &[("a.sh", "1")]);
    assert!(e.to_string().contains("line 3"), "{e}");
    let e = build_err(
        "NAME a\nCOMMAND x\nCOPY a.sh lib\nCOPY lib\n",
        &[("a.sh", "1"), ("lib/x", "2")],
    );
    assert!(
        e.to_string()
            .contains("destination `lib` is a file, but `lib/x` needs it to be a directory"),
        "{e}"
    );
}

#[test]
fn copy_whole_context_and_renames() {
    let ctx = tempfile::tempdir().expect("tempdir");
    write(
        ctx.path(),
        "Agentfile",
        "NAME a\nCOMMAND x\nCOPY .\nCOPY sub/f.txt renamed/g.txt\n",
    );
    write(ctx.path(), "sub/f.txt", "f\n");
    write(ctx.path(), ".git/HEAD", "ref\n");
    write(ctx.path(), ".dispatch/dispatch.db", "db\n");
    // The parcels root inside the context is never copied into a parcel.
    let root = ctx.path().join("parcels");
    let a = build_ok(ctx.path(), &root);
    let paths: Vec<&str> = a.manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["Agentfile", "renamed/g.txt", "sub/f.txt"]);
    assert_eq!(build_ok(ctx.path(), &root).digest, a.digest);
}

#[test]
fn symlinks_inside_are_followed_and_outside_refused_or_skipped() {
    let outside = tempfile::tempdir().expect("tempdir");
    write(outside.path(), "secret.txt", "secret\n");
    let ctx = tempfile::tempdir().expect("tempdir");
    let d = ctx.path();
    write(
        d,
        "Agentfile",
        "NAME a\nCOMMAND x\nCOPY dir\nCOPY link.txt\n",
    );
    write(d, "real.txt", "real\n");
    write(d, "dir/plain.txt", "plain\n");
    std::os::unix::fs::symlink(d.join("real.txt"), d.join("link.txt")).expect("symlink");
    std::os::unix::fs::symlink("../real.txt", d.join("dir/inside.txt")).expect("symlink");
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), d.join("dir/outside.txt"))
        .expect("symlink");
    std::os::unix::fs::symlink(d.join("gone"), d.join("dir/dangling")).expect("symlink");
    std::os::unix::fs::symlink(d, d.join("dir/loop")).expect("symlink");
    let root = tempfile::tempdir().expect("tempdir");
    let p = build_ok(d, root.path());
    let paths: Vec<&str> = p.manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["dir/inside.txt", "dir/plain.txt", "link.txt"]);
    let copied = p.files_dir().join("link.txt");
    assert!(
        !fs::symlink_metadata(&copied)
            .expect("meta")
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_to_string(copied).expect("read"), "real\n");

    write(d, "Agentfile", "NAME a\nCOMMAND x\nCOPY dir/outside.txt\n");
    let e = parcel::build(d, root.path()).expect_err("outside");
    assert!(e.to_string().contains("outside the build context"), "{e}");
    assert!(matches!(e, ParcelError::Copy { line: 3, .. }));
}

#[test]
fn a_workflow_builds_its_members_and_its_digest_covers_theirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("flow");
    let root = dir.path().join("parcels");
    std::fs::create_dir_all(ctx.join("a")).expect("mkdir");
    std::fs::write(ctx.join("a/Agentfile"), "FROM noop\nNAME member-a\n").expect("write");
    std::fs::write(
        ctx.join("Agentfile"),
        "FROM workflow\nNAME flow\nAGENT a ./a\nROUTE a -> __end__\n",
    )
    .expect("write");
    let first = crate::parcel::build(&ctx, &root).expect("builds");
    let wf = first.manifest.workflow.clone().expect("workflow");
    let member = crate::parcel::load(&root.join(&wf.members[0].parcel)).expect("member built");
    assert_eq!(member.manifest.name, "member-a");
    // Changing a member changes the workflow's digest.
    std::fs::write(
        ctx.join("a/Agentfile"),
        "FROM noop\nNAME member-a\nLABEL v=2\n",
    )
    .expect("write");
    let second = crate::parcel::build(&ctx, &root).expect("builds");
    assert_ne!(first.digest, second.digest);
    // A member named by a built parcel's name resolves to it.
    let by_name = dir.path().join("by-name");
    std::fs::create_dir_all(&by_name).expect("mkdir");
    std::fs::write(
        by_name.join("Agentfile"),
        "FROM workflow\nNAME n\nAGENT a member-a\nROUTE a -> __end__\n",
    )
    .expect("write");
    let p = crate::parcel::build(&by_name, &root).expect("builds");
    assert_eq!(
        p.manifest.workflow.expect("wf").members[0].parcel,
        second.manifest.workflow.expect("wf").members[0].parcel
    );
}

#[test]
fn a_member_that_does_not_build_fails_the_workflow_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("flow");
    std::fs::create_dir_all(ctx.join("bad")).expect("mkdir");
    std::fs::write(ctx.join("bad/Agentfile"), "FROM process\nNAME bad\n").expect("write");
    std::fs::write(
        ctx.join("Agentfile"),
        "FROM workflow\nNAME flow\n\nAGENT broken ./bad\nROUTE broken -> __end__\n",
    )
    .expect("write");
    let e = crate::parcel::build(&ctx, &dir.path().join("parcels")).expect_err("refused");
    let m = e.to_string();
    assert!(
        m.contains(":line 4: member `broken` (./bad) does not build"),
        "{m}"
    );
    assert!(m.contains("missing COMMAND"), "{m}");
    std::fs::write(
        ctx.join("Agentfile"),
        "FROM workflow\nNAME flow\nAGENT ghost nowhere\nROUTE ghost -> __end__\n",
    )
    .expect("write");
    let m = crate::parcel::build(&ctx, &dir.path().join("parcels"))
        .expect_err("refused")
        .to_string();
    assert!(
        m.contains("line 3: member `ghost` (nowhere) is neither"),
        "{m}"
    );
}
