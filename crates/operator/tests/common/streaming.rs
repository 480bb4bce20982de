//! What the streaming tests read of a host: the receiver the local cloud runs beside it, the
//! streamed position and the recovery point its status reports.

use std::time::{Duration, Instant};

use pgec2_api::PostgresHost;

use super::TestEnv;

/// `status.recoverability.rpoSeconds`.
pub fn rpo_seconds(host: &PostgresHost) -> Option<i64> {
    host.status.as_ref().and_then(|status| status.recoverability.as_ref()?.rpo_seconds)
}

/// `status.archiving.streaming.archivedLsn`: the end of the WAL the receiver has archived.
pub fn streamed_lsn(host: &PostgresHost) -> Option<String> {
    host.status.as_ref().and_then(|status| status.archiving.as_ref()?.streaming.as_ref()?.archived_lsn.clone())
}

/// Waits until the local cloud runs wal-receive beside host `name`.
pub async fn wait_for_receiver(env: &TestEnv, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pgec2_operator::cloud::local::wal_receive::running(&env.host_dir(name)).expect("receiver").is_none() {
        assert!(Instant::now() < deadline, "no wal-receive runs for {name}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the status of `host` says the streamed WAL reaches `lsn`; returns how long that
/// took.
pub async fn wait_streamed(env: &TestEnv, host: &PostgresHost, lsn: &str) -> Duration {
    let name = host.metadata.name.as_deref().expect("name");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        let current = env.hosts().get(name).await.expect("read the host");
        if let Some(archived) = streamed_lsn(&current) {
            let reached = env.psql(host, &format!("SELECT '{archived}'::pg_lsn >= '{lsn}'::pg_lsn"));
            if reached.as_deref() == Ok("t") {
                return started.elapsed();
            }
        }
        let streaming = current.status.as_ref().and_then(|status| status.archiving.as_ref()?.streaming.clone());
        assert!(Instant::now() < deadline, "the stream of {name} did not reach {lsn}: {streaming:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
