//! The local cloud without PostgreSQL: records, idempotency, disposal, commands across restarts.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Self { dir }
    }

    /// A cloud over the fixture's state directory, as a fresh operator process would build it.
    fn cloud(&self) -> LocalCloud {
        let agent = self.dir.path().join("agent-source");
        std::fs::write(&agent, b"#!/bin/sh\necho agent\n").expect("write agent");
        LocalCloud::new(LocalCloudConfig::new(self.dir.path().join("state"), agent)).expect("local cloud")
    }
}

fn host(name: &str, uid: &str) -> HostRef {
    HostRef { namespace: "default".into(), name: name.into(), uid: uid.into() }
}

fn launch_request(host: &HostRef) -> LaunchRequest {
    LaunchRequest { host: host.clone(), instance: Default::default(), volume: Default::default(), attempt: 0 }
}

#[tokio::test]
async fn launching_twice_returns_the_same_host_with_the_same_port() {
    let fixture = Fixture::new();
    let cloud = fixture.cloud();
    let db = host("db", "0a1b2c3d-0000");
    assert_eq!(cloud.find_host(&db).await.expect("find"), None);
    let first = cloud.launch_host(&launch_request(&db)).await.expect("launch");
    let port = cloud.host_layout(&db, &first).await.expect("layout").port;
    let again = fixture.cloud().launch_host(&launch_request(&db)).await.expect("launch again");
    assert_eq!(first, again);
    assert_eq!(first.instance_id, "local-0a1b2c3d");
    assert_eq!(cloud.find_host(&db).await.expect("find"), Some(first.clone()));
    assert_eq!(cloud.host_layout(&db, &first).await.expect("layout").port, port);
}

#[tokio::test]
async fn two_hosts_get_different_ports() {
    let fixture = Fixture::new();
    let cloud = fixture.cloud();
    let (one, two) = (host("one", "uid-one"), host("two", "uid-two"));
    let first = cloud.launch_host(&launch_request(&one)).await.expect("launch");
    let second = cloud.launch_host(&launch_request(&two)).await.expect("launch");
    let first_port = cloud.host_layout(&one, &first).await.expect("layout").port;
    let second_port = cloud.host_layout(&two, &second).await.expect("layout").port;
    assert_ne!(first_port, second_port);
}

#[tokio::test]
async fn the_layout_points_the_bootstrap_at_the_installed_agent() {
    let fixture = Fixture::new();
    let cloud = fixture.cloud();
    let db = host("db", "uid-db");
    let instance = cloud.launch_host(&launch_request(&db)).await.expect("launch");
    let layout = cloud.host_layout(&db, &instance).await.expect("layout");
    let download = layout.agent_download.expect("local hosts download the installed agent");
    let installed = fixture.dir.path().join("state/bin/pgec2-agent");
    assert_eq!(download.url, format!("file://{}", installed.display()));
    assert_eq!(download.sha256, hex(&sha2::Sha256::digest(std::fs::read(&installed).expect("read agent"))));
    assert_eq!(layout.data_directory, fixture.dir.path().join("state/hosts/default/db/volume/data"));
    assert_eq!(layout.profile, pgec2_core::host_spec::Profile::Local);
}

#[tokio::test]
async fn a_name_held_by_another_live_host_is_refused() {
    let fixture = Fixture::new();
    let cloud = fixture.cloud();
    cloud.launch_host(&launch_request(&host("db", "uid-old"))).await.expect("launch");
    let error = cloud.launch_host(&launch_request(&host("db", "uid-new"))).await.expect_err("conflict");
    assert!(error.to_string().contains("belongs to another PostgresHost"), "{error}");
}

#[tokio::test]
async fn retain_keeps_the_volume_for_a_new_host_of_the_same_name() {
    let fixture = Fixture::new();
    let cloud = fixture.cloud();
    let old = host("db", "uid-old");
    let first = cloud.launch_host(&launch_request(&old)).await.expect("launch");
    let marker = cloud.host_dir(&old).join("volume/marker");
    std::fs::write(&marker, b"data").expect("write marker");
    assert_eq!(cloud.terminate_host(&old, VolumeDisposal::Retain).await.expect("terminate"), TerminationProgress::Done);
    assert_eq!(cloud.find_host(&old).await.expect("find"), None);
    assert!(marker.exists(), "retained data must stay");
    let adopted = cloud.launch_host(&launch_request(&host("db", "uid-new"))).await.expect("adopt");
    assert_eq!(adopted.volume_id, first.volume_id);
    assert_ne!(adopted.instance_id, first.instance_id);
    assert!(marker.exists());
}

#[tokio::test]
async fn delete_removes_the_host_directory_and_snapshot_keeps_a_copy() {
    let fixture = Fixture::new();
    let cloud = fixture.cloud();
    for (name, disposal) in [("deleted", VolumeDisposal::Delete), ("snapshotted", VolumeDisposal::Snapshot)] {
        let db = host(name, &format!("uid-{name}"));
        cloud.launch_host(&launch_request(&db)).await.expect("launch");
        std::fs::write(cloud.host_dir(&db).join("volume/marker"), b"data").expect("write marker");
        cloud.terminate_host(&db, disposal).await.expect("terminate");
        assert!(!cloud.host_dir(&db).exists(), "{name}: the host directory must be gone");
        assert_eq!(cloud.terminate_host(&db, disposal).await.expect("terminate again"), TerminationProgress::Done);
    }
    let snapshots = files::subdirectories(&cloud.state_dir().join("snapshots/default")).expect("list snapshots");
    assert_eq!(snapshots.len(), 1);
    assert_eq!(std::fs::read(snapshots[0].join("marker")).expect("snapshot copy"), b"data");
}

#[tokio::test]
async fn a_command_started_before_a_restart_is_followed_by_the_next_operator() {
    let fixture = Fixture::new();
    let db = host("db", "uid-db");
    let (instance, id) = {
        let cloud = fixture.cloud();
        let instance = cloud.launch_host(&launch_request(&db)).await.expect("launch");
        let command = HostCommand {
            purpose: "apply".into(),
            script: "sleep 1; echo done".into(),
            timeout: Duration::from_secs(60),
        };
        let id = cloud.send_command(&instance, &command).await.expect("send");
        (instance, id)
    };
    let restarted = fixture.cloud();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match restarted.command_status(&instance, &id).await.expect("status") {
            CommandStatus::Succeeded { stdout } => break assert_eq!(stdout, "done\n"),
            CommandStatus::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "command did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn terminating_a_host_stops_its_running_commands() {
    let fixture = Fixture::new();
    let cloud = fixture.cloud();
    let db = host("db", "uid-db");
    let instance = cloud.launch_host(&launch_request(&db)).await.expect("launch");
    let command = HostCommand { purpose: "apply".into(), script: "sleep 60".into(), timeout: Duration::from_secs(120) };
    let id = cloud.send_command(&instance, &command).await.expect("send");
    cloud.terminate_host(&db, VolumeDisposal::Retain).await.expect("terminate");
    let status = command::status(&cloud.host_dir(&db), &id).expect("status");
    let CommandStatus::Failed { stderr_tail, .. } = status else { panic!("expected failure, got {status:?}") };
    assert!(stderr_tail.contains("host was terminated"), "{stderr_tail}");
}

#[tokio::test]
async fn running_commands_lists_the_live_commands_of_a_purpose() {
    let fixture = Fixture::new();
    let cloud = fixture.cloud();
    let db = host("db", "uid-db");
    let instance = cloud.launch_host(&launch_request(&db)).await.expect("launch");
    let command = |purpose: &str, script: &str| HostCommand {
        purpose: purpose.into(),
        script: script.into(),
        timeout: Duration::from_secs(60),
    };
    let done = cloud.send_command(&instance, &command("backup", "true")).await.expect("send");
    let backup = cloud.send_command(&instance, &command("backup", "sleep 30")).await.expect("send");
    cloud.send_command(&instance, &command("apply", "sleep 30")).await.expect("send");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !matches!(cloud.command_status(&instance, &done).await.expect("status"), CommandStatus::Succeeded { .. }) {
        assert!(std::time::Instant::now() < deadline, "the quick command did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restarted = fixture.cloud();
    assert_eq!(restarted.running_commands(&instance, "backup").await.expect("list"), vec![backup]);
    assert!(restarted.running_commands(&instance, "verify").await.expect("list").is_empty());
    cloud.terminate_host(&db, VolumeDisposal::Retain).await.expect("terminate");
}
