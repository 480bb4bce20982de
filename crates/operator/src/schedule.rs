//! When a BackupPolicy's backups are due: a 5-field cron expression in UTC or in the policy's
//! `timeZone`, with the semantics of a Kubernetes CronJob that does not catch up:
//! - a tick is due once the clock has passed it and no later tick was handled;
//! - ticks missed while the operator was down run **once** (the most recent one), not many times;
//! - a handled tick is recorded (`status.lastScheduleTime`), so a restarted operator neither
//!   repeats it nor loses the next one.

use croner::Cron;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error(transparent)]
    Invalid(#[from] pgec2_api::validation::ScheduleError),
    #[error("unknown time zone {0:?}: use an IANA name such as \"Europe/Berlin\"")]
    UnknownTimeZone(String),
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    time_zone: TimeZone,
}

impl Schedule {
    /// Parses a cron expression the way the API validates it (5 fields, 6 with seconds, or an
    /// `@` shorthand), evaluated in `time_zone` (UTC when `None`).
    pub fn parse(expression: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let cron = pgec2_api::validation::parse_schedule(expression)?;
        let time_zone = match time_zone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| ScheduleError::UnknownTimeZone(name.to_string()))?,
        };
        Ok(Self { cron, time_zone })
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let zoned = after.to_zoned(self.time_zone.clone());
        self.cron.find_next_occurrence(&zoned, false).ok().map(|next| next.timestamp())
    }

    /// The most recent tick at or before `now`.
    fn latest_at_or_before(&self, now: Timestamp) -> Option<Timestamp> {
        let zoned = now.to_zoned(self.time_zone.clone());
        self.cron.find_previous_occurrence(&zoned, true).ok().map(|previous| previous.timestamp())
    }

    /// The tick to run now, if any: the most recent tick in `(since, now]`, where `since` is the
    /// last handled tick or, for a policy that never ran, the time it was created. Several missed
    /// ticks collapse into this one.
    pub fn due_tick(&self, last_handled: Option<Timestamp>, created: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let since = last_handled.unwrap_or(created);
        self.latest_at_or_before(now).filter(|tick| *tick > since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn a_daily_schedule_is_due_once_its_time_has_passed() {
        let schedule = Schedule::parse("0 3 * * *", None).expect("schedule");
        let created = at("2026-01-01T00:00:00Z");
        assert_eq!(schedule.due_tick(None, created, at("2026-01-01T02:59:59Z")), None);
        assert_eq!(schedule.due_tick(None, created, at("2026-01-01T03:00:10Z")), Some(at("2026-01-01T03:00:00Z")));
    }

    #[test]
    fn a_handled_tick_is_not_run_again_after_a_restart() {
        let schedule = Schedule::parse("0 3 * * *", None).expect("schedule");
        let handled = Some(at("2026-01-01T03:00:00Z"));
        assert_eq!(schedule.due_tick(handled, at("2025-12-01T00:00:00Z"), at("2026-01-01T03:05:00Z")), None);
        assert_eq!(schedule.next_after(at("2026-01-01T03:05:00Z")), Some(at("2026-01-02T03:00:00Z")));
    }

    #[test]
    fn ticks_missed_while_down_run_once_as_the_most_recent_one() {
        let schedule = Schedule::parse("*/5 * * * *", None).expect("schedule");
        let handled = Some(at("2026-01-01T10:00:00Z"));
        let due = schedule.due_tick(handled, at("2026-01-01T00:00:00Z"), at("2026-01-01T10:47:00Z"));
        assert_eq!(due, Some(at("2026-01-01T10:45:00Z")));
        assert_eq!(schedule.due_tick(due, at("2026-01-01T00:00:00Z"), at("2026-01-01T10:49:59Z")), None);
    }

    #[test]
    fn a_policy_created_after_todays_tick_waits_for_tomorrow() {
        let schedule = Schedule::parse("0 3 * * *", None).expect("schedule");
        assert_eq!(schedule.due_tick(None, at("2026-01-01T04:00:00Z"), at("2026-01-01T05:00:00Z")), None);
    }

    #[test]
    fn shorthands_and_a_seconds_field_are_understood() {
        let daily = Schedule::parse("@daily", None).expect("schedule");
        assert_eq!(daily.next_after(at("2026-01-01T10:00:00Z")), Some(at("2026-01-02T00:00:00Z")));
        let seconds = Schedule::parse("*/5 * * * * *", None).expect("schedule");
        assert_eq!(seconds.next_after(at("2026-01-01T10:00:01Z")), Some(at("2026-01-01T10:00:05Z")));
        let handled = Some(at("2026-01-01T10:00:05Z"));
        assert_eq!(
            seconds.due_tick(handled, at("2026-01-01T00:00:00Z"), at("2026-01-01T10:00:19Z")),
            Some(at("2026-01-01T10:00:15Z"))
        );
    }

    #[test]
    fn time_zone_shifts_the_ticks() {
        let schedule = Schedule::parse("0 3 * * *", Some("Europe/Berlin")).expect("schedule");
        assert_eq!(schedule.next_after(at("2026-01-15T00:00:00Z")), Some(at("2026-01-15T02:00:00Z")));
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_the_reason() {
        assert!(matches!(Schedule::parse("0 3 * *", None), Err(ScheduleError::Invalid(_))));
        assert!(matches!(Schedule::parse("0 0 0 3 * * *", None), Err(ScheduleError::Invalid(_))));
        assert!(matches!(Schedule::parse("61 3 * * *", None), Err(ScheduleError::Invalid(_))));
        assert!(matches!(Schedule::parse("0 3 * * *", Some("Mars/Olympus")), Err(ScheduleError::UnknownTimeZone(_))));
    }
}
