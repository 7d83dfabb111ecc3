//! A native run's model-call records: each call's request and response
//! bodies and its cassette entry (keys redacted), content-addressed by the
//! SHA-256 of their text, which the run's `model_call` events name
//! (`request_sha256`, `response_sha256`, `cassette_sha256`).
//!
//! They are kept in **one append-only file per run**, `runs/<id>/calls.jsonl`,
//! a line `{"sha256": …, "text": …}` per record. A file per record
//! (`runs/<id>/calls/<sha256>.json`, what runs recorded before this file
//! kept) cost a run ten new files for three model calls; on an ext4 without
//! a journal each new inode is a search past every inode freed in the last
//! 30 seconds, which was 40 % of a busy worker's CPU (issue #38). Records in
//! the old layout are still read.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The largest records file read whole.
const MAX_FILE_BYTES: u64 = 256 << 20;

#[derive(Serialize)]
struct Line<'a> {
    sha256: &'a str,
    text: &'a str,
}

/// A line read back (a text with escapes cannot be borrowed).
#[derive(Deserialize)]
struct Read {
    sha256: String,
    text: String,
}

/// `runs/<id>/calls.jsonl` of the run whose directory is `run_dir`.
pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join("calls.jsonl")
}

/// The directory of the old layout, a file per record.
fn old_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("calls")
}

/// Whether `s` is a record's name: 64 hexadecimal digits.
pub fn is_sha(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Appends record `sha256` (whose text is `text`) to the run's file, in
/// one write, between two newlines (so a write cut short before it never
/// joins its line). No fsync: a record lost with the machine is a call the
/// dashboard cannot show, not a call that runs twice.
pub fn append(run_dir: &Path, sha256: &str, text: &str) -> std::io::Result<()> {
    let mut line = vec![b'\n'];
    serde_json::to_writer(&mut line, &Line { sha256, text }).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path(run_dir))
    };
    let mut file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(run_dir)?;
            open()?
        }
        other => other?,
    };
    file.write_all(&line)
}

/// Every record of the run (the file's, then the old layout's), by digest.
/// A line that does not parse (the end of a write cut short) is skipped.
pub fn all(run_dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let file = path(run_dir);
    if std::fs::metadata(&file).is_ok_and(|m| m.len() <= MAX_FILE_BYTES)
        && let Ok(bytes) = std::fs::read(&file)
    {
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(l) = serde_json::from_slice::<Read>(line)
                && is_sha(&l.sha256)
            {
                out.entry(l.sha256).or_insert(l.text);
            }
        }
    }
    for entry in std::fs::read_dir(old_dir(run_dir))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name();
        let Some(sha) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if is_sha(sha)
            && !out.contains_key(sha)
            && let Ok(text) = std::fs::read_to_string(entry.path())
        {
            out.insert(sha.to_string(), text);
        }
    }
    out
}

/// Record `sha256` of the run, if this machine has it. Reads the file a
/// line at a time and parses only the line that names it.
pub fn read(run_dir: &Path, sha256: &str) -> Option<String> {
    use std::io::BufRead;
    if !is_sha(sha256) {
        return None;
    }
    let old = old_dir(run_dir).join(format!("{sha256}.json"));
    if let Ok(text) = std::fs::read_to_string(old) {
        return Some(text);
    }
    let file = std::fs::File::open(path(run_dir)).ok()?;
    let prefix = format!("{{\"sha256\":\"{sha256}\"");
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if line.starts_with(prefix.as_bytes())
            && let Ok(l) = serde_json::from_slice::<Read>(line.trim_ascii_end())
        {
            return Some(l.text);
        }
    }
}

/// Adds the records of `records` this machine does not have.
pub fn add_missing(run_dir: &Path, records: &BTreeMap<String, String>) -> std::io::Result<()> {
    let have = all(run_dir);
    let missing: Vec<_> = records
        .iter()
        .filter(|(sha, _)| is_sha(sha) && !have.contains_key(*sha))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (sha, text) in missing {
        append(run_dir, sha, text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_append_to_one_file_and_the_old_layout_is_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path();
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        append(run, &a, "{\"model\":\"m\"}\nwith a newline").expect("append");
        append(run, &b, "data: [DONE]").expect("append");
        // A run recorded before the file: one file per record.
        std::fs::create_dir_all(run.join("calls")).expect("dir");
        std::fs::write(run.join("calls").join(format!("{c}.json")), "old").expect("old");
        assert_eq!(
            read(run, &a).as_deref(),
            Some("{\"model\":\"m\"}\nwith a newline")
        );
        assert_eq!(read(run, &b).as_deref(), Some("data: [DONE]"));
        assert_eq!(read(run, &c).as_deref(), Some("old"));
        assert_eq!(read(run, &"d".repeat(64)), None);
        assert_eq!(read(run, "../etc/passwd"), None);
        assert_eq!(all(run).len(), 3);
        // One file, not a file per record.
        assert!(path(run).is_file());
        // A write cut short is skipped, the records before it stay.
        std::fs::OpenOptions::new()
            .append(true)
            .open(path(run))
            .and_then(|mut f| f.write_all(b"{\"sha256\":\"dd"))
            .expect("torn");
        assert_eq!(all(run).len(), 3);
        // Adding what another machine has: only what is missing.
        let d = "d".repeat(64);
        let theirs = BTreeMap::from([(a.clone(), "other".to_string()), (d.clone(), "new".into())]);
        let before = std::fs::metadata(path(run)).expect("meta").len();
        add_missing(run, &theirs).expect("add");
        assert_eq!(
            read(run, &a).as_deref(),
            Some("{\"model\":\"m\"}\nwith a newline")
        );
        assert_eq!(read(run, &d).as_deref(), Some("new"));
        assert!(std::fs::metadata(path(run)).expect("meta").len() > before);
    }
}
