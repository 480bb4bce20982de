//! The API server only accepts structural schemas: every node typed, no `$ref` or
//! `anyOf`/`oneOf`/`allOf` carrying types, and defaults that validate against their own schema.

mod support;

use serde_json::Value;
use support::{openapi_schema, to_json_schema};

fn walk(schema: &Value, path: &str, visit: &mut dyn FnMut(&str, &serde_json::Map<String, Value>)) {
    let Some(object) = schema.as_object() else { return };
    visit(path, object);
    if let Some(Value::Object(properties)) = object.get("properties") {
        for (name, property) in properties {
            walk(property, &format!("{path}.{name}"), visit);
        }
    }
    if let Some(items) = object.get("items") {
        walk(items, &format!("{path}[]"), visit);
    }
    if let Some(values) = object.get("additionalProperties").filter(|values| values.is_object()) {
        walk(values, &format!("{path}{{}}"), visit);
    }
}

#[test]
fn every_node_has_a_type_and_no_references_or_combinators() {
    for kind in ["PostgresHost", "BackupPolicy"] {
        walk(&openapi_schema(kind), kind, &mut |path, node| {
            let typed = node.contains_key("type") || node.contains_key("x-kubernetes-int-or-string");
            assert!(typed, "{path} has no type");
            for forbidden in ["$ref", "anyOf", "oneOf", "allOf", "not", "definitions", "$defs"] {
                assert!(!node.contains_key(forbidden), "{path} uses {forbidden}");
            }
            if node.get("type") == Some(&Value::String("object".into())) {
                let fixed = node.contains_key("properties");
                let map = node.contains_key("additionalProperties");
                assert!(fixed != map || path == kind, "{path} must have properties or be a typed map");
            }
        });
    }
}

#[test]
fn every_default_is_valid_for_its_field() {
    for kind in ["PostgresHost", "BackupPolicy"] {
        let mut checked = 0;
        walk(&openapi_schema(kind), kind, &mut |path, node| {
            let Some(default) = node.get("default") else { return };
            let mut field_schema = node.clone();
            field_schema.remove("default");
            let validator =
                jsonschema::validator_for(&to_json_schema(&Value::Object(field_schema))).expect("a valid field schema");
            let errors: Vec<String> = validator.iter_errors(default).map(|error| error.to_string()).collect();
            assert!(errors.is_empty(), "{path}: default {default} is invalid: {errors:?}");
            checked += 1;
        });
        assert!(checked > 5, "{kind}: only {checked} defaults found");
    }
}

#[test]
fn list_maps_are_keyed_by_required_fields() {
    for kind in ["PostgresHost", "BackupPolicy"] {
        walk(&openapi_schema(kind), kind, &mut |path, node| {
            let Some(Value::Array(keys)) = node.get("x-kubernetes-list-map-keys") else { return };
            let required = node["items"]["required"].as_array().cloned().unwrap_or_default();
            for key in keys {
                assert!(required.contains(key), "{path}: list-map key {key} is not required");
            }
        });
    }
}
