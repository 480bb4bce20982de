//! The incremental schedule of a BackupPolicy (`spec.incrementalSchedule`): its ticks take
//! `backup-push --incremental`, handled like the full schedule's (a missed tick runs once,
//! `status.lastIncrementalScheduleTime` records the one handled) except that a full tick due at
//! the same time wins.

use k8s_openapi::jiff::Timestamp;
use pgec2_api::BackupPolicy;

use crate::schedule::{Schedule, ScheduleError};

/// The parsed `incrementalSchedule`, if the policy has one.
pub fn schedule_of(policy: &BackupPolicy) -> Result<Option<Schedule>, ScheduleError> {
    let time_zone = policy.spec.time_zone.as_deref();
    policy.spec.incremental_schedule.as_deref().map(|expression| Schedule::parse(expression, time_zone)).transpose()
}

/// What the ticks due now ask for: the tick to run, and whether it is an incremental one.
/// `full` is the full schedule's due tick; an incremental tick due with it is handled by it.
pub fn choose(full: Option<Timestamp>, incremental: Option<Timestamp>) -> (Option<Timestamp>, bool) {
    match (full, incremental) {
        (Some(full), _) => (Some(full), false),
        (None, Some(incremental)) => (Some(incremental), true),
        (None, None) => (None, false),
    }
}

/// The earlier of two next ticks (when to wake up).
pub fn earliest(full: Option<Timestamp>, incremental: Option<Timestamp>) -> Option<Timestamp> {
    match (full, incremental) {
        (Some(full), Some(incremental)) => Some(full.min(incremental)),
        (full, incremental) => full.or(incremental),
    }
}

#[cfg(test)]
mod tests {
    use pgec2_api::fixtures::policy;
    use pgec2_contract::command::AgentCommand;

    use super::*;
    use crate::policy::backups::{Trigger, backup_command};

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn a_daily_incremental_tick_between_weekly_fulls_renders_backup_push_incremental() {
        let weekly = policy("p").schedule("0 3 * * 0").incremental_schedule("0 3 * * 1-6").build();
        let full = Schedule::parse(&weekly.spec.schedule, None).expect("full schedule");
        let incremental = schedule_of(&weekly).expect("valid").expect("an incremental schedule");
        let created = at("2026-01-01T00:00:00Z");
        // Monday 2026-01-05 03:00, Sunday's full taken: an incremental tick, no full one.
        let now = at("2026-01-05T03:00:05Z");
        let sunday_full = Some(at("2026-01-04T03:00:00Z"));
        let (tick, is_incremental) =
            choose(full.due_tick(sunday_full, created, now), incremental.due_tick(None, created, now));
        assert_eq!((tick, is_incremental), (Some(at("2026-01-05T03:00:00Z")), true));
        let command = backup_command(&Trigger { tick, request: None, incremental: is_incremental }, false);
        assert!(matches!(&command, AgentCommand::BackupPush(push) if push.incremental), "{command:?}");
        assert_eq!(command.argv()[..3], ["backup-push", "--json", "--incremental"]);
        // Sunday 2026-01-11 03:00: the full schedule's tick.
        let sunday = at("2026-01-11T03:00:05Z");
        let handled = Some(at("2026-01-10T03:00:00Z"));
        let (tick, is_incremental) =
            choose(full.due_tick(None, created, sunday), incremental.due_tick(handled, created, sunday));
        assert_eq!((tick, is_incremental), (Some(at("2026-01-11T03:00:00Z")), false));
        assert!(
            !backup_command(&Trigger { tick, request: None, incremental: false }, false)
                .argv()
                .contains(&"--incremental".to_string())
        );
    }

    #[test]
    fn a_tick_of_both_schedules_at_once_takes_a_full_backup_and_a_snapshot_is_never_incremental() {
        let tick = Some(at("2026-01-05T03:00:00Z"));
        assert_eq!(choose(tick, tick), (tick, false));
        let snapshot = backup_command(&Trigger { tick, request: None, incremental: true }, true);
        assert!(!snapshot.argv().contains(&"--incremental".to_string()));
        assert_eq!(earliest(Some(at("2026-01-06T03:00:00Z")), tick), tick);
        assert_eq!(earliest(None, tick), tick);
    }

    #[test]
    fn a_policy_without_an_incremental_schedule_has_none_and_a_bad_one_is_refused() {
        assert!(schedule_of(&policy("p").build()).expect("valid").is_none());
        assert!(schedule_of(&policy("p").incremental_schedule("0 3 * *").build()).is_err());
    }
}
