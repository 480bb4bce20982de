//! Switching from wal-g with a real PostgreSQL 15 and a real wal-g-compatible tool (walross,
//! `walrus`, which writes wal-g's layout): a wal-g backup taken under pgbench load, WAL archived
//! by wal-g, then `archive_command` switched to pgec2 and more rows written. pgec2, pointed at
//! the wal-g prefix (`storage.walg_prefix`), restores to a time after the switch with exactly
//! the committed rows, for each compression wal-g writes (lz4, zstd, brotli, lzma).
//! `import-check` reports the backups and a gap when a segment is removed; retention keeps what
//! a wal-g backup replays and never deletes wal-g's objects.
//!
//! Encrypted wal-g archives: walross supports wal-g's libsodium encryption (`WALG_LIBSODIUM_KEY`,
//! `_KEY_PATH`, `_KEY_TRANSFORM`), so it writes them here under the real PostgreSQL; walross
//! encrypts with the dryoc crate, as pgec2 reads, so the format's match with libsodium itself is
//! proved separately by pgec2-core's unit tests on objects libsodium wrote
//! (crates/core/src/walg/testdata).
//!
//! walross is found through `$PGEC2_WALG_BINARY`, else `walrus` on PATH, else
//! `~/.cargo/bin/walrus`; scripts/install-deps.sh installs it.

mod backup_support;
mod wal_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use backup_support::{Mark, Primary, assert_success, batches_present, commit_batch, run_agent};
use pgec2_testkit::{MotoServer, PgCluster, Scratch, as_postgres};
use wal_common::{Agent, run_with_deadline, runtime, switch_segment, wait_until_archived};

const BUCKET: &str = "walg-switch";
/// The libsodium key wal-g encrypts with in the encrypted tests, as hex.
const LIBSODIUM_KEY_HEX: &str = "5f0c8a3e9b7d41a2c6e1f0b3d8a7c5e2941b6d3f0a8c7e5b2d4f6a1c3e5b7d90";

/// The wal-g-compatible tool, or a panic saying how to install it.
fn walrus_binary() -> PathBuf {
    let from_env = std::env::var_os("PGEC2_WALG_BINARY").map(PathBuf::from);
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("walrus")).find(|file| file.is_file()));
    let in_cargo = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin/walrus"));
    from_env.or(on_path).or(in_cargo.filter(|file| file.is_file())).unwrap_or_else(|| {
        panic!(
            "walross (walrus) is not installed: run scripts/install-deps.sh or \
             `cargo install wal-rus --version 0.4.1`, or set PGEC2_WALG_BINARY to its path"
        )
    })
}

/// A cluster archiving with walross, and a pgec2 agent whose archive is empty and whose
/// `storage.walg_prefix` is walross's archive: a directory, or a bucket in moto.
struct Switch {
    primary: Primary,
    walrus: PathBuf,
    /// The wal-g archive's directory (file store only).
    walg_dir: PathBuf,
    /// What points walross at its archive.
    walg_env: Vec<(String, String)>,
    _moto: Option<MotoServer>,
}

impl Switch {
    /// Both archives in directories.
    fn start(compression: &'static str) -> Self {
        let scratch = Scratch::new().expect("scratch");
        let archive = scratch.subdir("archive").expect("archive dir");
        let walg_dir = scratch.subdir("walg").expect("wal-g dir");
        let toml = format!(
            "[storage]\nurl = \"file://{}\"\nwalg_prefix = \"file://{}\"\n",
            archive.display(),
            walg_dir.display()
        );
        let agent = Agent::with_config(scratch, &toml, Vec::new());
        let walg_env = vec![("WALG_FILE_PREFIX".to_string(), walg_dir.display().to_string())];
        Self::with_agent(agent, walg_dir, walg_env, compression, None)
    }

    /// Both archives in directories, wal-g's encrypted with libsodium key [`LIBSODIUM_KEY_HEX`]
    /// from a key file, which pgec2 reads as wal-g does (`[walg]` in its configuration).
    fn start_encrypted(compression: &'static str) -> Self {
        let scratch = Scratch::new().expect("scratch");
        let archive = scratch.subdir("archive").expect("archive dir");
        let walg_dir = scratch.subdir("walg").expect("wal-g dir");
        let key_file = scratch.path().join("libsodium.key");
        std::fs::write(&key_file, format!("{LIBSODIUM_KEY_HEX}\n")).expect("key file");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod key file");
        let toml = format!(
            "[storage]\nurl = \"file://{}\"\nwalg_prefix = \"file://{}\"\n\n[walg]\nlibsodium_key_path = \"{}\"\n\
             libsodium_key_transform = \"hex\"\n",
            archive.display(),
            walg_dir.display(),
            key_file.display()
        );
        let agent = Agent::with_config(scratch, &toml, Vec::new());
        let walg_env = vec![
            ("WALG_FILE_PREFIX".to_string(), walg_dir.display().to_string()),
            ("WALG_LIBSODIUM_KEY_PATH".to_string(), key_file.display().to_string()),
            ("WALG_LIBSODIUM_KEY_TRANSFORM".to_string(), "hex".to_string()),
        ];
        Self::with_agent(agent, walg_dir, walg_env, compression, None)
    }

    /// Both archives in one bucket of a moto server, at different prefixes.
    fn start_on_s3(compression: &'static str) -> Self {
        let moto = MotoServer::start().expect("moto");
        runtime().block_on(moto.create_bucket(BUCKET)).expect("bucket");
        let walg_prefix = format!("walg_prefix = \"s3://{BUCKET}/walg\"\n");
        let agent = wal_common::s3_agent(&moto, BUCKET, "db", &moto.endpoint(), &walg_prefix);
        let mut walg_env: Vec<(String, String)> = moto
            .env()
            .into_iter()
            .filter(|(name, _)| name.starts_with("AWS_"))
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        walg_env.push(("WALG_S3_PREFIX".to_string(), format!("s3://{BUCKET}/walg")));
        walg_env.push(("AWS_ENDPOINT".to_string(), moto.endpoint()));
        walg_env.push(("AWS_S3_FORCE_PATH_STYLE".to_string(), "true".to_string()));
        Self::with_agent(agent, PathBuf::new(), walg_env, compression, Some(moto))
    }

    fn with_agent(
        agent: Agent,
        walg_dir: PathBuf,
        mut walg_env: Vec<(String, String)>,
        compression: &'static str,
        moto: Option<MotoServer>,
    ) -> Self {
        let walrus = agent.scratch.install_binary(&walrus_binary()).expect("install walrus");
        walg_env.push(("WALG_COMPRESSION_METHOD".to_string(), compression.to_string()));
        let assignments: String = walg_env.iter().map(|(name, value)| format!("{name}={value} ")).collect();
        let walg_archive = format!("archive_command = 'env {assignments}{} wal-push %p'", walrus.display());
        let extra = ["checkpoint_timeout = 30min", "max_wal_size = 1GB", walg_archive.as_str()];
        let mut cluster = agent.archiving_cluster("primary", &extra);
        cluster.server_env = agent.env.clone();
        cluster.start().expect("start primary");
        cluster.run_tool("pgbench", &["-i", "-q", "-s", "1"]).expect("pgbench -i");
        cluster.psql("CREATE TABLE batches (id serial PRIMARY KEY, batch int NOT NULL)").expect("create table");
        Self { primary: Primary { agent, cluster }, walrus, walg_dir, walg_env, _moto: moto }
    }

    fn walrus(&self, args: &[&str]) -> Output {
        let cluster = &self.primary.cluster;
        let mut command: Command = as_postgres(&self.walrus);
        command
            .envs(self.walg_env.iter().map(|(name, value)| (name, value)))
            .env("PGHOST", &cluster.socket_dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres")
            .env("PGDATA", &cluster.data_dir)
            .args(args)
            .current_dir(self.primary.agent.scratch.path());
        run_with_deadline(command, Duration::from_secs(120))
    }

    /// A wal-g base backup taken while pgbench writes.
    fn walg_backup_under_load(&self) {
        let cluster = &self.primary.cluster;
        let mut load = as_postgres(cluster.bin_dir.join("pgbench"));
        load.env("PGHOST", &cluster.socket_dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres")
            .args(["-n", "-c", "2", "-T", "4"])
            .stdout(std::process::Stdio::null());
        let mut load = load.spawn().expect("start pgbench");
        std::thread::sleep(Duration::from_millis(500));
        let data_dir = cluster.data_dir.display().to_string();
        let output = self.walrus(&["backup-push", &data_dir]);
        assert_success("walrus backup-push", &output);
        assert!(load.wait().expect("pgbench").success(), "pgbench ran through the backup");
    }

    /// Points archive_command at pgec2-agent wal-push.
    fn switch_to_pgec2(&self) {
        let cluster = &self.primary.cluster;
        cluster.append_config(&self.primary.agent.archive_command()).expect("archive_command");
        cluster.psql("SELECT pg_reload_conf()").expect("reload");
        std::thread::sleep(Duration::from_millis(300));
        let active = cluster.psql("SHOW archive_command").expect("show archive_command");
        assert!(active.contains("pgec2-agent"), "archive_command switched: {active}");
    }

    /// A wal-g backup under load, batch 1 archived by wal-g, the switch, batch 2 archived by
    /// pgec2; returns where batch 2 ended.
    fn through_the_switch(switch: Self) -> (Self, Mark) {
        switch.walg_backup_under_load();
        commit_batch(&switch.primary.cluster, 1);
        switch.primary.archive_current_wal();
        switch.switch_to_pgec2();
        let second = commit_batch(&switch.primary.cluster, 2);
        switch.primary.archive_current_wal();
        (switch, second)
    }

    fn agent(&self, args: &[&str]) -> Output {
        run_agent(&self.primary.agent, args, &self.primary.connection_env(), true)
    }
}

/// The story every compression variant runs: rows before the switch reach wal-g's archive,
/// rows after it pgec2's; a restore to a time after the switch brings back exactly the rows
/// committed up to it. Returns the switch for more checks.
fn restores_across_the_switch(switch: Switch, compression: &str) -> Switch {
    let (switch, second) = Switch::through_the_switch(switch);
    commit_batch(&switch.primary.cluster, 3);
    switch.primary.archive_current_wal();

    let listed = switch.agent(&["backup-list", "--json"]);
    assert_success("backup-list", &listed);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("backup-list --json");
    let formats: Vec<&str> =
        listed.as_array().expect("list").iter().filter_map(|entry| entry["format"].as_str()).collect();
    assert_eq!(formats, vec!["wal-g"], "the wal-g backup is listed, marked as wal-g's");

    let target = ["--target-time", second.time.as_str(), "--target-action", "promote"];
    let mut restored: PgCluster = switch.primary.restore_copy("after-switch", "LATEST", &target);
    assert_eq!(batches_present(&restored), vec![1, 2], "exactly the rows committed up to the target ({compression})");
    let history = restored.psql("SELECT count(*) > 0 FROM pgbench_history").expect("pgbench_history");
    assert_eq!(history, "t", "the pgbench load before the backup's end is there");
    restored.stop().expect("stop");
    switch
}

#[test]
fn a_wal_g_history_restores_past_the_switch_to_pgec2_with_zstd() {
    restores_across_the_switch(Switch::start("zstd"), "zstd");
}

#[test]
fn a_wal_g_history_restores_past_the_switch_to_pgec2_with_lz4() {
    restores_across_the_switch(Switch::start("lz4"), "lz4");
}

#[test]
fn a_wal_g_history_restores_past_the_switch_to_pgec2_with_brotli() {
    restores_across_the_switch(Switch::start("brotli"), "brotli");
}

#[test]
fn a_wal_g_history_restores_past_the_switch_to_pgec2_with_lzma() {
    restores_across_the_switch(Switch::start("lzma"), "lzma");
}

#[test]
fn a_wal_g_history_in_s3_restores_past_the_switch_to_pgec2_in_the_same_bucket() {
    restores_across_the_switch(Switch::start_on_s3("lz4"), "lz4 on S3");
}

#[test]
fn import_check_reports_the_wal_g_backups_and_a_gap_when_a_segment_is_missing() {
    let switch = Switch::start("zstd");
    switch.walg_backup_under_load();
    let mut archived = Vec::new();
    for batch in 1..=3 {
        commit_batch(&switch.primary.cluster, batch);
        let segment = switch_segment(&switch.primary.cluster);
        wait_until_archived(&switch.primary.cluster, &segment);
        archived.push(segment);
    }
    let report = switch.agent(&["import-check", "--json"]);
    assert_success("import-check", &report);
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).expect("import-check --json");
    assert_eq!(json["backups"].as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json["backups"][0]["restorable"], true);
    assert_eq!(json["gaps"].as_array().map(Vec::len), Some(0));

    let removed = switch.walg_dir.join("wal_005").join(format!("{}.zst", archived[1]));
    std::fs::remove_file(&removed).expect("remove a wal-g segment");
    let report = switch.agent(&["import-check", "--json"]);
    assert_eq!(report.status.code(), Some(2), "a gap fails the check");
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).expect("import-check --json");
    assert_eq!(json["gaps"][0]["first"], archived[1].as_str(), "{json}");
    assert_eq!(json["restorable_to_newest"], false);
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| entry.path().strip_prefix(dir).expect("under dir").display().to_string())
        .collect();
    files.sort();
    files
}

#[test]
fn retention_keeps_the_wal_a_wal_g_backup_replays_and_never_touches_wal_g_objects() {
    let (switch, second) = Switch::through_the_switch(Switch::start("zstd"));
    switch.primary.backup();
    commit_batch(&switch.primary.cluster, 3);
    switch.primary.backup();
    switch.primary.archive_current_wal();
    let walg_before = files_under(&switch.walg_dir);

    let deleted = switch.agent(&["delete", "retain", "1", "--confirm", "--json"]);
    assert_success("delete retain 1", &deleted);
    let plan: serde_json::Value = serde_json::from_slice(&deleted.stdout).expect("delete --json");
    assert_eq!(plan["backups"].as_array().map(Vec::len), Some(1), "the older pgec2 backup goes: {plan}");
    assert_eq!(plan["wal"].as_array().map(Vec::len), Some(0), "pgec2's WAL after the wal-g backup stays: {plan}");
    assert_eq!(files_under(&switch.walg_dir), walg_before, "no wal-g object is deleted");

    let listed = switch.agent(&["backup-list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("backup-list --json");
    let walg_name = listed
        .as_array()
        .and_then(|entries| entries.iter().find(|entry| entry["format"] == "wal-g"))
        .and_then(|entry| entry["name"].as_str())
        .expect("the wal-g backup is listed")
        .to_string();
    let target = ["--target-time", second.time.as_str(), "--target-action", "promote"];
    let mut restored = switch.primary.restore_copy("walg-after-retention", &walg_name, &target);
    assert_eq!(batches_present(&restored), vec![1, 2], "the wal-g backup still recovers past the switch");
    restored.stop().expect("stop");
}

#[test]
fn wal_fetch_of_a_damaged_wal_g_segment_fails_naming_it_and_writes_nothing() {
    let scratch = Scratch::new().expect("scratch");
    let archive = scratch.subdir("archive").expect("archive dir");
    let walg_dir = scratch.subdir("walg").expect("wal-g dir");
    let wal_dir = walg_dir.join("wal_005");
    std::fs::create_dir_all(&wal_dir).expect("wal_005");
    std::fs::write(wal_dir.join("000000010000000000000005.zst"), b"not zstd at all").expect("damaged segment");
    let toml =
        format!("[storage]\nurl = \"file://{}\"\nwalg_prefix = \"file://{}\"\n", archive.display(), walg_dir.display());
    let agent = Agent::with_config(scratch, &toml, Vec::new());
    let out_dir = agent.scratch.subdir("out").expect("out dir");
    let dest = out_dir.join("RECOVERYXLOG");

    let fetched = agent.run(&["wal-fetch", "000000010000000000000005", dest.to_str().expect("utf-8")], &out_dir);
    let stderr = String::from_utf8_lossy(&fetched.stderr);
    assert!(!fetched.status.success(), "a damaged segment is not served");
    assert!(stderr.contains("wal_005/000000010000000000000005.zst"), "the object is named: {stderr}");
    assert!(!dest.exists(), "nothing is written");
    let leftovers = std::fs::read_dir(&out_dir).expect("read out dir").count();
    assert_eq!(leftovers, 0, "no temporary file is left");

    let missing = agent.run(&["wal-fetch", "000000010000000000000006", dest.to_str().expect("utf-8")], &out_dir);
    assert_eq!(missing.status.code(), Some(1), "a segment neither archive has is the end of the archive");
}

/// Whether every object under the wal-g archive's `dir` looks encrypted: none starts as lz4.
fn all_encrypted(walg_dir: &Path, dir: &str) -> bool {
    let objects: Vec<PathBuf> = files_under(&walg_dir.join(dir))
        .into_iter()
        .filter(|file| file.ends_with(".lz4"))
        .map(|file| walg_dir.join(dir).join(file))
        .collect();
    !objects.is_empty()
        && objects.iter().all(|file| !std::fs::read(file).expect("read").starts_with(&[0x04, 0x22, 0x4d, 0x18]))
}

#[test]
fn an_encrypted_wal_g_history_restores_past_the_switch_with_the_key_wal_g_used() {
    let switch = restores_across_the_switch(Switch::start_encrypted("lz4"), "lz4, libsodium");
    assert!(all_encrypted(&switch.walg_dir, "wal_005"), "wal-g encrypted its WAL");
    assert!(all_encrypted(&switch.walg_dir, "basebackups_005"), "wal-g encrypted its partitions");
    let report = switch.agent(&["import-check", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).expect("import-check --json");
    assert_eq!(json["read_check"]["error"], serde_json::Value::Null, "the newest backup reads: {json}");
}

/// Rewrites the agent's configuration: the same archives, with `walg_section` as `[walg]`.
fn reconfigure(switch: &Switch, walg_section: &str) {
    let config = &switch.primary.agent.config;
    let text = std::fs::read_to_string(config).expect("read config");
    let storage = text.split("[walg]").next().expect("storage section").trim_end();
    std::fs::write(config, format!("{storage}\n\n[walg]\n{walg_section}")).expect("write config");
}

#[test]
fn an_encrypted_wal_g_archive_read_without_its_key_or_with_another_fails_naming_the_key_and_writes_nothing() {
    let switch = Switch::start_encrypted("lz4");
    switch.walg_backup_under_load();
    commit_batch(&switch.primary.cluster, 1);
    let segment = switch_segment(&switch.primary.cluster);
    wait_until_archived(&switch.primary.cluster, &segment);
    let out_dir = switch.primary.agent.scratch.subdir("out").expect("out dir");
    let wal_dest = out_dir.join("RECOVERYXLOG");
    let wrong_key = format!("libsodium_key = \"{}\"\nlibsodium_key_transform = \"hex\"\n", "ab".repeat(32));
    for (walg_section, named) in
        [("", "WALG_LIBSODIUM_KEY"), (wrong_key.as_str(), "walg.libsodium_key (WALG_LIBSODIUM_KEY)")]
    {
        reconfigure(&switch, walg_section);
        let listed = switch.agent(&["backup-list", "--json"]);
        assert_success("backup-list (sentinels are not encrypted)", &listed);

        let fetched = switch.agent(&["wal-fetch", &segment, wal_dest.to_str().expect("utf-8")]);
        let stderr = String::from_utf8_lossy(&fetched.stderr);
        assert!(!fetched.status.success(), "wal-fetch fails without the right key");
        assert!(stderr.contains(named) && stderr.contains(&format!("wal_005/{segment}.lz4")), "{stderr}");
        assert_eq!(std::fs::read_dir(&out_dir).expect("read out dir").count(), 0, "wal-fetch wrote nothing");

        let (dest, restored) = switch.primary.restore("no-key", "LATEST", &[]);
        let stderr = String::from_utf8_lossy(&restored.stderr);
        assert!(!restored.status.success(), "backup-fetch fails without the right key");
        let first_line = stderr.lines().next().unwrap_or_default();
        assert!(first_line.contains(named) && first_line.contains("basebackups_005/"), "{stderr}");
        assert!(!dest.exists() || files_under(&dest).is_empty(), "nothing restored is left: {:?}", files_under(&dest));

        let checked = switch.agent(&["import-check", "--json"]);
        assert_eq!(checked.status.code(), Some(2), "import-check fails the read check");
        let json: serde_json::Value = serde_json::from_slice(&checked.stdout).expect("import-check --json");
        assert!(json["read_check"]["error"].as_str().is_some_and(|error| error.contains(named)), "{json}");
    }
}

#[test]
fn delete_with_include_wal_g_deletes_the_wal_g_backups_over_the_window_and_wal_g_wal_before_the_oldest_kept_backup() {
    let (switch, _) = Switch::through_the_switch(Switch::start("zstd"));
    switch.primary.backup();
    commit_batch(&switch.primary.cluster, 3);
    switch.primary.archive_current_wal();
    let walg_before = files_under(&switch.walg_dir);
    let plan_of = |output: &Output| -> serde_json::Value {
        assert_success("delete", output);
        serde_json::from_slice(&output.stdout).expect("delete --json")
    };

    let by_default = plan_of(&switch.agent(&["delete", "retain", "1", "--confirm", "--json"]));
    let walg_name = by_default["walg"]["over_window_kept"][0].as_str().expect("the wal-g backup is over the window");
    assert!(by_default["walg"]["backups"].as_array().is_some_and(Vec::is_empty), "{by_default}");
    assert_eq!(files_under(&switch.walg_dir), walg_before, "without --include-wal-g no wal-g object is deleted");

    let dry_run = plan_of(&switch.agent(&["delete", "retain", "1", "--include-wal-g", "--json"]));
    assert_eq!(dry_run["walg"]["backups"][0], walg_name, "{dry_run}");
    assert_eq!(files_under(&switch.walg_dir), walg_before, "a dry run deletes nothing");

    let confirmed = plan_of(&switch.agent(&["delete", "retain", "1", "--include-wal-g", "--confirm", "--json"]));
    let own_start = switch.primary.backups()[0].start_lsn;
    let boundary = format!("{:08X}{:08X}", own_start.0 >> 32, (own_start.0 & 0xffff_ffff) >> 24);
    let left = files_under(&switch.walg_dir);
    assert!(left.iter().all(|file| file.starts_with("wal_005/")), "the wal-g backup is gone: {left:?}");
    assert!(
        left.iter().all(|file| file.contains(".history") || file["wal_005/".len() + 8..] >= *boundary.as_str()),
        "only wal-g WAL from the kept backup's start ({boundary}) on is left: {left:?} ({confirmed})"
    );
    assert!(!confirmed["walg"]["wal"].as_array().is_some_and(Vec::is_empty), "old wal-g WAL went: {confirmed}");
    let listed = switch.agent(&["backup-list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("backup-list --json");
    assert!(listed.as_array().expect("list").iter().all(|entry| entry["format"] != "wal-g"), "{listed}");

    let mut restored = switch.primary.restore_copy("after-walg-retention", "LATEST", &[]);
    assert_eq!(batches_present(&restored), vec![1, 2, 3], "pgec2's backup still restores to the end");
    restored.stop().expect("stop");
}

#[test]
fn include_wal_g_with_garbage_is_refused_naming_where_it_applies() {
    let switch = Switch::start("zstd");
    let garbage = switch.agent(&["delete", "garbage", "--include-wal-g"]);
    assert!(!garbage.status.success());
    assert!(String::from_utf8_lossy(&garbage.stderr).contains("--include-wal-g applies to retain and before"));
}
