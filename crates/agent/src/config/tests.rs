//! Precedence (environment over file over default) and validation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgec2_core::compression::Algorithm;

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Fixture {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir"), env: HashMap::new() }
    }

    fn file(self, text: &str) -> Self {
        std::fs::write(self.path(), text).expect("write config");
        self
    }

    fn env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_string(), value.to_string());
        self
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    /// Loads with the fixture's file as the default path (absent unless written).
    fn load(&self) -> Result<AgentConfig, ConfigError> {
        AgentConfig::load_with(None, &self.path(), &|name| self.env.get(name).cloned())
    }
}

#[test]
fn environment_overrides_file_which_overrides_defaults() {
    let fixture = Fixture::new()
        .file("[storage]\nurl = \"s3://from-file/x\"\nregion = \"eu-west-1\"\n[compression]\nlevel = 5\n")
        .env("PGEC2_STORAGE_URL", "file:///from/env")
        .env("PGEC2_COMPRESSION", "lz4");
    let config = fixture.load().expect("load");
    assert_eq!(config.storage.url, "file:///from/env", "env beats file");
    assert_eq!(config.storage.region.as_deref(), Some("eu-west-1"), "file beats default");
    assert_eq!(config.compression.algorithm, Algorithm::Lz4);
    assert_eq!(config.compression.level, 5);
    assert_eq!(config.transfer.prefetch, 8, "default");
    assert_eq!(config.file, Some(fixture.path()));
}

#[test]
fn a_missing_default_file_is_fine_when_the_environment_gives_everything() {
    let config =
        Fixture::new().env("PGEC2_STORAGE_URL", "file:///archive").env("PGDATA", "/data").load().expect("load");
    assert_eq!(config.file, None);
    assert_eq!(config.pgdata(), Some(Path::new("/data")));
    assert_eq!(config.postgres.port, 5432);
}

#[test]
fn an_explicit_file_must_exist() {
    let fixture = Fixture::new().env("PGEC2_STORAGE_URL", "file:///archive");
    let missing = fixture.dir.path().join("nope.toml");
    let error = AgentConfig::load_with(Some(&missing), &fixture.path(), &|name| fixture.env.get(name).cloned())
        .expect_err("missing explicit file");
    assert!(matches!(error, ConfigError::Read { .. }), "{error}");
    assert!(error.to_string().contains("nope.toml"), "{error}");
}

#[test]
fn pgec2_config_names_the_file_when_no_flag_is_given() {
    let fixture = Fixture::new();
    let other = fixture.dir.path().join("other.toml");
    std::fs::write(&other, "[storage]\nurl = \"file:///other\"\n").expect("write");
    let fixture = fixture.env("PGEC2_CONFIG", other.to_str().expect("utf-8"));
    assert_eq!(fixture.load().expect("load").storage.url, "file:///other");
}

#[test]
fn aws_region_is_used_when_no_pgec2_region_is_set() {
    let base = || Fixture::new().env("PGEC2_STORAGE_URL", "s3://bucket/p").env("AWS_REGION", "us-west-2");
    assert_eq!(base().load().expect("load").storage.region.as_deref(), Some("us-west-2"));
    let config = base().env("PGEC2_S3_REGION", "eu-central-1").load().expect("load");
    assert_eq!(config.storage.region.as_deref(), Some("eu-central-1"));
}

#[test]
fn every_setting_round_trips_through_the_file_format() {
    let fixture = Fixture::new()
        .env("PGEC2_STORAGE_URL", "s3://bucket-name/base")
        .env("PGEC2_STORAGE_PREFIX", "/default/orders/")
        .env("PGEC2_S3_ENDPOINT", "http://127.0.0.1:9000/")
        .env("PGEC2_S3_SSE", "aws:kms")
        .env("PGEC2_S3_KMS_KEY_ID", "alias/backups")
        .env("PGEC2_S3_STORAGE_CLASS", "STANDARD_IA")
        .env("PGEC2_STORAGE_TIMEOUT", "12")
        .env("PGEC2_UPLOAD_CONCURRENCY", "16")
        .env("PGEC2_PREFETCH", "0")
        .env("PGEC2_PART_SIZE_MIB", "3")
        .env("PGPASSWORD", "secret")
        .env("PGPORT", "6543");
    let config = fixture.load().expect("load");
    assert_eq!(config.storage.prefix, "default/orders");
    assert_eq!(config.storage.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(config.storage.timeout, Duration::from_secs(12));
    assert_eq!(config.transfer.prefetch, 0);
    let reloaded = Fixture::new().file(&config.to_toml()).load().expect("reload");
    assert_eq!(AgentConfig { file: None, ..reloaded }, AgentConfig { file: None, ..config });
}

fn load_error(fixture: Fixture) -> String {
    let error = fixture.load().expect_err("invalid configuration");
    let message = error.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    message
}

#[test]
fn a_configuration_without_storage_names_the_variable_to_set() {
    let message = load_error(Fixture::new());
    assert!(message.contains("storage.url") && message.contains("PGEC2_STORAGE_URL"), "{message}");
}

#[test]
fn invalid_values_are_refused_naming_key_value_and_source() {
    let cases = [
        ("PGEC2_STORAGE_URL", "ftp://host/x", "storage.url"),
        ("PGEC2_STORAGE_URL", "file://relative/dir", "absolute"),
        ("PGEC2_STORAGE_URL", "s3://Bad_Bucket/x", "bucket"),
        ("PGEC2_COMPRESSION", "gzip", "zstd, lz4 or none"),
        ("PGEC2_COMPRESSION_LEVEL", "25", "compression.level"),
        ("PGEC2_UPLOAD_CONCURRENCY", "0", "transfer.upload_concurrency"),
        ("PGEC2_DOWNLOAD_CONCURRENCY", "many", "whole number"),
        ("PGEC2_STORAGE_PREFIX", "a/../b", "storage.prefix"),
        ("PGEC2_S3_ENDPOINT", "localhost:9000", "http"),
        ("PGEC2_S3_SSE", "aes", "AES256 or aws:kms"),
        ("PGPORT", "70000", "postgres.port"),
        ("PGEC2_PART_SIZE_MIB", "0", "backup.part_size_mib"),
        ("PGEC2_PART_SIZE_MIB", "5", "backup.part_size_mib"),
        ("PGDATA", "relative/data", "absolute"),
    ];
    for (name, value, expected) in cases {
        let fixture = Fixture::new().env("PGEC2_STORAGE_URL", "file:///archive").env(name, value);
        let message = load_error(fixture);
        assert!(message.contains(expected), "{name}={value}: {message}");
        assert!(message.contains(&format!("env {name}")), "{name}={value}: {message}");
    }
}

#[test]
fn the_part_size_is_chosen_by_the_storage_unless_set() {
    let size = |url: &str, setting: Option<&str>| {
        let fixture = Fixture::new().env("PGEC2_STORAGE_URL", url);
        let fixture = match setting {
            Some(mib) => fixture.env("PGEC2_PART_SIZE_MIB", mib),
            None => fixture,
        };
        fixture.load().expect("load").backup_part_size()
    };
    assert_eq!(size("file:///archive", None), 2 << 20);
    assert_eq!(size("s3://bucket/prefix", None), 4 << 20);
    assert_eq!(size("file:///archive", Some("4")), 4 << 20);
    assert_eq!(size("s3://bucket/prefix", Some("1")), 1 << 20);
}

#[test]
fn a_kms_key_without_kms_encryption_is_refused() {
    let fixture = Fixture::new().env("PGEC2_STORAGE_URL", "s3://bucket/x").env("PGEC2_S3_KMS_KEY_ID", "alias/k");
    assert!(load_error(fixture).contains("aws:kms"));
}

#[test]
fn unknown_keys_and_bad_syntax_in_the_file_are_refused() {
    let message = load_error(Fixture::new().file("[storage]\nurll = \"file:///x\"\n"));
    assert!(message.contains("storage.urll") && message.contains("storage.url"), "{message}");
    let message = load_error(Fixture::new().file("[storage]\nurl = \n"));
    assert!(message.contains("not valid TOML") && message.contains("line 2"), "{message}");
    let message = load_error(Fixture::new().file("[storage]\nurl = [1, 2]\n"));
    assert!(message.contains("expected a string"), "{message}");
}

#[test]
fn an_invalid_secret_is_not_echoed() {
    let fixture = Fixture::new().file("[storage]\nurl = \"file:///x\"\n[postgres]\npassword = [\"hunter2\"]\n");
    let message = load_error(fixture);
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn integers_in_the_file_are_accepted_for_numeric_settings() {
    let fixture =
        Fixture::new().file("[storage]\nurl = \"file:///x\"\n[transfer]\nprefetch = 3\n[postgres]\nport = 5433\n");
    let config = fixture.load().expect("load");
    assert_eq!((config.transfer.prefetch, config.postgres.port), (3, 5433));
}

#[test]
fn a_wal_g_prefix_is_read_from_the_file_or_the_environment_and_must_be_a_storage_url() {
    let fixture = Fixture::new().file("[storage]\nurl = \"file:///srv/pgec2\"\nwalg_prefix = \"s3://old/orders\"\n");
    assert_eq!(fixture.load().expect("config").storage.walg_prefix.as_deref(), Some("s3://old/orders"));
    let fixture = fixture.env("PGEC2_WALG_PREFIX", "file:///srv/walg");
    assert_eq!(fixture.load().expect("config").storage.walg_prefix.as_deref(), Some("file:///srv/walg"));
    let fixture = fixture.env("PGEC2_WALG_PREFIX", "/srv/walg");
    let error = fixture.load().expect_err("a bare path is refused").to_string();
    assert!(error.contains("storage.walg_prefix"), "{error}");
}

#[test]
fn encryption_takes_one_key_and_older_keys_for_reading() {
    let config = Fixture::new()
        .file(
            "[storage]\nurl = \"file:///archive\"\n[encryption]\nmode = \"aes-256-gcm\"\nkey_file = \"/etc/pgec2/new.key\"\n\
             read_keys = \"file:/etc/pgec2/old.key, kms:alias/pgec2-2025\"\n",
        )
        .load()
        .expect("load");
    assert_eq!(config.encryption.mode, EncryptionMode::Aes256Gcm);
    assert_eq!(config.encryption.key, Some(KeySource::File("/etc/pgec2/new.key".into())));
    assert_eq!(
        config.encryption.read_keys,
        vec![KeySource::File("/etc/pgec2/old.key".into()), KeySource::Kms("alias/pgec2-2025".into())]
    );
    let again = AgentConfig::from_file_text(Path::new("again.toml"), &config.to_archive_toml()).expect("reparse");
    assert_eq!(again.encryption, config.encryption, "a restored cluster's configuration keeps the keys");
}

#[test]
fn encryption_without_a_key_or_with_two_keys_is_refused_naming_the_setting() {
    let url = ("PGEC2_STORAGE_URL", "file:///archive");
    let no_key = Fixture::new().env(url.0, url.1).env("PGEC2_ENCRYPTION", "aes-256-gcm").load().expect_err("no key");
    assert!(no_key.to_string().contains("encryption.mode") && no_key.to_string().contains("needs a key"), "{no_key}");
    let two = Fixture::new()
        .env(url.0, url.1)
        .env("PGEC2_ENCRYPTION", "aes-256-gcm")
        .env("PGEC2_ENCRYPTION_KEY_FILE", "/k")
        .env("PGEC2_ENCRYPTION_KMS_KEY_ID", "alias/k")
        .load()
        .expect_err("two keys");
    assert!(two.to_string().contains("only one"), "{two}");
    let unused = Fixture::new().env(url.0, url.1).env("PGEC2_ENCRYPTION_KEY_ENV", "KEY").load().expect_err("unused");
    assert!(unused.to_string().contains("encryption.key_env"), "{unused}");
    let bad = Fixture::new().env(url.0, url.1).env("PGEC2_ENCRYPTION_READ_KEYS", "old.key").load().expect_err("bad");
    assert!(bad.to_string().contains("file:/absolute/path"), "{bad}");
}
