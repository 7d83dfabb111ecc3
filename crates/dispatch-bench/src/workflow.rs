//! `dispatch-bench workflow [--dispatch PATH] [--hops N] [--fanout N] [--rounds R]`:
//! multi-agent runs on the local runtime (SQLite).
//!
//! - Per-hop coordination overhead: a chain of N process members (POSIX sh);
//!   each reads the clock just before it writes its message to `__next__`,
//!   and the next reads it first thing when it starts. Overhead of a hop =
//!   receiver executing − message written (which includes the sender's
//!   exit, its helper recording the end, the coordinator's pass, the
//!   child's creation and its helper's start). Baseline in the same run:
//!   `run --detach` → agent executing for the same member alone.
//! - A fan-out of M noop members: wall time of `dispatch run <workflow>`
//!   (built beforehand) from start to exit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::{flag_value, median, pct};

pub(crate) const HOP: &str = r#"now() { date +%s%N; }
t=$(now)
msg=$(cat)
me=$(printf '%s' "$msg" | sed -n 's/.*"agent":"\([a-z0-9]*\)".*/\1/p')
echo "$t" > "$MARKS/start.$me"
now > "$MARKS/sent.$me"
echo '{"type":"message","to":"__next__","kind":"RESULT","payload":{}}' >> "$DISPATCH_EVENTS"
"#;

pub(crate) fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn ns_now() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i128
}

fn read_ns(path: &Path) -> i128 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a clock reading")
}

fn dispatch(bin: &Path, root: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .env("DISPATCH_ROOT", root)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .args(args)
        .output()
        .expect("run dispatch");
    assert!(
        out.status.success(),
        "dispatch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn main(bin: &Path, args: &[String]) {
    let num = |flag: &str, default: usize| {
        flag_value(args, flag)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (hops, fanout, rounds) = (num("--hops", 20), num("--fanout", 100), num("--rounds", 5));
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join(".dispatch");
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).expect("marks");
    let member = dir.path().join("chain/hop");
    write(
        &member.join("Agentfile"),
        &format!(
            "FROM process\nNAME hop\nCOPY agent.sh\nCOMMAND sh agent.sh\nENV MARKS={}\n",
            marks.display()
        ),
    );
    write(&member.join("agent.sh"), HOP);
    let names: Vec<String> = (0..hops).map(|i| format!("m{i}")).collect();
    let mut af = String::from("FROM workflow\nNAME chain\nCOORDINATOR chain\n");
    for n in &names {
        af.push_str(&format!("AGENT {n} ./hop\n"));
    }
    write(&dir.path().join("chain/Agentfile"), &af);
    let noop = dir.path().join("fan/noop");
    write(&noop.join("Agentfile"), "FROM noop\nNAME nothing\n");
    let mut af = String::from("FROM workflow\nNAME fan\nCOORDINATOR fan_out\n");
    for i in 0..fanout {
        af.push_str(&format!("AGENT n{i} ./noop\n"));
    }
    write(&dir.path().join("fan/Agentfile"), &af);
    let chain = dir.path().join("chain");
    let fan = dir.path().join("fan");
    dispatch(bin, &root, &["build", chain.to_str().expect("utf-8")]);
    dispatch(bin, &root, &["build", fan.to_str().expect("utf-8")]);

    let (mut overhead, mut baseline, mut fan_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let id = dispatch(bin, &root, &["run", "chain", "--detach"]);
        dispatch(bin, &root, &["wait", &id]);
        for w in names.windows(2) {
            let sent = read_ns(&marks.join(format!("sent.{}", w[0])));
            let start = read_ns(&marks.join(format!("start.{}", w[1])));
            overhead.push((start - sent) as f64 / 1e6);
        }
        // Baseline: the member alone, `run --detach` → executing.
        let t0 = ns_now();
        let id = dispatch(
            bin,
            &root,
            &[
                "run",
                "hop",
                "--detach",
                "--job",
                r#"{"workflow":{"agent":"alone"}}"#,
            ],
        );
        dispatch(bin, &root, &["wait", &id]);
        baseline.push((read_ns(&marks.join("start.alone")) - t0) as f64 / 1e6);
        let t = Instant::now();
        dispatch(bin, &root, &["run", "fan"]);
        fan_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let base = median(baseline.clone());
    println!("| measurement | median | p95 | ratio to baseline |\n|---|---|---|---|");
    println!(
        "| baseline: `run --detach` → agent executing, the member alone (n={rounds}) | {base:.1} ms | {:.1} ms | 1.00 |",
        pct(baseline.clone(), 0.95)
    );
    let m = median(overhead.clone());
    println!(
        "| per hop: message written → receiver executing, chain of {hops} (n={}) | {m:.1} ms | {:.1} ms | {:.2} |",
        overhead.len(),
        pct(overhead, 0.95),
        m / base
    );
    let f = median(fan_ms.clone());
    println!(
        "| fan-out of {fanout} noop members: `dispatch run` start → exit (n={rounds}) | {f:.0} ms | {:.0} ms | {:.2} |",
        pct(fan_ms, 0.95),
        f / base
    );
}
