//! Archiving health on the local cloud: when the archive cannot be written (a directory the
//! host may not write, or S3 storage unreachable behind a fault-injecting proxy), the host's
//! `ContinuousArchiving` condition turns False within the check interval and the host is
//! Degraded (no WAL is lost: PostgreSQL keeps it); when the archive is writable again, the
//! waiting WAL is archived and the host is Ready again.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{READY_TIMEOUT, TestEnv};
use pgec2_api::fixtures::{host, policy};
use pgec2_api::{HostPhase, PostgresHost, condition};
use pgec2_testkit::{FaultProxy, MotoServer, ProxyMode};

/// How often the operator checks archiving in this test.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long a change of archiving may take to show (archive_command retries, one check).
const NOTICE_WITHIN: Duration = Duration::from_secs(60);

fn archiving(host: &PostgresHost) -> Option<(String, String)> {
    host.condition(condition::CONTINUOUS_ARCHIVING).map(|found| (found.status.clone(), found.reason.clone()))
}

fn write_and_switch(env: &TestEnv, host: &PostgresHost, batch: u32) {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS batches (n int); INSERT INTO batches VALUES ({batch}); SELECT pg_switch_wal();"
    );
    env.psql(host, &sql).expect("write and switch WAL");
}

/// Waits until host `db` archives again and is Ready, then checks no WAL is left waiting.
async fn wait_until_everything_is_archived(env: &TestEnv) {
    let healthy = env
        .wait_for("db", NOTICE_WITHIN, |host| {
            archiving(host) == Some(("True".into(), "Archiving".into())) && host.phase() == Some(HostPhase::Ready)
        })
        .await;
    let waiting = env.psql(&healthy, "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'");
    assert_eq!(waiting.as_deref(), Ok("0"), "WAL still waiting after the repair");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_archive_turns_continuous_archiving_false_and_back_true_after_repair() {
    let env = TestEnv::start_with(|config| config.archive_check_interval = CHECK_INTERVAL).await;
    let archive = env.archive_dir();
    env.apply_policy(&policy("nightly").local(&archive.display().to_string()).build()).await;
    env.apply_host(&host("db").policy("nightly").build()).await;
    let ready = env.wait_for("db", READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;
    write_and_switch(&env, &ready, 1);
    let checked =
        env.wait_for("db", NOTICE_WITHIN, |host| archiving(host) == Some(("True".into(), "Archiving".into()))).await;
    let archived = checked.status.and_then(|status| status.archiving).and_then(|archiving| archiving.last_archived_wal);
    assert!(archived.is_some(), "the check reports the last archived WAL file");

    // The archive becomes unwritable for the host: archive_command fails, WAL waits in pg_wal.
    let mode = std::fs::metadata(&archive).expect("archive").permissions().mode();
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
    write_and_switch(&env, &ready, 2);
    let failing =
        env.wait_for("db", NOTICE_WITHIN, |host| archiving(host).is_some_and(|(status, _)| status == "False")).await;
    assert_eq!(archiving(&failing), Some(("False".into(), "ArchiveFailing".into())));
    assert_eq!(failing.phase(), Some(HostPhase::Degraded));
    let message = failing.condition(condition::CONTINUOUS_ARCHIVING).map(|found| found.message.clone());
    assert!(message.as_deref().is_some_and(|text| text.contains("archive_command failed")), "{message:?}");
    let archiving_status = failing.status.and_then(|status| status.archiving).expect("archiving status");
    assert!(archiving_status.last_failed_wal.is_some() && archiving_status.last_failed_time.is_some());
    assert!(archiving_status.waiting_files.is_some_and(|waiting| waiting >= 1), "{archiving_status:?}");
    assert!(archiving_status.oldest_waiting_seconds.is_some(), "{archiving_status:?}");

    // Repaired: the waiting WAL is archived (new WAL wakes the archiver), the host is Ready again.
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(mode)).expect("restore mode");
    write_and_switch(&env, &ready, 3);
    wait_until_everything_is_archived(&env).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_s3_storage_turns_continuous_archiving_false_and_back_true_when_it_returns() {
    let moto = MotoServer::start().expect("moto server");
    moto.create_bucket("archive").await.expect("bucket");
    let proxy = FaultProxy::in_front_of(&moto).await.expect("proxy");
    // Credentials for the host's agent; the endpoint is the proxy's, from the policy.
    let credentials: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .filter(|(key, _)| key.starts_with("AWS_"))
        .map(|(key, value)| (key.to_string(), value))
        .collect();
    let env =
        TestEnv::start_with_host_environment(credentials, |config| config.archive_check_interval = CHECK_INTERVAL)
            .await;
    env.apply_policy(&policy("nightly").s3("archive", Some(&proxy.endpoint())).build()).await;
    env.apply_host(&host("db").policy("nightly").build()).await;
    let ready = env.wait_for("db", READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;
    write_and_switch(&env, &ready, 1);
    env.wait_for("db", NOTICE_WITHIN, |host| archiving(host) == Some(("True".into(), "Archiving".into()))).await;

    // The network to the storage resets every connection: archive_command fails.
    proxy.set(ProxyMode::Reset);
    write_and_switch(&env, &ready, 2);
    let failing =
        env.wait_for("db", NOTICE_WITHIN, |host| archiving(host).is_some_and(|(status, _)| status == "False")).await;
    assert_eq!(archiving(&failing), Some(("False".into(), "ArchiveFailing".into())));
    assert_eq!(failing.phase(), Some(HostPhase::Degraded));

    // The storage is reachable again: the waiting WAL is archived, archiving is healthy again.
    proxy.set(ProxyMode::PassThrough);
    write_and_switch(&env, &ready, 3);
    wait_until_everything_is_archived(&env).await;
    env.stop().await;
}

fn rpo_met(host: &PostgresHost) -> Option<String> {
    host.condition(condition::RPO_MET).map(|found| found.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rpo_condition_turns_false_when_archiving_stops_and_true_again_after() {
    let env = TestEnv::start_with(|config| config.archive_check_interval = CHECK_INTERVAL).await;
    let archive = env.archive_dir();
    let nightly = policy("nightly").local(&archive.display().to_string()).objectives(Some("10s"), Some("30m"));
    env.apply_policy(&nightly.build()).await;
    env.apply_host(&host("db").policy("nightly").build()).await;
    let ready = env.wait_for("db", READY_TIMEOUT, |host| host.phase() == Some(HostPhase::Ready)).await;
    write_and_switch(&env, &ready, 1);
    let met = env.wait_for("db", NOTICE_WITHIN, |host| rpo_met(host).as_deref() == Some("True")).await;
    let recoverability = met.status.as_ref().and_then(|status| status.recoverability.clone()).expect("recoverability");
    assert!(recoverability.rpo_seconds.is_some_and(|seconds| seconds <= 10), "{recoverability:?}");
    let rto = met.condition(condition::RTO_MET).expect("RtoMet");
    assert_eq!((rto.status.as_str(), rto.reason.as_str()), ("Unknown", "NotMeasured"), "no restore timed yet");

    // Archiving stops: WAL waits, the recovery point grows past 10 s, RpoMet turns False.
    let mode = std::fs::metadata(&archive).expect("archive").permissions().mode();
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
    write_and_switch(&env, &ready, 2);
    let missed = env.wait_for("db", NOTICE_WITHIN, |host| rpo_met(host).as_deref() == Some("False")).await;
    let condition = missed.condition(condition::RPO_MET).expect("RpoMet");
    assert_eq!(condition.reason, "ObjectiveMissed");
    assert!(condition.message.contains("more than the objective of 10s"), "{}", condition.message);
    let rpo = missed.status.as_ref().and_then(|status| status.recoverability.as_ref()?.rpo_seconds);
    assert!(rpo.is_some_and(|seconds| seconds > 10), "{rpo:?}");
    let exported = env.metrics.encode().expect("metrics");
    assert!(exported.contains(r#"pgec2_rpo_seconds{namespace="default",host="db"}"#), "{exported}");
    assert!(exported.contains(r#"pgec2_archive_lag_files{namespace="default",host="db"}"#), "{exported}");
    assert!(env.event_reasons("db").await.contains(&"RpoMissed".to_string()));

    // Archiving works again: the waiting WAL is archived and the objective is met again.
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(mode)).expect("restore mode");
    write_and_switch(&env, &ready, 3);
    env.wait_for("db", NOTICE_WITHIN, |host| rpo_met(host).as_deref() == Some("True")).await;
    let reasons = env.event_reasons("db").await;
    assert!(reasons.contains(&"RpoMet".to_string()), "{reasons:?}");
    env.stop().await;
}
