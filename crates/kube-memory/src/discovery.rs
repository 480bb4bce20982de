//! Discovery documents (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`) for
//! clients that discover resources instead of using typed APIs.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{error::ApiError, registry::Registry};

/// The Kubernetes version the server reports.
const MINOR_VERSION: &str = "33";

/// Answers a discovery path.
pub(crate) fn respond(registry: &Registry, segments: &[String]) -> Result<Value, ApiError> {
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["version"] => Ok(json!({
            "major": "1",
            "minor": MINOR_VERSION,
            "gitVersion": format!("v1.{MINOR_VERSION}.0"),
            "platform": "in-memory",
        })),
        ["api"] => Ok(json!({ "kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [] })),
        ["apis"] => Ok(group_list(registry)),
        ["api", "v1"] => Ok(resource_list(registry, "", "v1")),
        ["apis", group, version] if registry.all().any(|r| r.group == *group && r.version == *version) => {
            Ok(resource_list(registry, group, version))
        }
        _ => Err(ApiError::no_such_path()),
    }
}

/// `APIGroupList` of the named groups.
fn group_list(registry: &Registry) -> Value {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for resource in registry.all().filter(|resource| !resource.group.is_empty()) {
        let versions = groups.entry(resource.group.as_str()).or_default();
        if !versions.contains(&resource.version.as_str()) {
            versions.push(resource.version.as_str());
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|version| json!({ "groupVersion": format!("{group}/{version}"), "version": version }))
                .collect();
            json!({ "name": group, "versions": versions, "preferredVersion": versions.first() })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `APIResourceList` of one group version.
fn resource_list(registry: &Registry, group: &str, version: &str) -> Value {
    let verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
    let mut resources = Vec::new();
    for resource in registry.all().filter(|r| r.group == group && r.version == version) {
        resources.push(json!({
            "name": resource.plural,
            "singularName": resource.kind.to_lowercase(),
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": verbs,
        }));
        if resource.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", resource.plural),
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources })
}
