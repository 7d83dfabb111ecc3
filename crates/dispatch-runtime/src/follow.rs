//! Following an append-only JSON-lines file that another process writes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// Reads complete lines appended to a file since the last call.
pub(crate) struct LineFollower {
    path: PathBuf,
    file: Option<File>,
    offset: u64,
    partial: Vec<u8>,
}

impl LineFollower {
    pub(crate) fn new(path: PathBuf) -> Self {
        LineFollower {
            path,
            file: None,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// New complete lines. With `finish`, a last line without a newline counts too.
    pub(crate) fn poll(&mut self, finish: bool) -> Vec<String> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(file) = self.file.as_mut() else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_ok() && file.read_to_end(&mut buf).is_ok() {
            self.offset += buf.len() as u64;
            self.partial.extend_from_slice(&buf);
        }
        let mut lines = Vec::new();
        while let Some(nl) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            push_line(&mut lines, &line[..line.len() - 1]);
        }
        if finish && !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            push_line(&mut lines, &rest);
        }
        lines
    }
}

fn push_line(lines: &mut Vec<String>, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches('\r');
    if !text.trim().is_empty() {
        lines.push(text.to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn only_complete_lines_until_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let mut f = LineFollower::new(path.clone());
        assert!(f.poll(false).is_empty(), "a missing file has no lines");
        let mut w = std::fs::File::create(&path).expect("create");
        w.write_all(b"one\ntw").expect("write");
        assert_eq!(f.poll(false), vec!["one"]);
        w.write_all(b"o\n\nthree").expect("write");
        assert_eq!(f.poll(false), vec!["two"]);
        assert_eq!(f.poll(true), vec!["three"]);
    }
}
