//! Writes a PostgresHost's status on the status subresource, with optimistic concurrency: the
//! write carries the resourceVersion it was computed from, and on a 409 Conflict it re-reads the
//! object and re-applies only the fields this reconcile changed, so what other controllers wrote
//! meanwhile (lastBackup, LastBackupSucceeded, another command) is never lost.

use std::time::Duration;

use kube::api::{Api, PostParams};
use pgec2_api::{PostgresHost, PostgresHostStatus};
use serde_json::{Map, Value};

use super::error::Error;

/// Attempts before a status write gives up (the error policy then retries the reconcile).
const ATTEMPTS: u32 = 5;

/// Writes `wanted` as the status of `host` unless nothing changed. `host` is the object the
/// status was computed from: only the differences between its status and `wanted` are applied
/// to the current object.
pub async fn write_status(
    api: &Api<PostgresHost>,
    host: &PostgresHost,
    wanted: &PostgresHostStatus,
) -> Result<(), Error> {
    let base = host.status.clone().unwrap_or_default();
    if &base == wanted {
        return Ok(());
    }
    let name = host.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let mut current = host.clone();
    for attempt in 1..=ATTEMPTS {
        let mut object = current.clone();
        object.status = Some(rebase(&base, wanted, current.status.as_ref()).map_err(|source| Error::Kube {
            action: "encode the status of",
            host: host.qualified_name(),
            source: kube::Error::SerdeError(source),
        })?);
        if object.status == current.status {
            return Ok(());
        }
        match api.replace_status(&name, &PostParams::default(), &object).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(host = %host.qualified_name(), attempt, "status write conflicted; re-reading");
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                current = api.get_status(&name).await.map_err(|source| Error::Kube {
                    action: "re-read",
                    host: host.qualified_name(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(Error::Kube { action: "write the status of", host: host.qualified_name(), source });
            }
        }
    }
    Err(Error::StatusConflict { host: host.qualified_name(), attempts: ATTEMPTS })
}

/// `current` with the changes from `base` to `wanted` applied: changed top-level fields, and
/// conditions changed per type.
pub fn rebase(
    base: &PostgresHostStatus,
    wanted: &PostgresHostStatus,
    current: Option<&PostgresHostStatus>,
) -> Result<PostgresHostStatus, serde_json::Error> {
    let base = to_map(base)?;
    let wanted_map = to_map(wanted)?;
    let mut result = to_map(&current.cloned().unwrap_or_default())?;
    let keys: std::collections::BTreeSet<&String> = base.keys().chain(wanted_map.keys()).collect();
    for key in keys {
        if key == "conditions" || base.get(key) == wanted_map.get(key) {
            continue;
        }
        match wanted_map.get(key) {
            Some(value) => result.insert(key.clone(), value.clone()),
            None => result.remove(key),
        };
    }
    let mut status: PostgresHostStatus = serde_json::from_value(Value::Object(result))?;
    let base_conditions = &serde_json::from_value::<PostgresHostStatus>(Value::Object(base))?.conditions;
    for condition in &wanted.conditions {
        let before = base_conditions.iter().find(|old| old.type_ == condition.type_);
        if before == Some(condition) {
            continue;
        }
        match status.conditions.iter_mut().find(|existing| existing.type_ == condition.type_) {
            Some(existing) => *existing = condition.clone(),
            None => status.conditions.push(condition.clone()),
        }
    }
    Ok(status)
}

fn to_map(status: &PostgresHostStatus) -> Result<Map<String, Value>, serde_json::Error> {
    match serde_json::to_value(status)? {
        Value::Object(map) => Ok(map),
        _ => Ok(Map::new()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;
    use pgec2_api::HostPhase;

    use super::*;

    fn condition(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "Test".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn a_rebase_keeps_what_another_writer_changed_meanwhile() {
        let base = PostgresHostStatus { phase: Some(HostPhase::Configuring), ..Default::default() };
        let wanted = PostgresHostStatus {
            phase: Some(HostPhase::Ready),
            conditions: vec![condition("Ready", "True")],
            ..Default::default()
        };
        let current = PostgresHostStatus {
            phase: Some(HostPhase::Configuring),
            handled_backup_request: Some("r1".into()),
            conditions: vec![condition("LastBackupSucceeded", "True")],
            ..Default::default()
        };
        let rebased = rebase(&base, &wanted, Some(&current)).expect("rebase");
        assert_eq!(rebased.phase, Some(HostPhase::Ready));
        assert_eq!(rebased.handled_backup_request.as_deref(), Some("r1"));
        let types: Vec<&str> = rebased.conditions.iter().map(|condition| condition.type_.as_str()).collect();
        assert_eq!(types, ["LastBackupSucceeded", "Ready"]);
    }

    #[test]
    fn a_field_this_reconcile_cleared_is_cleared() {
        let base = PostgresHostStatus { message: Some("old".into()), ..Default::default() };
        let wanted = PostgresHostStatus::default();
        let rebased = rebase(&base, &wanted, Some(&base)).expect("rebase");
        assert_eq!(rebased.message, None);
    }
}
