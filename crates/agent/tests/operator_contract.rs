//! The contract between the operator and the agent, checked from the agent's side with its real
//! parts: every command the operator can send (the `pgec2-contract` command types, with every
//! option set and user input in the annotations) is parsed by the agent's real clap parser into
//! the same values, and every answer the agent's real JSON rendering produces is read by the
//! operator's parser (`pgec2_contract::output`) into the same value. A stdout with a log line
//! before the document breaks the contract and is refused, as `pgec2_contract::output` documents.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use clap::Parser;
use pgec2_agent::cli::{BackupPushArgs, Cli, Command, DrillCheckArgs, HostCommand, JsonArgs, WalReceiveArgs};
use pgec2_contract::annotation::Annotation;
use pgec2_contract::command::{
    AgentCommand, ArchiveStatus, BackupPush, DrillCheck, HostApply, SqlCheck, WalReceive, WalReceiveStatus,
};
use pgec2_contract::output::parse_json;
use pgec2_core::archiver::ArchiverStatus;
use pgec2_core::catalog::BackupInfo;
use pgec2_core::drill_check::{CheckOutcome, DrillCheckReport};
use pgec2_core::host_spec::{HostReport, PostgresFacts, Profile, StepOutcome, StepReport};
use pgec2_core::stream_status::{StreamStatus, StreamWarning};
use pgec2_core::wal::Lsn;
use serde::Serialize;
use serde::de::DeserializeOwned;

const CONFIG: &str = "/opt/pgec2/agent.toml";

/// Every shape of command the operator sends.
fn operator_commands() -> Vec<AgentCommand> {
    let annotation = |key: &str, value: &str| Annotation::new(key, value).expect("a valid annotation");
    vec![
        AgentCommand::from(HostApply { spec: "/opt/pgec2/host-spec.json".into() }),
        AgentCommand::from(HostApply { spec: "/srv/it's here/host-spec.json".into() }),
        AgentCommand::from(BackupPush::default()),
        AgentCommand::from(BackupPush {
            permanent: true,
            annotations: vec![
                annotation("pgec2.io/schedule-tick", "2026-01-01T03:00:00Z"),
                annotation("pgec2.io/backup-request", "x'; touch /tmp/pwned; echo '$(id) `id` \"q\" --json a=b"),
            ],
            snapshot: false,
            incremental: false,
        }),
        AgentCommand::from(BackupPush {
            permanent: false,
            annotations: vec![annotation("empty", "")],
            snapshot: true,
            incremental: false,
        }),
        AgentCommand::from(BackupPush {
            permanent: false,
            annotations: vec![annotation("pgec2.io/schedule-tick", "2026-01-02T03:00:00Z")],
            snapshot: false,
            incremental: true,
        }),
        AgentCommand::from(ArchiveStatus),
        AgentCommand::from(WalReceive {
            slot: "pgec2_wal_receive".into(),
            spool: "/var/lib/pgec2/wal receive".into(),
            partial_interval_seconds: 2,
        }),
        AgentCommand::from(WalReceiveStatus { spool: "/var/lib/pgec2/wal-receive".into() }),
        AgentCommand::from(DrillCheck {
            amcheck: false,
            heapallindexed: false,
            sql: Vec::new(),
            recovery_timeout_seconds: 1,
        }),
        AgentCommand::from(DrillCheck {
            amcheck: true,
            heapallindexed: true,
            sql: vec![
                SqlCheck { database: "postgres".into(), sql: "SELECT true".into() },
                SqlCheck {
                    database: "shop".into(),
                    sql: "SELECT count(*) > 0 FROM \"it's\" WHERE a = '--json'\n".into(),
                },
            ],
            recovery_timeout_seconds: 7200,
        }),
    ]
}

/// What the agent's parser made of a command, in the contract's terms (`None`: a command the
/// operator never sends, or `--json` missing where the operator reads JSON).
fn as_contract(command: Command) -> Option<AgentCommand> {
    match command {
        Command::Host(HostCommand::Apply { spec }) => Some(HostApply { spec: spec.to_string_lossy().into() }.into()),
        Command::BackupPush(BackupPushArgs {
            pgdata: None,
            permanent,
            annotations,
            json: true,
            method,
            snapshot_timeout: 3600,
            incremental,
            from: None,
            max_chain: None,
        }) => {
            let annotations: Option<Vec<_>> =
                annotations.iter().map(|(key, value)| Annotation::new(key, value).ok()).collect();
            let snapshot = method == pgec2_agent::cli::PushMethod::Snapshot;
            Some(BackupPush { permanent, annotations: annotations?, snapshot, incremental }.into())
        }
        Command::ArchiveStatus(JsonArgs { json: true }) => Some(ArchiveStatus.into()),
        Command::WalReceive(WalReceiveArgs { slot, spool, partial_interval, receive_timeout: 60, status, json }) => {
            let spool = spool.to_string_lossy().into_owned();
            match (status, json) {
                (false, false) => Some(WalReceive { slot, spool, partial_interval_seconds: partial_interval }.into()),
                (true, true) => Some(WalReceiveStatus { spool }.into()),
                _ => None,
            }
        }
        Command::DrillCheck(DrillCheckArgs {
            json: true,
            amcheck,
            heapallindexed,
            sql,
            recovery_timeout,
            check_timeout: 3600,
        }) => Some(DrillCheck { amcheck, heapallindexed, sql, recovery_timeout_seconds: recovery_timeout }.into()),
        _ => None,
    }
}

#[test]
fn every_command_the_operator_sends_parses_with_the_agents_parser_into_the_same_values() {
    for command in operator_commands() {
        let argv = ["pgec2-agent", "--config", CONFIG].into_iter().map(String::from).chain(command.argv());
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|error| panic!("{command:?} refused: {error}"));
        assert_eq!(cli.config, Some(PathBuf::from(CONFIG)));
        assert_eq!(as_contract(cli.command).as_ref(), Some(&command), "{:?}", command.argv());
    }
}

/// The agent's rendering of `value`, read back by the operator's parser.
#[track_caller]
fn assert_the_operator_reads_back<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let stdout = format!("{}\n", pgec2_agent::output::json(value).expect("renders"));
    let read: T = parse_json("test", &stdout).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(&read, value);
}

fn backup_info() -> BackupInfo {
    let start_time = Utc.with_ymd_and_hms(2026, 1, 1, 3, 0, 0).single().expect("a time");
    BackupInfo {
        name: "base_20260101T030000Z_000000010000000002000028".into(),
        start_time,
        finish_time: start_time + chrono::Duration::minutes(5),
        start_lsn: Lsn(0x2000028),
        finish_lsn: Lsn(0x3000100),
        timeline: 1,
        pg_version: 150012,
        system_identifier: u64::MAX - 7,
        data_bytes: 1 << 40,
        stored_bytes: 1 << 38,
        permanent: true,
        wal_segment_size: 16 << 20,
        next_xid: Some(754),
        annotations: BTreeMap::from([("pgec2.io/backup-request".into(), "x'\"{ y".into())]),
        kind: pgec2_core::catalog::BackupKind::Snapshot,
        snapshot_id: Some("snap-0123456789abcdef0".into()),
        backup_type: pgec2_core::catalog::BackupType::Full,
        parent: None,
        format: pgec2_core::catalog::BACKUP_INFO_FORMAT,
    }
}

#[test]
fn every_answer_the_agent_renders_is_read_by_the_operators_parser() {
    assert_the_operator_reads_back(&backup_info());
    assert_the_operator_reads_back(&ArchiverStatus {
        archived_count: 12,
        last_archived_wal: Some("00000001000000000000000C".into()),
        last_archived_time: Some(Utc.with_ymd_and_hms(2026, 1, 1, 3, 0, 0).single().expect("a time")),
        failed_count: 1,
        waiting: 3,
        oldest_waiting: Some("00000001000000000000000D".into()),
        oldest_waiting_seconds: Some(42),
        ..ArchiverStatus::default()
    });
    assert_the_operator_reads_back(&StreamStatus {
        state: "streaming".into(),
        slot: "pgec2_wal_receive".into(),
        system_identifier: Some("7300000000000000001".into()),
        timeline: Some(2),
        server_lsn: Some(Lsn(0x3000100)),
        received_lsn: Some(Lsn(0x3000100)),
        archived_lsn: Some(Lsn(0x3000060)),
        archived_at: Some(Utc.with_ymd_and_hms(2026, 1, 1, 3, 0, 0).single().expect("a time")),
        lag_bytes: Some(0xA0),
        slot_wal_status: Some("reserved".into()),
        slot_safe_wal_bytes: Some(1 << 30),
        max_slot_wal_keep_size_mb: Some(4096),
        warnings: vec![StreamWarning { kind: "SlotAtRisk".into(), message: "it's \"near\"".into() }],
        last_error: None,
        last_error_at: None,
        updated_at: None,
    });
    assert_the_operator_reads_back(&DrillCheckReport {
        recovered: true,
        recovered_at: Some(Utc.with_ymd_and_hms(2026, 1, 1, 2, 1, 0).single().expect("a time")),
        recovered_to_lsn: Some("0/3000100".into()),
        recovered_to_time: Some(Utc.with_ymd_and_hms(2026, 1, 1, 2, 0, 0).single().expect("a time")),
        archive_mode: "off".into(),
        checks: vec![CheckOutcome { name: "sql[0]".into(), passed: false, message: "returned \"f\"".into() }],
        checks_milliseconds: 12,
    });
    assert_the_operator_reads_back(&HostReport {
        host: "shop/orders-db".into(),
        profile: Some(Profile::Ec2),
        succeeded: true,
        steps: vec![StepReport {
            step: "mount".into(),
            outcome: StepOutcome::Changed,
            detail: "mounted {x}".into(),
            milliseconds: None,
        }],
        postgres: Some(PostgresFacts {
            version: "15.8".into(),
            version_num: 150008,
            system_identifier: "7300000000000000001".into(),
            timeline: 2,
            port: 5432,
            data_directory: "/var/lib/pgec2/data".into(),
            socket_directory: "/var/run/postgresql".into(),
            in_recovery: false,
        }),
    });
}

#[test]
fn an_answer_with_a_log_line_before_the_document_is_refused_not_guessed_around() {
    let document = pgec2_agent::output::json(&backup_info()).expect("renders");
    let noisy = format!("NOTICE: something leaked onto stdout\n{document}\n");
    let error = parse_json::<BackupInfo>("backup-push", &noisy).expect_err("noise before the document");
    let message = error.to_string();
    assert!(message.starts_with("the agent's backup-push printed text on stdout"), "{message}");
    assert!(message.contains("NOTICE: something leaked"), "{message}");
}
