//! Every CEL rule of `pgec2_api::rules` is in the generated CRDs where it belongs, every rule in
//! the CRDs is one of them, and each compiles as CEL within the API server's cost budget.

mod support;

use pgec2_api::rules;
use serde_json::Value;
use support::{openapi_schema, rules_at, subschema};

fn split(location: &str) -> (&str, &str) {
    location.split_once(' ').expect("rules::ALL locations are `Kind path`")
}

#[test]
fn every_rule_is_in_the_crd_at_its_documented_place() {
    for (location, rule) in rules::ALL {
        let (kind, path) = split(location);
        let rules_there = rules_at(&openapi_schema(kind), path);
        assert!(rules_there.contains(&rule.rule.to_string()), "{location} lacks {:?}", rule.rule);
    }
}

fn collect_rules(schema: &Value, found: &mut Vec<String>) {
    match schema {
        Value::Object(object) => {
            if let Some(Value::Array(validations)) = object.get("x-kubernetes-validations") {
                found.extend(validations.iter().filter_map(|rule| rule["rule"].as_str().map(str::to_string)));
            }
            object.values().for_each(|value| collect_rules(value, found));
        }
        Value::Array(items) => items.iter().for_each(|item| collect_rules(item, found)),
        _ => {}
    }
}

#[test]
fn every_rule_in_the_crds_is_a_known_rule() {
    let known: Vec<&str> = rules::ALL.iter().map(|(_, rule)| rule.rule).collect();
    let mut total = 0;
    for kind in ["PostgresHost", "BackupPolicy"] {
        let mut found = Vec::new();
        collect_rules(&openapi_schema(kind), &mut found);
        total += found.len();
        for rule in found {
            assert!(known.contains(&rule.as_str()), "{kind} has an unlisted rule {rule:?}");
        }
    }
    assert_eq!(total, rules::ALL.len(), "each listed rule appears exactly once");
}

#[test]
fn every_rule_compiles_as_cel() {
    for kind in ["PostgresHost", "BackupPolicy"] {
        let compiled = kube_cel::compile_schema(&openapi_schema(kind));
        assert!(!compiled.has_errors(), "{kind}: {:?}", compiled.compilation_errors());
    }
}

/// The API server estimates the worst-case cost of each rule from the schema's bounds and
/// refuses a CRD whose rules could cost too much; a rule that iterates a map needs bounds on
/// its size and on its values' length.
#[test]
fn every_iterated_map_is_bounded() {
    for (location, rule) in rules::ALL {
        if !rule.rule.contains(".all(") && !rule.rule.contains(".exists(") {
            continue;
        }
        let (kind, path) = split(location);
        let schema = openapi_schema(kind);
        let map = subschema(&schema, path);
        assert!(map["maxProperties"].is_u64(), "{location}: the map has no maxProperties");
        assert!(map["additionalProperties"]["maxLength"].is_u64(), "{location}: its values have no maxLength");
    }
}

#[test]
fn transition_rules_are_exactly_the_rules_that_read_the_old_value() {
    let transitions: Vec<_> = rules::ALL.iter().filter(|(_, rule)| rule.is_transition()).map(|(at, _)| *at).collect();
    assert_eq!(
        transitions,
        [
            "PostgresHost spec.postgresVersion",
            "PostgresHost spec.bootstrap",
            "PostgresHost spec.standby",
            "PostgresHost spec.instance",
            "PostgresHost spec.storage.sizeGiB",
            "PostgresHost spec.storage",
        ]
    );
}
