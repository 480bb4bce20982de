//! The HostSpec and bootstrap a PostgresHost renders to.

use std::path::PathBuf;

use pgec2_api::fixtures::{host, policy, target_time};
use pgec2_core::host_spec::StorageSpec;

use super::*;
use crate::archive::HostStorage;
use crate::cloud::InstanceState;

fn instance() -> HostInstance {
    HostInstance {
        instance_id: "i-0123456789abcdef0".into(),
        volume_id: Some("vol-0123456789abcdef0".into()),
        state: InstanceState::Running,
        private_ip: Some("10.0.0.5".into()),
        availability_zone: Some("eu-central-1a".into()),
        agent_online: true,
    }
}

fn local_layout() -> HostLayout {
    HostLayout {
        profile: Profile::Local,
        mount_path: PathBuf::from("/state/hosts/shop/db/volume"),
        data_directory: PathBuf::from("/state/hosts/shop/db/volume/data"),
        os_user: "postgres".into(),
        port: 54321,
        listen_addresses: "127.0.0.1".into(),
        endpoint_host: Some("127.0.0.1".into()),
        install_dir: PathBuf::from("/state/hosts/shop/db/agent"),
        agent_config_path: PathBuf::from("/state/hosts/shop/db/agent/agent.toml"),
        agent_download: Some(AgentDownload { url: "file:///state/bin/pgec2-agent".into(), sha256: "ab".repeat(32) }),
    }
}

#[test]
fn a_host_archives_into_its_own_prefix_of_the_policy_storage() {
    let db = host("db").namespace("shop").policy("nightly").build();
    let nightly = policy("nightly").namespace("shop").local("/backups/").archive_timeout("5m").build();
    let policies = Policies { archive: Some(nightly), recovery_source: None };
    let spec = host_spec(&db, &policies, &instance(), &local_layout()).expect("spec");
    let archive = spec.archive.expect("archive");
    assert_eq!(archive.storage.url, "file:///backups");
    assert_eq!(archive.storage.prefix.as_deref(), Some("shop/db"));
    assert_eq!(archive.archive_timeout_seconds, 300);
    assert_eq!(archive.compression, Algorithm::Zstd);
}

#[test]
fn s3_storage_keeps_bucket_prefix_endpoint_and_encryption() {
    let mut nightly = policy("nightly").s3("backups", Some("http://127.0.0.1:5000")).build();
    if let Some(s3) = nightly.spec.storage.s3.as_mut() {
        s3.prefix = Some("prod".into());
        s3.server_side_encryption = Some(pgec2_api::ServerSideEncryption::AwsKms);
        s3.storage_class = Some(pgec2_api::S3StorageClass::StandardIa);
    }
    let storage = StorageSpec::from(HostStorage::new(&nightly.spec.storage, "default/db"));
    assert_eq!(storage.url, "s3://backups/prod");
    assert_eq!(storage.prefix.as_deref(), Some("default/db"));
    assert_eq!(storage.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(storage.server_side_encryption, Some(pgec2_api::ServerSideEncryption::AwsKms));
    assert_eq!(storage.storage_class.as_deref(), Some("STANDARD_IA"));
    // What the operator opens for retention is what the host's agent opens.
    let config = pgec2_core::storage::url::StorageConfig::from(&storage);
    let encryption = config.encryption().expect("valid").expect("encrypted");
    assert_eq!((encryption.sse, encryption.kms_key_id), (pgec2_api::ServerSideEncryption::AwsKms, None));
    let url = pgec2_core::storage::url::StorageUrl::parse(&config.url).expect("url");
    assert_eq!(url, pgec2_core::storage::url::StorageUrl::S3 { bucket: "backups".into(), prefix: "prod".into() });
    assert_eq!(storage.extensions, None, "no wal-g archive and no lock unless the policy says so");
}

#[test]
fn a_wal_g_compatible_policy_points_its_hosts_at_the_wal_g_archive_of_its_bucket_and_prefix() {
    let mut adopted = policy("adopted").s3("backups", None).build();
    if let Some(s3) = adopted.spec.storage.s3.as_mut() {
        s3.prefix = Some("orders".into());
        s3.walg_compatible = Some(pgec2_api::WalgCompatibility::Read);
    }
    let storage = StorageSpec::from(HostStorage::of_policy(&adopted, "default/orders-db"));
    assert_eq!(storage.walg_prefix(), Some("s3://backups/orders"), "wal-g's WALG_S3_PREFIX");
    assert_eq!((storage.url.as_str(), storage.prefix.as_deref()), ("s3://backups/orders", Some("default/orders-db")));
}

#[test]
fn an_object_lock_without_days_lasts_as_long_as_retention_keeps_a_backup() {
    let mut locked = policy("locked").s3("backups", None).schedule("0 3 * * *").build();
    locked.spec.retention.full_backups = 5;
    if let Some(s3) = locked.spec.storage.s3.as_mut() {
        s3.object_lock = Some(pgec2_api::ObjectLockPolicy { mode: pgec2_api::ObjectLockMode::Compliance, days: None });
    }
    let storage = StorageSpec::from(HostStorage::of_policy(&locked, "default/db"));
    let extensions = storage.extensions.expect("extensions");
    assert_eq!(extensions.object_lock_mode.as_deref(), Some("compliance"));
    assert_eq!(extensions.object_lock_days, Some(5), "five daily backups: five days");
    let lock = pgec2_core::storage::url::StorageConfig::from(&StorageSpec::from(HostStorage::new(
        &locked.spec.storage,
        "d/b",
    )));
    assert!(lock.object_lock.is_some(), "retention's store asks for retention dates");
}

#[test]
fn the_policy_encryption_goes_with_the_archive_and_the_recovery_source() {
    let mut nightly = policy("nightly").build();
    nightly.spec.encryption = Some(pgec2_api::Encryption {
        mode: pgec2_api::EncryptionMode::Aes256Gcm,
        key: Some(pgec2_api::EncryptionKey { file: Some("/etc/pgec2/archive.key".into()), ..Default::default() }),
        read_keys: vec![pgec2_api::EncryptionKey {
            kms: Some("alias/old".into()),
            kms_endpoint: Some("http://kms.internal:8080".into()),
            ..Default::default()
        }],
    });
    let storage = StorageSpec::from(HostStorage::of_policy(&nightly, "default/db"));
    let encryption = storage.encryption.expect("encryption");
    assert_eq!(encryption.mode, "aes-256-gcm");
    assert_eq!(encryption.key.as_deref(), Some("file:/etc/pgec2/archive.key"));
    assert_eq!(encryption.read_keys, vec!["kms:alias/old".to_string()]);
    assert_eq!(encryption.kms_endpoint.as_deref(), Some("http://kms.internal:8080"), "the KMS endpoint goes along");
    assert_eq!(
        StorageSpec::from(HostStorage::new(&nightly.spec.storage, "default/db")).encryption,
        None,
        "retention needs no key"
    );
}

#[test]
fn the_local_layout_places_everything_in_the_host_directory_without_a_volume_id() {
    let db = host("db").namespace("shop").parameter("work_mem", "16MB").build();
    let spec = host_spec(&db, &Policies::default(), &instance(), &local_layout()).expect("spec");
    assert_eq!(spec.profile, Profile::Local);
    assert_eq!(spec.volume.volume_id, None);
    assert_eq!(spec.port, 54321);
    assert_eq!(spec.agent_binary, PathBuf::from("/state/hosts/shop/db/agent/pgec2-agent"));
    assert_eq!(spec.parameters.get("work_mem").map(String::as_str), Some("16MB"));
    assert_eq!(spec.archive, None, "no policy, no archiving");
    assert!(matches!(spec.bootstrap, BootstrapSpec::Initdb(InitdbSpec { data_checksums: true, .. })));
}

#[test]
fn an_ec2_host_names_its_ebs_volume() {
    let db = host("db").build();
    let layout = HostLayout::ec2(&instance());
    let spec = host_spec(&db, &Policies::default(), &instance(), &layout).expect("spec");
    assert_eq!(spec.volume.volume_id.as_deref(), Some("vol-0123456789abcdef0"));
    assert_eq!(spec.port, 5432);
}

#[test]
fn a_recovery_reads_the_source_hosts_prefix_with_its_target() {
    let restored = host("copy").recovery_from("db", "nightly").target(target_time("2026-01-31T12:00:00Z")).build();
    let nightly = policy("nightly").local("/backups").build();
    let policies = Policies { archive: None, recovery_source: Some(nightly) };
    let spec = host_spec(&restored, &policies, &instance(), &local_layout()).expect("spec");
    let BootstrapSpec::Recovery(recovery) = spec.bootstrap else { panic!("expected a recovery bootstrap") };
    assert_eq!(recovery.source.prefix.as_deref(), Some("default/db"));
    assert_eq!(recovery.target, Some(pgec2_core::host_spec::RecoveryTarget::Time("2026-01-31T12:00:00Z".into())));
    assert_eq!(recovery.target_action, pgec2_core::host_spec::TargetAction::Promote);
}

#[test]
fn a_restored_host_archives_into_its_own_prefix_and_reads_its_source_s() {
    let nightly = policy("nightly").local("/backups").build();
    let policies = Policies { archive: Some(nightly.clone()), recovery_source: Some(nightly) };
    let restored = host("copy").policy("nightly").recovery_from("db", "nightly").build();
    let spec = host_spec(&restored, &policies, &instance(), &local_layout()).expect("spec");
    let own = spec.archive.as_ref().expect("own archive").storage.clone();
    let BootstrapSpec::Recovery(recovery) = &spec.bootstrap else { panic!("expected a recovery bootstrap") };
    assert_eq!((own.url.as_str(), own.prefix.as_deref()), ("file:///backups", Some("default/copy")));
    assert_eq!(
        (recovery.source.url.as_str(), recovery.source.prefix.as_deref()),
        ("file:///backups", Some("default/db"))
    );
}

#[test]
fn the_setup_digest_changes_with_the_spec_and_not_otherwise() {
    let layout = local_layout();
    let render = |db: &PostgresHost| setup(db, &Policies::default(), &instance(), &layout, None).expect("setup");
    let first = render(&host("db").parameter("work_mem", "16MB").build());
    let same = render(&host("db").parameter("work_mem", "16MB").build());
    let changed = render(&host("db").parameter("work_mem", "32MB").build());
    assert_eq!(first.digest, same.digest);
    assert_ne!(first.digest, changed.digest);
    assert!(first.command.script.contains("'host' 'apply'"));
}

#[test]
fn without_an_agent_download_the_setup_cannot_be_rendered() {
    let mut layout = local_layout();
    layout.agent_download = None;
    let error = setup(&host("db").build(), &Policies::default(), &instance(), &layout, None).expect_err("no agent");
    assert!(matches!(error, RenderError::NoAgentDownload));
}
