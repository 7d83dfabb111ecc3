use super::*;

/// The block found from `environ` is the one the kernel reports; a test
/// process's environment is still the kernel's copy (only a test that
/// removes a variable set when it started could move it).
#[test]
fn the_environment_block_from_environ_is_the_kernels() {
    // SAFETY: no test of this crate sets a variable; the one that removes
    // one removes a variable CI does not set.
    let span = unsafe { environ_span() };
    if std::env::var_os("DISPATCH_POLICY").is_none() {
        assert!(span.is_some(), "environ is the kernel's block");
    }
    if let Some((start, end)) = span.filter(|(s, e)| e > s) {
        assert_eq!(Some((start, end)), env_block_of_proc());
    }
}

#[test]
fn the_line_says_what_applied_and_what_did_not() {
    let a = Applied {
        on: true,
        uid: Some(65534),
        protections: vec!["no capabilities".into(), "mount ns".into()],
        missing: vec!["x: y".into()],
    };
    assert_eq!(
        a.line(),
        "sandbox: uid 65534, no capabilities, mount ns; NOT APPLIED: x: y"
    );
    assert_eq!(
        Applied::default().line(),
        "sandbox: off (DISPATCH_SANDBOX=off)"
    );
    let off = Applied {
        protections: vec!["contained (cgroup v1 freezer)".into()],
        ..Applied::default()
    };
    assert_eq!(
        off.line(),
        "sandbox: off (DISPATCH_SANDBOX=off); contained (cgroup v1 freezer)"
    );
    let degraded = Applied {
        missing: vec!["containment: no cgroup (x)".into()],
        ..Applied::default()
    };
    assert_eq!(
        degraded.line(),
        "sandbox: off (DISPATCH_SANDBOX=off); NOT APPLIED: containment: no cgroup (x)"
    );
}

/// The view keeps its binds (a file's marked), and seals the one
/// directory its mount points need in the private /tmp, once.
#[test]
fn the_view_seals_the_directory_its_mount_points_make_in_tmp() {
    let tmp = tempfile::Builder::new()
        .tempdir_in("/tmp")
        .expect("a directory in /tmp");
    let top = std::fs::canonicalize(tmp.path()).expect("resolves");
    let [run_dir, parcel, state] = ["runs/r1", "parcel", "state"].map(|d| top.join(d));
    for d in [&run_dir, &parcel, &state] {
        std::fs::create_dir_all(d).expect("made");
    }
    let brief = top.join("brief.json");
    std::fs::write(&brief, "{}").expect("written");
    let paths = RunPaths {
        run: "r1",
        run_dir: &run_dir,
        brief: &brief,
        parcel: &parcel,
        shared: vec![&state],
        cwd: &run_dir,
    };
    let view = view(&paths).expect("a view");
    let text = |c: &CString| c.to_string_lossy().into_owned();
    let newroot = |p: &Path| format!("/newroot{}", p.display());
    let binds: Vec<(String, bool)> = view.binds.iter().map(|b| (text(&b.dst), b.file)).collect();
    assert_eq!(
        binds,
        [
            (newroot(&run_dir), false),
            (newroot(&parcel), false),
            (newroot(&brief), true),
            (newroot(&state), false),
        ]
    );
    let seal: Vec<String> = view.seal.iter().map(text).collect();
    assert_eq!(seal, [newroot(&top)]);
}
