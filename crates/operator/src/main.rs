//! pgec2-operator: parse the command line, set up logging, run the chosen command.

use std::process::ExitCode;

use clap::Parser;
use pgec2_operator::cli::{Cli, Command, LocalCommand};
use pgec2_operator::local_mode;
use pgec2_operator::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Run(args) => {
            telemetry::init(cli.log_format.unwrap_or(LogFormat::Json));
            let result = pgec2_operator::run::run(args).await;
            if let Err(error) = &result {
                tracing::error!(error = %format!("{error:#}"), "pgec2-operator stopped");
            }
            result.map_err(anyhow::Error::from)
        }
        Command::Local(command) => {
            local_mode::init_logging(cli.log_format.unwrap_or(LogFormat::Text));
            match command {
                LocalCommand::Run(args) => local_mode::run(args).await,
                LocalCommand::Get(args) => local_mode::get(args),
                LocalCommand::Stop(args) => local_mode::stop(args).await,
            }
            .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
