//! What `deploy/` promises: least-privilege IAM policies for the operator and its hosts, and a
//! Helm chart whose CRDs are the generated ones and whose templates only use values it defines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = repository().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

/// A policy statement with Action and Resource as lists.
struct Statement {
    sid: String,
    actions: Vec<String>,
    resources: Vec<String>,
    condition: Value,
}

impl Statement {
    /// The value a condition operator sets for a key, as a list.
    fn condition(&self, operator: &str, key: &str) -> Vec<String> {
        strings(&self.condition[operator][key])
    }

    fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|allowed| allowed == action)
    }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn policy(relative: &str) -> Vec<Statement> {
    let document: Value = serde_json::from_str(&read(relative)).unwrap_or_else(|error| panic!("{relative}: {error}"));
    assert_eq!(document["Version"], "2012-10-17", "{relative}: policy variables need version 2012-10-17");
    let statements = document["Statement"].as_array().unwrap_or_else(|| panic!("{relative} has no statements"));
    statements
        .iter()
        .map(|statement| {
            assert_eq!(statement["Effect"], "Allow", "{relative}: only Allow statements");
            Statement {
                sid: statement["Sid"].as_str().unwrap_or_default().to_string(),
                actions: strings(&statement["Action"]),
                resources: strings(&statement["Resource"]),
                condition: statement["Condition"].clone(),
            }
        })
        .collect()
}

const MANAGED_BY: &str = "pgec2-operator";

#[test]
fn the_operator_policy_allows_every_call_the_aws_cloud_makes_and_no_wildcard_action() {
    let statements = policy("deploy/iam/operator-policy.json");
    let calls = [
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeImages",
        "ec2:DescribeSubnets",
        "ec2:DescribeVolumes",
        "ec2:DescribeVolumesModifications",
        "ec2:DescribeSnapshots",
        "ec2:DescribeLockedSnapshots",
        "ec2:RunInstances",
        "ec2:CreateTags",
        "ec2:DeleteTags",
        "ec2:AttachVolume",
        "ec2:TerminateInstances",
        "ec2:DeleteVolume",
        "ec2:ModifyVolume",
        "ec2:CreateSnapshot",
        "ec2:LockSnapshot",
        "ec2:CreateVolume",
        "ec2:EnableFastSnapshotRestores",
        "ec2:DisableFastSnapshotRestores",
        "iam:PassRole",
        "ssm:SendCommand",
        "ssm:GetCommandInvocation",
        "ssm:ListCommands",
        "ssm:DescribeInstanceInformation",
        "ssm:GetParameter",
    ];
    for call in calls {
        assert!(statements.iter().any(|statement| statement.allows(call)), "{call} is not allowed");
    }
    for statement in &statements {
        for action in &statement.actions {
            assert!(!action.ends_with(":*") && action != "*", "{}: wildcard action {action}", statement.sid);
        }
    }
}

#[test]
fn the_operator_can_only_create_and_change_resources_tagged_as_managed_by_pgec2() {
    let statements = policy("deploy/iam/operator-policy.json");
    let request_tag = |statement: &Statement| statement.condition("StringEquals", "aws:RequestTag/pgec2.io/managed-by");
    let resource_tag =
        |statement: &Statement| statement.condition("StringEquals", "ec2:ResourceTag/pgec2.io/managed-by");
    for statement in statements.iter().filter(|statement| statement.allows("ec2:RunInstances")) {
        let creates = statement.resources.iter().any(|arn| arn.contains(":instance/") || arn.contains(":volume/"));
        if creates {
            assert_eq!(request_tag(statement), [MANAGED_BY], "{}: RunInstances without the request tag", statement.sid);
        } else {
            for arn in &statement.resources {
                let launched_into = [":subnet/", ":security-group/", ":network-interface/", "::image/"];
                assert!(
                    launched_into.iter().any(|kind| arn.contains(kind)),
                    "{}: RunInstances on {arn}",
                    statement.sid
                );
            }
        }
    }
    for statement in statements.iter().filter(|statement| statement.allows("ec2:CreateTags")) {
        let on_create = statement.condition("StringEquals", "ec2:CreateAction");
        if on_create.is_empty() {
            assert_eq!(resource_tag(statement), [MANAGED_BY], "{}: CreateTags on untagged resources", statement.sid);
            assert_eq!(statement.condition("ForAllValues:StringLike", "aws:TagKeys"), ["pgec2.io/*"]);
        } else {
            assert_eq!(on_create, ["RunInstances", "CreateVolume", "CreateSnapshot"], "{}", statement.sid);
        }
    }
    for action in [
        "ec2:TerminateInstances",
        "ec2:AttachVolume",
        "ec2:DetachVolume",
        "ec2:DeleteVolume",
        "ec2:ModifyVolume",
        "ec2:DeleteTags",
        "ec2:LockSnapshot",
    ] {
        for statement in statements.iter().filter(|statement| statement.allows(action)) {
            assert_eq!(
                resource_tag(statement),
                [MANAGED_BY],
                "{}: {action} not conditioned on the resource tag",
                statement.sid
            );
        }
    }
    for never in ["ec2:UnlockSnapshot", "s3:BypassGovernanceRetention", "s3:PutObjectRetention"] {
        assert!(
            !statements.iter().any(|statement| statement.allows(never)),
            "the operator may {never}: locks must hold"
        );
    }
    for statement in statements.iter().filter(|statement| statement.allows("ec2:CreateSnapshot")) {
        let on_snapshot = statement.resources.iter().all(|arn| arn.contains("::snapshot/"));
        let condition = if on_snapshot { request_tag(statement) } else { resource_tag(statement) };
        assert_eq!(condition, [MANAGED_BY], "{}: CreateSnapshot unconditioned", statement.sid);
    }
    for statement in statements.iter().filter(|statement| statement.resources.iter().any(|arn| arn == "*")) {
        for action in &statement.actions {
            let read_only = action.starts_with("ec2:Describe")
                || ["ssm:GetCommandInvocation", "ssm:ListCommands", "ssm:DescribeInstanceInformation"]
                    .contains(&action.as_str());
            assert!(read_only, "{}: {action} on every resource", statement.sid);
        }
    }
}

#[test]
fn the_operator_passes_only_the_host_role_and_runs_only_the_shell_script_document_on_its_instances() {
    let statements = policy("deploy/iam/operator-policy.json");
    for statement in statements.iter().filter(|statement| statement.allows("iam:PassRole")) {
        assert_eq!(statement.resources.len(), 1, "{}", statement.sid);
        assert!(statement.resources[0].starts_with("arn:aws:iam::") && statement.resources[0].contains(":role/"));
        assert!(!statement.resources[0].contains('*'), "{}: PassRole on any role", statement.sid);
        assert_eq!(statement.condition("StringEquals", "iam:PassedToService"), ["ec2.amazonaws.com"]);
    }
    for statement in statements.iter().filter(|statement| statement.allows("ssm:SendCommand")) {
        for arn in &statement.resources {
            if arn.contains(":document/") {
                assert_eq!(arn, "arn:aws:ssm:*::document/AWS-RunShellScript", "{}", statement.sid);
            } else {
                assert!(arn.contains(":instance/"), "{}: SendCommand on {arn}", statement.sid);
                let tag = statement.condition("StringEquals", "ssm:resourceTag/pgec2.io/managed-by");
                assert_eq!(tag, [MANAGED_BY], "{}: SendCommand on untagged instances", statement.sid);
            }
        }
    }
    for statement in statements.iter().filter(|statement| statement.allows("ssm:GetParameter")) {
        assert_eq!(statement.resources, ["arn:aws:ssm:*::parameter/aws/service/debian/*"], "{}", statement.sid);
    }
}

#[test]
fn the_host_policy_never_allows_deleting_backups_and_stays_in_its_own_prefix() {
    let statements = policy("deploy/iam/host-policy.json");
    for statement in &statements {
        for action in &statement.actions {
            assert!(action != "*" && !action.ends_with(":*"), "{}: wildcard action {action}", statement.sid);
            if action.starts_with("s3:") {
                assert!(
                    !action.to_ascii_lowercase().contains("delete"),
                    "{}: hosts must not delete: {action}",
                    statement.sid
                );
                let allowed = ["s3:GetObject", "s3:PutObject", "s3:PutObjectRetention", "s3:ListBucket"];
                assert!(allowed.contains(&action.as_str()), "{action}");
            }
        }
        let s3 = statement.actions.iter().any(|action| action.starts_with("s3:"));
        if statement.allows("s3:GetObject") || statement.allows("s3:PutObject") {
            for arn in &statement.resources {
                assert!(
                    arn.contains("/${aws:PrincipalTag/pgec2-"),
                    "{}: objects outside the host's prefix: {arn}",
                    statement.sid
                );
            }
        } else if s3 {
            let prefixes = statement.condition("StringLike", "s3:prefix");
            assert!(!prefixes.is_empty(), "{}: ListBucket without a prefix condition", statement.sid);
            assert!(prefixes.iter().all(|prefix| prefix.starts_with("${aws:PrincipalTag/pgec2-")), "{prefixes:?}");
        }
        if statement.allows("ssm:GetParameter") {
            for arn in &statement.resources {
                assert!(arn.contains(":parameter/pgec2/${aws:PrincipalTag/pgec2-host}"), "{}: {arn}", statement.sid);
            }
        }
    }
    let puts: Vec<&Statement> = statements.iter().filter(|statement| statement.allows("s3:PutObject")).collect();
    assert_eq!(puts.len(), 2, "two statements may write");
    assert!(
        puts.iter().flat_map(|put| &put.resources).all(|arn| arn.contains("pgec2-archive-prefix")
            || arn.ends_with("${aws:PrincipalTag/pgec2-source-prefix}/leases/*")),
        "hosts write only their own archive, and their restore's lease in the recovery source's"
    );
    for agent_call in ["ssm:UpdateInstanceInformation", "ssmmessages:CreateControlChannel", "ec2messages:GetMessages"] {
        assert!(statements.iter().any(|statement| statement.allows(agent_call)), "the SSM agent needs {agent_call}");
    }
}

const CHART: &str = "deploy/helm/pgec2-operator";

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let chart_crds = repository().join(CHART).join("crds");
    let files = pgec2_api::crd::crd_files();
    for file in &files {
        let generated = file.to_yaml().expect("render crd");
        let in_chart = read(&format!("{CHART}/crds/{}", file.file_name));
        assert!(in_chart == generated, "{CHART}/crds/{} is stale: run deploy/helm/sync-crds.sh", file.file_name);
        assert_eq!(
            read(&format!("crds/{}", file.file_name)),
            generated,
            "crds/{} is stale: run crdgen",
            file.file_name
        );
    }
    let names: BTreeSet<String> = std::fs::read_dir(&chart_crds)
        .expect("chart crds directory")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = files.iter().map(|file| file.file_name.to_string()).collect();
    assert_eq!(names, expected, "the chart installs exactly pgec2's CRDs");
}

/// `.Values.a.b` paths used by the templates.
fn value_paths(template: &str) -> Vec<Vec<String>> {
    template
        .match_indices(".Values.")
        .map(|(index, found)| {
            let rest = &template[index + found.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_')).unwrap_or(rest.len());
            rest[..end].trim_end_matches('.').split('.').map(str::to_string).collect()
        })
        .collect()
}

#[test]
fn the_chart_is_well_formed_and_its_templates_use_only_defined_values() {
    let chart: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(&format!("{CHART}/Chart.yaml"))).expect("Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "pgec2-operator");
    let values: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(&format!("{CHART}/values.yaml"))).expect("values.yaml");
    let templates = std::fs::read_dir(repository().join(CHART).join("templates")).expect("templates");
    for entry in templates {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("template");
        let opened = ["{{- if ", "{{ if ", "{{- with ", "{{ with ", "{{- define ", "{{- range "]
            .iter()
            .map(|opener| text.matches(opener).count())
            .sum::<usize>();
        let closed = text.matches("{{- end").count() + text.matches("{{ end").count();
        assert_eq!(opened, closed, "{}: unbalanced blocks", path.display());
        for value_path in value_paths(&text) {
            let found = value_path.iter().try_fold(&values, |node, key| node.get(key.as_str()));
            assert!(
                found.is_some(),
                "{} uses .Values.{} which values.yaml lacks",
                path.display(),
                value_path.join(".")
            );
        }
    }
}

#[test]
fn the_deployment_runs_the_aws_cloud_with_probes_and_irsa_ready_service_account() {
    let deployment = read(&format!("{CHART}/templates/deployment.yaml"));
    assert!(deployment.contains(r#"args: ["run", "--cloud", {{ .Values.operator.cloud | quote }}]"#));
    for probe in ["path: /healthz", "path: /readyz", "containerPort: 8080"] {
        assert!(deployment.contains(probe), "deployment lacks {probe}");
    }
    let values: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(&format!("{CHART}/values.yaml"))).expect("values.yaml");
    assert_eq!(values["operator"]["cloud"], "aws");
    let service_account = read(&format!("{CHART}/templates/serviceaccount.yaml"));
    assert!(service_account.contains(".Values.serviceAccount.annotations"), "IRSA needs service account annotations");
    let service = read(&format!("{CHART}/templates/service.yaml"));
    assert!(service.contains("http-metrics") && service.contains("targetPort: http"));
}
