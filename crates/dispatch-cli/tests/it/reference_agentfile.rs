//! `dispatch reference agentfile [DIRECTIVE]` and the completions it drives:
//! the directive registry seen through the binary, and `dispatch build`
//! errors quoting the same entries.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::Dispatch;

/// The registry as the binary reports it.
fn registry(d: &Dispatch) -> Vec<Value> {
    let out = d.ok(&["reference", "agentfile", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).expect("json");
    v.as_array().expect("an array").clone()
}

/// What bash completes for `dispatch <words>` (the last word being typed).
fn bash_completes(script: &str, words: &[&str]) -> Vec<String> {
    let mut line = vec!["dispatch"];
    line.extend_from_slice(words);
    let quoted: Vec<String> = line.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source /dev/stdin\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n_dispatch dispatch '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        quoted.join(" "),
        line.len() - 1,
        line[line.len() - 1],
        line[line.len() - 2],
    );
    let mut child = Command::new("bash")
        .args(["-c", &program])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("the script");
    let out = child.wait_with_output().expect("bash ends");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completes_directive_names_after_reference_agentfile() {
    let d = Dispatch::new();
    let script = d.ok(&["completion", "bash"]);
    let names: Vec<String> = registry(&d)
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect();
    assert!(names.len() > 50, "{names:?}");
    let all = bash_completes(&script, &["reference", "agentfile", ""]);
    for name in &names {
        assert!(all.contains(name), "{name} not completed: {all:?}");
    }
    let mut listen = bash_completes(&script, &["reference", "agentfile", "LISTEN_M"]);
    listen.sort();
    assert_eq!(
        listen,
        [
            "LISTEN_MAX_BODY_BYTES",
            "LISTEN_MAX_HEADER_BYTES",
            "LISTEN_METHOD"
        ],
        "{listen:?}"
    );
    for shell in ["zsh", "fish"] {
        let script = d.ok(&["completion", shell]);
        for name in ["RATE_LIMIT", "TOOL_SANDBOX", "HEARTBEAT"] {
            assert!(script.contains(name), "{shell} completes {name}");
        }
    }
}

#[test]
fn one_directive_shows_its_shape_example_and_upstream_meaning() {
    let d = Dispatch::new();
    let out = d.ok(&["reference", "agentfile", "timeout"]);
    assert!(
        out.starts_with("TIMEOUT: [RUN|STEP|LLM|TOOL] and a duration\n"),
        "{out}"
    );
    assert!(out.contains("arguments: 1-2 arguments"), "{out}");
    assert!(out.contains("example:   TIMEOUT RUN 30m"), "{out}");
    assert!(out.contains("upstream:  TIMEOUT TOOL <d>"), "{out}");
    let out = d.ok(&["reference", "agentfile", "RETRY"]);
    assert!(out.contains("not an upstream Dispatch directive"), "{out}");
    let out = d.ok(&["reference", "agentfile", "TEST"]);
    assert!(out.contains("refused:   TEST tool:<alias>"), "{out}");

    let list = d.ok(&["reference", "agentfile"]);
    assert!(list.starts_with("DIRECTIVE"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("TEST ") && l.contains("(refused)"))
    );

    let e = d.fails(&["reference", "agentfile", "EXPOSE"], 2);
    assert!(e.contains("invalid value 'EXPOSE'"), "{e}");
}

/// `dispatch build` quotes the same entry the reference prints: for every
/// directive but the refused, an empty line gets its help and example.
#[test]
fn build_errors_quote_the_registry() {
    let d = Dispatch::new();
    let dir = d.dir.path().join("agent");
    std::fs::create_dir_all(&dir).expect("dir");
    for entry in registry(&d) {
        let name = entry["name"].as_str().expect("name");
        std::fs::write(dir.join("Agentfile"), format!("NAME a\n{name}\n")).expect("Agentfile");
        let e = d.fails(&["build", dir.to_str().expect("utf-8")], 125);
        let want = match entry["refused"].as_str() {
            Some(why) => why.to_string(),
            None => format!(
                "{name} expects {} (hint: `{}`)",
                entry["expects"].as_str().expect("expects"),
                entry["example"].as_str().expect("example")
            ),
        };
        assert!(e.contains(&format!("line 2: {want}")), "{name}: {e}");
    }
    std::fs::write(
        dir.join("Agentfile"),
        "NAME a\nCOMMAND sh a.sh\nRESOURCES MEMORY 1G DISK 1GiB\n",
    )
    .expect("Agentfile");
    d.ok(&["build", dir.to_str().expect("utf-8"), "-q"]);
}
