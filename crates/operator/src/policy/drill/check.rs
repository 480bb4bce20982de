//! The checks of a drill, run on the drill host by `pgec2-agent drill-check` through the
//! cloud's command runner: the command rendered from `spec.verification.checks` through the
//! contract's types, its script (with the recovery source's agent configuration, the only one a
//! host that archives nothing has) and its JSON answer.

use std::time::Duration;

use pgec2_api::Verification;
use pgec2_contract::command::{AgentCommand, DrillCheck, SqlCheck};
use pgec2_contract::output::OutputError;
use pgec2_core::drill_check::DrillCheckReport;

use crate::cloud::{HostCommand, HostLayout};

/// The purpose of drill-check commands (their SSM comment is `pgec2 drill-check`).
pub const CHECK_PURPOSE: &str = "drill-check";

/// The database a SQL check runs in when the spec names none.
pub const DEFAULT_DATABASE: &str = "postgres";

/// File name of the recovery source's agent configuration, beside the host's own
/// (`pgec2_core::host_spec::HostSpec::source_config_path`).
const SOURCE_CONFIG: &str = "agent-source.toml";

/// The agent command for `verification`'s checks, waiting at most `recovery_timeout` for
/// recovery to finish.
pub fn command(verification: &Verification, recovery_timeout: Duration) -> AgentCommand {
    let sql = verification
        .checks
        .iter()
        .filter_map(|check| {
            let database = check.database.clone().unwrap_or_else(|| DEFAULT_DATABASE.to_string());
            check.sql.clone().map(|sql| SqlCheck { database, sql })
        })
        .collect();
    let amcheck: Vec<_> = verification.checks.iter().filter_map(|check| check.amcheck.as_ref()).collect();
    AgentCommand::from(DrillCheck {
        amcheck: !amcheck.is_empty(),
        heapallindexed: amcheck.iter().any(|options| options.heapallindexed),
        sql,
        recovery_timeout_seconds: recovery_timeout.as_secs().max(1),
    })
}

/// The host command running `command` on the drill host of `layout`, or None when a path or
/// a query cannot be quoted (a NUL byte).
pub fn host_command(layout: &HostLayout, command: &AgentCommand, timeout: Duration) -> Option<HostCommand> {
    let source_config = layout.agent_config_path.parent()?.join(SOURCE_CONFIG);
    let layout = HostLayout { agent_config_path: source_config, ..layout.clone() };
    let script = crate::agent_command::agent_script(&layout, command)?;
    Some(HostCommand { purpose: CHECK_PURPOSE.to_string(), script, timeout })
}

/// The report in `stdout` of `command`.
pub fn report(command: &AgentCommand, stdout: &str) -> Result<DrillCheckReport, OutputError> {
    crate::agent_command::read_answer(command, stdout)
}

#[cfg(test)]
mod tests {
    use pgec2_api::{VerificationCheck, VerificationTarget};

    use super::*;

    #[test]
    fn the_checks_render_as_one_drill_check_with_sql_checks_in_order_and_a_default_database() {
        let verification = Verification {
            schedule: "0 2 * * *".into(),
            target: VerificationTarget::Latest,
            checks: vec![
                VerificationCheck::sql("SELECT true", None),
                VerificationCheck::amcheck(),
                VerificationCheck::sql("SELECT count(*) > 0 FROM orders", Some("shop")),
            ],
            keep: false,
            timeout: "2h".into(),
        };
        let AgentCommand::DrillCheck(check) = command(&verification, Duration::from_secs(600)) else {
            panic!("a drill-check")
        };
        assert!(check.amcheck && !check.heapallindexed);
        assert_eq!(check.recovery_timeout_seconds, 600);
        assert_eq!(
            check.sql,
            vec![
                SqlCheck { database: "postgres".into(), sql: "SELECT true".into() },
                SqlCheck { database: "shop".into(), sql: "SELECT count(*) > 0 FROM orders".into() },
            ]
        );
    }
}
