//! Everything `dispatch eval` writes to its stdout and stderr. A write
//! that fails — a closed pipe (`dispatch eval | head -1`), a full disk —
//! is ignored: the eval goes on, finishes its runs, records them and ends
//! its own run with the verdict, and exits with the verdict's code.
//! (`println!` would panic on a closed pipe; the process ignores SIGPIPE,
//! as every Rust program does, so the write fails instead of killing it —
//! which is why `main` never restores SIGPIPE's default for `eval`.)

use std::io::Write;

/// Writes `text` to stdout as it is.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Writes one line to stderr.
pub fn err(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}
