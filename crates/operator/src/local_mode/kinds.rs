//! The two kinds local mode serves, the names `local get` accepts for them, and the in-memory
//! API server that holds them (with the Rust-side validation the CRDs' CEL rules do in a cluster).

use std::path::Path;
use std::str::FromStr;

use kube::CustomResourceExt;
use pgec2_api::{API_GROUP_VERSION, BackupPolicy, PostgresHost};
use pgec2_kube_memory::{MemoryApiServer, ResourceType};
use serde_json::Value;

/// A kind of pgec2 resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    PostgresHost,
    BackupPolicy,
}

/// A kind name `local get` does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown kind {0:?}; use postgreshost (postgreshosts, pgh) or backuppolicy (backuppolicies, bp)")]
pub struct UnknownKind(pub String);

impl Kind {
    /// Every kind, in the order listings show them.
    pub const ALL: [Kind; 2] = [Kind::PostgresHost, Kind::BackupPolicy];

    /// The `kind` field of manifests.
    pub fn name(self) -> &'static str {
        match self {
            Kind::PostgresHost => "PostgresHost",
            Kind::BackupPolicy => "BackupPolicy",
        }
    }

    /// The lower-case name used in `kind/name` references (as kubectl prints them).
    pub fn lower(self) -> &'static str {
        match self {
            Kind::PostgresHost => "postgreshost",
            Kind::BackupPolicy => "backuppolicy",
        }
    }

    /// The kind of a manifest's `apiVersion` and `kind`, when it is one of ours.
    pub fn of_manifest(api_version: &str, kind: &str) -> Option<Kind> {
        if api_version != API_GROUP_VERSION {
            return None;
        }
        Kind::ALL.into_iter().find(|candidate| candidate.name() == kind)
    }

    /// The in-memory API's resource type of this kind.
    pub fn resource_type(self) -> ResourceType {
        match self {
            Kind::PostgresHost => ResourceType::namespaced::<PostgresHost>()
                .with_status_subresource()
                .with_crd_schema(&PostgresHost::crd()),
            Kind::BackupPolicy => ResourceType::namespaced::<BackupPolicy>()
                .with_status_subresource()
                .with_crd_schema(&BackupPolicy::crd()),
        }
    }
}

impl FromStr for Kind {
    type Err = UnknownKind;

    /// Accepts the kind, its plural and its short name, in any case, optionally qualified with
    /// the API group (`pgh.pgec2.io`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.to_ascii_lowercase();
        let name = lower.strip_suffix(".pgec2.io").unwrap_or(&lower);
        match name {
            "postgreshost" | "postgreshosts" | "pgh" => Ok(Kind::PostgresHost),
            "backuppolicy" | "backuppolicies" | "bp" => Ok(Kind::BackupPolicy),
            _ => Err(UnknownKind(text.to_string())),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The in-memory API of a state directory (`<state>/api`): both kinds, with validation.
pub fn api_server(api_dir: &Path) -> Result<MemoryApiServer, pgec2_kube_memory::Error> {
    let hosts = Kind::PostgresHost.resource_type();
    let policies = Kind::BackupPolicy.resource_type();
    Ok(MemoryApiServer::with_state_dir(api_dir)?
        .with_resource(hosts.clone())
        .with_resource(policies.clone())
        .with_validator(&hosts, validate_host)
        .with_validator(&policies, validate_policy))
}

/// The checks the PostgresHost CRD's schema and CEL rules make in a cluster.
fn validate_host(old: Option<&Value>, new: &Value) -> Result<(), String> {
    let new: PostgresHost = serde_json::from_value(new.clone()).map_err(|error| error.to_string())?;
    new.spec.validate().map_err(|invalid| invalid.to_string())?;
    if let Some(old) = old.and_then(|old| serde_json::from_value::<PostgresHost>(old.clone()).ok()) {
        new.spec.validate_update(&old.spec).map_err(|invalid| invalid.to_string())?;
    }
    Ok(())
}

/// The checks the BackupPolicy CRD's schema and CEL rules make in a cluster.
fn validate_policy(_old: Option<&Value>, new: &Value) -> Result<(), String> {
    let new: BackupPolicy = serde_json::from_value(new.clone()).map_err(|error| error.to_string())?;
    new.spec.validate().map_err(|invalid| invalid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alias_kubectl_users_type_names_its_kind() {
        for alias in ["postgreshost", "postgreshosts", "pgh", "PostgresHost", "PGH", "pgh.pgec2.io"] {
            assert_eq!(alias.parse::<Kind>(), Ok(Kind::PostgresHost), "{alias}");
        }
        for alias in ["backuppolicy", "backuppolicies", "bp", "BackupPolicy", "backuppolicies.pgec2.io"] {
            assert_eq!(alias.parse::<Kind>(), Ok(Kind::BackupPolicy), "{alias}");
        }
    }

    #[test]
    fn an_unknown_kind_is_refused_with_the_accepted_names() {
        let error = "pods".parse::<Kind>().expect_err("pods is not ours");
        assert!(error.to_string().contains("pgh") && error.to_string().contains("bp"), "{error}");
    }

    #[test]
    fn only_our_api_version_maps_to_a_kind() {
        assert_eq!(Kind::of_manifest("pgec2.io/v1alpha1", "PostgresHost"), Some(Kind::PostgresHost));
        assert_eq!(Kind::of_manifest("pgec2.io/v1alpha1", "BackupPolicy"), Some(Kind::BackupPolicy));
        assert_eq!(Kind::of_manifest("pgec2.io/v1", "PostgresHost"), None);
        assert_eq!(Kind::of_manifest("v1", "ConfigMap"), None);
    }
}
