//! Structural defaulting, as the API server applies a CustomResourceDefinition's `default`
//! values: a missing property whose schema has a default gets a copy of it, and defaulting goes
//! on inside the result (defaults of nested fields apply within a defaulted object), in maps'
//! values (`additionalProperties`) and list items.

use serde_json::Value;

/// Fills in the defaults of `schema` (an `openAPIV3Schema`) in `object`.
pub(crate) fn apply(schema: &Value, object: &mut Value) {
    match object {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = schema.get("properties") {
                for (name, property) in properties {
                    if let Some(default) = property.get("default")
                        && !map.contains_key(name)
                    {
                        map.insert(name.clone(), default.clone());
                    }
                    if let Some(child) = map.get_mut(name) {
                        apply(property, child);
                    }
                }
            }
            if let Some(values) = schema.get("additionalProperties").filter(|values| values.is_object()) {
                map.values_mut().for_each(|child| apply(values, child));
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                items.iter_mut().for_each(|child| apply(item, child));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "size": {"type": "integer"},
                "mode": {"type": "string", "default": "fast"},
                "tuning": {"type": "object", "default": {}, "properties": {
                    "level": {"type": "integer", "default": 3}}},
                "rules": {"type": "array", "items": {"type": "object", "properties": {
                    "action": {"type": "string", "default": "allow"}}}},
                "limits": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                    "max": {"type": "integer", "default": 10}}}}}}}})
    }

    #[test]
    fn missing_fields_get_their_defaults_also_inside_defaulted_objects_lists_and_maps() {
        let mut object = json!({"spec": {"size": 1, "rules": [{}, {"action": "deny"}], "limits": {"cpu": {}}}});
        apply(&schema(), &mut object);
        assert_eq!(
            object,
            json!({"spec": {"size": 1, "mode": "fast", "tuning": {"level": 3},
                "rules": [{"action": "allow"}, {"action": "deny"}], "limits": {"cpu": {"max": 10}}}})
        );
    }

    #[test]
    fn set_fields_and_objects_without_a_schema_default_are_left_alone() {
        let mut object = json!({"spec": {"mode": "slow", "tuning": {"level": 1}}});
        apply(&schema(), &mut object);
        assert_eq!(object, json!({"spec": {"mode": "slow", "tuning": {"level": 1}}}));
        let mut empty = json!({});
        apply(&schema(), &mut empty);
        assert_eq!(empty, json!({}), "spec has no default, so nothing is added");
    }
}
