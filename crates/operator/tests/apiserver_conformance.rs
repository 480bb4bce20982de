//! The CRDs and examples on a real Kubernetes API server (tests/apiserver/): server-side apply of
//! crds/, every example accepted, every CEL rule and kind of schema constraint refused with the
//! promised message, `kubectl explain` and printer columns. Each invalid spec is also sent to the
//! in-memory API of local mode, which must refuse it too.
//!
//! Skipped, with one notice, when the server is not built; failing instead when
//! `PGEC2_REQUIRE_APISERVER=1` (CI).

mod conformance_cases;
mod real_apiserver;

use std::path::PathBuf;

use conformance_cases::{Case, Expect, HOST, POLICY, cases, object};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, CustomResourceExt};
use pgec2_api::{BackupPolicy, PostgresHost};
use real_apiserver::{RealApiServer, repo_root};
use serde_json::Value;

fn server() -> Option<&'static RealApiServer> {
    let server = RealApiServer::get()?;
    server.install_crds();
    Some(server)
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
        .unwrap_or_else(|error| panic!("read {dir}: {error}"))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml" || extension == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_crds_are_accepted_by_server_side_apply_and_are_structural() {
    let Some(server) = server() else { return };
    for crd in ["postgreshosts.pgec2.io", "backuppolicies.pgec2.io"] {
        let conditions = server.kubectl_ok(&["get", "crd", crd, "-o", "jsonpath={.status.conditions}"], None);
        let conditions: Vec<Value> = serde_json::from_str(&conditions).expect("conditions as JSON");
        let status_of = |type_: &str| {
            conditions.iter().find(|condition| condition["type"] == type_).map(|condition| condition["status"].clone())
        };
        assert_eq!(status_of("Established"), Some(Value::from("True")), "{crd}: {conditions:?}");
        assert_eq!(status_of("NamesAccepted"), Some(Value::from("True")), "{crd}: {conditions:?}");
        assert_eq!(status_of("NonStructuralSchema"), None, "{crd} is not structural: {conditions:?}");
    }
    // Applying the same files again changes nothing and conflicts with nothing.
    let again = server.kubectl_ok(&["apply", "--server-side", "-f", "crds/"], None);
    assert!(again.lines().all(|line| line.ends_with("serverside-applied")), "{again}");
}

#[test]
fn every_example_and_demo_manifest_is_accepted_by_the_api_server() {
    let Some(server) = server() else { return };
    let mut files = yaml_files("deploy/examples");
    files.extend(yaml_files("scripts/demo"));
    assert!(files.len() >= 6, "examples not found: {files:?}");
    for file in &files {
        let path = file.display().to_string();
        for namespace in namespaces_in(file) {
            server.ensure_namespace(&namespace);
        }
        // The demo's placeholders, filled in as scripts/demo.sh fills them.
        let manifest = std::fs::read_to_string(file).unwrap_or_else(|error| panic!("read {path}: {error}"));
        let manifest = manifest
            .replace("__BACKUP_DIR__", "/var/tmp/pgec2-demo/backups")
            .replace("__TARGET_TIME__", "2026-12-01T12:00:00.000000Z");
        // Server-side dry run: the whole admission chain (schema, defaults, CEL) without
        // leaving objects in the shared server's default namespace.
        let output = server.kubectl(&["apply", "--server-side", "--dry-run=server", "-f", "-"], Some(&manifest));
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{path} was refused: {stderr}");
        let output = stdout;
        assert!(output.contains("serverside-applied"), "{path}: {output}");
    }
}

/// The namespaces a manifest file's documents name.
fn namespaces_in(file: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|error| panic!("read {}: {error}", file.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|document| serde::Deserialize::deserialize(document).ok())
        .filter_map(|document: Value| document["metadata"]["namespace"].as_str().map(str::to_string))
        .collect()
}

/// Sends a case to an API (after its valid `before`, if any); returns the refusal's code and
/// message, or `None` when the object was accepted.
async fn refusal(client: &kube::Client, namespace: &str, case: &Case) -> Option<(u16, String)> {
    let resource = if case.kind == HOST {
        ApiResource::erase::<PostgresHost>(&())
    } else {
        ApiResource::erase::<BackupPolicy>(&())
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let params = PatchParams::apply("conformance").force();
    if let Some(before) = &case.before {
        let valid = object(case.kind, namespace, case.name, before);
        api.patch(case.name, &params, &Patch::Apply(&valid))
            .await
            .unwrap_or_else(|error| panic!("{}: the valid object before the update was refused: {error}", case.name));
    }
    let invalid = object(case.kind, namespace, case.name, &case.spec);
    match api.patch(case.name, &params, &Patch::Apply(&invalid)).await {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => Some((status.code, status.message)),
        Err(error) => panic!("{}: {error}", case.name),
    }
}

fn check(case: &Case, server_name: &str, answer: Option<(u16, String)>) {
    let Some((code, message)) = answer else { panic!("{server_name} accepted invalid case {}", case.name) };
    // A value of the wrong type fails the API server's conversion of an apply patch to a typed
    // object before validation, which it answers with 500; every other refusal is 422 Invalid.
    let type_error_under_apply = matches!(case.expect, Expect::Schema { keyword: "type", .. }) && code == 500;
    assert!(code == 422 || type_error_under_apply, "{server_name}, case {}: {code} {message}", case.name);
    if let Expect::Schema { keyword, field, says } = case.expect {
        // The API server words a type error under apply differently (see above); the in-memory
        // API words it as the API server does for other writes.
        let says = if keyword == "type" && code == 422 { "must be of type integer" } else { says };
        assert!(
            message.contains(&format!("{field}: ")) && message.contains(says),
            "{server_name}, case {}: {message:?} should name {field} and say {says:?}",
            case.name
        );
    }
    if let Expect::Rule(rule) = case.expect {
        assert!(
            message.contains(rule.message),
            "{server_name}, case {}: {message:?} lacks {:?}",
            case.name,
            rule.message
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_spec_is_refused_by_both_servers_with_the_promised_message() {
    let Some(server) = server() else { return };
    let client = server.client().await;
    let namespace = server.namespace(&client, "invalid").await;
    let scratch = pgec2_testkit::Scratch::new().expect("scratch");
    let memory =
        pgec2_operator::local_mode::api_server(&scratch.subdir("api").expect("api dir")).expect("in-memory API");
    let memory_client = memory.client();
    for case in cases() {
        check(&case, "the real API server", refusal(&client, &namespace, &case).await);
        check(&case, "the in-memory API", refusal(&memory_client, &namespace, &case).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_a_refused_spec_with_the_rules_message() {
    let Some(server) = server() else { return };
    let client = server.client().await;
    let namespace = server.namespace(&client, "kubectl").await;
    let case = cases().into_iter().find(|case| case.name == "io2-no-iops").expect("case");
    let manifest = object(case.kind, &namespace, case.name, &case.spec).to_string();
    let output = server.kubectl(&["apply", "--server-side", "-f", "-"], Some(&manifest));
    assert!(!output.status.success(), "kubectl apply accepted {manifest}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(pgec2_api::rules::IOPS_REQUIRED_FOR_IO.message), "{stderr}");
}

#[test]
fn the_table_covers_every_cel_rule_and_every_kind_of_schema_constraint() {
    let cases = cases();
    for (location, rule) in pgec2_api::rules::ALL {
        assert!(
            cases.iter().any(|case| matches!(case.expect, Expect::Rule(covered) if covered == rule)),
            "no invalid case for the rule on {location}: {}",
            rule.message
        );
    }
    let mut keywords = std::collections::BTreeSet::new();
    for crd in [PostgresHost::crd(), BackupPolicy::crd()] {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        collect_constraints(&schema["openAPIV3Schema"]["properties"]["spec"], &mut keywords);
    }
    let covered: std::collections::BTreeSet<&str> = cases
        .iter()
        .filter_map(|case| match case.expect {
            Expect::Schema { keyword, .. } => Some(keyword),
            Expect::Rule(_) => None,
        })
        .collect();
    for keyword in keywords {
        assert!(covered.contains(keyword), "no invalid case for a `{keyword}` constraint");
    }
}

fn collect_constraints(schema: &Value, keywords: &mut std::collections::BTreeSet<&'static str>) {
    let Some(map) = schema.as_object() else { return };
    for keyword in
        ["required", "minimum", "maximum", "enum", "pattern", "maxItems", "minItems", "maxLength", "minLength"]
    {
        if map.contains_key(keyword) {
            keywords.insert(keyword);
        }
    }
    if map.get("type").is_some_and(|type_| type_ == "integer") {
        keywords.insert("type");
    }
    for child in ["properties", "additionalProperties", "items"] {
        match map.get(child) {
            Some(Value::Object(children)) if child == "properties" => {
                children.values().for_each(|value| collect_constraints(value, keywords));
            }
            Some(value) => collect_constraints(value, keywords),
            None => {}
        }
    }
}

#[test]
fn kubectl_explain_shows_the_field_docs() {
    let Some(server) = server() else { return };
    let crd = PostgresHost::crd();
    let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
    let storage = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["storage"];
    let documented = storage["properties"]["sizeGiB"]["description"].as_str().expect("sizeGiB is documented");
    let explained = server.kubectl_ok(&["explain", "postgreshost.spec.storage.sizeGiB"], None);
    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words(&explained).contains(&words(documented)), "explain shows:\n{explained}\nexpected:\n{documented}");
    let policy = server.kubectl_ok(&["explain", "bp.spec.schedule"], None);
    assert!(policy.contains("FIELD: schedule"), "{policy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_shows_the_printer_columns() {
    let Some(server) = server() else { return };
    let client = server.client().await;
    let namespace = server.namespace(&client, "columns").await;
    let manifest = object(HOST, &namespace, "shown", &serde_json::json!({})).to_string();
    server.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&manifest));
    let status = r#"{"status": {"phase": "Ready", "instanceId": "i-0123456789abcdef0"}}"#;
    server.kubectl_ok(
        &["patch", "-n", &namespace, "pgh", "shown", "--subresource=status", "--type=merge", "-p", status],
        None,
    );
    let table = server.kubectl_ok(&["get", "-n", &namespace, "pgh"], None);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "INSTANCE", "VERSION", "LAST", "BACKUP", "RPO", "RPO", "MET", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(&row[..4], ["shown", "Ready", "i-0123456789abcdef0", "15"], "{table}");

    let manifest = object(POLICY, &namespace, "nightly", &serde_json::json!({})).to_string();
    server.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&manifest));
    let table = server.kubectl_ok(&["get", "-n", &namespace, "bp"], None);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "SCHEDULE", "SUSPEND", "LAST", "BACKUP", "AGE"], "{table}");
    let row = lines.next().expect("row");
    assert!(row.starts_with("nightly ") && row.contains(" 0 3 * * * ") && row.contains(" false "), "{table}");
}
