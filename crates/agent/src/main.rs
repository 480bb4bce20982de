//! pgec2-agent: parse the command line, set up logging, run one command, map its outcome to an
//! exit status. Every command lives in the library; see `cli.rs` for the contract.

use std::process::ExitCode;

use clap::Parser;
use pgec2_agent::cli::{Cli, Command, ConfigCommand, HostCommand};
use pgec2_agent::{archive_status, backup, config, drill_check, host, wal, wal_receive, walg};

fn main() -> ExitCode {
    let cli = Cli::parse();
    pgec2_agent::logging::init();
    // The one-file WAL commands run once per segment (archive_command, restore_command): on one
    // thread they start faster and hand no work between threads; their blocking work still runs
    // on tokio's blocking pool.
    let mut builder = match cli.command {
        Command::WalPush(_) | Command::WalFetch(_) | Command::WalPushAhead(_) => {
            tokio::runtime::Builder::new_current_thread()
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            let mut printed = format!("error: {error}");
            eprintln!("{printed}");
            // A cause whose text the lines above already hold (an error that quotes its
            // source) is not printed again.
            for cause in error.chain().skip(1).map(|cause| cause.to_string()) {
                if !printed.contains(&cause) {
                    eprintln!("  caused by: {cause}");
                    printed.push('\n');
                    printed.push_str(&cause);
                }
            }
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli.config.as_deref();
    Ok(match cli.command {
        Command::WalPush(args) => wal::push_command(config_path, args).await?,
        Command::WalFetch(args) => wal::fetch_command(config_path, args).await?,
        Command::WalReceive(args) => wal_receive::command(config_path, args).await?,
        Command::WalPrefetch(args) => wal::prefetch_command(config_path, args).await?,
        Command::WalPushAhead(args) => wal::pusher::command(config_path, args).await?,
        Command::WalVerify(args) => backup::wal_verify_command(config_path, args).await?,
        Command::BackupPush(args) => backup::push_command(config_path, args).await?,
        Command::BackupFetch(args) => backup::fetch_command(config_path, *args).await?,
        Command::SnapshotRestore(args) => backup::snapshot_restore::command(config_path, *args).await?,
        Command::BackupList(args) => backup::list_command(config_path, args).await?,
        Command::BackupMark(args) => backup::mark_command(config_path, args).await?,
        Command::BackupVerify(args) => backup::verify_command(config_path, args).await?,
        Command::Delete(args) => backup::delete_command(config_path, args).await?,
        Command::ArchiveStatus(args) => archive_status::command(config_path, args).await?,
        Command::ImportCheck(args) => walg::check::command(config_path, args).await?,
        Command::DrillCheck(args) => drill_check::command(config_path, args).await?,
        Command::Host(HostCommand::Apply { spec }) => host::apply_command(&spec).await?,
        Command::Config(ConfigCommand::Check(args)) => config::check_command(config_path, args)?,
    })
}
