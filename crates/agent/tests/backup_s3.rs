//! Base backups and restores against the S3 API (a moto server): the same round trip as on the
//! file backend, with the restored cluster fetching its WAL from S3 through restore_command.

mod backup_support;
mod wal_common;

use backup_support::{Primary, assert_success, table_digests};
use pgec2_testkit::{MotoServer, Scratch};
use wal_common::{Agent, runtime};

fn agent_on_s3(moto: &MotoServer) -> Agent {
    runtime().block_on(moto.create_bucket("pgec2-backups")).expect("create bucket");
    let toml = format!(
        "[storage]\nurl = \"s3://pgec2-backups/archives\"\nprefix = \"default/orders\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n",
        moto.endpoint()
    );
    let env = moto.env().into_iter().map(|(name, value)| (name.to_string(), value)).collect();
    Agent::with_config(Scratch::new().expect("scratch"), &toml, env)
}

#[test]
fn a_backup_in_s3_restores_every_committed_row() {
    let moto = MotoServer::start().expect("moto server");
    let primary = Primary::start_with(agent_on_s3(&moto));
    primary.cluster.run_tool("pgbench", &["-n", "-c", "2", "-t", "300"]).expect("pgbench");
    let backup = primary.backup();
    primary.cluster.run_tool("pgbench", &["-n", "-c", "2", "-t", "300"]).expect("pgbench after the backup");
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);

    assert_success("backup-verify", &primary.agent(&["backup-verify", &backup.name]));
    let restored = primary.restore_copy("restored", "LATEST", &[]);
    assert_eq!(table_digests(&restored), expected, "the restored tables differ from the source");
}
