//! The status a reconcile writes, from the status before and what happened.

use pgec2_core::host_spec::{PostgresFacts, StepOutcome, StepReport};

use super::*;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
}

fn instance() -> HostInstance {
    HostInstance {
        instance_id: "local-1".into(),
        volume_id: Some("vol-local-1".into()),
        state: InstanceState::Running,
        private_ip: Some("127.0.0.1".into()),
        availability_zone: Some("local".into()),
        agent_online: true,
    }
}

fn report(succeeded: bool) -> HostReport {
    let failed = StepReport {
        step: "postgresql-conf".into(),
        outcome: StepOutcome::Failed,
        detail: "invalid value for parameter \"shared_buffers\": \"banana\"".into(),
        milliseconds: None,
    };
    let ok = StepReport {
        step: "data-directory".into(),
        outcome: StepOutcome::Changed,
        detail: "initdb".into(),
        milliseconds: None,
    };
    HostReport {
        host: "default/db".into(),
        profile: None,
        succeeded,
        steps: if succeeded { vec![ok] } else { vec![ok, failed] },
        postgres: succeeded.then(|| PostgresFacts {
            version: "15.8".into(),
            version_num: 150008,
            system_identifier: "7400000000000000001".into(),
            timeline: 1,
            port: 5433,
            data_directory: "/d".into(),
            socket_directory: "/s".into(),
            in_recovery: false,
        }),
    }
}

fn condition<'a>(status: &'a PostgresHostStatus, type_: &str) -> (&'a str, &'a str) {
    let found = conditions::find(&status.conditions, type_).expect("condition present");
    (found.status.as_str(), found.reason.as_str())
}

/// A status after a launch and a sent setup.
fn configuring() -> PostgresHostStatus {
    let mut draft = Draft::new(None, Some(1), at(0));
    draft.instance(Some(&instance()), None);
    draft.setup_sent("cmd-1", "digest-1");
    draft.finish()
}

#[test]
fn a_new_host_is_pending_with_ready_false() {
    let mut draft = Draft::new(None, Some(1), at(0));
    draft.instance(None, None);
    let status = draft.finish();
    assert_eq!(status.phase, Some(HostPhase::Pending));
    assert_eq!(condition(&status, condition::READY), ("False", "Pending"));
    assert_eq!(status.observed_generation, Some(1));
}

#[test]
fn a_sent_setup_is_recorded_as_the_running_command() {
    let status = configuring();
    assert_eq!(status.phase, Some(HostPhase::Configuring));
    let command = status.last_command.expect("last command");
    assert_eq!(
        (command.id.as_str(), command.purpose, command.status),
        ("cmd-1", CommandPurpose::Setup, CommandState::InProgress)
    );
    assert_eq!(status.setup_digest.as_deref(), Some("digest-1"));
    assert_eq!(status.instance_id.as_deref(), Some("local-1"));
}

#[test]
fn a_restore_reads_restoring_while_its_first_setup_runs() {
    let mut draft = Draft::new(None, Some(1), at(0)).expecting(true, false);
    draft.instance(Some(&instance()), None);
    draft.setup_sent("cmd-1", "digest-1");
    assert_eq!(draft.finish().phase, Some(HostPhase::Restoring));
}

#[test]
fn a_successful_setup_makes_the_host_ready_with_postgres_facts() {
    let mut draft = Draft::new(Some(&configuring()), Some(1), at(10));
    let outcome = draft.command_progress(&cloud::CommandStatus::Succeeded {
        stdout: serde_json::to_string(&report(true)).expect("json"),
    });
    let Some(CommandOutcome::Succeeded { report }) = outcome else { panic!("expected success") };
    draft.setup_succeeded(report.as_ref(), None);
    draft.no_archive();
    let status = draft.finish();
    assert_eq!(status.phase, Some(HostPhase::Ready));
    assert_eq!(condition(&status, condition::READY), ("True", "Ready"));
    assert_eq!(condition(&status, condition::POSTGRES_READY), ("True", "Running"));
    let postgres = status.postgres.expect("postgres facts");
    assert_eq!(postgres.version.as_deref(), Some("15.8"));
    assert_eq!(postgres.system_identifier.as_deref(), Some("7400000000000000001"));
    assert_eq!(status.last_command.map(|command| command.status), Some(CommandState::Succeeded));
}

#[test]
fn a_host_with_a_policy_is_ready_only_when_it_archives() {
    let mut draft = Draft::new(Some(&configuring()), Some(1), at(10)).expecting(false, true);
    draft.command_progress(&cloud::CommandStatus::Succeeded { stdout: String::new() });
    draft.setup_succeeded(None, None);
    let status = draft.finish();
    assert_eq!(condition(&status, condition::CONTINUOUS_ARCHIVING), ("False", "NoBackupPolicy"));
    assert_eq!(status.phase, Some(HostPhase::Degraded));
    assert_eq!(condition(&status, condition::READY).0, "False");
}

#[test]
fn a_failed_setup_names_the_step_and_fails_a_host_that_never_ran() {
    let mut draft = Draft::new(Some(&configuring()), Some(1), at(10));
    let failed = cloud::CommandStatus::Failed {
        exit_code: Some(1),
        stdout: serde_json::to_string(&report(false)).expect("json"),
        stderr_tail: "error: failed to start PostgreSQL".into(),
    };
    let Some(CommandOutcome::Failed { message }) = draft.command_progress(&failed) else { panic!("expected failure") };
    assert!(message.contains("step postgresql-conf") && message.contains("banana"), "{message}");
    draft.setup_failed(&message);
    let status = draft.finish();
    assert_eq!(status.phase, Some(HostPhase::Failed));
    assert_eq!(condition(&status, condition::POSTGRES_READY), ("False", "SetupFailed"));
    assert_eq!(
        conditions::find(&status.conditions, condition::READY).map(|ready| ready.message.clone()),
        Some(message)
    );
    assert_eq!(status.last_command.and_then(|command| command.exit_code), Some(1));
}

#[test]
fn a_failed_setup_on_a_host_that_ran_before_is_degraded() {
    let mut before = configuring();
    before.postgres = Some(PostgresStatus { version: Some("15.8".into()), ..Default::default() });
    let mut draft = Draft::new(Some(&before), Some(2), at(10));
    draft.command_progress(&cloud::CommandStatus::Failed {
        exit_code: Some(1),
        stdout: String::new(),
        stderr_tail: "boom".into(),
    });
    draft.setup_failed("host setup failed: boom");
    assert_eq!(draft.finish().phase, Some(HostPhase::Degraded));
}

#[test]
fn reconciling_an_unchanged_host_yields_the_same_status() {
    let mut draft = Draft::new(Some(&configuring()), Some(1), at(10));
    draft.command_progress(&cloud::CommandStatus::Succeeded { stdout: String::new() });
    draft.setup_succeeded(None, None);
    draft.no_archive();
    let ready = draft.finish();
    let mut again = Draft::new(Some(&ready), Some(1), at(500));
    again.instance(Some(&instance()), None);
    again.no_archive();
    assert_eq!(again.finish(), ready, "a second look must not change the status (no churn)");
}

#[test]
fn an_invalid_spec_fails_the_host_with_the_reason() {
    let mut draft = Draft::new(Some(&configuring()), Some(2), at(10));
    draft.invalid(&Invalid {
        reason: "InvalidSpec",
        message: "spec.storage.sizeGiB: must be between 1 and 65536".into(),
    });
    let status = draft.finish();
    assert_eq!(status.phase, Some(HostPhase::Failed));
    assert_eq!(condition(&status, condition::READY), ("False", "InvalidSpec"));
    assert_eq!(status.observed_generation, Some(2));
}

#[test]
fn a_paused_host_keeps_its_phase_and_says_why() {
    let mut draft = Draft::new(Some(&configuring()), Some(1), at(10));
    draft.paused();
    let status = draft.finish();
    assert_eq!(status.phase, Some(HostPhase::Configuring));
    assert_eq!(condition(&status, condition::READY).1, "Paused");
}
