//! Client-side encryption with a real PostgreSQL 15: encrypted base backups and WAL restore
//! exactly on the file store and on S3 (moto, with server-side encryption and a KMS key); the
//! stored bytes hold no plaintext; a wrong or missing key and a flipped ciphertext byte fail
//! clearly with nothing written; a rotated key-encryption key keeps old backups restorable.

mod backup_support;
mod wal_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use backup_support::{Primary, assert_success, stderr, table_digests};
use pgec2_core::encryption::{KeyProvider, StaticKey};
use pgec2_testkit::{MotoServer, Scratch, as_postgres};
use wal_common::{Agent, COMMAND_DEADLINE, run_with_deadline, runtime, s3_agent};

const BACKUP_MARKER: &str = "PGEC2-PLAINTEXT-IN-THE-BACKUP";
const WAL_MARKER: &str = "PGEC2-PLAINTEXT-IN-THE-WAL";

/// Writes a key file readable by PostgreSQL's user; returns its path and the key's id.
fn key_file(scratch: &Scratch, name: &str, byte: u8) -> (PathBuf, String) {
    let path = scratch.path().join(name);
    std::fs::write(&path, format!("{}\n", format!("{byte:02x}").repeat(32))).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod key");
    let id = StaticKey::from_file(&path).expect("key").key_id().to_string();
    (path, id)
}

/// An agent archiving to `<scratch>/archive` uncompressed (so plaintext would show), encrypting
/// with a key file; returns it with the archive directory, the key's path and id.
fn encrypting_agent() -> (Agent, PathBuf, PathBuf, String) {
    let scratch = Scratch::new().expect("scratch");
    let archive = scratch.subdir("archive").expect("archive dir");
    let (key, key_id) = key_file(&scratch, "archive.key", 0x11);
    let config = format!(
        "[storage]\nurl = \"file://{}\"\n\n[compression]\nalgorithm = \"none\"\n\n[encryption]\nmode = \"aes-256-gcm\"\nkey_file = \"{}\"\n",
        archive.display(),
        key.display()
    );
    (Agent::with_config(scratch, &config, Vec::new()), archive, key, key_id)
}

/// Writes rows holding `marker` (many times, so they fill pages of their own).
fn write_marked_rows(primary: &Primary, table: &str, marker: &str) {
    let sql = format!("CREATE TABLE {table} AS SELECT '{marker}-' || n AS secret FROM generate_series(1, 20000) n");
    primary.cluster.psql(&sql).expect("write marked rows");
}

/// Every file below `dir`.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| entry.into_path())
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle.as_bytes())
}

/// Is `name` a WAL segment's file name (24 hexadecimal digits)?
fn is_segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// Runs the agent with another configuration file (same scratch, same user, no extra env).
fn agent_with_config(agent: &Agent, config: &Path, args: &[&str]) -> Output {
    let mut command = as_postgres(&agent.binary);
    command.env_clear().env("PATH", "/usr/bin:/bin").arg("--config").arg(config).args(args);
    command.current_dir(agent.scratch.path());
    run_with_deadline(command, COMMAND_DEADLINE * 2)
}

/// Writes a configuration file for the same archive with `encryption` as its `[encryption]` section.
fn write_config(agent: &Agent, archive: &Path, name: &str, encryption: &str) -> PathBuf {
    let path = agent.scratch.path().join(name);
    let text = format!("[storage]\nurl = \"file://{}\"\n\n{encryption}", archive.display());
    std::fs::write(&path, text).expect("write config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod config");
    path
}

#[test]
fn an_encrypted_backup_and_its_wal_restore_exactly_and_the_store_holds_no_plaintext() {
    let (agent, archive, _, key_id) = encrypting_agent();
    let primary = Primary::start_with(agent);
    write_marked_rows(&primary, "in_backup", BACKUP_MARKER);
    primary.cluster.psql("CHECKPOINT").expect("checkpoint");
    let backup = primary.backup();
    write_marked_rows(&primary, "in_wal", WAL_MARKER);
    primary.cluster.run_tool("pgbench", &["-n", "-c", "2", "-t", "200"]).expect("pgbench");
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);

    let data_files = files_below(&primary.cluster.data_dir);
    let source_has_it = data_files.iter().any(|file| contains(&std::fs::read(file).unwrap_or_default(), BACKUP_MARKER));
    assert!(source_has_it, "the data directory holds the marker in the clear (the check below means something)");
    let (mut segments, mut parts) = (0, 0);
    for file in files_below(&archive) {
        let bytes = std::fs::read(&file).expect("read stored object");
        for marker in [BACKUP_MARKER, WAL_MARKER] {
            assert!(!contains(&bytes, marker), "{} holds {marker} in the clear", file.display());
        }
        let name = file.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let is_part = file.parent().is_some_and(|parent| parent.ends_with("parts"));
        if is_segment(&name) || is_part {
            assert_eq!(bytes[8], 2, "{} is an encrypted object (format version 2)", file.display());
            assert!(contains(&bytes, &key_id), "{} names its key {key_id}", file.display());
            if is_part { parts += 1 } else { segments += 1 }
        }
    }
    assert!(parts > 0 && segments > 0, "{parts} parts and {segments} segments were checked");

    assert_success("backup-verify", &primary.agent(&["backup-verify", &backup.name]));
    let restored = primary.restore_copy("restored", "LATEST", &[]);
    assert_eq!(table_digests(&restored), expected, "the restored tables differ from the source");
}

#[test]
fn a_wrong_key_a_missing_key_and_a_flipped_byte_fail_clearly_and_write_nothing() {
    let (agent, archive, _, key_id) = encrypting_agent();
    let primary = Primary::start_with(agent);
    let backup = primary.backup();
    primary.archive_current_wal();
    let (wrong_key, _) = key_file(&primary.agent.scratch, "wrong.key", 0x22);
    let wrong = write_config(
        &primary.agent,
        &archive,
        "wrong.toml",
        &format!("[encryption]\nmode = \"aes-256-gcm\"\nkey_file = \"{}\"\n", wrong_key.display()),
    );
    let missing = write_config(&primary.agent, &archive, "missing.toml", "");
    let scratch = primary.agent.scratch.subdir("attempts").expect("attempts dir");

    for (config, what) in [(&wrong, "the wrong key"), (&missing, "no key")] {
        let dest = scratch.join(format!("restore-{}", config.file_stem().and_then(|s| s.to_str()).unwrap_or("x")));
        let output =
            agent_with_config(&primary.agent, config, &["backup-fetch", dest.to_str().expect("utf-8"), &backup.name]);
        assert!(!output.status.success(), "backup-fetch with {what} must fail");
        let first_line = stderr(&output).lines().next().unwrap_or_default().to_string();
        assert!(first_line.contains(&key_id) && first_line.contains("parts/000000"), "with {what}: {first_line}");
        assert!(!first_line.contains("damaged"), "a key problem is not reported as damage: {first_line}");
        let left = std::fs::read_dir(&dest).map(|entries| entries.count()).unwrap_or(0);
        assert_eq!(left, 0, "backup-fetch with {what} left {left} entries in {}", dest.display());
    }

    let segment = files_below(&archive.join("wal"))
        .into_iter()
        .filter_map(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
        .filter(|name| is_segment(name))
        .min()
        .expect("an archived segment");
    for (config, what) in [(&wrong, "the wrong key"), (&missing, "no key")] {
        let dest = scratch.join(format!("{segment}.{what}").replace(' ', "-"));
        let output = agent_with_config(&primary.agent, config, &["wal-fetch", &segment, dest.to_str().expect("utf-8")]);
        assert!(!output.status.success() && output.status.code() != Some(1), "wal-fetch with {what} fails loudly");
        let first_line = stderr(&output).lines().next().unwrap_or_default().to_string();
        assert!(first_line.contains(&key_id) && first_line.contains(&segment), "with {what}: {first_line}");
        assert!(!dest.exists(), "wal-fetch with {what} wrote {}", dest.display());
    }

    let stored = archive.join("wal").join(&segment);
    let mut bytes = std::fs::read(&stored).expect("read segment object");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&stored, &bytes).expect("flip a ciphertext byte");
    let dest = scratch.join(format!("{segment}.flipped"));
    let output = primary.agent(&["wal-fetch", &segment, dest.to_str().expect("utf-8")]);
    assert!(!output.status.success(), "a flipped ciphertext byte must fail wal-fetch");
    assert!(stderr(&output).contains("corrupt"), "{}", stderr(&output));
    assert!(!dest.exists(), "nothing written for a flipped byte");
}

#[test]
fn after_rotating_the_key_old_backups_still_restore_and_new_objects_use_the_new_key() {
    let (agent, archive, old_key, old_id) = encrypting_agent();
    let primary = Primary::start_with(agent);
    let old_backup = primary.backup();
    primary.cluster.run_tool("pgbench", &["-n", "-c", "1", "-t", "200"]).expect("pgbench");
    primary.archive_current_wal();

    let (new_key, new_id) = key_file(&primary.agent.scratch, "new.key", 0x33);
    let rotated = format!(
        "[storage]\nurl = \"file://{}\"\n\n[compression]\nalgorithm = \"none\"\n\n[encryption]\nmode = \"aes-256-gcm\"\nkey_file = \"{}\"\nread_keys = \"file:{}\"\n",
        archive.display(),
        new_key.display(),
        old_key.display()
    );
    std::fs::write(&primary.agent.config, rotated).expect("rotate the key in the configuration");
    primary.cluster.run_tool("pgbench", &["-n", "-c", "1", "-t", "200"]).expect("pgbench after rotation");
    primary.archive_current_wal();
    let new_backup = primary.backup();
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);

    let part_of =
        |backup: &str| std::fs::read(archive.join("backups").join(backup).join("parts/000000")).expect("part");
    assert!(contains(&part_of(&old_backup.name), &old_id), "the old backup keeps naming the old key");
    assert!(contains(&part_of(&new_backup.name), &new_id), "the new backup names the new key");
    let restored = primary.restore_copy("old", &old_backup.name, &[]);
    assert_eq!(table_digests(&restored), expected, "the old backup replays WAL of both keys to the end");
}

#[test]
fn encrypted_backups_and_wal_round_trip_on_s3_with_sse_and_a_kms_key() {
    let moto = MotoServer::start().expect("moto server");
    let rt = runtime();
    rt.block_on(moto.create_bucket("pgec2-encrypted")).expect("create bucket");
    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::from(&rt.block_on(moto.sdk_config())).endpoint_url(moto.endpoint()).build(),
    );
    let created = rt.block_on(kms.create_key().send()).expect("create a KMS key in moto");
    let key_id = created.key_metadata().map(|metadata| metadata.key_id().to_string()).expect("key id");
    let extra = format!(
        "sse = \"AES256\"\n\n[compression]\nalgorithm = \"none\"\n\n[encryption]\nmode = \"aes-256-gcm\"\nkms_key_id = \"{key_id}\"\nkms_endpoint = \"{}\"\n",
        moto.endpoint()
    );
    let primary = Primary::start_with(s3_agent(&moto, "pgec2-encrypted", "default/orders", &moto.endpoint(), &extra));
    write_marked_rows(&primary, "in_backup", BACKUP_MARKER);
    let backup = primary.backup();
    write_marked_rows(&primary, "in_wal", WAL_MARKER);
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);

    let archive = rt.block_on(wal_common::direct_s3_archive(&moto, "pgec2-encrypted", "default/orders"));
    let objects = rt.block_on(archive.storage.list("")).expect("list the bucket");
    let mut encrypted = 0;
    for object in &objects {
        let bytes = rt.block_on(archive.storage.get(&object.key)).expect("get object");
        for marker in [BACKUP_MARKER, WAL_MARKER] {
            assert!(!contains(&bytes, marker), "{} holds {marker} in the clear", object.key);
        }
        if bytes.len() > 8 && bytes[8] == 2 {
            assert!(contains(&bytes, &format!("kms:{key_id}")), "{} names the KMS key", object.key);
            encrypted += 1;
        }
    }
    assert!(encrypted >= 2, "parts and segments are encrypted ({encrypted} of {} objects)", objects.len());
    assert_success("backup-verify", &primary.agent(&["backup-verify", &backup.name]));
    let restored = primary.restore_copy("restored", "LATEST", &[]);
    assert_eq!(table_digests(&restored), expected, "the restored tables differ from the source");
}
