//! The local cloud's WAL receivers: a host whose policy streams WAL gets `pgec2-agent
//! wal-receive` beside its PostgreSQL, started again when it dies and stopped when the host is
//! deleted.

mod common;

use std::time::{Duration, Instant};

use common::{READY_TIMEOUT, TestEnv};
use pgec2_api::HostPhase;
use pgec2_api::fixtures::{host, policy};
use pgec2_operator::cloud::local::wal_receive;

/// Waits until the receiver of host `name` is as `wanted` says; returns its pid when one runs.
async fn receiver(env: &TestEnv, name: &str, what: &str, wanted: impl Fn(Option<i32>) -> bool) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pid = wal_receive::running(&env.host_dir(name)).expect("read the receiver's record");
        if wanted(pid) {
            return pid;
        }
        assert!(Instant::now() < deadline, "{what} within 30 s (receiver: {pid:?})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_hosts_receiver_is_restarted_when_it_dies_and_stopped_when_the_host_is_deleted() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    let mut streaming = policy("streaming").local(&archive.display().to_string()).build();
    streaming.spec.wal_archiving.streaming = true;
    env.apply_policy(&streaming).await;
    env.apply_host(&host("db").policy("streaming").build()).await;
    env.wait_for("db", READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;

    let first = receiver(&env, "db", "a receiver runs", |pid| pid.is_some()).await.expect("pid");
    let slot = env.psql(
        &env.hosts().get("db").await.expect("db"),
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgec2_wal_receive'",
    );
    assert_eq!(slot.as_deref(), Ok("1"), "the receiver streams from its slot");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let second =
        receiver(&env, "db", "a new receiver after the first died", |pid| pid.is_some_and(|pid| pid != first)).await;
    assert!(second.is_some());

    env.delete_host("db").await;
    env.wait_gone("db", Duration::from_secs(60)).await;
    receiver(&env, "db", "the receiver stopped with its host", |pid| pid.is_none()).await;
    env.stop().await;
}
