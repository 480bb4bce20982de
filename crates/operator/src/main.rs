//! pgec2-operator: parse the command line, set up logging, run the chosen command.

use std::process::ExitCode;

use clap::Parser;
use pgec2_operator::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    pgec2_operator::telemetry::init(cli.log_format);
    let result: anyhow::Result<()> = match cli.command {
        Command::Run(args) => pgec2_operator::run::run(args).await.map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "pgec2-operator stopped");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
