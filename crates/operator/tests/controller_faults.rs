//! The PostgresHost controller against a fake cloud that throttles, answers late, keeps volumes
//! creating, loses commands, and against an operator killed between any two cloud calls. Every
//! step is taken by a freshly started operator on the same API and cloud state. Whatever
//! happens, each host ends with exactly one instance and one data volume, its status says what
//! the cloud has, and deletion leaves nothing behind under each deletionPolicy.

mod fake_cloud;

use std::time::Duration;

use kube::ResourceExt;
use pgec2_api::fixtures::host;
use pgec2_api::{DeletionPolicy, HostPhase, PostgresHost, condition};

use self::fake_cloud::harness::Scenario;
use self::fake_cloud::{FakeCloud, Faults, Moment, Operation, VolumeState};

/// Long enough for every scenario but the lost command (whose retry waits 15 s).
const CONVERGE: Duration = Duration::from_secs(20);

fn db(name: &str, deletion_policy: DeletionPolicy) -> PostgresHost {
    let mut host = host(name).build();
    host.spec.storage.deletion_policy = deletion_policy;
    host
}

fn is_ready(host: Option<&PostgresHost>) -> bool {
    host.is_some_and(|host| {
        let status = host.status.as_ref();
        host.phase() == Some(HostPhase::Ready) && status.and_then(|s| s.observed_generation) == host.metadata.generation
    })
}

fn is_launched(host: Option<&PostgresHost>) -> bool {
    host.is_some_and(|host| host.status.as_ref().is_some_and(|status| status.instance_id.is_some()))
}

fn condition_of<'a>(host: &'a PostgresHost, type_: &str) -> (&'a str, &'a str) {
    let found = host.condition(type_).unwrap_or_else(|| panic!("condition {type_} missing: {:#?}", host.status));
    (found.status.as_str(), found.reason.as_str())
}

/// Exactly one instance and one volume for the host, and its status names them and says they run.
fn assert_one_instance_one_volume_and_truthful_status(scenario: &Scenario, host: &PostgresHost) {
    let uid = host.uid().expect("uid");
    let instances = scenario.cloud.live_instances(&uid);
    assert_eq!(instances.len(), 1, "instances of {}: {instances:#?}", host.name_any());
    let volumes = scenario.cloud.volumes(&host.qualified_name());
    assert_eq!(volumes.len(), 1, "volumes of {}: {volumes:#?}", host.name_any());
    assert_eq!(instances[0].volume_id, volumes[0].id);
    let status = host.status.as_ref().expect("status");
    assert_eq!(status.instance_id.as_deref(), Some(instances[0].id.as_str()));
    assert_eq!(status.volume_id.as_deref(), Some(volumes[0].id.as_str()));
    assert_eq!(condition_of(host, condition::INSTANCE_RUNNING), ("True", "Running"));
    assert_eq!(condition_of(host, condition::AGENT_READY).0, "True");
    assert_eq!(condition_of(host, condition::POSTGRES_READY).0, "True");
    assert_eq!(condition_of(host, condition::READY).0, "True");
}

/// Deletes the host, steps until it is gone, and checks the cloud kept only what the policy says.
async fn delete_and_check_nothing_leaked(scenario: &mut Scenario, host: &PostgresHost) {
    let key = host.qualified_name();
    let uid = host.uid().expect("uid");
    scenario.delete(&host.name_any()).await;
    scenario.run_until(&host.name_any(), CONVERGE, |host| host.is_none()).await;
    assert!(scenario.cloud.live_instances(&uid).is_empty(), "instance left behind");
    let volumes = scenario.cloud.volumes(&key);
    match host.spec.storage.deletion_policy {
        DeletionPolicy::Delete => assert!(volumes.is_empty(), "volumes left behind: {volumes:#?}"),
        DeletionPolicy::Snapshot => {
            assert!(volumes.is_empty(), "volumes left behind: {volumes:#?}");
            let snapshots = scenario.cloud.snapshots(&key);
            assert_eq!(snapshots.len(), 1, "one final snapshot: {snapshots:?} {:?}", scenario.cloud.calls());
        }
        DeletionPolicy::Retain => {
            assert_eq!(volumes.len(), 1, "the volume is kept: {volumes:#?}");
            assert_eq!((volumes[0].state.clone(), volumes[0].host_uid.clone()), (VolumeState::Released, None));
        }
    }
}

/// Creates `name`, brings it to Ready, checks it, deletes it and checks nothing leaked.
async fn lifecycle(scenario: &mut Scenario, name: &str, deletion_policy: DeletionPolicy) {
    scenario.create(&db(name, deletion_policy)).await;
    let ready = scenario.run_until(name, CONVERGE, is_ready).await.expect("host");
    assert_one_instance_one_volume_and_truthful_status(scenario, &ready);
    delete_and_check_nothing_leaked(scenario, &ready).await;
}

#[tokio::test]
async fn an_operator_restarted_after_every_step_converges_to_one_instance_and_one_volume_per_host() {
    let mut scenario = Scenario::new(FakeCloud::new(Faults::default()));
    for name in ["a", "b"] {
        scenario.create(&db(name, DeletionPolicy::Delete)).await;
    }
    let limit = std::time::Instant::now() + CONVERGE;
    while !(is_ready(scenario.get("a").await.as_ref()) && is_ready(scenario.get("b").await.as_ref())) {
        assert!(std::time::Instant::now() < limit, "hosts did not become Ready");
        scenario.step("a").await;
        scenario.step("b").await;
    }
    for name in ["a", "b"] {
        let host = scenario.get(name).await.expect("host");
        assert_one_instance_one_volume_and_truthful_status(&scenario, &host);
    }
    assert_eq!(scenario.cloud.all_live_instances().len(), 2);
}

#[tokio::test]
async fn an_operator_killed_before_or_after_any_cloud_call_converges_and_leaks_nothing() {
    // Commands run for a few calls, so that an operator killed after sending one finds it running.
    let running = || Faults { command_calls: 5, ..Faults::default() };
    for policy in [DeletionPolicy::Delete, DeletionPolicy::Snapshot, DeletionPolicy::Retain] {
        let mut clean = Scenario::new(FakeCloud::new(running()));
        lifecycle(&mut clean, "db", policy).await;
        let calls = clean.cloud.calls().len();
        assert!(calls >= 6, "a lifecycle takes a few calls: {:?}", clean.cloud.calls());
        eprintln!("{policy:?}: a clean lifecycle makes {calls} cloud calls; killing the operator at each");
        for call in 1..=calls {
            for moment in [Moment::Before, Moment::After] {
                let faults = Faults { kill: Some((call, moment)), ..running() };
                let mut scenario = Scenario::new(FakeCloud::new(faults));
                lifecycle(&mut scenario, "db", policy).await;
                let at = format!("{policy:?}, killed {moment:?} call {call} of {calls}");
                assert_eq!(scenario.kills, 1, "{at}");
                assert_eq!(scenario.cloud.overlapping_sends(), 0, "a second setup raced the first ({at})");
            }
        }
    }
}

#[tokio::test]
async fn deleting_a_host_leaves_nothing_behind_with_each_deletion_policy_even_when_killed_midway() {
    for policy in [DeletionPolicy::Delete, DeletionPolicy::Snapshot, DeletionPolicy::Retain] {
        let mut scenario = Scenario::new(FakeCloud::new(Faults::default()));
        scenario.create(&db("db", policy)).await;
        scenario.run_until("db", CONVERGE, is_ready).await;
        let calls = scenario.cloud.calls().len();
        // Killed right after the first termination call took effect.
        scenario.cloud.faults(|faults| faults.kill = Some((calls + 1, Moment::After)));
        let ready = scenario.get("db").await.expect("host");
        delete_and_check_nothing_leaked(&mut scenario, &ready).await;
        assert_eq!(scenario.kills, 1, "{policy:?}");
    }
}

#[tokio::test]
async fn a_retained_volume_is_adopted_by_the_next_host_of_the_same_name() {
    let mut scenario = Scenario::new(FakeCloud::new(Faults::default()));
    lifecycle(&mut scenario, "db", DeletionPolicy::Retain).await;
    let kept = scenario.cloud.volumes("default/db");
    scenario.create(&db("db", DeletionPolicy::Delete)).await;
    let again = scenario.run_until("db", CONVERGE, is_ready).await.expect("host");
    assert_one_instance_one_volume_and_truthful_status(&scenario, &again);
    assert_eq!(again.status.as_ref().and_then(|status| status.volume_id.clone()), Some(kept[0].id.clone()));
}

#[tokio::test]
async fn throttled_calls_change_nothing_and_are_retried_until_the_host_is_ready() {
    let throttle =
        [Operation::Find, Operation::Launch, Operation::Send, Operation::CommandStatus, Operation::Terminate]
            .into_iter()
            .map(|operation| (operation, 2))
            .collect();
    let mut scenario = Scenario::new(FakeCloud::new(Faults { throttle, ..Faults::default() }));
    lifecycle(&mut scenario, "db", DeletionPolicy::Delete).await;
    let throttled = scenario.cloud.calls().iter().filter(|call| call.throttled).count();
    assert_eq!(throttled, 10, "every throttled call was retried");
}

#[tokio::test]
async fn an_instance_not_yet_visible_after_launch_is_not_launched_twice() {
    let mut scenario = Scenario::new(FakeCloud::new(Faults { invisible_finds: 3, ..Faults::default() }));
    scenario.create(&db("db", DeletionPolicy::Delete)).await;
    let ready = scenario.run_until("db", CONVERGE, is_ready).await.expect("host");
    let launches = scenario.cloud.calls().iter().filter(|call| call.operation == Operation::Launch).count();
    assert!(launches > 1, "the controller launched again while the instance was invisible ({launches} launches)");
    assert_one_instance_one_volume_and_truthful_status(&scenario, &ready);
    delete_and_check_nothing_leaked(&mut scenario, &ready).await;
}

#[tokio::test]
async fn a_volume_stuck_creating_keeps_the_host_provisioning_and_says_the_instance_is_pending() {
    let mut scenario = Scenario::new(FakeCloud::new(Faults { volume_creating_finds: 6, ..Faults::default() }));
    scenario.create(&db("db", DeletionPolicy::Delete)).await;
    let launched = scenario.run_until("db", CONVERGE, is_launched).await.expect("host");
    scenario.step("db").await;
    let waiting = scenario.get("db").await.expect("host");
    assert_eq!(waiting.phase(), Some(HostPhase::Provisioning), "{:#?}", waiting.status);
    assert_eq!(condition_of(&waiting, condition::INSTANCE_RUNNING), ("False", "Pending"));
    assert_eq!(condition_of(&waiting, condition::AGENT_READY), ("False", "Offline"));
    assert!(matches!(scenario.cloud.volumes("default/db")[0].state, VolumeState::Creating { .. }));
    let ready = scenario.run_until("db", CONVERGE, is_ready).await.expect("host");
    assert_eq!(ready.status.as_ref().and_then(|s| s.instance_id.clone()), launched.status.and_then(|s| s.instance_id));
    assert_one_instance_one_volume_and_truthful_status(&scenario, &ready);
}

#[tokio::test]
async fn a_host_deleted_while_its_volume_is_still_creating_keeps_its_finalizer_until_the_volume_is_gone() {
    let mut scenario = Scenario::new(FakeCloud::new(Faults { volume_creating_finds: 1000, ..Faults::default() }));
    scenario.create(&db("db", DeletionPolicy::Delete)).await;
    scenario.run_until("db", CONVERGE, is_launched).await;
    scenario.delete("db").await;
    for _ in 0..5 {
        scenario.step("db").await;
    }
    let deleting = scenario.get("db").await.expect("the finalizer holds the host while its volume exists");
    assert_eq!(deleting.phase(), Some(HostPhase::Deleting));
    assert_eq!(scenario.cloud.volumes("default/db").len(), 1);
    // The volume finishes creating; the next termination call deletes it.
    scenario.cloud.faults(|faults| faults.volume_creating_finds = 0);
    scenario.cloud.finish_creating_volumes();
    scenario.run_until("db", CONVERGE, |host| host.is_none()).await;
    assert!(scenario.cloud.volumes("default/db").is_empty());
    assert!(scenario.cloud.all_live_instances().is_empty());
}

#[tokio::test]
async fn a_lost_setup_command_shows_as_a_failed_setup_then_a_new_setup_brings_the_host_up() {
    let mut scenario = Scenario::new(FakeCloud::new(Faults { lose_commands: 1, ..Faults::default() }));
    scenario.create(&db("db", DeletionPolicy::Delete)).await;
    let failed = scenario
        .run_until("db", CONVERGE, |host| {
            host.and_then(|host| host.condition(condition::POSTGRES_READY))
                .is_some_and(|ready| ready.reason == "SetupFailed")
        })
        .await
        .expect("host");
    let ready_condition = failed.condition(condition::POSTGRES_READY).expect("condition");
    assert!(ready_condition.message.contains("InvocationDoesNotExist"), "{}", ready_condition.message);
    assert_eq!(failed.phase(), Some(HostPhase::Failed));
    let ready = scenario.run_until("db", Duration::from_secs(40), is_ready).await.expect("host");
    assert_one_instance_one_volume_and_truthful_status(&scenario, &ready);
    let sent = scenario.cloud.calls().iter().filter(|call| call.operation == Operation::Send).count();
    assert_eq!(sent, 2, "one lost setup, one that ran");
}
