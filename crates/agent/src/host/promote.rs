//! Step `promote`: a standby whose spec no longer asks for `standby` becomes a primary.
//!
//! What the data directory is set up for (its signal files, [`RecoveryState`]) and what the spec
//! wants decide, in [`decide`], whether this run promotes. Promotion is `pg_ctl promote -w`
//! (PostgreSQL first restores whatever WAL is available in the archive, then leaves recovery on a
//! new timeline and removes `standby.signal`), so a second run finds a primary and does nothing.
//!
//! A primary cannot become a standby again: a spec that asks for it is refused with what to do,
//! rather than silently left as a writable server.

use std::time::Duration;

use pgec2_core::host_spec::HostSpec;

use super::postgres::Server;
use super::{Done, StepError};
use crate::wal::{RecoveryState, recovery_state};

/// How long `pg_ctl promote` may wait for the server to leave recovery.
const PROMOTE_WAIT: Duration = Duration::from_secs(600);

/// What the promote step does with the data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A standby the spec no longer wants: promote it now.
    Promote,
    /// A standby the spec wants: keep following the archive.
    StaysStandby,
    /// Archive recovery to a target or to the archive's end: it ends as
    /// `recovery_target_action` says, not by this step.
    Recovering,
    /// Already a primary, and the spec wants one.
    Primary,
    /// The spec asks for a standby but the data directory is not one.
    CannotBecomeStandby(RecoveryState),
}

/// Decides from the spec's `standby` and the data directory's recovery state.
pub fn decide(standby_wanted: bool, state: RecoveryState) -> Decision {
    match (standby_wanted, state) {
        (true, RecoveryState::Standby) => Decision::StaysStandby,
        (true, state) => Decision::CannotBecomeStandby(state),
        (false, RecoveryState::Standby) => Decision::Promote,
        (false, RecoveryState::Archive) => Decision::Recovering,
        (false, RecoveryState::None) => Decision::Primary,
    }
}

/// True when restore_command should read the recovery source's archive: the data directory
/// recovers from it and keeps doing so after this run (a standby about to be promoted counts as
/// promoted, so the configuration written before the promotion is already the final one).
pub fn reads_source_archive(restores_from_source: bool, standby_wanted: bool, state: RecoveryState) -> bool {
    restores_from_source && matches!(decide(standby_wanted, state), Decision::StaysStandby | Decision::Recovering)
}

/// Promotes the server when [`decide`] says so; reports what it found otherwise.
pub async fn converge(spec: &HostSpec, server: &Server) -> Result<Done, StepError> {
    match decide(spec.standby, recovery_state(&spec.data_directory)) {
        Decision::Promote => promote(server).await,
        Decision::StaysStandby => Ok(Done::unchanged("a standby following the source's archive (spec.standby)")),
        Decision::Recovering => {
            Ok(Done::unchanged("archive recovery in progress; it ends as recovery_target_action says"))
        }
        Decision::Primary => Ok(Done::skipped("a primary: nothing to promote")),
        Decision::CannotBecomeStandby(state) => Err(StepError::Refused(format!(
            "the spec asks for a standby but {} is {}: a server cannot return to standby; restore a new host with standby: true instead",
            spec.data_directory.display(),
            match state {
                RecoveryState::Archive => "in archive recovery (recovery.signal), not a standby",
                _ => "a primary (no standby.signal)",
            }
        ))),
    }
}

/// `pg_ctl promote -w`, then checks the server left recovery.
async fn promote(server: &Server) -> Result<Done, StepError> {
    server
        .tool("pg_ctl")
        .args(["promote", "-w", "-t", &PROMOTE_WAIT.as_secs().to_string(), "-D"])
        .arg(&server.data_directory)
        .timeout(PROMOTE_WAIT + Duration::from_secs(30))
        .run()
        .await
        .map_err(|error| StepError::Postgres(format!("failed to promote the standby: {error}")))?;
    let in_recovery = server.psql("SELECT pg_is_in_recovery()").await?;
    if in_recovery.trim() != "f" {
        return Err(StepError::Postgres(format!(
            "pg_ctl promote finished but the server is still in recovery (pg_is_in_recovery = {})",
            in_recovery.trim()
        )));
    }
    Ok(Done::changed("promoted the standby (spec.standby is false): the server left recovery and accepts writes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_promoted_once_the_spec_no_longer_wants_one() {
        assert_eq!(decide(false, RecoveryState::Standby), Decision::Promote);
        assert_eq!(decide(true, RecoveryState::Standby), Decision::StaysStandby);
        // After the promotion PostgreSQL removed standby.signal: nothing more to do.
        assert_eq!(decide(false, RecoveryState::None), Decision::Primary);
    }

    #[test]
    fn archive_recovery_is_left_to_its_target_action() {
        assert_eq!(decide(false, RecoveryState::Archive), Decision::Recovering);
    }

    #[test]
    fn a_primary_or_a_recovering_server_is_not_turned_into_a_standby() {
        assert_eq!(decide(true, RecoveryState::None), Decision::CannotBecomeStandby(RecoveryState::None));
        assert_eq!(decide(true, RecoveryState::Archive), Decision::CannotBecomeStandby(RecoveryState::Archive));
    }

    #[test]
    fn restore_command_leaves_the_source_archive_with_the_promotion() {
        assert!(reads_source_archive(true, true, RecoveryState::Standby));
        assert!(reads_source_archive(true, false, RecoveryState::Archive));
        // Promoted in this run: configure for the host's own archive already.
        assert!(!reads_source_archive(true, false, RecoveryState::Standby));
        assert!(!reads_source_archive(true, false, RecoveryState::None));
        // No recovery source in the spec: always the own archive.
        assert!(!reads_source_archive(false, false, RecoveryState::Archive));
    }
}
