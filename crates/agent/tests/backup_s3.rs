//! Base backups and restores against the S3 API (a moto server): the same round trip as on the
//! file backend, with the restored cluster fetching its WAL from S3 through restore_command.

mod backup_support;
mod wal_common;

use backup_support::{Primary, assert_success, table_digests};
use pgec2_core::catalog;
use pgec2_testkit::MotoServer;
use wal_common::{direct_s3_archive, runtime, s3_agent};

#[test]
fn a_backup_in_s3_restores_every_committed_row() {
    let moto = MotoServer::start().expect("moto server");
    runtime().block_on(moto.create_bucket("pgec2-backups")).expect("create bucket");
    let primary = Primary::start_with(s3_agent(&moto, "pgec2-backups", "default/orders", &moto.endpoint(), ""));
    primary.cluster.run_tool("pgbench", &["-n", "-c", "2", "-t", "300"]).expect("pgbench");
    let backup = primary.backup();
    primary.cluster.run_tool("pgbench", &["-n", "-c", "2", "-t", "300"]).expect("pgbench after the backup");
    primary.archive_current_wal();
    let expected = table_digests(&primary.cluster);

    let rt = runtime();
    let archive = rt.block_on(direct_s3_archive(&moto, "pgec2-backups", "default/orders"));
    let manifest = rt.block_on(catalog::read_manifest(&archive, &backup.name)).expect("read manifest");
    let largest = manifest.parts.iter().map(|part| part.content_bytes).max().unwrap_or(0);
    assert_eq!(largest, 4 << 20, "parts on S3 hold 4 MiB of content by default");
    assert_success("backup-verify", &primary.agent(&["backup-verify", &backup.name]));
    let restored = primary.restore_copy("restored", "LATEST", &[]);
    assert_eq!(table_digests(&restored), expected, "the restored tables differ from the source");
}
