//! The backup's own session with a real PostgreSQL 15: server time-outs set for everyone else
//! never end it, although it idles while the files are copied and waits in the stop.

mod backup_support;
mod wal_common;

use backup_support::Primary;

#[test]
fn a_backup_outlives_the_servers_idle_and_statement_time_outs() {
    let primary = Primary::start();
    for setting in ["idle_session_timeout", "statement_timeout", "idle_in_transaction_session_timeout"] {
        primary.cluster.psql(&format!("ALTER SYSTEM SET {setting} = '50ms'")).expect("set a short time-out");
    }
    primary.cluster.psql("SELECT pg_reload_conf()").expect("reload");

    let backup = primary.backup();

    let listed: Vec<String> = primary.backups().into_iter().map(|info| info.name).collect();
    assert_eq!(listed, vec![backup.name.clone()], "the backup committed");
    assert!(
        backup.finish_time - backup.start_time > chrono::Duration::milliseconds(50),
        "the session idled longer than the time-outs"
    );
}
