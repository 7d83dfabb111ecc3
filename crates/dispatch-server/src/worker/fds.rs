//! Admission by file descriptors: a worker takes a run only while it has
//! the descriptors to serve it.
//!
//! Every run in hand holds some (its log, its model call's connection) and
//! more while a tool runs (the pipes to its process). A worker faster than
//! its lag measure kept from claiming 10,000 runs at once on a 2-core
//! machine then ran out of its 20,000 descriptors: model calls failed to
//! connect with "Too many open files" and 15 % of the runs failed (issue
//! #38). So, past [`FLOOR`] runs in hand (fewer under a small limit, and
//! no claim goes past it uncounted), a claim takes at most as many runs as
//! [`PER_RUN`] descriptors each leave within [`SHARE`] of the limit,
//! counting the open ones (`/proc/self/fd`, read at most every [`EVERY`])
//! and the runs claimed in the last [`SETTLE`] at [`PER_RUN`] each; the
//! rest stays queued for other workers, or for this one when its runs end.

use std::time::{Duration, Instant};

/// Runs in hand below which descriptors are not counted.
pub const FLOOR: usize = 512;

/// The descriptors counted for one more run: it holds two or three while
/// it waits on its model (its log, the call's connection) and about seven
/// while a tool runs (its log, the tool's three pipes, the tether's pipe
/// and memfd, made per tool); six covers a worker's mix with room to spare.
pub const PER_RUN: usize = 6;

/// The part of the limit runs may fill, in percent; the rest is for the
/// database, the runtime and the tools' moments of more.
pub const SHARE: u64 = 85;

/// How often the open descriptors are counted at most.
pub const EVERY: Duration = Duration::from_millis(250);

/// How long a claimed run is counted at [`PER_RUN`] descriptors whatever
/// is open: a count right after a claim does not see what its runs are
/// about to open (successive claims took a worker under a small limit
/// past it).
pub const SETTLE: Duration = Duration::from_secs(1);

/// The worker's descriptor budget.
#[derive(Debug)]
pub struct FdBudget {
    /// The soft `RLIMIT_NOFILE` (raised to the hard one at start).
    limit: u64,
    /// The last count of open descriptors and when it was taken.
    counted: Option<(Instant, usize)>,
    /// Whether the last answer held claims back (for the log).
    holding_back: bool,
    /// The claims of the last [`SETTLE`]: when, and how many runs at most.
    fresh: std::collections::VecDeque<(Instant, usize)>,
}

impl FdBudget {
    /// The budget of this process, its soft limit raised to the hard one
    /// first (as the server does for its connections).
    pub fn new() -> FdBudget {
        FdBudget::with_limit(crate::limits::raise_nofile())
    }

    pub fn with_limit(limit: u64) -> FdBudget {
        FdBudget {
            limit,
            counted: None,
            holding_back: false,
            fresh: std::collections::VecDeque::new(),
        }
    }

    /// How many more runs may be claimed with `held` in hand: up to the
    /// floor without counting, past it what the open descriptors leave
    /// (unbounded where they cannot be counted).
    pub fn room(&mut self, held: usize) -> usize {
        let floor = floor(self.limit);
        if held < floor {
            // One claim never takes a worker past the floor uncounted.
            return floor - held;
        }
        let open = match self.counted {
            Some((at, open)) if at.elapsed() < EVERY => open,
            _ => match open_fds() {
                Some(open) => {
                    self.counted = Some((Instant::now(), open));
                    open
                }
                None => return usize::MAX,
            },
        };
        self.room_with(open)
    }

    /// What `open` descriptors leave, the runs claimed in the last
    /// [`SETTLE`] counted at [`PER_RUN`] each.
    fn room_with(&mut self, open: usize) -> usize {
        while self
            .fresh
            .front()
            .is_some_and(|(at, _)| at.elapsed() >= SETTLE)
        {
            self.fresh.pop_front();
        }
        let fresh: usize = self.fresh.iter().map(|(_, n)| n).sum();
        room(
            self.limit,
            open.saturating_add(fresh.saturating_mul(PER_RUN)),
        )
    }

    /// Whether a claim may take any run with `held` in hand; says so when
    /// that changes (`name`: the worker's).
    pub fn admits(&mut self, held: usize, name: &str) -> bool {
        let room = self.room(held);
        if room == 0 && !self.holding_back {
            tracing::warn!(
                "[worker {name}] {held} run(s) in hand and too few file descriptors left for \
                 more (limit {}): claiming again when runs end",
                self.limit
            );
        } else if room > 0 && self.holding_back {
            tracing::warn!(
                "[worker {name}] file descriptors free again ({held} run(s) in hand): claiming again"
            );
        }
        self.holding_back = room == 0;
        room > 0
    }

    /// A claim of at most `runs` was sent: the next answer counts again,
    /// and these runs at [`PER_RUN`] each for [`SETTLE`].
    pub fn claimed(&mut self, runs: usize) {
        self.counted = None;
        if runs > 0 {
            self.fresh.push_back((Instant::now(), runs));
        }
    }
}

impl Default for FdBudget {
    fn default() -> Self {
        FdBudget::new()
    }
}

/// Runs in hand below which descriptors are not counted: [`FLOOR`], or
/// half of what the limit holds when that is less (a soft limit of 1,024
/// holds 145 runs).
pub fn floor(limit: u64) -> usize {
    FLOOR.min(room(limit, 0) / 2)
}

/// Runs that fit in `limit` descriptors with `open` open (see the module).
pub fn room(limit: u64, open: usize) -> usize {
    let budget = usize::try_from(limit.saturating_mul(SHARE) / 100).unwrap_or(usize::MAX);
    budget.saturating_sub(open) / PER_RUN
}

/// This process's open descriptors.
fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_is_what_fits_under_the_share_of_the_limit() {
        assert_eq!(room(20_000, 0), 17_000 / PER_RUN);
        assert_eq!(room(20_000, 16_994), 1);
        assert_eq!(room(20_000, 17_000), 0);
        assert_eq!(room(20_000, 19_999), 0, "over the share: none");
    }

    #[test]
    fn few_runs_in_hand_are_not_counted_and_many_are() {
        let mut none = FdBudget::with_limit(0);
        assert_eq!(none.room(0), 0, "no descriptors to spare: no room");
        let mut some = FdBudget::with_limit(20_000);
        assert_eq!(some.room(0), FLOOR, "up to the floor, uncounted");
        assert_eq!(some.room(FLOOR - 1), 1, "below the floor");
        let mut plenty = FdBudget::with_limit(1 << 40);
        assert!(plenty.room(FLOOR) > 1_000_000);
    }

    #[test]
    fn runs_just_claimed_count_at_their_share_before_they_open_anything() {
        // Counted from a fixed number of open descriptors: other tests of
        // this process open and close theirs meanwhile (a real count once
        // came one lower between the two answers).
        let mut budget = FdBudget::with_limit(20_000);
        let before = budget.room_with(1_000);
        assert_eq!(before, room(20_000, 1_000));
        budget.claimed(100);
        let after = budget.room_with(1_000);
        assert_eq!(
            after,
            room(20_000, 1_000 + 100 * PER_RUN),
            "{before} then {after}"
        );
        assert!(after + 100 <= before, "{before} then {after}");
    }

    #[test]
    fn a_small_limit_is_counted_from_fewer_runs() {
        assert_eq!(floor(20_000), FLOOR);
        assert_eq!(
            floor(1_024),
            72,
            "870 descriptors hold 145 runs: counted from half"
        );
        assert_eq!(floor(0), 0);
    }
}
