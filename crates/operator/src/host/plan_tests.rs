//! Scenarios of the planner: one observation in, one step out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use pgec2_api::{CommandState, CommandStatus};

use super::*;
use crate::kube_layer::conditions::{ConditionUpdate, Truth};

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
}

fn running() -> HostInstance {
    HostInstance {
        instance_id: "local-1".into(),
        volume_id: Some("vol-local-1".into()),
        state: InstanceState::Running,
        private_ip: None,
        availability_zone: None,
        agent_online: true,
    }
}

fn command(purpose: CommandPurpose, state: CommandState, finished: Option<i64>) -> CommandStatus {
    CommandStatus {
        id: "cmd-1".into(),
        purpose,
        status: state,
        start_time: Some(Time(at(0))),
        finish_time: finished.map(|seconds| Time(at(seconds))),
        exit_code: None,
        message: None,
    }
}

fn postgres_ready(status: &mut PostgresHostStatus, ready: bool) {
    let update = ConditionUpdate::new(condition::POSTGRES_READY, Truth::from_bool(ready), "Test", "");
    conditions::set(&mut status.conditions, &update, Some(1), at(0));
}

fn step(status: &PostgresHostStatus, instance: Option<&HostInstance>, failures: u32, now: i64) -> Step {
    plan(&Observed { status, instance, wanted_digest: Some("want"), setup_failures: failures, now: at(now) })
}

#[test]
fn a_new_host_is_launched() {
    assert_eq!(step(&PostgresHostStatus::default(), None, 0, 0), Step::Launch);
}

#[test]
fn a_host_whose_agent_is_not_online_is_waited_for() {
    let starting = HostInstance { agent_online: false, ..running() };
    assert_eq!(step(&PostgresHostStatus::default(), Some(&starting), 0, 0), Step::WaitForInstance);
    let pending = HostInstance { state: InstanceState::Pending, ..running() };
    assert_eq!(step(&PostgresHostStatus::default(), Some(&pending), 0, 0), Step::WaitForInstance);
}

#[test]
fn a_running_host_without_setup_gets_the_setup_command() {
    assert_eq!(step(&PostgresHostStatus::default(), Some(&running()), 0, 0), Step::SendSetup);
}

#[test]
fn a_command_in_flight_is_polled_not_sent_again() {
    for purpose in [CommandPurpose::Setup, CommandPurpose::Backup] {
        let status = PostgresHostStatus {
            last_command: Some(command(purpose, CommandState::InProgress, None)),
            setup_digest: Some("old".into()),
            ..Default::default()
        };
        assert_eq!(step(&status, Some(&running()), 0, 0), Step::PollCommand { id: "cmd-1".into(), purpose });
    }
}

#[test]
fn a_host_running_the_wanted_configuration_is_converged() {
    let mut status = PostgresHostStatus {
        last_command: Some(command(CommandPurpose::Setup, CommandState::Succeeded, Some(5))),
        setup_digest: Some("want".into()),
        ..Default::default()
    };
    postgres_ready(&mut status, true);
    assert_eq!(step(&status, Some(&running()), 0, 10), Step::Converged);
}

#[test]
fn a_changed_configuration_is_set_up_again() {
    let mut status = PostgresHostStatus {
        last_command: Some(command(CommandPurpose::Setup, CommandState::Succeeded, Some(5))),
        setup_digest: Some("before".into()),
        ..Default::default()
    };
    postgres_ready(&mut status, true);
    assert_eq!(step(&status, Some(&running()), 0, 10), Step::SendSetup);
}

#[test]
fn a_failed_setup_is_retried_only_after_a_growing_delay() {
    let mut status = PostgresHostStatus {
        last_command: Some(command(CommandPurpose::Setup, CommandState::Failed, Some(100))),
        setup_digest: Some("want".into()),
        ..Default::default()
    };
    postgres_ready(&mut status, false);
    assert_eq!(step(&status, Some(&running()), 1, 105), Step::RetrySetup { after: Duration::from_secs(10) });
    assert_eq!(step(&status, Some(&running()), 1, 115), Step::SendSetup);
    assert_eq!(step(&status, Some(&running()), 3, 115), Step::RetrySetup { after: Duration::from_secs(45) });
}

#[test]
fn a_failed_setup_is_not_waited_for_when_the_configuration_changes() {
    let mut status = PostgresHostStatus {
        last_command: Some(command(CommandPurpose::Setup, CommandState::Failed, Some(100))),
        setup_digest: Some("broken".into()),
        ..Default::default()
    };
    postgres_ready(&mut status, false);
    assert_eq!(step(&status, Some(&running()), 5, 101), Step::SendSetup);
}

#[test]
fn the_retry_delay_doubles_up_to_a_cap() {
    assert_eq!(retry_delay(0), SETUP_RETRY_BASE);
    assert_eq!(retry_delay(1), SETUP_RETRY_BASE);
    assert_eq!(retry_delay(2), SETUP_RETRY_BASE * 2);
    assert_eq!(retry_delay(3), SETUP_RETRY_BASE * 4);
    assert_eq!(retry_delay(40), SETUP_RETRY_MAX);
}
