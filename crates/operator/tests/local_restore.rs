//! Restores end to end on the local cloud: PostgresHosts bootstrapped from another host's
//! archive (`bootstrap.recovery`) and standbys that follow it, with the real controllers on the
//! in-memory API and real PostgreSQL set up by the real agent.
//!
//! Rows are compared by count and checksum (md5 of every row in key order), so a lost or an
//! extra row fails; a restored host must archive to its own prefix and never into the source's.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{READY_TIMEOUT, TestEnv};
use pgec2_api::fixtures::{HostBuilder, host, policy, target_time};
use pgec2_api::{BACKUP_REQUEST_ANNOTATION, BackupMethod, HostPhase, PostgresHost};

/// How long a restored host may take to reach a state (restore and recovery included).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(180);
/// How long WAL may take to be archived or replayed.
const WAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Count and md5 of the rows of `orders` matching `filter`, as one comparable string.
fn rows(env: &TestEnv, host: &PostgresHost, filter: &str) -> String {
    let sql = format!(
        "SELECT count(*) || ' ' || coalesce(md5(string_agg(id || ':' || batch || ':' || payload, ',' ORDER BY id)), '-') \
         FROM orders WHERE {filter}"
    );
    env.psql(host, &sql).unwrap_or_else(|error| panic!("read orders: {error}"))
}

/// Inserts rows `first..=last` of `batch` into `orders` on `host`.
fn insert(env: &TestEnv, host: &PostgresHost, batch: u32, first: u32, last: u32) {
    let sql =
        format!("INSERT INTO orders SELECT g, {batch}, md5(g::text) FROM generate_series({first}, {last}) g; SELECT 1");
    env.psql(host, &sql).unwrap_or_else(|error| panic!("insert batch {batch}: {error}"));
}

/// The archived WAL directory of `name` inside the policy's local storage.
fn wal_dir(archive: &Path, name: &str) -> PathBuf {
    archive.join("default").join(name).join("wal")
}

/// Names of the files in a directory (empty when it does not exist).
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Committed backups in a host's archive.
fn committed_backups(archive: &Path, name: &str) -> Vec<String> {
    let dir = archive.join("default").join(name).join("backups");
    file_names(&dir).into_iter().filter(|backup| dir.join(backup).join("complete.json").exists()).collect()
}

/// Polls `check` until it returns true; panics naming `what` after `timeout`.
async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the host is Ready; fails at once when it fails.
async fn ready(env: &TestEnv, name: &str, timeout: Duration) -> PostgresHost {
    env.wait_for(name, timeout, |host| {
        assert_ne!(host.phase(), Some(HostPhase::Failed), "{name} failed: {:#?}", host.status);
        host.phase() == Some(HostPhase::Ready) && host.status_is_current()
    })
    .await
}

/// Switches the WAL segment on `host` and waits until the finished segment is archived;
/// returns its name.
async fn switch_and_wait_archived(env: &TestEnv, host: &PostgresHost, wal: &Path) -> String {
    let segment = env
        .psql(host, "SELECT pg_walfile_name(pg_current_wal_lsn()) FROM pg_switch_wal()")
        .unwrap_or_else(|error| panic!("switch wal: {error}"));
    eventually(&format!("archiving {segment} to {}", wal.display()), WAL_TIMEOUT, || {
        file_names(wal).iter().any(|name| name.starts_with(&segment))
    })
    .await;
    segment
}

/// Asks the operator for a backup of `builder`'s host and waits until a new one is committed.
async fn take_backup(env: &TestEnv, archive: &Path, builder: &HostBuilder, request: &str) -> String {
    let name = builder.clone().build().metadata.name.expect("name");
    let before = committed_backups(archive, &name);
    env.apply_host(&builder.clone().annotation(BACKUP_REQUEST_ANNOTATION, request).build()).await;
    eventually(&format!("backup {request} of {name}"), Duration::from_secs(120), || {
        committed_backups(archive, &name).len() > before.len()
    })
    .await;
    let after = committed_backups(archive, &name);
    after.into_iter().find(|backup| !before.contains(backup)).expect("the new backup")
}

/// The timeline of the WAL a primary writes now.
fn current_timeline(env: &TestEnv, host: &PostgresHost) -> u32 {
    let text = env
        .psql(host, "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int")
        .unwrap_or_else(|error| panic!("read the timeline: {error}"));
    text.parse().unwrap_or_else(|_| panic!("timeline {text:?}"))
}

/// Waits until the server has left recovery.
async fn wait_promoted(env: &TestEnv, host: &PostgresHost) {
    eventually("promotion", RESTORE_TIMEOUT, || env.psql(host, "SELECT pg_is_in_recovery()").as_deref() == Ok("f"))
        .await;
}

/// What only a promoted copy writes into an archive: WAL and history files of timelines after
/// the first, and the `.partial` segment it leaves of the timeline it left.
fn promotion_files(wal: &Path) -> Vec<String> {
    file_names(wal).into_iter().filter(|name| !name.starts_with("00000001") || name.ends_with(".partial")).collect()
}

/// Commits batch 2 (ids 1001-1500), then batch 3 (ids 1501-1700) a little over two seconds
/// later; returns a recovery target time between them (UTC, microseconds).
async fn target_between_batches(env: &TestEnv, source: &PostgresHost) -> String {
    insert(env, source, 2, 1001, 1500);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target = env
        .psql(source, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        .expect("read the clock");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    insert(env, source, 3, 1501, 1700);
    target
}

/// A source host `db` on policy `nightly` with table `orders` holding batch 1 (ids 1-1000).
async fn source_with_rows(env: &TestEnv, archive: &Path) -> (HostBuilder, PostgresHost) {
    env.apply_policy(&policy("nightly").local(&archive.display().to_string()).build()).await;
    let builder = host("db").policy("nightly");
    env.apply_host(&builder.clone().build()).await;
    let source = ready(env, "db", READY_TIMEOUT).await;
    env.psql(&source, "CREATE TABLE orders (id int PRIMARY KEY, batch int NOT NULL, payload text NOT NULL)")
        .expect("create orders");
    insert(env, &source, 1, 1, 1000);
    (builder, source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_hosts_hold_the_rows_up_to_their_target_and_archive_to_their_own_prefix() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    let (db, source) = source_with_rows(&env, &archive).await;
    take_backup(&env, &archive, &db, "before-batch-2").await;

    // Batch 2 is committed before the target, batch 3 after it; both are archived.
    let target = target_between_batches(&env, &source).await;
    switch_and_wait_archived(&env, &source, &wal_dir(&archive, "db")).await;
    let all_rows = rows(&env, &source, "true");
    let rows_before_target = rows(&env, &source, "batch <= 2");
    assert!(
        all_rows.starts_with("1700 ") && rows_before_target.starts_with("1500 "),
        "{all_rows} / {rows_before_target}"
    );

    env.apply_host(&host("latest").policy("nightly").recovery_from("db", "nightly").build()).await;
    env.apply_host(&host("pitr").policy("nightly").recovery_from("db", "nightly").target(target_time(&target)).build())
        .await;
    let latest = ready(&env, "latest", RESTORE_TIMEOUT).await;
    let pitr = ready(&env, "pitr", RESTORE_TIMEOUT).await;
    wait_promoted(&env, &latest).await;
    wait_promoted(&env, &pitr).await;

    assert_eq!(rows(&env, &latest, "true"), all_rows, "LATEST replays the whole archive");
    assert_eq!(rows(&env, &pitr, "true"), rows_before_target, "the target stops before batch 3 (target {target})");

    // After promotion each copy writes a new timeline into its own prefix only.
    for (name, restored) in [("latest", &latest), ("pitr", &pitr)] {
        let timeline = current_timeline(&env, restored);
        assert!(timeline > 1, "{name} did not start a new timeline");
        let reported = restored.status.as_ref().and_then(|status| status.postgres.as_ref()?.timeline);
        assert_eq!(reported, Some(i64::from(timeline)), "{name}: Ready reports the promoted timeline");
        let effective = env.psql(restored, "SHOW restore_command").expect("restore_command");
        assert!(
            !effective.contains("agent-source.toml"),
            "{name} still restores from the source's archive: {effective}"
        );
        insert(&env, restored, 4, 5001, 5010);
        switch_and_wait_archived(&env, restored, &wal_dir(&archive, name)).await;
        assert!(
            !promotion_files(&wal_dir(&archive, name)).is_empty(),
            "{name} archived no WAL of its own timeline: {:?}",
            file_names(&wal_dir(&archive, name))
        );
    }
    let source_files = promotion_files(&wal_dir(&archive, "db"));
    assert!(source_files.is_empty(), "a copy archived into the source's prefix: {source_files:?}");
    assert_eq!(rows(&env, &source, "true"), all_rows, "the source is untouched");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_follows_the_source_archive_and_turning_it_off_promotes_it() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    let (db, source) = source_with_rows(&env, &archive).await;
    take_backup(&env, &archive, &db, "for-the-standby").await;

    let replica = host("replica").policy("nightly").recovery_from("db", "nightly");
    env.apply_host(&replica.clone().standby(true).build()).await;
    let standby = ready(&env, "replica", RESTORE_TIMEOUT).await;
    assert_eq!(env.psql(&standby, "SELECT pg_is_in_recovery()").as_deref(), Ok("t"), "a standby stays in recovery");
    let status = standby.status.clone().expect("status");
    assert_eq!(status.postgres.as_ref().and_then(|postgres| postgres.timeline), Some(1));
    assert!(env.psql(&standby, "INSERT INTO orders VALUES (0, 0, 'x')").is_err(), "a standby must refuse writes");

    // Rows committed on the primary reach the standby once their segment is archived.
    insert(&env, &source, 2, 1001, 1500);
    switch_and_wait_archived(&env, &source, &wal_dir(&archive, "db")).await;
    let expected = rows(&env, &source, "true");
    let deadline = Instant::now() + WAL_TIMEOUT;
    while rows(&env, &standby, "true") != expected {
        assert!(Instant::now() < deadline, "the standby has {} instead of {expected}", rows(&env, &standby, "true"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Turning standby off promotes it: writable, on a new timeline, archiving to its own prefix.
    let standby_setup = status.setup_digest.clone();
    env.apply_host(&replica.clone().standby(false).build()).await;
    let promoted = env
        .wait_for("replica", RESTORE_TIMEOUT, |host| {
            let status = host.status.as_ref();
            host.phase() == Some(HostPhase::Ready)
                && host.status_is_current()
                && status.and_then(|status| status.setup_digest.clone()) != standby_setup
        })
        .await;
    assert_eq!(env.psql(&promoted, "SELECT pg_is_in_recovery()").as_deref(), Ok("f"), "still in recovery");
    let timeline = current_timeline(&env, &promoted);
    assert!(timeline > 1, "promotion must start a new timeline, got {timeline}");
    let status = promoted.status.clone().expect("status");
    assert_eq!(status.postgres.and_then(|postgres| postgres.timeline), Some(i64::from(timeline)));
    assert_eq!(rows(&env, &promoted, "true"), expected, "promotion kept every replayed row");
    insert(&env, &promoted, 3, 2001, 2010);
    switch_and_wait_archived(&env, &promoted, &wal_dir(&archive, "replica")).await;
    assert!(!promotion_files(&wal_dir(&archive, "replica")).is_empty(), "no WAL of the new timeline archived");
    let source_files = promotion_files(&wal_dir(&archive, "db"));
    assert!(source_files.is_empty(), "the promoted standby archived into the source's prefix: {source_files:?}");
    assert_eq!(rows(&env, &source, "true"), expected, "the source is untouched");
    env.stop().await;
}

fn ready_reason(host: &PostgresHost) -> Option<String> {
    host.condition(pgec2_api::condition::READY).map(|ready| ready.reason.clone())
}

fn utc_text(time: k8s_openapi::jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_outside_the_source_window_are_refused_before_any_instance_is_launched() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    let (db, source) = source_with_rows(&env, &archive).await;
    take_backup(&env, &archive, &db, "the-only-backup").await;
    let now = k8s_openapi::jiff::Timestamp::now();

    // Before the only backup ended: no restore can ever stop there. Failed, with the reason.
    let an_hour_ago = utc_text(now - std::time::Duration::from_secs(3600));
    let early = host("early").policy("nightly").recovery_from("db", "nightly").target(target_time(&an_hour_ago));
    env.apply_host(&early.build()).await;
    let refused = env
        .wait_for("early", Duration::from_secs(60), |host| {
            ready_reason(host).as_deref() == Some("RecoveryTargetUnreachable")
        })
        .await;
    assert_eq!(refused.phase(), Some(HostPhase::Failed));
    let message = refused.condition(pgec2_api::condition::READY).expect("ready").message.clone();
    assert!(message.contains("no backup ends before") && message.contains("default/db"), "{message}");

    // After the last archived WAL: the host waits, and is restored once the archive reaches it.
    let soon = now + std::time::Duration::from_secs(4);
    let future = host("future").policy("nightly").recovery_from("db", "nightly").target(target_time(&utc_text(soon)));
    env.apply_host(&future.build()).await;
    let waiting = env
        .wait_for("future", Duration::from_secs(60), |host| {
            ready_reason(host).as_deref() == Some("RecoveryTargetUnreachable")
        })
        .await;
    assert_eq!(waiting.phase(), Some(HostPhase::Pending));
    let message = waiting.condition(pgec2_api::condition::READY).expect("ready").message.clone();
    assert!(message.contains("after the last archived WAL"), "{message}");

    // Neither was launched: no instance in status, nothing on the local cloud.
    for name in ["early", "future"] {
        let host = env.hosts().get(name).await.expect("read host");
        assert_eq!(host.status.and_then(|status| status.instance_id), None, "{name} was launched");
        assert!(!env.host_dir(name).exists(), "{name} has a host directory");
    }
    assert!(env.event_reasons("early").await.contains(&"RecoveryTargetUnreachable".to_string()));

    // Rows committed after the target, archived: the target is inside the window now.
    while k8s_openapi::jiff::Timestamp::now() <= soon + std::time::Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expected = rows(&env, &source, "true");
    insert(&env, &source, 2, 1001, 1100);
    switch_and_wait_archived(&env, &source, &wal_dir(&archive, "db")).await;
    let restored = ready(&env, "future", RESTORE_TIMEOUT).await;
    wait_promoted(&env, &restored).await;
    assert_eq!(rows(&env, &restored, "true"), expected, "the restore stops at the target, before batch 2");
    let reasons = env.event_reasons("future").await;
    for reason in ["RecoveryTargetUnreachable", "RestoreStarted", "RestoreFinished"] {
        assert!(reasons.contains(&reason.to_string()), "no {reason} event in {reasons:?}");
    }
    let early_host = env.hosts().get("early").await.expect("read host");
    assert_eq!(early_host.phase(), Some(HostPhase::Failed), "the early target stays refused");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_whose_archive_loses_a_segment_meanwhile_fails_naming_it_and_never_serves() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    let (db, source) = source_with_rows(&env, &archive).await;
    take_backup(&env, &archive, &db, "before-the-batches").await;
    let wal = wal_dir(&archive, "db");
    let mut segments = Vec::new();
    for batch in 2..=9 {
        insert(&env, &source, batch, (batch - 1) * 1000 + 1, batch * 1000);
        segments.push(switch_and_wait_archived(&env, &source, &wal).await);
    }

    // The operator and backup-fetch see a whole archive; the segment goes once the data
    // directory is restored, before PostgreSQL replays up to it.
    env.apply_host(&host("holed").policy("nightly").recovery_from("db", "nightly").build()).await;
    let data = env.data_dir("holed");
    eventually("the restore of holed", RESTORE_TIMEOUT, || data.join("PG_VERSION").exists()).await;
    let victim = segments[4].clone();
    std::fs::remove_file(wal.join(&victim)).expect("remove the segment from the source's archive");

    let failed = env
        .wait_for("holed", RESTORE_TIMEOUT, |host| {
            assert_ne!(host.phase(), Some(HostPhase::Ready), "a restore with a hole became Ready: {:#?}", host.status);
            host.phase() == Some(HostPhase::Failed)
        })
        .await;
    let message = failed.condition(pgec2_api::condition::READY).expect("ready").message.clone();
    assert!(message.contains(&format!("WAL segment {victim} is missing")), "{message}");
    assert!(!env.postgres_running("holed"), "PostgreSQL runs after recovery stopped");
    assert!(data.join("recovery.signal").exists(), "the copy left recovery");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_backup_under_load_restores_to_a_point_in_time_with_exactly_the_committed_rows() {
    let env = TestEnv::start().await;
    let archive = env.archive_dir();
    let snapshots = policy("snapshots").local(&archive.display().to_string()).method(BackupMethod::Snapshot);
    env.apply_policy(&snapshots.build()).await;
    let db = host("db").policy("snapshots");
    env.apply_host(&db.clone().build()).await;
    let source = ready(&env, "db", READY_TIMEOUT).await;
    env.psql(&source, "CREATE TABLE orders (id int PRIMARY KEY, batch int NOT NULL, payload text NOT NULL)")
        .expect("create orders");
    insert(&env, &source, 1, 1, 1000);
    let mut load = env.pgbench(&source, 120);
    let backup = take_backup(&env, &archive, &db, "snapshot-under-load").await;

    // Batch 2 commits before the target, batch 3 after it, pgbench all along.
    let target = target_between_batches(&env, &source).await;
    let _ = load.kill();
    let _ = load.wait();
    switch_and_wait_archived(&env, &source, &wal_dir(&archive, "db")).await;
    let rows_before_target = rows(&env, &source, "batch <= 2");
    assert!(rows_before_target.starts_with("1500 "), "{rows_before_target}");

    let copy = host("copy").policy("snapshots").recovery_from("db", "snapshots").target(target_time(&target));
    env.apply_host(&copy.build()).await;
    let restored = ready(&env, "copy", RESTORE_TIMEOUT).await;
    wait_promoted(&env, &restored).await;
    assert_eq!(rows(&env, &restored, "true"), rows_before_target, "the restore stops at {target}");
    let accounts = env.psql(&restored, "SELECT count(*) FROM pgbench_accounts").expect("pgbench_accounts");
    assert_eq!(accounts, "200000", "pgbench's tables come back whole");

    // Status names the snapshot backup and the time of each phase; the data directory was
    // prepared in place from the snapshot's copy, not fetched.
    let restore = restored.status.as_ref().and_then(|status| status.restore.clone()).expect("status.restore");
    assert_eq!((restore.backup.as_str(), restore.kind.as_str()), (backup.as_str(), "snapshot"));
    let policy_object = env.policies().get("snapshots").await.expect("policy");
    let opened = pgec2_operator::archive::open(&policy_object, &source).await.expect("open archive");
    let info = pgec2_core::catalog::read_info(&opened, &backup).await.expect("commit record");
    assert_eq!(restore.snapshot_id, info.snapshot_id, "{restore:?}");
    for (phase, seconds) in [
        ("volume", restore.volume_seconds),
        ("data directory", restore.data_directory_seconds),
        ("start", restore.start_seconds),
        ("total", restore.total_seconds),
    ] {
        assert!(seconds.is_some_and(|seconds| seconds >= 0), "no {phase} time in {restore:?}");
    }
    assert!(env.data_dir("copy").join("pgec2_snapshot_restore.json").exists(), "not prepared from the snapshot");
    let reasons = env.event_reasons("copy").await;
    assert!(reasons.contains(&"RestoreChosen".to_string()), "{reasons:?}");
    let source_files = promotion_files(&wal_dir(&archive, "db"));
    assert!(source_files.is_empty(), "the copy archived into the source's prefix: {source_files:?}");
    env.stop().await;
}
