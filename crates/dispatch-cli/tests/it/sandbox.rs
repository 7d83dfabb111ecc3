//! The sandbox of process agents, attacked from inside real runs: each
//! exploit an agent running as root could do before is tried by an agent,
//! and does no harm now. As root (the CI machines) every protection holds;
//! as another user the run says what did not apply.

use crate::common;

use std::path::Path;

use common::{Dispatch, eventually};

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn log_of(d: &Dispatch, id: &str) -> String {
    std::fs::read_to_string(d.root().join("runs").join(format!("{id}.log"))).unwrap_or_default()
}

/// Every `/proc/<pid>/environ` on the host that holds `needle`.
fn environs_holding(needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir("/proc").expect("procfs").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(bytes) = std::fs::read(e.path().join("environ"))
            && String::from_utf8_lossy(&bytes).contains(needle)
        {
            let cmd = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
            hits.push(format!("{name}: {}", cmd.replace('\0', " ")));
        }
    }
    hits
}

/// A sandboxed agent sees no one's environment but its own: not its
/// helper's (`/proc/<ppid>/environ`, the caller's undeclared variables),
/// not a concurrent run's (its secret); and the helper's environment block
/// is wiped even for root on the host.
#[test]
fn an_agent_reads_neither_its_callers_nor_a_concurrent_runs_environment() {
    if !is_root() {
        return; // without root there is no other user to run agents as
    }
    let sentinel = format!("leak-{}", std::process::id());
    let secret = format!("s3cret-{}", std::process::id());
    let d = Dispatch::sandboxed_with(&[("UNDECLARED_AWS", &sentinel), ("TOKEN", &secret)]);
    let go = d.root().join("state/holder/go");
    let holder = d.agent_with(
        "holder",
        "while [ ! -e \"$GO\" ]; do sleep 0.01; done\necho \"held $TOKEN\"\n",
        &format!("SECRET TOKEN\nENV GO={}\n", go.display()),
    );
    let a = d.detach(&holder, "{}");
    eventually(30, "the holder's agent runs", || {
        d.inspect(&a)["status"] == "running"
    });
    // The helper (root, on the host) shows no caller variable in /proc.
    assert_eq!(
        environs_holding(&sentinel),
        Vec::<String>::new(),
        "processes showing the caller's environment"
    );
    let snoop = d.agent(
        "snoop",
        "for f in /proc/$PPID/environ /proc/1/environ /proc/[0-9]*/environ; do\n\
           tr '\\0' '\\n' < \"$f\" 2>/dev/null\n\
         done > seen.txt\n\
         grep -q UNDECLARED_AWS seen.txt && echo HARM-CALLER-ENV\n\
         grep -q 's3cret' seen.txt && echo HARM-OTHER-RUN-SECRET\n\
         ls /proc | grep -c '^[0-9]' | sed 's/^/processes seen: /'\n\
         echo snooped\n",
    );
    let b = d.detach(&snoop, "{}");
    assert_eq!(d.wait_terminal(&b)["status"], "succeeded");
    std::fs::write(&go, "").expect("go");
    assert_eq!(d.wait_terminal(&a)["status"], "succeeded");
    let log = log_of(&d, &b);
    assert!(log.contains("snooped"), "{log}");
    assert!(!log.contains("HARM"), "{log}");
    assert!(
        log.contains("sandbox: uid 65534, no capabilities, no_new_privs, mount ns, pid ns"),
        "{log}"
    );
    assert!(log_of(&d, &a).contains("held ****"), "{}", log_of(&d, &a));
}

/// The attacks of a root agent on the audit and on other runs: sqlite3
/// rewriting the database, a write into a sibling run's workspace through
/// `$PWD/../../<id>/work`, a bind mount over its parcel, swapping
/// `.dispatch/parcels`, writing into the parcel. Its capabilities are none.
#[test]
fn a_root_agent_can_neither_rewrite_the_audit_nor_touch_other_runs_or_parcels() {
    if !is_root() {
        return;
    }
    let d = Dispatch::sandboxed();
    let sibling = d.agent("sibling", "echo sibling-done\n");
    let s = d.ok(&[
        "run",
        sibling.to_str().expect("utf-8"),
        "--detach",
        "--keep-workspace",
    ]);
    assert_eq!(d.wait_terminal(&s)["status"], "succeeded");
    let root = d.root();
    let script = format!(
        "ROOT='{root}'\n\
         SIB=$(sed 's/.*\"sibling\":\"\\([^\"]*\\)\".*/\\1/' \"$DISPATCH_PAYLOAD\")\n\
         grep CapEff /proc/self/status\n\
         sqlite3 \"$ROOT/dispatch.db\" \"update runs set cost_usd=0; delete from events;\" 2>/dev/null && echo HARM-DB\n\
         cat /dev/null 2>/dev/null > \"$ROOT/dispatch.db\" && echo HARM-DB-TRUNCATED\n\
         echo evil > \"$PWD/../../$SIB/work/evil.txt\" 2>/dev/null && echo HARM-SIBLING\n\
         echo evil > \"$ROOT/runs/$SIB/work/evil.txt\" 2>/dev/null && echo HARM-SIBLING-ROOT\n\
         mkdir -p /tmp/fake && mount --bind /tmp/fake \"$DISPATCH_PARCEL_DIR\" 2>/dev/null && echo HARM-MOUNT\n\
         echo evil >> \"$DISPATCH_PARCEL_DIR/agent.sh\" 2>/dev/null && echo HARM-PARCEL\n\
         mv \"$ROOT/parcels\" \"$ROOT/parcels.old\" 2>/dev/null && echo HARM-SWAP\n\
         mkdir \"$ROOT/parcels\" 2>/dev/null && echo HARM-SWAP-NEW\n\
         ls \"$ROOT\" 2>/dev/null | sed 's/^/root has: /'\n\
         echo attacked\n",
        root = root.display()
    );
    let attacker = d.agent("attacker", &script);
    let payload = format!("{{\"sibling\":\"{s}\"}}");
    let a = d.detach(&attacker, &payload);
    let doc = d.wait_terminal(&a);
    let log = log_of(&d, &a);
    assert_eq!(doc["status"], "succeeded", "{log}");
    assert!(log.contains("attacked"), "{log}");
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    assert!(!log.contains("HARM"), "{log}");
    assert!(!log.contains("root has: dispatch.db"), "{log}");
    // The audit is whole: the sibling's events are all there.
    let events = d.inspect(&s)["events"].as_array().map_or(0, Vec::len);
    assert!(events > 0, "{}", d.inspect(&s));
    assert!(!root.join("runs").join(&s).join("work/evil.txt").exists());
    // No mount outlived the run; the parcels are what they were and run.
    let parcels = root.join("parcels");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let over_parcels: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|p| Path::new(p).starts_with(&parcels))
        })
        .collect();
    assert!(over_parcels.is_empty(), "{over_parcels:?}");
    assert!(!root.join("parcels.old").exists());
    d.ok(&["images", "--verify"]);
    let again = d.detach(&sibling, "{}");
    assert_eq!(d.wait_terminal(&again)["status"], "succeeded");
    // The attempt says which protections applied, as an event too.
    let sandbox = d.inspect(&a)["events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["kind"] == "sandbox" || e["type"] == "sandbox")
        .cloned();
    assert!(sandbox.is_some(), "{}", d.inspect(&a));
}

/// The agent still works where the protocol says: it writes its
/// workspace (its own files and the parcel's copies), `HOME`, `TMPDIR`,
/// `/tmp` (private), its output, artifacts and state; and it reads its brief
/// and payload.
#[test]
fn a_sandboxed_agent_keeps_every_path_of_the_protocol() {
    let d = Dispatch::sandboxed();
    // A name no other process on the host uses: the file must not appear
    // in the host's /tmp.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let tmp = format!("/tmp/dispatch-private-tmp-{}-{nanos}", std::process::id());
    let dir = d.agent_with(
        "worker",
        &format!(
            "echo more >> data.txt && echo WS-EDIT\n\
             mkdir -p sub && echo x > sub/new.txt && echo WS-NEW\n\
             echo h > \"$HOME/h\" && echo HOME-OK\n\
             echo t > \"$TMPDIR/t\" && echo TMPDIR-OK\n\
             echo p > {tmp} && echo TMP-OK\n\
             echo a > \"$DISPATCH_ARTIFACTS/a.txt\" && echo ART-OK\n\
             echo s > \"$DISPATCH_STATE_DIR/s\" && echo STATE-OK\n\
             test -r \"$DISPATCH_BRIEF\" && echo BRIEF-OK\n\
             cat \"$DISPATCH_PAYLOAD\"; echo\n\
             echo '{{\"fine\": true}}' > \"$DISPATCH_OUTPUT\"\n"
        ),
        "COPY data.txt\n",
    );
    std::fs::write(dir.join("data.txt"), "data\n").expect("write");
    let id = d.detach(&dir, "{\"n\":1}");
    let doc = d.wait_terminal(&id);
    let log = log_of(&d, &id);
    assert_eq!(doc["status"], "succeeded", "{log}");
    for mark in [
        "WS-EDIT",
        "WS-NEW",
        "HOME-OK",
        "TMPDIR-OK",
        "TMP-OK",
        "ART-OK",
        "STATE-OK",
        "BRIEF-OK",
        "{\"n\":1}",
    ] {
        assert!(log.contains(mark), "{mark} missing: {log}");
    }
    assert_eq!(doc["output"]["fine"], true);
    assert!(!Path::new(&tmp).exists() || !is_root(), "/tmp is private");
}

/// `DISPATCH_SANDBOX=off` runs the agent as the helper's user, and says so.
#[test]
fn the_sandbox_can_be_turned_off_and_the_run_says_so() {
    let d = Dispatch::sandboxed_with(&[("DISPATCH_SANDBOX", "off")]);
    let dir = d.agent("plain", "id -u | sed 's/^/uid=/'\n");
    let id = d.detach(&dir, "{}");
    assert_eq!(d.wait_terminal(&id)["status"], "succeeded");
    let log = log_of(&d, &id);
    assert!(log.contains("sandbox: off (DISPATCH_SANDBOX=off)"), "{log}");
    // SAFETY: geteuid has no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    assert!(log.contains(&format!("uid={me}")), "{log}");
}

/// A `dispatch` started by another user than root (here `nobody`, from a
/// root test through `setpriv`), in a state directory that user owns.
struct Unprivileged {
    dir: tempfile::TempDir,
    env: Vec<(&'static str, &'static str)>,
}

impl Unprivileged {
    fn new(env: &[(&'static str, &'static str)]) -> Unprivileged {
        let dir = tempfile::tempdir().expect("tempdir");
        let u = Unprivileged {
            dir,
            env: env.to_vec(),
        };
        u.give_to_nobody();
        u
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join(".dispatch")
    }

    fn give_to_nobody(&self) {
        let out = std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(self.dir.path())
            .output()
            .expect("chown");
        assert!(out.status.success(), "{out:?}");
    }

    fn agent(&self, name: &str, script: &str, extra: &str) -> std::path::PathBuf {
        let dir = common::checks::agent(self.dir.path(), name, "FROM process\n", script, extra);
        self.give_to_nobody();
        dir
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], extra: &[(&str, &str)]) -> std::process::Output {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
                env!("CARGO_BIN_EXE_dispatch"),
            ])
            .args(args)
            .env("DISPATCH_ROOT", self.root())
            .env("HOME", self.dir.path())
            .env("NO_COLOR", "1")
            .envs(self.env.iter().copied())
            .envs(extra.iter().copied())
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("setpriv dispatch")
    }

    fn ok(&self, args: &[&str]) -> String {
        common::checks::ok(args, &self.run(args))
    }

    fn detach(&self, dir: &Path, job: &str) -> String {
        self.ok(&[
            "run",
            dir.to_str().expect("utf-8"),
            "--detach",
            "--job",
            job,
        ])
    }

    fn finish(&self, id: &str) -> serde_json::Value {
        self.run(&["wait", id, "--timeout-ms", "30000"]);
        let out = self.ok(&["inspect-run", id, "--format", "json"]);
        let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
        doc[0].clone()
    }

    fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.root().join("runs").join(format!("{id}.log")))
            .unwrap_or_default()
    }
}

/// The attacks on the audit, on other runs and on the parcels, by an agent
/// of a Dispatch that is not root; plus reading a concurrent run's secret
/// and signalling the helper. Returns the attacker's log.
fn attack_as_nobody(u: &Unprivileged) -> String {
    let secret = format!("s3cret-{}", std::process::id());
    let go = u.root().join("state/holder/go");
    let holder = u.agent(
        "holder",
        "while [ ! -e \"$GO\" ]; do sleep 0.01; done\necho held\n",
        &format!("SECRET TOKEN\nENV GO={}\n", go.display()),
    );
    let sibling = u.agent("sibling", "echo sibling-done\n", "");
    let s = u.ok(&[
        "run",
        sibling.to_str().expect("utf-8"),
        "--detach",
        "--keep-workspace",
    ]);
    assert_eq!(u.finish(&s)["status"], "succeeded", "{}", u.log(&s));
    let holder = holder.to_str().expect("utf-8");
    let started = u.run_with(
        &["run", holder, "--detach", "--job", "{}"],
        &[("TOKEN", &secret)],
    );
    let a = common::checks::ok(&["run", holder], &started);
    eventually(30, "the holder's agent runs", || {
        let out = u.ok(&["inspect-run", &a, "--format", "json"]);
        out.contains("\"status\": \"running\"") || out.contains("\"status\":\"running\"")
    });
    let script = format!(
        "ROOT='{root}'\n\
         SIB=$(sed 's/.*\"sibling\":\"\\([^\"]*\\)\".*/\\1/' \"$DISPATCH_PAYLOAD\")\n\
         grep CapEff /proc/self/status\n\
         for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\" 2>/dev/null; done > seen.txt\n\
         grep -q 's3cret' seen.txt && echo HARM-OTHER-RUN-SECRET\n\
         head -c 16 \"$ROOT/dispatch.db\" 2>/dev/null | grep -q SQLite && echo HARM-DB-READ\n\
         echo x >> \"$ROOT/dispatch.db\" 2>/dev/null && echo HARM-DB-WRITE\n\
         echo evil > \"$ROOT/runs/$SIB/work/evil.txt\" 2>/dev/null && echo HARM-SIBLING\n\
         echo evil >> \"$DISPATCH_PARCEL_DIR/agent.sh\" 2>/dev/null && echo HARM-PARCEL\n\
         mv \"$ROOT/parcels\" \"$ROOT/parcels.old\" 2>/dev/null && echo HARM-SWAP\n\
         if [ \"$PPID\" -gt 1 ] && kill -0 \"$PPID\" 2>/dev/null; then echo HARM-SIGNAL; fi\n\
         echo > \"$HOME/../../evil-home\" 2>/dev/null && echo HARM-OUTSIDE\n\
         echo more >> data.txt && echo WS-EDIT\n\
         echo h > \"$HOME/h\" && echo HOME-OK\n\
         echo t > \"$TMPDIR/t\" && echo TMPDIR-OK\n\
         echo a > \"$DISPATCH_ARTIFACTS/a.txt\" && echo ART-OK\n\
         echo s > \"$DISPATCH_STATE_DIR/s\" && echo STATE-OK\n\
         test -r \"$DISPATCH_BRIEF\" && echo BRIEF-OK\n\
         echo '{{\"fine\": true}}' > \"$DISPATCH_OUTPUT\"\n\
         echo attacked\n",
        root = u.root().display()
    );
    let attacker = u.agent("attacker", &script, "COPY data.txt\n");
    std::fs::write(attacker.join("data.txt"), "data\n").expect("write");
    u.give_to_nobody();
    let b = u.detach(&attacker, &format!("{{\"sibling\":\"{s}\"}}"));
    let doc = u.finish(&b);
    let log = u.log(&b);
    std::fs::write(&go, "").expect("go");
    assert_eq!(u.finish(&a)["status"], "succeeded", "{}", u.log(&a));
    assert_eq!(doc["status"], "succeeded", "{log}");
    assert_eq!(doc["output"]["fine"], true, "{log}");
    for mark in [
        "attacked",
        "WS-EDIT",
        "HOME-OK",
        "TMPDIR-OK",
        "ART-OK",
        "STATE-OK",
        "BRIEF-OK",
        "CapEff:\t0000000000000000",
    ] {
        assert!(log.contains(mark), "{mark} missing: {log}");
    }
    assert!(!log.contains("HARM"), "{log}");
    assert!(
        !u.root()
            .join("runs")
            .join(&s)
            .join("work/evil.txt")
            .exists()
    );
    assert!(!u.root().join("parcels.old").exists());
    u.ok(&["images", "--verify"]);
    log
}

/// Not root, with unprivileged user namespaces (the kernel's default
/// here): the agent gets the same view as under root, in a user namespace
/// of the caller's own uid, with no capabilities; every attack fails.
#[test]
fn as_another_user_an_agent_is_confined_in_a_user_namespace() {
    if !is_root() {
        return; // the test changes to `nobody` from root
    }
    let u = Unprivileged::new(&[]);
    let log = attack_as_nobody(&u);
    let userns = log.contains(
        "sandbox: uid 65534, user ns, no capabilities, no_new_privs, mount ns, pid ns, ipc ns",
    );
    let landlock = log.contains("landlock files");
    assert!(userns || landlock, "{log}");
}

/// Not root and no user namespace (turned off here, as
/// `user.max_user_namespaces=0` or AppArmor would): Landlock confines the
/// agent's files and signals; every attack fails.
#[test]
fn as_another_user_without_a_user_namespace_landlock_confines_an_agent() {
    if !is_root() {
        return;
    }
    let u = Unprivileged::new(&[("DISPATCH_SANDBOX_USERNS", "off")]);
    let log = attack_as_nobody(&u);
    assert!(
        log.contains("sandbox: uid 65534, no_new_privs, landlock files"),
        "{log}"
    );
    assert!(
        log.contains("NOT APPLIED: user namespace: DISPATCH_SANDBOX_USERNS=off"),
        "{log}"
    );
}

/// A helper killed with SIGKILL (it cannot stop its agent itself) takes
/// the agent's whole tree with it, a background child included: nothing of
/// the run beats on beside its recovery.
#[test]
fn a_killed_helpers_agent_tree_dies_with_it() {
    if !is_root() {
        return;
    }
    let d = Dispatch::sandboxed();
    let dir = d.agent(
        "beater",
        "(while :; do date +%s%N >> \"$DISPATCH_STATE_DIR/child\"; sleep 0.02; done) &\n\
         while :; do date +%s%N >> \"$DISPATCH_STATE_DIR/beats\"; sleep 0.02; done\n",
    );
    let id = d.detach(&dir, "{}");
    let state = d.root().join("state/beater");
    common::kill_helper_and_assert_beats_stop(&d, &id, &[state.join("beats"), state.join("child")]);
}

/// A sandboxed agent's outer processes (the helper's child, `C0`, and PID
/// 1 of the agent's namespace, `C1`) are one memory, not copies of the
/// helper's (`shared_vm`); the agent executed has its own; and a program
/// that cannot be executed still fails the start with the kernel's reason.
#[test]
fn a_sandboxed_agents_outer_processes_share_one_memory_and_a_missing_program_fails_the_start() {
    use crate::contain_stage::{children_of, same_memory};
    if !is_root() {
        return;
    }
    let d = Dispatch::sandboxed();
    let dir = d.agent(
        "shares",
        "while :; do date +%s%N >> \"$DISPATCH_STATE_DIR/beats\"; sleep 0.02; done\n",
    );
    let id = d.detach(&dir, "{}");
    let beats = d.root().join("state/shares/beats");
    eventually(30, "the agent beats", || beats.exists());
    let helper = d.helper_pid(&id);
    let chain = children_of(helper).into_iter().find_map(|c0| {
        let c1 = *children_of(c0).first()?;
        let agent = *children_of(c1).first()?;
        Some((c0, c1, agent))
    });
    let (c0, c1, agent) = chain.expect("the helper's child, its init and the agent");
    assert!(same_memory(c0, c1), "init shares its parent's memory");
    assert!(!same_memory(c0, helper), "the helper's child is its copy");
    assert!(!same_memory(c1, agent), "the agent executed has its own");
    d.ok(&["stop", &id]);

    let missing = d.dir.path().join("missing");
    std::fs::create_dir_all(&missing).expect("dir");
    std::fs::write(
        missing.join("Agentfile"),
        "NAME missing\nCOMMAND [\"no-such-program-here\", \"x\"]\n",
    )
    .expect("Agentfile");
    let id = d.detach(&missing, "{}");
    let state = d.wait_terminal(&id);
    assert_eq!(state["status"], "failed", "{state}");
    let id = id.as_str();
    assert!(
        log_of(&d, id)
            .contains("could not start `no-such-program-here x`: No such file or directory"),
        "{}",
        log_of(&d, id)
    );
}
