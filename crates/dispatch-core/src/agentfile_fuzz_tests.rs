//! Property tests of the whole Agentfile path, from raw bytes on disk through
//! `parcel::build`: whatever the file holds (NUL bytes, a byte-order mark,
//! CRLF, invalid UTF-8, 100 KB lines, every directive with argument soup,
//! paths that escape the context or name symlinks), nothing panics, a
//! parcel that builds loads back, and an error names a line of the file and
//! says what is wrong in a bounded message.

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;

use super::*;
use crate::parcel::{self, ParcelError};

/// The longest error message a user may see, whatever the input: the parser
/// cuts what it echoes at [`MAX_MESSAGE`] bytes, and the rest is prose.
const MESSAGE_BOUND: usize = 2_000;

/// A line far longer than anything a person writes.
const LONG: usize = 100 * 1024;

/// Build-path tests touch the disk: fewer cases.
fn disk_cases() -> Config {
    Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    }
}

fn memory_cases() -> Config {
    Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Arguments that mean something to some directive, or nearly do.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "SOFT", "soft", "BACKOFF", "1s..30s", "30s..1s", "..", "1s..", "..1s", "0", "-1", "1_000",
    "_", "18446744073709551615", "18446744073709551616", "4294967296", "$2.50", "$-1", "$", "NaN",
    "inf", "1e309", "-0.0", "RUN", "STEP", "LLM", "TOKENS", "COST", "TOOL_ROUNDS",
    "OUTPUT_TOKENS", "CONTEXT_TOKENS", "PROVIDER", "openai", "anthropic", "openai_compatible",
    "BASE_URL", "http://127.0.0.1:11434/v1/", "http://", "ftp://x", "KEY", "K", "API_KEY",
    "1BAD", "a=b", "=b", "A=", "A==", "\"two words\"", "'single'", "\"unterminated", "'", "\\",
    "\\\"", "[\"sh\",\"a.sh\"]", "[]", "[\"\"]", "[1,2]", "[", "\"0 */5 * * * *\"", "@hourly",
    "@yearly", "@never", "* * * * * * *", "61 * * * *", "0 0 31 2 *", "*/0 * * * *",
    "127.0.0.1:8080", "[::1]:80", ":99999", "host:", ":", "/hook", "hook", "POST", "get,put",
    ",", "TRACE", "agent.sh", "a.md", "skills/s.md", "skills/t.txt", "skills/", "dir", "dir/",
    ".", "./", "../x", "../../etc/passwd", "/etc/passwd", "C:\\x", "c:", "*.md", "missing.md",
    "bad.md", "link-in", "link-out", "link-dangling", "loop", "dir/sub", "redis://localhost:6379",
    "job", "heartbeat", "chat", "process", "agent", "native", "noop", "dispatch/native:1",
    "docker", "#", "\u{feff}", "\u{0}", "\r", "\t", "é", "🦀", "\u{202e}",
];

/// Names the directive slot may hold: every directive, Dockerfile aliases,
/// near misses and nonsense.
fn directive() -> impl Strategy<Value = String> {
    let mut names: Vec<&'static str> = DIRECTIVES.iter().map(|d| d.name).collect();
    names.extend([
        "CMD", "RUN", "ADD", "EXPOSE", "COMAND", "LISTEN_", "X", "#", "",
    ]);
    (select(names), any::<bool>(), "[ \t]{0,2}").prop_map(|(d, lower, indent)| {
        let d = if lower {
            d.to_ascii_lowercase()
        } else {
            d.to_string()
        };
        format!("{indent}{d}")
    })
}

/// One argument: a meaningful word, a number, a duration, random text, or a
/// very long run of one character.
fn token() -> impl Strategy<Value = String> {
    let units = select(vec!["", "ms", "s", "m", "h", "d", "w", "MS", "..1s"]);
    prop_oneof![
        6 => select(WORDS).prop_map(str::to_string),
        2 => "[ -~]{0,12}",
        1 => "\\PC{0,8}",
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => (any::<u64>(), units).prop_map(|(n, u)| format!("{n}{u}")),
        1 => (select(vec!["a", "A", "/", "\"", "é", ".", "a/", "../"]), 1usize..LONG)
            .prop_map(|(c, n)| c.repeat(n / c.len())),
    ]
}

/// One line: a directive and its argument soup, maybe continued with `\`.
fn line() -> impl Strategy<Value = String> {
    (
        directive(),
        proptest::collection::vec(token(), 0..5),
        select(vec!["", "", "", " \\", "\\"]),
    )
        .prop_map(|(d, args, tail)| format!("{d} {}{tail}", args.join(" ")))
}

/// Paths the context holds, and paths that must be refused.
#[rustfmt::skip]
const PATHS: &[&str] = &[
    "agent.sh", "a.md", "skills/s.md", "skills/t.txt", "skills", "skills/", "dir", "dir/",
    "dir/sub", "dir/x.txt", "dir/link-up", ".", "./", "Agentfile", "x/../a.md", "dir/../../a.md",
    "../x", "/etc/passwd", "bad.md", "link-in", "link-out", "link-dangling", "loop",
    "missing.md", "*.md", "\"quoted text.md\"", "'a.md'", "lib/", "a.md/",
];

/// A directive that names files in the build context, with paths that exist or are traps.
fn file_line() -> impl Strategy<Value = String> {
    let path = prop_oneof![
        8 => select(PATHS).prop_map(str::to_string),
        1 => (select(PATHS), 1usize..LONG).prop_map(|(p, n)| format!("{p}{}", "a".repeat(n))),
    ];
    (
        select(vec!["COPY", "COPY", "SKILL", "IDENTITY", "SOUL", "PROMPT"]),
        proptest::collection::vec(path, 1..3),
    )
        .prop_map(|(d, paths)| format!("{d} {}", paths.join(" ")))
}

/// A file of soup lines after one of the valid heads, so that many cases
/// get past the checks at the end of the file into the build proper.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    let head = select(vec![
        "",
        "NAME a\nCOMMAND sh agent.sh\n",
        "FROM noop\nNAME a\n",
        "FROM agent\nNAME a\nMODEL gpt-m KEY K\nSECRET K\n",
    ]);
    (
        select(vec!["", "\u{feff}"]),
        head,
        proptest::collection::vec(prop_oneof![line(), file_line()], 0..10),
        select(vec!["\n", "\r\n", "\r", "\n\n"]),
    )
        .prop_map(|(bom, head, lines, eol)| {
            let body: String = lines.iter().map(|l| format!("{l}{eol}")).collect();
            format!("{bom}{head}{body}").into_bytes()
        })
}

/// A build context holding the files the soup names, including some that
/// must be refused: invalid UTF-8, symlinks out of the context, dangling
/// and looping symlinks.
fn context(agentfile: &[u8]) -> (tempfile::TempDir, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a tempdir");
    let outside = tempfile::tempdir().expect("a tempdir");
    let d = dir.path();
    let write = |rel: &str, content: &[u8]| {
        let path = d.join(rel);
        fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    };
    write("Agentfile", agentfile);
    write("agent.sh", b"echo hi\n");
    write("a.md", b"# a\n");
    write("skills/s.md", b"skill s\n");
    write("skills/t.txt", b"skill t\n");
    write("dir/x.txt", b"x\n");
    write("dir/sub/y", b"y\n");
    write("bad.md", b"\xff\xfe not utf-8 \xc3\x28");
    fs::write(outside.path().join("secret"), b"secret\n").expect("write");
    let link = |target: &Path, name: &str| {
        std::os::unix::fs::symlink(target, d.join(name)).expect("symlink");
    };
    link(Path::new("a.md"), "link-in");
    link(&outside.path().join("secret"), "link-out");
    link(Path::new("nowhere"), "link-dangling");
    link(Path::new("loop"), "loop");
    link(Path::new("../a.md"), "dir/link-up");
    (dir, outside)
}

/// The promises every Agentfile error keeps: a line that exists in the file
/// (1-based), and a non-empty message of bounded length.
fn check_agentfile_error(e: &AgentfileError, newlines: usize) -> Result<(), TestCaseError> {
    prop_assert!(e.line >= 1, "line 0: {e}");
    prop_assert!(
        e.line <= newlines + 1,
        "line past the end ({newlines} newlines): {e}"
    );
    prop_assert!(
        !e.message.trim().is_empty(),
        "empty message at line {}",
        e.line
    );
    prop_assert!(
        e.message.len() < MESSAGE_BOUND,
        "a {} byte message: {}…",
        e.message.len(),
        crate::event::shorten(&e.message, 200)
    );
    Ok(())
}

/// Builds the context holding `agentfile` and checks the outcome. How long
/// an error about a COPY path may be is left to
/// [`a_copy_error_is_bounded_however_long_the_path_is`].
fn build_and_check(agentfile: &[u8]) -> Result<(), TestCaseError> {
    let (ctx, _outside) = context(agentfile);
    let root = tempfile::tempdir().expect("a tempdir");
    let newlines = agentfile.iter().filter(|b| **b == b'\n').count();
    match parcel::build(ctx.path(), root.path()) {
        Ok(p) => {
            prop_assert!(!p.manifest.name.is_empty());
            let again = parcel::load(&p.dir).expect("a built parcel loads back");
            prop_assert_eq!(again.manifest, p.manifest);
            prop_assert_eq!(again.digest, p.digest);
        }
        Err(ParcelError::Agentfile { source, .. }) => check_agentfile_error(&source, newlines)?,
        Err(e) => {
            if let ParcelError::Copy { line, .. } = &e {
                prop_assert!(*line >= 1 && *line <= newlines + 1, "{}", e);
            }
            prop_assert!(!e.to_string().trim().is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(memory_cases())]

    /// Any text, with the characters that need care sprinkled in.
    #[test]
    fn parse_keeps_its_error_promises_on_any_text(
        parts in proptest::collection::vec(
            prop_oneof![
                3 => "\\PC{0,20}",
                1 => select(vec!["\0", "\u{feff}", "\r\n", "\r", "\n", "\\\n", "\"", "'", "#"])
                    .prop_map(str::to_string),
                1 => directive(),
            ],
            0..40,
        )
    ) {
        let text = parts.concat();
        if let Err(e) = parse(&text) {
            check_agentfile_error(&e, text.matches('\n').count())?;
        }
    }

    /// Every directive, in any case, with argument soup (including 100 KB arguments).
    #[test]
    fn parse_keeps_its_error_promises_on_directive_soup(bytes in soup()) {
        let text = String::from_utf8(bytes).expect("soup is text");
        if let Err(e) = parse(&text) {
            check_agentfile_error(&e, text.matches('\n').count())?;
        }
    }
}

proptest! {
    #![proptest_config(disk_cases())]

    /// Raw bytes on disk: invalid UTF-8, NUL, a BOM, anything.
    #[test]
    fn build_keeps_its_promises_on_any_bytes(
        bom in any::<bool>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut file = if bom { "\u{feff}".as_bytes().to_vec() } else { Vec::new() };
        file.extend(bytes);
        build_and_check(&file)?;
    }

    /// Directive soup through the whole build, against a context with files
    /// the soup names and traps it may fall into.
    #[test]
    fn build_keeps_its_promises_on_directive_soup(bytes in soup()) {
        build_and_check(&bytes)?;
    }
}

/// A 100 KB argument to each directive: the error quotes at most a bounded
/// part of it and states the size.
#[test]
fn a_100_kb_argument_to_any_directive_gets_a_bounded_error() {
    let arg = "x".repeat(LONG);
    for d in DIRECTIVES.iter().map(|d| d.name) {
        for text in [
            format!("{d} {arg}\n"),
            format!("NAME a\nCOMMAND sh a.sh\n{d} {arg}\n"),
            format!("NAME a\nCOMMAND sh a.sh\n{d} \"{arg}\n"),
            format!("NAME a\nCOMMAND sh a.sh\n{d} {arg}.md\n"),
        ] {
            if let Err(e) = parse(&text) {
                assert!(
                    e.message.len() < MESSAGE_BOUND,
                    "{d}: a {} byte message",
                    e.message.len()
                );
                if e.message.len() > MAX_MESSAGE {
                    assert!(e.message.contains("bytes in all"), "{d}: {e}");
                }
            }
        }
    }
    let e = parse(&format!("{arg}\n")).expect_err("an unknown directive");
    assert!(e.message.len() < MESSAGE_BOUND && e.line == 1, "{e}");
}

proptest! {
    #![proptest_config(Config { cases: 32, failure_persistence: None, ..Config::default() })]

    /// The message of a COPY that cannot be built stays as bounded as a
    /// parse error's, however long the source (missing) or the destination
    /// (of a file that exists) it names.
    #[test]
    fn a_copy_error_is_bounded_however_long_the_path_is(
        long_dest in any::<bool>(),
        n in 1usize..LONG,
    ) {
        let long = "a".repeat(n);
        let copy = if long_dest {
            format!("COPY agent.sh {long}")
        } else {
            format!("COPY {long}")
        };
        let file = format!("NAME a\nCOMMAND sh agent.sh\n{copy}\n");
        let (ctx, _outside) = context(file.as_bytes());
        let root = tempfile::tempdir().expect("a tempdir");
        if let Err(e) = parcel::build(ctx.path(), root.path()) {
            let text = e.to_string();
            prop_assert!(
                text.len() < MESSAGE_BOUND,
                "a {} byte error: {}",
                text.len(),
                crate::event::shorten(&text, 160)
            );
        }
    }
}
