//! Timers: cron schedules (seconds-aware, parsed by `croner`, evaluated in
//! UTC) and plain intervals. Pure over wall-clock milliseconds, so every rule
//! below is tested without waiting:
//!
//! - a due timer fires once and its next fire is the first one strictly after
//!   now: missed fires (downtime, a suspended laptop, a clock jumping forward)
//!   never stampede;
//! - when the clock jumped backward past the last fire, the timer is
//!   re-anchored at the new now: it neither fires the same moment twice in a
//!   row nor stalls until the old time comes round again;
//! - on start, a timer whose persisted next fire has passed reports it as
//!   missed (the service then wakes once, with reason `recovery`).

use chrono::{TimeZone, Utc};
use croner::Cron;
use dispatch_core::Ts;
use serde_json::Value;

use super::ServiceError;
use super::model::{ScheduleState, Trigger};

/// Parses a cron expression of 5 fields, or 6 with seconds first. A mistake
/// names the field at fault (see [`dispatch_core::cron::parse_cron`]).
pub fn parse_cron(expr: &str) -> Result<Cron, ServiceError> {
    dispatch_core::cron::parse_cron(expr).map_err(ServiceError::new)
}

/// One fire of a timer.
#[derive(Clone, Debug, PartialEq)]
pub struct Fire {
    pub index: usize,
    pub label: String,
    /// The moment the timer was due.
    pub scheduled_for: Ts,
    pub payload: Value,
}

/// The timers of one service.
pub struct Timers {
    items: Vec<(ScheduleState, Option<Cron>)>,
}

impl Timers {
    pub fn new(states: Vec<ScheduleState>) -> Result<Timers, ServiceError> {
        let mut items = Vec::with_capacity(states.len());
        for s in states {
            let cron = match &s.trigger {
                Trigger::Cron { expr } => Some(parse_cron(expr)?),
                Trigger::Interval { .. } => None,
            };
            items.push((s, cron));
        }
        Ok(Timers { items })
    }

    pub fn states(&self) -> Vec<ScheduleState> {
        self.items.iter().map(|(s, _)| s.clone()).collect()
    }

    pub fn record_skip(&mut self, index: usize) {
        if let Some((s, _)) = self.items.get_mut(index) {
            s.skipped += 1;
        }
    }

    /// Anchors every timer at `now`. Returns the labels of timers whose
    /// persisted next fire passed while the service was down, with that time.
    pub fn start(&mut self, now: Ts) -> Vec<(String, Ts)> {
        let mut missed = Vec::new();
        for (s, cron) in &mut self.items {
            if let Some(due) = s.next_fire_at.filter(|&due| due <= now) {
                missed.push((s.label(), due));
            }
            let keep = s.next_fire_at.filter(|&due| due > now);
            s.next_fire_at = keep.or_else(|| next_after(&s.trigger, cron.as_ref(), now));
        }
        missed
    }

    /// The earliest next fire.
    pub fn next_deadline(&self) -> Option<Ts> {
        self.items.iter().filter_map(|(s, _)| s.next_fire_at).min()
    }

    /// The timers due at `now`, each at most once; moves each past `now`.
    pub fn due(&mut self, now: Ts) -> Vec<Fire> {
        let mut fires = Vec::new();
        for (index, (s, cron)) in self.items.iter_mut().enumerate() {
            if s.last_fired_at.is_some_and(|last| now < last) {
                // The clock went backward: start over from the new now.
                s.last_fired_at = Some(now);
                s.next_fire_at = next_after(&s.trigger, cron.as_ref(), now);
                continue;
            }
            let Some(due) = s.next_fire_at.filter(|&due| due <= now) else {
                continue;
            };
            s.last_fired_at = Some(now);
            s.fires += 1;
            s.next_fire_at = next_after(&s.trigger, cron.as_ref(), now);
            fires.push(Fire {
                index,
                label: s.label(),
                scheduled_for: due,
                payload: s.payload.clone(),
            });
        }
        fires
    }
}

/// The first fire strictly after `after`.
fn next_after(trigger: &Trigger, cron: Option<&Cron>, after: Ts) -> Option<Ts> {
    match (trigger, cron) {
        (Trigger::Interval { every_ms }, _) => {
            Some(after.saturating_add((*every_ms).max(1) as i64))
        }
        (Trigger::Cron { .. }, Some(cron)) => {
            let from = Utc.timestamp_millis_opt(after).single()?;
            cron.find_next_occurrence(&from, false)
                .ok()
                .map(|t| t.timestamp_millis())
        }
        (Trigger::Cron { .. }, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(expr: &str) -> ScheduleState {
        ScheduleState::new(
            Trigger::Cron {
                expr: expr.to_string(),
            },
            Value::Null,
        )
    }

    const T0: Ts = 1_700_000_000_000; // a whole second

    #[test]
    fn a_seconds_cron_fires_on_its_seconds_once_each() {
        let mut t = Timers::new(vec![cron("*/10 * * * * *")]).expect("valid");
        assert!(t.start(T0 + 1).is_empty());
        assert_eq!(t.next_deadline(), Some(T0 + 10_000));
        assert!(t.due(T0 + 9_999).is_empty());
        let fires = t.due(T0 + 10_003);
        assert_eq!(fires.len(), 1);
        assert_eq!(fires[0].scheduled_for, T0 + 10_000);
        assert!(t.due(T0 + 10_004).is_empty(), "never twice for one moment");
        assert_eq!(t.next_deadline(), Some(T0 + 20_000));
    }

    #[test]
    fn missed_fires_collapse_into_one() {
        let mut t = Timers::new(vec![cron("* * * * * *")]).expect("valid");
        t.start(T0);
        let fires = t.due(T0 + 3_600_000);
        assert_eq!(fires.len(), 1, "an hour of missed seconds fires once");
        assert_eq!(t.next_deadline(), Some(T0 + 3_601_000));
    }

    #[test]
    fn a_clock_jumping_backward_neither_repeats_nor_stalls() {
        let mut t = Timers::new(vec![cron("*/10 * * * * *")]).expect("valid");
        t.start(T0 + 1);
        assert_eq!(t.due(T0 + 10_000).len(), 1);
        // The clock jumps back an hour.
        let back = T0 - 3_600_000 + 10_000;
        assert!(t.due(back).is_empty(), "does not fire again at once");
        assert_eq!(
            t.next_deadline(),
            Some(back + 10_000),
            "the next fire is ten seconds away on the new clock, not an hour"
        );
        assert_eq!(t.due(back + 10_000).len(), 1);
    }

    #[test]
    fn a_restart_reports_a_persisted_fire_that_passed() {
        let mut s = cron("*/10 * * * * *");
        s.next_fire_at = Some(T0 + 10_000);
        s.last_fired_at = Some(T0);
        let mut t = Timers::new(vec![s]).expect("valid");
        let missed = t.start(T0 + 65_000);
        assert_eq!(missed, vec![("*/10 * * * * *".to_string(), T0 + 10_000)]);
        assert_eq!(t.next_deadline(), Some(T0 + 70_000));
        let mut fresh = Timers::new(vec![cron("*/10 * * * * *")]).expect("valid");
        assert!(fresh.start(T0 + 65_000).is_empty());
    }

    #[test]
    fn intervals_follow_the_last_fire() {
        let s = ScheduleState::new(Trigger::Interval { every_ms: 500 }, Value::Null);
        let mut t = Timers::new(vec![s]).expect("valid");
        t.start(T0);
        assert_eq!(t.next_deadline(), Some(T0 + 500));
        assert_eq!(t.due(T0 + 720).len(), 1);
        assert_eq!(t.next_deadline(), Some(T0 + 1_220));
    }

    #[test]
    fn a_bad_cron_names_its_field() {
        let e = parse_cron("*/10 * 25 * * *").expect_err("hour 25");
        assert!(e.to_string().contains("the hour field `25`"), "{e}");
        let e = parse_cron("0 0 * * 9").expect_err("weekday 9");
        assert!(e.to_string().contains("day-of-week field `9`"), "{e}");
        let e = parse_cron("* *").expect_err("two fields");
        assert!(e.to_string().contains("2 fields"), "{e}");
        assert!(parse_cron("*/10 * * * * *").is_ok());
        assert!(parse_cron("0 */5 * * *").is_ok());
    }
}
