//! Run ids: UUIDv7, so they sort by creation time, written as 32 lowercase hex
//! digits. Every command accepts a unique prefix (see `dispatch-store`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A run id. Time-ordered: a later run has a larger id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

/// The length of an id as shown in listings (like Docker's 12-character ids).
pub const SHORT_LEN: usize = 12;

impl RunId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        RunId(uuid::Uuid::now_v7().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 characters, for tables.
    pub fn short(&self) -> &str {
        &self.0[..SHORT_LEN.min(self.0.len())]
    }
}

/// What a listing shows of each of `ids`: its first [`SHORT_LEN`] digits,
/// or more where another id in the list starts the same way. The first 12
/// digits of an id are its creation time, so runs created in the same
/// millisecond (a fan-out's members) share them. Like git's abbreviated
/// hashes, each id gets its shortest prefix of at least [`SHORT_LEN`]
/// digits that no other id in the list starts with, so every id a table
/// shows can be pasted back.
pub fn abbreviate<'a>(ids: &[&'a str]) -> Vec<&'a str> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut need: std::collections::HashMap<&str, usize> =
        sorted.iter().map(|id| (*id, SHORT_LEN)).collect();
    for pair in sorted.windows(2) {
        let common = pair[0]
            .bytes()
            .zip(pair[1].bytes())
            .take_while(|(x, y)| x == y)
            .count();
        for id in pair {
            if let Some(n) = need.get_mut(id) {
                *n = (*n).max(common + 1);
            }
        }
    }
    ids.iter()
        .map(|&id| {
            let n = need.get(id).copied().unwrap_or(SHORT_LEN);
            id.get(..n).unwrap_or(id)
        })
        .collect()
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({})", self.0)
    }
}

/// A string that is not a run id (nor a prefix of one).
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a run id (hint: ids are hexadecimal, as printed by `dispatch ps`)")]
pub struct InvalidId(pub String);

impl FromStr for RunId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(RunId(s.to_ascii_lowercase()))
        } else {
            Err(InvalidId(s.to_string()))
        }
    }
}

/// Checks that `prefix` could be the start of a run id: 1 to 32 hex digits.
/// Returns it lowercased.
pub fn normalize_prefix(prefix: &str) -> Result<String, InvalidId> {
    if !prefix.is_empty() && prefix.len() <= 32 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(prefix.to_ascii_lowercase())
    } else {
        Err(InvalidId(prefix.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_time() {
        let a = RunId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = RunId::new();
        assert!(a < b, "{a} should sort before {b}");
        assert_eq!(a.as_str().len(), 32);
        assert_eq!(a.short().len(), SHORT_LEN);
    }

    #[test]
    fn listings_show_twelve_digits_or_as_many_as_tell_runs_of_one_millisecond_apart() {
        let a = "01a2115b4388715abc8a030a51aa4721";
        let b = "01a2115b4388716abc8a030a51aa4721";
        let c = "01a2115b43887170bc8a030a51aa4721";
        let d = "01a2115b4389715abc8a030a51aa4721";
        let e = "01a2115b4388717fbc8a030a51aa4721";
        let shown = abbreviate(&[d, a, c, b, a, e]);
        assert_eq!(
            shown,
            [
                "01a2115b4389",
                "01a2115b4388715",
                "01a2115b43887170",
                "01a2115b4388716",
                "01a2115b4388715",
                "01a2115b4388717f",
            ]
        );
        assert_eq!(abbreviate(&[a]), ["01a2115b4388"]);
        assert!(abbreviate(&[]).is_empty());
        // Whatever the ids, every one shown is unique and starts its id.
        let many: Vec<RunId> = (0..500).map(|_| RunId::new()).collect();
        let refs: Vec<&str> = many.iter().map(RunId::as_str).collect();
        let shown = abbreviate(&refs);
        let unique: std::collections::HashSet<&&str> = shown.iter().collect();
        assert_eq!(unique.len(), many.len());
        for (s, id) in shown.iter().zip(&many) {
            assert!(id.as_str().starts_with(s) && s.len() >= SHORT_LEN);
        }
    }

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let a = RunId::new();
        assert_eq!(a.as_str().parse::<RunId>().expect("valid id"), a);
        assert!("xyz".parse::<RunId>().is_err());
        assert!(normalize_prefix("ABC").is_ok());
        assert!(normalize_prefix("").is_err());
        assert!(normalize_prefix("g1").is_err());
    }
}
