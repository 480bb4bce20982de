//! Status written by server-side apply of `.status`: each controller applies the whole of the
//! part it owns under its own field manager, with `force` (it is that part's only writer). The
//! API server keeps what the other controller applied, merges `conditions` by `type`, and drops
//! a field this controller applied before and leaves out now.
//!
//! A PostgresHost's status has two writers; [`HostStatusPart`] says who owns what. A
//! BackupPolicy's status has one, the policy controller.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use pgec2_api::{BackupPolicy, BackupPolicyStatus, PostgresHost, PostgresHostStatus, condition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::{HOST_CONTROLLER, POLICY_CONTROLLER};

/// Fields of a PostgresHost's status the BackupPolicy controller owns; the host controller owns
/// every other field and condition.
const BACKUP_FIELDS: [&str; 3] = ["lastBackup", "recoveryWindow", "handledBackupRequest"];

/// A writer's share of a PostgresHost's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostStatusPart {
    /// The host controller: phase, instance, PostgreSQL, archiving, commands and every
    /// condition but `LastBackupSucceeded`.
    Host,
    /// The BackupPolicy controller: `lastBackup`, `recoveryWindow`, `handledBackupRequest` and
    /// the `LastBackupSucceeded` condition.
    Backups,
}

impl HostStatusPart {
    /// The field manager this part is applied with.
    pub fn manager(self) -> &'static str {
        match self {
            Self::Host => HOST_CONTROLLER,
            Self::Backups => POLICY_CONTROLLER,
        }
    }

    /// This part of `status`, as applied.
    pub fn of(self, status: &PostgresHostStatus) -> Result<Value, serde_json::Error> {
        let Value::Object(fields) = serde_json::to_value(status)? else { return Ok(json!({})) };
        let backups = |key: &str| BACKUP_FIELDS.contains(&key);
        let backup_condition = |item: &Value| item["type"] == condition::LAST_BACKUP_SUCCEEDED;
        let mut part = Map::new();
        for (key, value) in fields {
            let value = match (key.as_str(), value) {
                ("conditions", Value::Array(items)) => {
                    let items: Vec<Value> =
                        items.into_iter().filter(|item| backup_condition(item) == (self == Self::Backups)).collect();
                    if items.is_empty() {
                        continue;
                    }
                    Value::Array(items)
                }
                (key, _) if backups(key) != (self == Self::Backups) => continue,
                (_, value) => value,
            };
            part.insert(key, value);
        }
        Ok(Value::Object(part))
    }
}

/// Applies `part` of `wanted` as the status of `host` (a fresh read of the object) unless that
/// part is unchanged. Returns the object as stored afterwards, or `host` when nothing changed.
pub async fn apply_host_status(
    api: &Api<PostgresHost>,
    host: &PostgresHost,
    part: HostStatusPart,
    wanted: &PostgresHostStatus,
) -> Result<PostgresHost, kube::Error> {
    let applied = part.of(wanted).map_err(kube::Error::SerdeError)?;
    let current = part.of(&host.status.clone().unwrap_or_default()).map_err(kube::Error::SerdeError)?;
    if applied == current {
        return Ok(host.clone());
    }
    apply(api, &host.name_any(), part.manager(), applied).await
}

/// Applies `wanted` as the status of `policy` unless it is unchanged; returns the policy as
/// stored afterwards.
pub async fn apply_policy_status(
    api: &Api<BackupPolicy>,
    policy: &BackupPolicy,
    wanted: &BackupPolicyStatus,
) -> Result<BackupPolicy, kube::Error> {
    if policy.status.as_ref() == Some(wanted) {
        return Ok(policy.clone());
    }
    let applied = serde_json::to_value(wanted).map_err(kube::Error::SerdeError)?;
    apply(api, &policy.name_any(), POLICY_CONTROLLER, applied).await
}

/// Server-side apply of `{status: …}` on the status subresource as `manager`, forced.
async fn apply<K>(api: &Api<K>, name: &str, manager: &str, status: Value) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let body = json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status });
    api.patch_status(name, &PatchParams::apply(manager).force(), &Patch::Apply(&body)).await
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;
    use pgec2_api::HostPhase;

    use super::*;

    fn condition(type_: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: "Test".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn the_two_parts_of_a_host_status_share_no_field() {
        let status = PostgresHostStatus {
            phase: Some(HostPhase::Ready),
            handled_backup_request: Some("r1".into()),
            conditions: vec![condition("Ready"), condition(condition::LAST_BACKUP_SUCCEEDED)],
            ..Default::default()
        };
        let host = HostStatusPart::Host.of(&status).expect("host part");
        let backups = HostStatusPart::Backups.of(&status).expect("backups part");
        assert_eq!(host["phase"], json!("Ready"));
        assert_eq!(host["conditions"].as_array().map(Vec::len), Some(1));
        assert_eq!(host["conditions"][0]["type"], json!("Ready"));
        assert!(host.get("handledBackupRequest").is_none());
        assert_eq!(backups["handledBackupRequest"], json!("r1"));
        assert_eq!(backups["conditions"][0]["type"], json!(condition::LAST_BACKUP_SUCCEEDED));
        assert!(backups.get("phase").is_none());
    }

    #[tokio::test]
    async fn the_host_and_policy_controllers_never_overwrite_each_others_status_fields() {
        use kube::api::PostParams;
        use pgec2_api::fixtures::host;

        use kube::CustomResourceExt;
        use pgec2_kube_memory::{MemoryApiServer, ResourceType};

        let hosts = ResourceType::namespaced::<PostgresHost>().with_status_subresource();
        let server = MemoryApiServer::new().with_resource(hosts.with_crd_schema(&PostgresHost::crd()));
        let api: Api<PostgresHost> = Api::namespaced(server.client(), "default");
        let created = api.create(&PostParams::default(), &host("db").build()).await.expect("create");
        let configuring = PostgresHostStatus {
            phase: Some(HostPhase::Configuring),
            conditions: vec![condition("Ready")],
            ..Default::default()
        };
        let stale = apply_host_status(&api, &created, HostStatusPart::Host, &configuring).await.expect("host writes");
        let backed_up = PostgresHostStatus {
            handled_backup_request: Some("r1".into()),
            conditions: vec![condition(condition::LAST_BACKUP_SUCCEEDED)],
            ..Default::default()
        };
        apply_host_status(&api, &stale, HostStatusPart::Backups, &backed_up).await.expect("policy writes");
        // The host controller computed its next status from a copy without the backup fields.
        let ready = PostgresHostStatus { phase: Some(HostPhase::Ready), ..configuring };
        let stored = apply_host_status(&api, &stale, HostStatusPart::Host, &ready).await.expect("host writes again");
        let status = stored.status.expect("status");
        assert_eq!(status.phase, Some(HostPhase::Ready));
        assert_eq!(status.handled_backup_request.as_deref(), Some("r1"));
        let types: Vec<&str> = status.conditions.iter().map(|condition| condition.type_.as_str()).collect();
        assert_eq!(types, ["Ready", condition::LAST_BACKUP_SUCCEEDED]);
    }
}
