//! The one size and the one duration grammar, used by the Agentfile
//! (`RESOURCES`, `LIMIT TOOL_OUTPUT`, `TIMEOUT`, `RETRY BACKOFF`, …), CLI
//! flags (`--memory`, `--queue-timeout`, `--since`, `--older-than`,
//! `--expires`, …), environment variables, notification configs and
//! retention policies, so that `1G` and `30m` mean the same everywhere.
//!
//! **Sizes** — a whole number and an optional unit, case-insensitive, with
//! `_` allowed between digits and spaces allowed before the unit:
//! no unit or `B` is bytes; `K`, `M`, `G`, `T` are **binary** (`1K` = 1024
//! bytes, `1G` = 2^30 bytes, as Docker and the kernel's cgroup files read
//! them), and `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`, `TB`/`TiB` are accepted as
//! the same binary units (so a value written for an older Dispatch keeps its
//! meaning). A size is greater than zero.
//!
//! **Durations** — a whole number and a unit, case-insensitive, with `_`
//! allowed between digits: `ms`, `s`, `m` (minutes), `h`, `d` (24 hours).
//! A bare number is refused ([`parse_duration_ms`]: is `7` seven days or
//! seconds?), except where an older Dispatch read it as seconds and still
//! does ([`parse_duration_ms_or_seconds`]): Agentfile durations, run policies
//! (`--step-timeout`, `--backoff`), `--queue-timeout`, `--expires`, eval
//! and skill timeouts.

use std::time::Duration;

/// The size grammar, for help texts and hints.
pub const SIZE_FORMS: &str = "a number and a binary unit: 512K, 64M, 1G (1G = 1024M), or bytes";

/// The duration grammar, for help texts and hints.
pub const DURATION_FORMS: &str = "a number and a unit: 500ms, 30s, 5m, 2h, 1d";

/// A size or duration that could not be read. Its message is one line naming
/// the input and the grammar.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid size `{0}` (hint: {SIZE_FORMS})")]
    Size(String),
    #[error("invalid size `{0}`: it must be greater than zero (hint: {SIZE_FORMS})")]
    ZeroSize(String),
    #[error("size `{0}` is too large (hint: at most 16383P)")]
    SizeTooLarge(String),
    #[error("invalid duration `{0}` (hint: {DURATION_FORMS})")]
    Duration(String),
    #[error("duration `{0}` is too large")]
    DurationTooLarge(String),
}

/// Parses a size (see the [module docs](self)) into bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let (n, unit) = split_number(text.trim()).ok_or_else(|| UnitError::Size(text.into()))?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(UnitError::Size(text.into())),
    };
    let n = n.ok_or_else(|| UnitError::SizeTooLarge(text.into()))?;
    match n.checked_mul(factor) {
        Some(0) => Err(UnitError::ZeroSize(text.into())),
        Some(bytes) => Ok(bytes),
        None => Err(UnitError::SizeTooLarge(text.into())),
    }
}

/// A size for people: `512M`, `1G`, `1536K`, `100B` (the largest exact
/// unit); [`parse_size`] reads it back to the same number.
pub fn format_size(bytes: u64) -> String {
    for (unit, factor) in [
        ("T", 1u64 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

/// Parses a duration (see the [module docs](self)); a unit is required.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    parse_duration_ms(text).map(Duration::from_millis)
}

/// [`parse_duration`] in whole milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, UnitError> {
    read_duration_ms(text, false)
}

/// [`parse_duration_ms`], also reading a bare number as seconds (the older
/// spelling, kept where it was accepted).
pub fn parse_duration_ms_or_seconds(text: &str) -> Result<u64, UnitError> {
    read_duration_ms(text, true)
}

fn read_duration_ms(text: &str, bare_seconds: bool) -> Result<u64, UnitError> {
    let bad = || UnitError::Duration(text.into());
    let (n, unit) = split_number(text.trim()).ok_or_else(bad)?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "ms" => 1,
        "" if bare_seconds => 1_000,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let too_large = || UnitError::DurationTooLarge(text.into());
    n.ok_or_else(too_large)?
        .checked_mul(factor)
        .ok_or_else(too_large)
}

/// `digits unit`: the number (`None` when it overflows) and the rest. `None`
/// when `text` does not start with a digit, or a `_` is not between digits.
fn split_number(text: &str) -> Option<(Option<u64>, &str)> {
    let end = text
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(end);
    if !digits.starts_with(|c: char| c.is_ascii_digit())
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    Some((clean.parse().ok(), unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary_whatever_the_spelling() {
        for (text, bytes) in [
            ("4096", 4096),
            ("100B", 100),
            ("512K", 512 << 10),
            ("512k", 512 << 10),
            ("512M", 512 << 20),
            ("1G", 1 << 30),
            ("1g", 1 << 30),
            ("1GB", 1 << 30),
            ("1GiB", 1 << 30),
            ("1gib", 1 << 30),
            ("64 MiB", 64 << 20),
            ("2T", 2 << 40),
            ("1_024", 1024),
            (" 8G ", 8 << 30),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bad_sizes_get_one_line_naming_the_input_and_the_grammar() {
        for text in [
            "", "G", "lots", "1.5G", "-1G", "1X", "1 G B", "_1", "1_", "1__0",
        ] {
            let e = parse_size(text).expect_err(text).to_string();
            assert!(e.starts_with(&format!("invalid size `{text}`")), "{e}");
            assert!(e.contains("1G = 1024M"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert_eq!(parse_size("0"), Err(UnitError::ZeroSize("0".into())));
        assert_eq!(parse_size("0G"), Err(UnitError::ZeroSize("0G".into())));
        let huge = "99999999999999999999";
        assert_eq!(parse_size(huge), Err(UnitError::SizeTooLarge(huge.into())));
        assert_eq!(
            parse_size("16777216T"),
            Err(UnitError::SizeTooLarge("16777216T".into()))
        );
    }

    #[test]
    fn format_size_reads_back() {
        for bytes in [1, 100, 1024, 1536 << 10, 512 << 20, 1 << 30, 3 << 40] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(1 << 30), "1G");
        assert_eq!(format_size(1536 << 10), "1536K");
        assert_eq!(format_size(100), "100B");
    }

    #[test]
    fn durations_take_ms_s_m_h_d() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("5M", 300_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("0s", 0),
            ("1_000ms", 1000),
            (" 10s ", 10_000),
        ] {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration_ms_or_seconds("2h"), Ok(7_200_000));
    }

    #[test]
    fn a_bare_number_is_seconds_only_where_it_always_was() {
        assert_eq!(parse_duration_ms("7"), Err(UnitError::Duration("7".into())));
        assert_eq!(parse_duration_ms_or_seconds("30"), Ok(30_000));
        assert_eq!(parse_duration_ms_or_seconds("1_0"), Ok(10_000));
        assert!(parse_duration_ms_or_seconds("soon").is_err());
    }

    #[test]
    fn bad_durations_get_one_line_naming_the_input_and_the_grammar() {
        for text in [
            "",
            "soon",
            "s",
            "1.5h",
            "-1s",
            "10 s",
            "1w",
            "1y",
            "_1s",
            "2026-11-21",
        ] {
            let e = parse_duration_ms(text).expect_err(text).to_string();
            assert_eq!(
                e,
                format!(
                    "invalid duration `{text}` (hint: a number and a unit: 500ms, 30s, 5m, 2h, 1d)"
                )
            );
        }
        let huge = "99999999999999999d";
        assert_eq!(
            parse_duration_ms(huge),
            Err(UnitError::DurationTooLarge(huge.into()))
        );
        let overflow = "999999999999999999999s";
        assert_eq!(
            parse_duration_ms(overflow),
            Err(UnitError::DurationTooLarge(overflow.into()))
        );
    }
}
