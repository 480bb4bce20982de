//! `deploy/rbac.yaml` grants the operator exactly the API access it uses, and
//! `deploy/operator.yaml` runs it locked down with the probes its HTTP server answers.

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde_json::Value;

const NAMESPACE: &str = "pgec2-system";
const ACCOUNT: &str = "pgec2-operator";

fn documents(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(file);
    let text = std::fs::read_to_string(&path).expect("deploy manifest is readable");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).expect("deploy YAML parses"))
        .collect()
}

fn one<T: serde::de::DeserializeOwned>(documents: &[Value], kind: &str) -> T {
    let mut matching = documents.iter().filter(|document| document["kind"] == kind);
    let document = matching.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(matching.next().is_none(), "more than one {kind}");
    serde_json::from_value(document.clone()).unwrap_or_else(|error| panic!("{kind} is not valid: {error}"))
}

fn grants(rules: &[PolicyRule]) -> BTreeSet<String> {
    let mut grants = BTreeSet::new();
    for rule in rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    grants.insert(format!("{group}/{resource}:{verb}"));
                }
            }
        }
    }
    grants
}

#[test]
fn the_cluster_role_grants_exactly_what_the_operator_uses() {
    let rbac = documents("rbac.yaml");
    let role: ClusterRole = one(&rbac, "ClusterRole");
    let mut expected = BTreeSet::new();
    for kind in ["postgreshosts", "backuppolicies"] {
        for verb in ["get", "list", "watch", "patch", "update"] {
            expected.insert(format!("pgec2.io/{kind}:{verb}"));
        }
        for subresource in ["status", "finalizers"] {
            for verb in ["patch", "update"] {
                expected.insert(format!("pgec2.io/{kind}/{subresource}:{verb}"));
            }
        }
    }
    for verb in ["create", "delete"] {
        // Restore drills create (server-side apply of a new object) and delete their hosts.
        expected.insert(format!("pgec2.io/postgreshosts:{verb}"));
    }
    for group in ["events.k8s.io", ""] {
        for verb in ["create", "patch"] {
            expected.insert(format!("{group}/events:{verb}"));
        }
    }
    assert_eq!(grants(role.rules.as_deref().unwrap_or_default()), expected);
}

#[test]
fn leader_election_leases_are_granted_only_in_the_operator_namespace() {
    let rbac = documents("rbac.yaml");
    let role: Role = one(&rbac, "Role");
    assert_eq!(role.metadata.namespace.as_deref(), Some(NAMESPACE));
    let expected: BTreeSet<String> =
        ["get", "create", "update"].iter().map(|verb| format!("coordination.k8s.io/leases:{verb}")).collect();
    assert_eq!(grants(role.rules.as_deref().unwrap_or_default()), expected);
    let binding: RoleBinding = one(&rbac, "RoleBinding");
    assert_eq!(binding.role_ref.name, role.metadata.name.expect("the Role has a name"));
    let subject = &binding.subjects.expect("the RoleBinding has subjects")[0];
    assert_eq!((subject.name.as_str(), subject.namespace.as_deref()), (ACCOUNT, Some(NAMESPACE)));
}

#[test]
fn the_bindings_give_the_roles_to_the_operators_service_account() {
    let rbac = documents("rbac.yaml");
    let account: ServiceAccount = one(&rbac, "ServiceAccount");
    assert_eq!(account.metadata.name.as_deref(), Some(ACCOUNT));
    assert_eq!(account.metadata.namespace.as_deref(), Some(NAMESPACE));
    let role: ClusterRole = one(&rbac, "ClusterRole");
    let binding: ClusterRoleBinding = one(&rbac, "ClusterRoleBinding");
    assert_eq!(Some(binding.role_ref.name), role.metadata.name);
    let subjects = binding.subjects.expect("the ClusterRoleBinding has subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!((subjects[0].kind.as_str(), subjects[0].name.as_str()), ("ServiceAccount", ACCOUNT));
    assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));
}

fn operator_container(deployment: &Deployment) -> &Container {
    let pod = deployment.spec.as_ref().and_then(|spec| spec.template.spec.as_ref()).expect("a pod spec");
    pod.containers.iter().find(|container| container.name == "operator").expect("an operator container")
}

#[test]
fn the_deployment_probes_health_and_readiness_on_port_8080() {
    let deployment: Deployment = one(&documents("operator.yaml"), "Deployment");
    assert_eq!(deployment.metadata.namespace.as_deref(), Some(NAMESPACE));
    let container = operator_container(&deployment);
    let port =
        container.ports.as_ref().and_then(|ports| ports.iter().find(|port| port.name.as_deref() == Some("http")));
    assert_eq!(port.map(|port| port.container_port), Some(8080));
    for (probe, path) in [(&container.liveness_probe, "/healthz"), (&container.readiness_probe, "/readyz")] {
        let http = probe.as_ref().and_then(|probe| probe.http_get.as_ref()).expect("an HTTP probe");
        assert_eq!(http.path.as_deref(), Some(path));
        assert_eq!(serde_json::to_value(&http.port).expect("a port"), "http");
    }
    let requests = container.resources.as_ref().and_then(|resources| resources.requests.as_ref());
    assert!(requests.is_some_and(|requests| requests.contains_key("cpu") && requests.contains_key("memory")));
}

#[test]
fn the_deployment_runs_as_non_root_on_a_read_only_root_filesystem() {
    let deployment: Deployment = one(&documents("operator.yaml"), "Deployment");
    let pod = deployment.spec.as_ref().and_then(|spec| spec.template.spec.as_ref()).expect("a pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some(ACCOUNT));
    assert_eq!(pod.security_context.as_ref().and_then(|context| context.run_as_non_root), Some(true));
    let context = operator_container(&deployment).security_context.as_ref().expect("a container security context");
    assert_eq!(context.read_only_root_filesystem, Some(true));
    assert_eq!(context.allow_privilege_escalation, Some(false));
    let dropped = context.capabilities.as_ref().and_then(|capabilities| capabilities.drop.as_ref());
    assert_eq!(dropped.map(Vec::as_slice), Some(&["ALL".to_string()][..]));
}

#[test]
fn the_metrics_service_selects_the_operator_pods() {
    let documents = documents("operator.yaml");
    let deployment: Deployment = one(&documents, "Deployment");
    let service: Service = one(&documents, "Service");
    let pod_labels = deployment.spec.and_then(|spec| spec.template.metadata).and_then(|metadata| metadata.labels);
    let selector = service.spec.as_ref().and_then(|spec| spec.selector.clone()).expect("a selector");
    let labels = pod_labels.expect("pod labels");
    assert!(selector.iter().all(|(key, value)| labels.get(key) == Some(value)), "{selector:?} vs {labels:?}");
    let port = service.spec.and_then(|spec| spec.ports).and_then(|ports| ports.into_iter().next()).expect("a port");
    assert_eq!(port.port, 8080);
}
