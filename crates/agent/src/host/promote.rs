//! Step `promote`: a standby whose spec no longer asks for `standby` becomes a primary.
//!
//! What the data directory is set up for (its signal files, [`RecoveryState`]) and what the spec
//! wants decide, in [`decide`], whether this run promotes. Promotion is `pg_ctl promote -w`
//! (PostgreSQL first restores whatever WAL is available in the archive, then leaves recovery on a
//! new timeline and removes `standby.signal`), so a second run finds a primary and does nothing.
//!
//! A primary cannot become a standby again: a spec that asks for it is refused with what to do,
//! rather than silently left as a writable server.
//!
//! A restore that ends by promoting itself (no target, or `targetAction: promote`) is waited for,
//! so the host is reported as the primary it is about to be. Once a restored server is a primary,
//! the recovery and archive settings `backup-fetch` wrote into `postgresql.auto.conf` (the
//! source's `restore_command`, the target, the archive settings `--archive-config` gave it) are
//! reset with `ALTER SYSTEM RESET`: from then on only pgec2's `conf.d` file configures
//! archiving, pointing at the host's own archive.

use std::time::Duration;

use pgec2_core::host_spec::{HostSpec, TargetAction};

use super::postgres::Server;
use super::{Done, StepError};
use crate::wal::{RecoveryState, failure_note, recovery_state};

/// How long `pg_ctl promote` may wait for the server to leave recovery.
const PROMOTE_WAIT: Duration = Duration::from_secs(600);
/// How long a restore that promotes itself is waited for (the setup command has 20 minutes);
/// a longer replay is left running and reported.
const RECOVERY_WAIT: Duration = Duration::from_secs(15 * 60);
/// Pause between looks at a recovering server.
const RECOVERY_POLL: Duration = Duration::from_secs(1);

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
/// recovers from it and keeps doing so after this run. A standby about to be promoted, and a
/// restore this run waits to promote (see [`ends_promoted`]), count as promoted, so the
/// configuration written before the promotion is already the final one.
pub fn reads_source_archive(spec: &HostSpec, state: RecoveryState) -> bool {
    spec.recovery().is_some()
        && match decide(spec.standby, state) {
            Decision::StaysStandby => true,
            Decision::Recovering => !ends_promoted(spec),
            _ => false,
        }
}

/// Promotes the server when [`decide`] says so; reports what it found otherwise. A restored
/// server that is (or just became) a primary loses the recovery settings of its restore.
pub async fn converge(spec: &HostSpec, server: &Server) -> Result<Done, StepError> {
    let restored = spec.recovery().is_some();
    match decide(spec.standby, recovery_state(&spec.data_directory)) {
        Decision::Promote => {
            let promoted = promote(server).await?;
            Ok(with_cleanup(promoted, clear_restore_settings(server).await?))
        }
        Decision::StaysStandby => Ok(Done::unchanged("a standby following the source's archive (spec.standby)")),
        Decision::Recovering if restored && ends_promoted(spec) => match wait_for_promotion(server).await? {
            true => {
                let promoted = Done::changed("archive recovery reached its end and promoted the server");
                Ok(with_cleanup(promoted, clear_restore_settings(server).await?))
            }
            false => Ok(Done::unchanged(format!(
                "archive recovery still runs after {} min; it promotes at its end",
                RECOVERY_WAIT.as_secs() / 60
            ))),
        },
        Decision::Recovering => {
            Ok(Done::unchanged("archive recovery in progress; it ends as recovery_target_action says"))
        }
        Decision::Primary if restored => match clear_restore_settings(server).await? {
            Some(cleared) => Ok(Done::changed(cleared)),
            None => Ok(Done::skipped("a primary: nothing to promote")),
        },
        Decision::Primary => Ok(Done::skipped("a primary: nothing to promote")),
        Decision::CannotBecomeStandby(state) => Err(StepError::DataDirectory {
            path: spec.data_directory.clone(),
            problem: format!(
                "the spec asks for a standby but this server is {}",
                match state {
                    RecoveryState::Archive => "in archive recovery (recovery.signal), not a standby",
                    _ => "a primary (no standby.signal)",
                }
            ),
            remedy: "a server cannot return to standby; restore a new host with standby: true instead".into(),
        }),
    }
}

/// True when the restore promotes the server by itself at its end: no target (the end of the
/// archive) or `targetAction: promote`.
fn ends_promoted(spec: &HostSpec) -> bool {
    spec.recovery().is_some_and(|recovery| recovery.target.is_none() || recovery.target_action == TargetAction::Promote)
}

/// Waits until the server has left recovery; false when it still recovers after
/// [`RECOVERY_WAIT`]. A server not yet accepting connections (not consistent yet) is waited for;
/// one that stopped (recovery failed, e.g. its target was never reached) is an error.
async fn wait_for_promotion(server: &Server) -> Result<bool, StepError> {
    let deadline = std::time::Instant::now() + RECOVERY_WAIT;
    while std::time::Instant::now() < deadline {
        match server.psql("SELECT pg_is_in_recovery()").await {
            Ok(answer) if answer.trim() == "f" => return Ok(true),
            Ok(_) => {}
            Err(_) if !server_running(server).await => return Err(recovery_stopped(server)),
            Err(_) => {}
        }
        tokio::time::sleep(RECOVERY_POLL).await;
    }
    Ok(false)
}

/// The error for a server that stopped in archive recovery: what `wal-fetch` recorded when it
/// stopped recovery (a hole in the archive, naming the segment), else a pointer to the log.
pub fn recovery_stopped(server: &Server) -> StepError {
    let data_directory = server.data_directory.display();
    StepError::Postgres(match failure_note::read(&server.data_directory) {
        Some(message) => format!("PostgreSQL stopped archive recovery of {data_directory}: {message}"),
        None => format!(
            "PostgreSQL stopped during archive recovery of {data_directory} (a target that was never reached, or WAL \
             missing from the source's archive); its log says why"
        ),
    })
}

/// True while the data directory's postmaster runs (`pg_ctl status`).
async fn server_running(server: &Server) -> bool {
    let status = server.tool("pg_ctl").arg("status").arg("-D").arg(&server.data_directory).output().await;
    status.is_ok_and(|output| output.status.success())
}

fn with_cleanup(done: Done, cleared: Option<String>) -> Done {
    match cleared {
        Some(cleared) => Done::changed(format!("{}; {cleared}", done.detail)),
        None => done,
    }
}

/// Resets the recovery parameters a restore left in `postgresql.auto.conf` (they would
/// override pgec2's `conf.d`, e.g. keep `restore_command` on the source's archive) and reloads.
/// Returns what it did, or None when nothing was left.
async fn clear_restore_settings(server: &Server) -> Result<Option<String>, StepError> {
    let auto_conf = crate::backup::recovery_conf::read_auto_conf(&server.data_directory)
        .map_err(|error| StepError::Postgres(format!("failed to read postgresql.auto.conf: {error}")))?;
    let parameters = crate::backup::recovery_conf::recovery_parameters_in(&auto_conf);
    if parameters.is_empty() {
        return Ok(None);
    }
    for parameter in &parameters {
        server.psql(&format!("ALTER SYSTEM RESET {parameter}")).await.map_err(|error| {
            StepError::Postgres(format!("failed to reset {parameter} in postgresql.auto.conf: {error}"))
        })?;
    }
    let before = server.conf_load_time().await?;
    server
        .psql("SELECT pg_reload_conf()")
        .await
        .map_err(|error| StepError::Postgres(format!("failed to reload the configuration: {error}")))?;
    server.wait_for_reload(before).await?;
    Ok(Some(format!(
        "reset the restore's {} in postgresql.auto.conf (conf.d now configures archiving)",
        parameters.join(", ")
    )))
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
    use pgec2_core::host_spec::{BootstrapSpec, RecoverySpec, RecoveryTarget};

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

    fn spec(recovery: Option<(Option<RecoveryTarget>, TargetAction)>, standby: bool) -> HostSpec {
        let mut spec = crate::host::test_support::spec();
        spec.standby = standby;
        if let Some((target, target_action)) = recovery {
            spec.bootstrap = BootstrapSpec::Recovery(RecoverySpec {
                source: spec.archive.clone().expect("archive").storage,
                backup: "LATEST".to_string(),
                target,
                target_action,
                from_snapshot: false,
            });
        }
        spec
    }

    #[test]
    fn restore_command_leaves_the_source_archive_with_the_promotion() {
        let to_the_end = Some((None, TargetAction::Promote));
        let paused = Some((Some(RecoveryTarget::Time("2026-01-01T00:00:00Z".into())), TargetAction::Pause));
        assert!(reads_source_archive(&spec(to_the_end.clone(), true), RecoveryState::Standby));
        assert!(reads_source_archive(&spec(paused, false), RecoveryState::Archive));
        // Promoted in this run (or waited for): configure for the host's own archive already.
        assert!(!reads_source_archive(&spec(to_the_end.clone(), false), RecoveryState::Archive));
        assert!(!reads_source_archive(&spec(to_the_end.clone(), false), RecoveryState::Standby));
        assert!(!reads_source_archive(&spec(to_the_end, false), RecoveryState::None));
        // No recovery source in the spec: always the own archive.
        assert!(!reads_source_archive(&spec(None, false), RecoveryState::Archive));
    }
}
