//! Isolation from the binary: parcels are immutable on disk and checked
//! before each run, each run works in a private copy of the parcel's files,
//! and an agent sees only the environment it declared.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Dispatch, eventually};
use serde_json::Value;

/// The directory of the one parcel built so far.
fn parcel_dir(d: &Dispatch) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(d.root().join("parcels"))
        .expect("parcels")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    assert_eq!(dirs.len(), 1, "one parcel: {dirs:?}");
    dirs.remove(0)
}

fn digest_of(dir: &Path) -> String {
    dir.file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn log_of(d: &Dispatch, id: &str) -> String {
    d.ok(&["logs", id])
}

#[test]
fn an_agent_cannot_write_into_the_parcel_and_it_still_verifies_after_its_run() {
    let d = Dispatch::sandboxed();
    let dir = d.agent(
        "writer",
        "echo evil > \"$DISPATCH_PARCEL_DIR/evil\" && echo WROTE-NEW\n\
         echo more >> \"$DISPATCH_PARCEL_DIR/agent.sh\" && echo WROTE-AGENT\n\
         chmod u+w \"$DISPATCH_PARCEL_DIR/agent.sh\" && echo CHMOD-AGENT\n\
         echo local > mine.txt && echo WROTE-WORK\n\
         echo \"cwd=$PWD\"\n",
    );
    let id = d.detach(&dir, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let log = log_of(&d, &id);
    for refused in ["WROTE-NEW", "WROTE-AGENT", "CHMOD-AGENT"] {
        assert!(!log.contains(refused), "the parcel was writable: {log}");
    }
    assert!(log.contains("WROTE-WORK"), "{log}");
    let work = d.root().join("runs").join(&id).join("work");
    assert!(log.contains(&format!("cwd={}", work.display())), "{log}");
    let parcel = parcel_dir(&d);
    assert!(!parcel.join("files/evil").exists());
    assert!(!parcel.join("files/mine.txt").exists());
    // Files and directories are read-only.
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&parcel), 0o555);
    assert_eq!(mode(&parcel.join("files")), 0o555);
    assert_eq!(mode(&parcel.join("files/agent.sh")), 0o444);
    let verified = d.ok(&["images", "--verify"]);
    assert!(verified.contains(" ok"), "{verified}");
    // The same parcel runs again.
    let again = d.detach(&dir, "{}");
    assert_eq!(d.wait_terminal(&again)["status"], "succeeded");
}

#[test]
fn a_parcel_changed_on_disk_is_refused_and_images_verify_reports_it() {
    let d = Dispatch::sandboxed();
    let dir = d.agent("tampered", "echo RAN\n");
    d.ok(&["build", dir.to_str().expect("utf-8")]);
    let parcel = parcel_dir(&d);
    let digest = digest_of(&parcel);
    let script = parcel.join("files/agent.sh");
    chmod(&parcel.join("files"), 0o755);
    chmod(&script, 0o644);
    let mut text = std::fs::read_to_string(&script).expect("read");
    text.push_str("echo INJECTED\n");
    std::fs::write(&script, text).expect("edit the parcel");

    let out = d.run(&["run", &digest]);
    assert_ne!(out.status.code(), Some(0), "a changed parcel never runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("parcel {} changed on disk: files/agent.sh", &digest[..12]);
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("dispatch images --verify"), "{stderr}");
    let id = d.ok(&["ps", "-a", "-q"]);
    let doc = d.inspect(id.lines().next().expect("a run"));
    assert_eq!(doc["status"], "failed");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(reason.contains(&expected), "{reason}");
    assert!(!log_of(&d, doc["id"].as_str().expect("id")).contains("RAN"));

    let out = d.run(&["images", "--verify"]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("modified") && table.contains("files/agent.sh"),
        "{table}"
    );
    let out = d.run(&["images", "--verify", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["status"], "modified");
    assert_eq!(v[0]["problems"][0]["path"], "files/agent.sh");

    // Building it again from its directory replaces it.
    d.ok(&["build", dir.to_str().expect("utf-8")]);
    d.ok(&["images", "--verify"]);
    let id = d.detach(&dir, "{}");
    assert_eq!(d.wait_terminal(&id)["status"], "succeeded");
}

#[test]
fn two_concurrent_runs_of_one_parcel_do_not_see_each_others_files() {
    let d = Dispatch::sandboxed();
    let dir = d.agent(
        "pair",
        "echo \"$DISPATCH_RUN_ID\" > mark.txt\n\
         while [ ! -e \"$GO\" ]; do sleep 0.01; done\n\
         ls > listing.txt\n\
         if [ \"$(cat mark.txt)\" = \"$DISPATCH_RUN_ID\" ]; then echo OWN-MARK; fi\n\
         echo \"seen: $(cat listing.txt | tr '\\n' ' ')\"\n",
    );
    // The go-file is named by a fixed ENV (undeclared variables do not reach
    // agents), in the parcel's state directory: the only place outside its
    // run that a sandboxed agent sees and the test can write.
    let go = d.root().join("state/pair/go");
    let af = dir.join("Agentfile");
    let mut text = std::fs::read_to_string(&af).expect("read");
    text.push_str(&format!("ENV GO={}\n", go.display()));
    std::fs::write(&af, text).expect("write");
    let a = d.detach(&dir, "{}");
    let b = d.detach(&dir, "{}");
    for id in [&a, &b] {
        let mark = d.root().join("runs").join(id).join("work/mark.txt");
        eventually(30, "both agents wrote their mark", || mark.is_file());
    }
    std::fs::write(&go, "").expect("go");
    for id in [&a, &b] {
        assert_eq!(d.wait_terminal(id)["status"], "succeeded");
        let log = log_of(&d, id);
        assert!(log.contains("OWN-MARK"), "{log}");
        assert!(
            log.contains("seen: agent.sh listing.txt mark.txt "),
            "{log}"
        );
    }
}

#[test]
fn the_workspace_is_removed_when_the_run_ends_unless_kept_until_rm() {
    let d = Dispatch::sandboxed();
    let dir = d.agent("keeper", "echo kept > result.txt\n");
    let plain = d.detach(&dir, "{}");
    let doc = d.wait_terminal(&plain);
    assert_eq!(doc["status"], "succeeded");
    let work = d.root().join("runs").join(&plain).join("work");
    assert!(!work.exists(), "removed when the run ended");
    assert_eq!(doc["workspace"]["state"], "removed");
    assert_eq!(doc["workspace"]["keep"], false);

    let kept = d.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--detach",
        "--keep-workspace",
    ]);
    let doc = d.wait_terminal(&kept);
    let work = d.root().join("runs").join(&kept).join("work");
    assert_eq!(
        std::fs::read_to_string(work.join("result.txt")).expect("kept"),
        "kept\n"
    );
    assert_eq!(doc["workspace"]["state"], "kept");
    assert_eq!(doc["workspace"]["keep"], true);
    assert_eq!(doc["workspace"]["path"], work.to_str().expect("utf-8"));
    let human = d.ok(&["inspect-run", &kept]);
    assert!(
        human.contains(&format!("Workspace:  {} (kept", work.display())),
        "{human}"
    );
    d.ok(&["rm", &kept]);
    assert!(!work.exists(), "rm removes it");

    // `create` takes the flag too.
    let created = d.ok(&["create", dir.to_str().expect("utf-8"), "--keep-workspace"]);
    assert_eq!(d.inspect(&created)["workspace"]["keep"], true);
}

#[test]
fn an_agent_sees_only_declared_variables_and_secrets_are_masked() {
    let d = Dispatch::sandboxed();
    let dir = d.agent_with(
        "envs",
        "echo \"undeclared=${UNDECLARED_VAR:-unset}\"\n\
         echo \"declared=${DECLARED:-unset} passed=${PASSED_VAR:-unset}\"\n\
         echo \"secret-len=${#MY_TOKEN}\"\n\
         echo \"home=$HOME tmp=$TMPDIR\"\n\
         echo \"{\\\"type\\\":\\\"message\\\",\\\"to\\\":\\\"auditor\\\",\\\"text\\\":\\\"token $MY_TOKEN\\\"}\" >> \"$DISPATCH_EVENTS\"\n\
         printf '{\"token\":\"%s\"}' \"$MY_TOKEN\" > \"$DISPATCH_OUTPUT\"\n\
         echo x > \"$DISPATCH_ARTIFACTS/report-$MY_TOKEN.txt\"\n",
        "ENV DECLARED=yes\nSECRET MY_TOKEN\nENV_PASSTHROUGH PASSED_VAR\n",
    );
    let out = d
        .command()
        .args(["run", dir.to_str().expect("utf-8"), "--detach"])
        .env("UNDECLARED_VAR", "leaked")
        .env("PASSED_VAR", "through")
        .env("MY_TOKEN", "tok-s3cret-value")
        .output()
        .expect("run");
    let id = common::checks::ok(&["run"], &out);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let log = log_of(&d, &id);
    assert!(log.contains("undeclared=unset"), "{log}");
    assert!(log.contains("declared=yes passed=through"), "{log}");
    assert!(log.contains("secret-len=16"), "the secret is there: {log}");
    let run_dir = d.root().join("runs").join(&id);
    assert!(
        log.contains(&format!(
            "home={} tmp={}",
            run_dir.join("home").display(),
            run_dir.join("tmp").display()
        )),
        "{log}"
    );
    let everything = doc.to_string();
    assert!(
        !everything.contains("tok-s3cret-value"),
        "the secret leaked: {doc:#}"
    );
    assert_eq!(doc["output"]["token"], "****");
    let messages: Vec<&Value> = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "message")
        .collect();
    assert_eq!(messages.len(), 1, "{doc:#}");
    assert!(
        messages[0]["data"].to_string().contains("token ****"),
        "{messages:?}"
    );
    assert_eq!(doc["artifacts"][0]["name"], "report-****.txt");
}
