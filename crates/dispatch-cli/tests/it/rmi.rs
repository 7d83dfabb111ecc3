//! `dispatch rmi` on this machine: a parcel goes by name or digest prefix,
//! not while a run that has not ended uses it; `--prune` removes the
//! superseded parcels no run uses and keeps the newest of each name.

use std::process::{Command, Output};

struct Dir(tempfile::TempDir);

impl Dir {
    fn dispatch(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_dispatch"))
            .args(args)
            .current_dir(self.0.path())
            .env("DISPATCH_ROOT", self.0.path().join(".dispatch"))
            .env_remove("DISPATCH_HOST")
            .output()
            .expect("dispatch runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.dispatch(args);
        assert!(out.status.success(), "dispatch {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Builds `name` whose agent runs `script`; its digest.
    fn build(&self, name: &str, script: &str) -> String {
        let dir = self.0.path().join(format!("{name}-src"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("agent.sh"), script).expect("write");
        std::fs::write(
            dir.join("Agentfile"),
            format!("FROM process\nNAME {name}\nCOPY agent.sh\nCOMMAND sh agent.sh\n"),
        )
        .expect("write");
        self.ok(&["build", "-q", &dir.to_string_lossy()])
    }
}

#[test]
fn rmi_removes_parcels_no_live_run_uses_and_prune_keeps_the_newest() {
    let d = Dir(tempfile::tempdir().expect("tempdir"));
    let v1 = d.build("twice", "echo version 1\n");
    let v2 = d.build("twice", "echo version 2\n");
    let v3 = d.build("twice", "echo version 3\n");
    assert!(d.ok(&["run", &v1]).contains("version 1"));

    // A live run keeps its parcel.
    let sleeper = d.build("sleeper", "sleep 30\n");
    let id = d.ok(&["run", "sleeper", "--detach"]);
    let out = d.dispatch(&["rmi", "sleeper"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("have not ended") && err.contains(&id), "{err}");
    d.ok(&["stop", &id, "-t", "1"]);
    assert_eq!(d.ok(&["rmi", "sleeper"]), sleeper);
    assert!(!d.ok(&["images"]).contains("sleeper"));

    // --prune: v2 goes (superseded, unused); v1 (used) and v3 (newest) stay.
    assert_eq!(d.ok(&["rmi", "--prune"]), v2);
    let images = d.ok(&["images"]);
    assert!(
        images.contains(&v1[..12]) && images.contains(&v3[..12]),
        "{images}"
    );
    assert!(!images.contains(&v2[..12]), "{images}");
    assert_eq!(d.ok(&["rmi", "--prune"]), "");

    // Bad input: one line, exit 125; nothing removed.
    let out = d.dispatch(&["rmi", "nope"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
    let out = d.dispatch(&["rmi"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(d.ok(&["rmi", &v3[..12]]), v3);
}
