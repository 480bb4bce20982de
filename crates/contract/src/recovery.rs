//! Where a restore stops and what PostgreSQL does there, spelled once for the PostgresHost CRD
//! (`spec.bootstrap.recovery`), the HostSpec the operator sends and the agent that renders
//! `recovery_target_*` and `backup-fetch --target-*` from it.

use serde::{Deserialize, Serialize};

/// Exactly one recovery target, as PostgreSQL's `recovery_target_*` settings take it (the text
/// is checked where it is read: the API's validation, the agent's parser).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecoveryTarget {
    /// `recovery_target_time`, with a zone (RFC 3339 or psql's form).
    Time(String),
    /// `recovery_target_lsn`.
    Lsn(String),
    /// `recovery_target_xid`.
    Xid(String),
    /// `recovery_target_name`.
    Name(String),
    /// `recovery_target = 'immediate'`.
    Immediate,
}

impl RecoveryTarget {
    /// The target in words, for messages (`time 2026-01-31T12:00:00Z`).
    pub fn describe(&self) -> String {
        match self {
            RecoveryTarget::Time(time) => format!("time {time}"),
            RecoveryTarget::Lsn(lsn) => format!("LSN {lsn}"),
            RecoveryTarget::Xid(xid) => format!("transaction {xid}"),
            RecoveryTarget::Name(name) => format!("restore point {name:?}"),
            RecoveryTarget::Immediate => "the backup's consistent point".to_string(),
        }
    }
}

/// What PostgreSQL does on reaching the recovery target (`recovery_target_action`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum TargetAction {
    /// End recovery and accept writes.
    #[default]
    Promote,
    /// Pause replay, read-only, until promoted by hand.
    Pause,
    /// Stop the server.
    Shutdown,
}

impl TargetAction {
    /// The value PostgreSQL and `backup-fetch --target-action` take.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_actions_keep_the_json_the_host_spec_has_always_had() {
        let time = RecoveryTarget::Time("2026-01-31T12:00:00Z".into());
        assert_eq!(serde_json::to_value(&time).expect("json"), serde_json::json!({"time": "2026-01-31T12:00:00Z"}));
        assert_eq!(serde_json::to_value(RecoveryTarget::Immediate).expect("json"), serde_json::json!("immediate"));
        for action in [TargetAction::Promote, TargetAction::Pause, TargetAction::Shutdown] {
            assert_eq!(serde_json::to_value(action).expect("json"), serde_json::Value::from(action.as_str()));
        }
    }
}
