//! Timestamps: milliseconds since the Unix epoch, UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Ts = i64;

/// The current wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> Ts {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A short human duration: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn human_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// How long ago `then` was, relative to `now`: `3 seconds ago`, `5 minutes ago`.
pub fn human_ago(then: Ts, now: Ts) -> String {
    let s = ((now - then) / 1000).max(0);
    let (n, unit) = match s {
        0..=59 => (s, "second"),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

/// The forms [`parse_time`] accepts, for error messages and help.
pub const TIME_FORMS: &str =
    "an RFC 3339 time like 2026-11-21T10:00:00Z, or an age like 30s, 10m, 2h or 7d";

/// A time given by a user: an RFC 3339 timestamp (`2026-11-21T10:00:00Z`,
/// `2026-11-21T11:00:00+01:00`), or an age (`30s`, `10m`, `2h`, `7d`) meaning
/// that long before `now`. The error is one line naming the input and the
/// accepted forms.
pub fn parse_time(s: &str, now: Ts) -> Result<Ts, String> {
    let text = s.trim();
    let at = match age_ms(text) {
        Some(age) => age.and_then(|ms| {
            now.checked_sub(ms)
                .ok_or_else(|| format!("`{s}` is too long ago"))
        })?,
        None => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_millis())
            .map_err(|_| {
                let hint = if missing_offset(text) {
                    " (hint: add Z for UTC, or an offset like +01:00)"
                } else {
                    ""
                };
                format!("`{s}` is not a time; expected {TIME_FORMS}{hint}")
            })?,
    };
    // Every time returned can be written back as RFC 3339.
    if chrono::DateTime::from_timestamp_millis(at).is_none() {
        return Err(format!("`{s}` is too far from now"));
    }
    Ok(at)
}

/// A length of time given by a user as an age (`30s`, `10m`, `2h`, `7d`), in
/// milliseconds. The error is one line naming the input and the accepted form.
pub fn parse_age(s: &str) -> Result<i64, String> {
    match age_ms(s.trim()) {
        Some(age) => age,
        None => Err(format!(
            "`{s}` is not a duration; expected a number and a unit, like 30s, 10m, 2h or 7d"
        )),
    }
}

/// Whether `text` is an RFC 3339 time but for its offset.
fn missing_offset(text: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
}

/// `Some` when `text` is an age ([`crate::units`]' duration grammar, a unit
/// required), in milliseconds; `None` when it is not shaped like one.
fn age_ms(text: &str) -> Option<Result<i64, String>> {
    use crate::units::{UnitError, parse_duration_ms};
    let too_long = || format!("`{text}` is too long ago");
    match parse_duration_ms(text) {
        Ok(ms) => Some(i64::try_from(ms).map_err(|_| too_long())),
        Err(UnitError::DurationTooLarge(_)) => Some(Err(too_long())),
        Err(_) => None,
    }
}

/// `ts` as RFC 3339 in UTC with milliseconds (`2026-11-21T10:00:00.000Z`);
/// `None` outside the years chrono can write (never for a [`parse_time`] result).
pub fn format_rfc3339(ts: Ts) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ts)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-21T10:00:00Z.
    const NOW: Ts = 1_795_255_200_000;

    #[test]
    fn rfc3339_times_parse_to_unix_millis_in_any_offset() {
        assert_eq!(parse_time("2026-11-21T10:00:00Z", 0), Ok(NOW));
        assert_eq!(parse_time("2026-11-21T11:00:00+01:00", 0), Ok(NOW));
        assert_eq!(parse_time("2026-11-21T10:00:00.250Z", 0), Ok(NOW + 250));
        assert_eq!(parse_time(" 2026-11-21t10:00:00z ", 0), Ok(NOW));
        assert_eq!(parse_time("1970-01-01T00:00:00Z", 0), Ok(0));
    }

    #[test]
    fn an_age_means_that_long_before_now() {
        assert_eq!(parse_time("30s", NOW), Ok(NOW - 30_000));
        assert_eq!(parse_time("10m", NOW), Ok(NOW - 600_000));
        assert_eq!(parse_time("2h", NOW), Ok(NOW - 7_200_000));
        assert_eq!(parse_time("7d", NOW), Ok(NOW - 604_800_000));
        assert_eq!(parse_time("0s", NOW), Ok(NOW));
    }

    #[test]
    fn a_bad_time_names_the_input_and_the_accepted_forms() {
        for bad in [
            "",
            "yesterday",
            "10",
            "10w",
            "m",
            "-5m",
            "2026-11-21",
            "2026-11-21T10:00:00",
        ] {
            let err = parse_time(bad, NOW).expect_err(bad);
            assert!(err.contains(&format!("`{bad}`")), "names the input: {err}");
            assert!(err.contains("RFC 3339") && err.contains("10m"), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        let err = parse_time("2026-11-21T10:00:00", NOW).expect_err("no offset");
        assert!(err.contains("hint: add Z"), "{err}");
        for far in ["9999999999999999999d", "99999999999d"] {
            let err = parse_time(far, NOW).expect_err(far);
            assert!(err.contains(far), "{err}");
        }
    }

    #[test]
    fn a_parsed_time_is_written_back_as_utc_rfc3339() {
        let at = parse_time("2026-11-21T11:00:00.5+01:00", 0).expect("a time");
        assert_eq!(
            format_rfc3339(at).as_deref(),
            Some("2026-11-21T10:00:00.500Z")
        );
        assert_eq!(format_rfc3339(i64::MAX), None);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(850), "850ms");
        assert_eq!(human_duration(12_340), "12.3s");
        assert_eq!(human_duration(245_000), "4m05s");
        assert_eq!(human_ago(0, 1000), "1 second ago");
        assert_eq!(human_ago(0, 120_000), "2 minutes ago");
    }
}
