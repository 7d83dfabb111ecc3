//! `dispatch logs [-f] [--tail N] [--attempt N]`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use dispatch_core::RunId;
use dispatch_runtime::Layout;
use dispatch_runtime::reconcile::reconcile;
use dispatch_store::sqlite::SqliteStore;
use dispatch_store::{Run, RunStore};

use crate::cli::LogsArgs;
use crate::ctx::{Ctx, find_run};
use crate::error::{CliError, CliResult};

const FOLLOW_POLL: Duration = Duration::from_millis(25);

pub async fn logs(ctx: &Ctx, args: &LogsArgs) -> CliResult {
    let store = ctx
        .existing_store()?
        .ok_or_else(|| CliError::input(format!("no run matches `{}` (no runs yet)", args.id)))?;
    let run = find_run(&store, &ctx.layout, &args.id).await?;
    if let Some(n) = args.attempt {
        check_attempt(&run, n)?;
        let bytes = std::fs::read(ctx.layout.log(&run.id)).unwrap_or_default();
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(attempt_section(&bytes, n));
        let _ = out.flush();
    } else if args.follow {
        follow_log(&store, &ctx.layout, &run.id, args.tail).await?;
    } else {
        let start = tail_offset(&ctx.layout.log(&run.id), args.tail);
        copy_from(&ctx.layout.log(&run.id), start);
    }
    Ok(0)
}

/// Refuses an attempt the run has not had.
pub(crate) fn check_attempt(run: &dispatch_store::Run, n: u32) -> CliResult<()> {
    if n == 0 || n > run.attempt {
        return Err(CliError::input(format!(
            "run {} has no attempt {n} (it is on attempt {})",
            run.id.short(),
            run.attempt
        )));
    }
    Ok(())
}

/// The lines of attempt `n`: from its `[dispatch] attempt n …` line to the
/// next attempt's (attempts of one run never overlap). `n` is the store's
/// attempt number, which the helper writes first on the line whether the
/// attempt counts against the retries (`attempt 2 of 3`) or not, after a
/// durable wake or a lost helper or lease (`attempt 2 (counts as 1 of 3)`).
pub(crate) fn attempt_section(log: &[u8], n: u32) -> &[u8] {
    let (mut start, mut end) = (None, log.len());
    let mut pos = 0;
    for line in log.split_inclusive(|b| *b == b'\n') {
        match (attempt_of(line), start) {
            (Some(m), None) if m == n => start = Some(pos),
            (Some(m), Some(_)) if m != n => {
                end = pos;
                break;
            }
            _ => {}
        }
        pos += line.len();
    }
    start.map_or(&[][..], |s| &log[s..end])
}

/// The attempt a `[dispatch] attempt N of M` or `[dispatch] attempt N
/// (counts as K of M)` line starts; `None` for any other line.
fn attempt_of(line: &[u8]) -> Option<u32> {
    let rest = line.strip_prefix(b"[dispatch] attempt ")?;
    let text = std::str::from_utf8(rest).ok()?;
    let (num, tail) = text.split_once(' ')?;
    (tail.starts_with("of ") || tail.starts_with("(counts as "))
        .then(|| num.parse().ok())
        .flatten()
}

/// Where the last `n` lines of the file start (0 for the whole file).
fn tail_offset(path: &std::path::Path, n: Option<usize>) -> u64 {
    let Some(n) = n else { return 0 };
    let Ok(bytes) = std::fs::read(path) else {
        return 0;
    };
    let mut end = bytes.len();
    if bytes.last() == Some(&b'\n') {
        end -= 1;
    }
    let mut seen = 0;
    for i in (0..end).rev() {
        if bytes[i] == b'\n' {
            seen += 1;
            if seen == n {
                return (i + 1) as u64;
            }
        }
    }
    if n == 0 { bytes.len() as u64 } else { 0 }
}

/// Copies the file from `offset` to stdout; returns the new offset.
fn copy_from(path: &std::path::Path, offset: u64) -> u64 {
    let Ok(mut f) = std::fs::File::open(path) else {
        return offset;
    };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(offset)).is_err() || f.read_to_end(&mut buf).is_err() {
        return offset;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&buf);
    let _ = out.flush();
    offset + buf.len() as u64
}

/// Prints the log as it grows until the run ends; returns the finished run.
pub async fn follow_log(
    store: &SqliteStore,
    layout: &Layout,
    id: &RunId,
    tail: Option<usize>,
) -> CliResult<Run> {
    let path = layout.log(id);
    let mut offset = tail_offset(&path, tail);
    loop {
        offset = copy_from(&path, offset);
        let run = reconcile(store, layout, store.get_run(id).await?).await?;
        if run.state.is_terminal() {
            copy_from(&path, offset);
            return Ok(run);
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::attempt_section;

    const LOG: &[u8] = b"[dispatch] attempt 1 of 3\n\
        one\n\
        [dispatch] suspended: waiting for signal `go`\n\
        [dispatch] attempt 2 (counts as 1 of 3)\n\
        two\n\
        [dispatch] attempt 2 of 3 failed: exit 1; retrying in 1s\n\
        [dispatch] attempt 3 of 3\n\
        three\n";

    #[test]
    fn attempts_that_do_not_count_are_found_by_their_store_number() {
        let text = |n| String::from_utf8_lossy(attempt_section(LOG, n)).into_owned();
        assert!(text(1).starts_with("[dispatch] attempt 1 of 3\none\n"));
        assert!(!text(1).contains("two"));
        assert!(text(2).starts_with("[dispatch] attempt 2 (counts as 1 of 3)\ntwo\n"));
        assert!(text(2).contains("retrying in 1s") && !text(2).contains("three"));
        assert_eq!(text(3), "[dispatch] attempt 3 of 3\nthree\n");
        assert_eq!(text(4), "");
    }
}
