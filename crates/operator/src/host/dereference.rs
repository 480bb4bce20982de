//! Dereference: read the BackupPolicies a PostgresHost refers to. A missing one is not an
//! error here; validation turns it into a condition.

use kube::Api;
use pgec2_api::{BackupPolicy, PostgresHost};

use super::error::Error;
use super::render::Policies;

/// The host's archive policy and, for a restore, the source's policy (same namespace).
pub async fn policies(client: &kube::Client, host: &PostgresHost) -> Result<Policies, Error> {
    let namespace = host.metadata.namespace.as_deref().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<BackupPolicy> = Api::namespaced(client.clone(), namespace);
    let archive = match host.policy_name() {
        Some(name) => read(&api, namespace, name).await?,
        None => None,
    };
    let recovery_source = match host.recovery() {
        Some(recovery) => read(&api, namespace, &recovery.source.policy).await?,
        None => None,
    };
    Ok(Policies { archive, recovery_source })
}

async fn read(api: &Api<BackupPolicy>, namespace: &str, name: &str) -> Result<Option<BackupPolicy>, Error> {
    api.get_opt(name).await.map_err(|source| Error::ReadPolicy { policy: format!("{namespace}/{name}"), source })
}
