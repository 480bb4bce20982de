//! Three independent judges of a manifest, as the API server and the operator see it:
//! - the generated CRD's OpenAPI schema, through a JSON-schema validator (strict about unknown
//!   fields, as `kubectl apply --validate=strict` is);
//! - the CRD's CEL rules (`x-kubernetes-validations`), through a CEL interpreter, with schema
//!   defaults applied first as the API server does;
//! - the Rust types and their `validate` / `validate_update` functions.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};

use pgec2_api::crd::crd_files;
use pgec2_api::{BackupPolicy, InvalidSpec, PostgresHost};
use serde_json::{Map, Value};

/// The openAPIV3Schema of the generated CRD of `kind`.
pub fn openapi_schema(kind: &str) -> Value {
    let file = crd_files().into_iter().find(|file| file.crd.spec.names.kind == kind).expect("a pgec2 kind");
    let schema = file.crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema.expect("the CRD has a schema")).expect("the schema is JSON")
}

/// The subschema at `path` below openAPIV3Schema: dot-separated property names, `[]` for array
/// items, e.g. `spec.postgres.pgHba[].options`.
pub fn subschema<'a>(schema: &'a Value, path: &str) -> &'a Value {
    let mut current = schema;
    for part in path.split('.') {
        let (name, items) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        current = &current["properties"][name];
        if items {
            current = &current["items"];
        }
        assert!(!current.is_null(), "no schema at {path} ({part})");
    }
    current
}

/// The CEL rules at `path`.
pub fn rules_at(schema: &Value, path: &str) -> Vec<String> {
    let rules = subschema(schema, path)["x-kubernetes-validations"].as_array().cloned().unwrap_or_default();
    rules.iter().filter_map(|rule| rule["rule"].as_str().map(str::to_string)).collect()
}

/// The OpenAPI schema as a JSON schema: `nullable` becomes a null type, Kubernetes extensions
/// are dropped, and objects with fixed properties refuse unknown fields.
pub fn to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(object) => {
            let mut converted = Map::new();
            for (key, value) in object {
                match key.as_str() {
                    key if key.starts_with("x-kubernetes-") => {}
                    "nullable" => {}
                    "format" if value == "int32" || value == "int64" => {}
                    "properties" | "default" | "enum" => {
                        let value = if key == "properties" { map_values(value) } else { value.clone() };
                        converted.insert(key.to_string(), value);
                    }
                    _ => {
                        converted.insert(key.clone(), to_json_schema(value));
                    }
                }
            }
            if object.get("nullable") == Some(&Value::Bool(true)) {
                let kind = converted.get("type").cloned().unwrap_or(Value::Null);
                converted.insert("type".into(), serde_json::json!([kind, "null"]));
                if let Some(Value::Array(values)) = converted.get_mut("enum") {
                    values.push(Value::Null);
                }
            }
            let is_metadata_like = !object.contains_key("properties");
            if object.get("type") == Some(&Value::String("object".into())) && !is_metadata_like {
                converted.entry("additionalProperties").or_insert(Value::Bool(false));
            }
            Value::Object(converted)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

fn map_values(properties: &Value) -> Value {
    let object = properties.as_object().expect("properties is an object");
    Value::Object(object.iter().map(|(name, schema)| (name.clone(), to_json_schema(schema))).collect())
}

/// Adds what the API server checks of every object itself (the CRD schema leaves it out):
/// apiVersion, kind and a named metadata.
fn with_object_envelope(mut schema: Value, kind: &str) -> Value {
    let properties = schema["properties"].as_object_mut().expect("the root schema has properties");
    properties.insert("apiVersion".into(), serde_json::json!({"const": pgec2_api::API_GROUP_VERSION}));
    properties.insert("kind".into(), serde_json::json!({"const": kind}));
    properties.insert("metadata".into(), serde_json::json!({"type": "object", "required": ["name"]}));
    schema["required"] = serde_json::json!(["apiVersion", "kind", "metadata", "spec"]);
    schema
}

/// What each judge says about one manifest.
#[derive(Debug)]
pub struct Verdict {
    /// JSON-schema errors against the CRD's schema.
    pub schema_errors: Vec<String>,
    /// Messages of CEL rules that failed.
    pub cel_errors: Vec<String>,
    /// The Rust-side verdict; Err(text) when the manifest does not even deserialise.
    pub rust: Result<Result<(), InvalidSpec>, String>,
}

impl Verdict {
    /// True when every judge accepts.
    pub fn all_accept(&self) -> bool {
        self.schema_errors.is_empty() && self.cel_errors.is_empty() && matches!(self.rust, Ok(Ok(())))
    }

    /// The Rust validation errors' messages (empty when Rust accepts or cannot deserialise).
    pub fn rust_messages(&self) -> Vec<String> {
        match &self.rust {
            Ok(Err(invalid)) => invalid.errors.iter().map(|error| error.message.clone()).collect(),
            _ => Vec::new(),
        }
    }
}

/// Judges `manifest` (and the update from `old`, when given) with all three judges.
pub fn judge(manifest: &Value, old: Option<&Value>) -> Verdict {
    let kind = manifest["kind"].as_str().expect("manifest has a kind");
    let schema = openapi_schema(kind);
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .build(&with_object_envelope(to_json_schema(&schema), kind))
        .expect("the CRD schema is a valid JSON schema");
    let schema_errors =
        validator.iter_errors(manifest).map(|error| format!("{}: {error}", error.instance_path())).collect();
    let cel_errors = match kube_cel::Validator::new().validate(&schema, manifest, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().into_iter().map(|error| error.message).collect(),
    };
    let rust = match kind {
        "PostgresHost" => judge_host(manifest, old),
        "BackupPolicy" => judge_policy(manifest),
        other => panic!("unknown kind {other}"),
    };
    Verdict { schema_errors, cel_errors, rust }
}

fn judge_host(manifest: &Value, old: Option<&Value>) -> Result<Result<(), InvalidSpec>, String> {
    let host: PostgresHost = serde_json::from_value(manifest.clone()).map_err(|e| e.to_string())?;
    Ok(match old {
        None => host.spec.validate(),
        Some(old) => {
            let old: PostgresHost = serde_json::from_value(old.clone()).map_err(|e| e.to_string())?;
            host.spec.validate_update(&old.spec)
        }
    })
}

fn judge_policy(manifest: &Value) -> Result<Result<(), InvalidSpec>, String> {
    let policy: BackupPolicy = serde_json::from_value(manifest.clone()).map_err(|e| e.to_string())?;
    Ok(policy.spec.validate())
}

/// Parses YAML (one document) into JSON.
pub fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).expect("test YAML parses")
}

/// The `deploy/examples` directory.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples")
}

/// Every YAML document in every file of `deploy/examples`, with its file name.
pub fn example_documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("deploy/examples exists")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("example is readable");
        let name = path.file_name().expect("a file name").to_string_lossy().to_string();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).expect("example YAML parses");
            documents.push((name.clone(), value));
        }
    }
    documents
}

/// Sets the value at a dot-separated path (creating objects on the way; `[N]` indexes arrays).
pub fn set(manifest: &mut Value, path: &str, value: Value) {
    let mut current = manifest;
    let parts: Vec<&str> = path.split('.').collect();
    for (position, part) in parts.iter().enumerate() {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*part, None),
        };
        let last = position == parts.len() - 1;
        if last && index.is_none() {
            current.as_object_mut().expect("an object on the path").insert(name.to_string(), value);
            return;
        }
        let object = current.as_object_mut().expect("an object on the path");
        current = object.entry(name.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if let Some(index) = index {
            if last {
                current[index] = value;
                return;
            }
            current = &mut current[index];
        }
    }
}

/// Removes the field at a dot-separated path.
pub fn remove(manifest: &mut Value, path: &str) {
    let (parent, name) = path.rsplit_once('.').expect("a nested path");
    let mut current = manifest;
    for part in parent.split('.') {
        current = &mut current[part];
    }
    current.as_object_mut().expect("an object").remove(name);
}
