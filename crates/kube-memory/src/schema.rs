//! Validation against a CustomResourceDefinition's structural schema, as the API server checks
//! it before its CEL rules: `type`, `required`, `enum`, `pattern`, `minimum`/`maximum`,
//! `minLength`/`maxLength`, `minItems`/`maxItems` and `minProperties`/`maxProperties`, with the
//! API server's messages (`spec.x: Invalid value: "y": spec.x in body should match '…'`).
//! `metadata` is the server's own business and is not checked here.

use serde_json::Value;

/// Every violation of `schema` (an `openAPIV3Schema`) in `object`, as `path: message` lines.
pub(crate) fn violations(schema: &Value, object: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let (Some(properties), Some(map)) = (schema.get("properties"), object.as_object()) else { return found };
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        if let Some(key) = required.as_str().filter(|key| map.get(*key).is_none_or(Value::is_null)) {
            found.push(format!("{key}: Required value"));
        }
    }
    for (name, value) in map {
        if let Some(property) =
            properties.get(name).filter(|_| !matches!(name.as_str(), "metadata" | "apiVersion" | "kind"))
        {
            check(property, value, name, &mut found);
        }
    }
    found
}

fn check(schema: &Value, value: &Value, path: &str, found: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !has_type(value, expected)
    {
        let actual = type_name(value);
        found.push(format!(
            "{path}: Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        found.push(format!("{path}: Unsupported value: {value}: supported values: {}", list.join(", ")));
    }
    match value {
        Value::String(text) => check_string(schema, text, value, path, found),
        Value::Number(number) => check_number(schema, number.as_f64().unwrap_or_default(), value, path, found),
        Value::Array(items) => {
            check_count(schema, "Items", items.len(), path, found);
            if let Some(item) = schema.get("items") {
                for (index, child) in items.iter().enumerate() {
                    check(item, child, &format!("{path}[{index}]"), found);
                }
            }
        }
        Value::Object(map) => {
            check_count(schema, "Properties", map.len(), path, found);
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if let Some(key) = required.as_str().filter(|key| map.get(*key).is_none_or(Value::is_null)) {
                    found.push(format!("{path}.{key}: Required value"));
                }
            }
            let properties = schema.get("properties");
            let values = schema.get("additionalProperties").filter(|values| values.is_object());
            for (key, child) in map {
                if let Some(child_schema) = properties.and_then(|properties| properties.get(key)).or(values) {
                    check(child_schema, child, &format!("{path}.{key}"), found);
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

fn check_string(schema: &Value, text: &str, value: &Value, path: &str, found: &mut Vec<String>) {
    let length = text.chars().count();
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length as u64 > max
    {
        found.push(format!("{path}: Too long: may not be more than {max} bytes"));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && (length as u64) < min
    {
        found.push(format!("{path}: Invalid value: {value}: {path} in body should be at least {min} chars long"));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && regex::Regex::new(pattern).is_ok_and(|regex| !regex.is_match(text))
    {
        found.push(format!("{path}: Invalid value: {value}: {path} in body should match '{pattern}'"));
    }
}

fn check_number(schema: &Value, number: f64, value: &Value, path: &str, found: &mut Vec<String>) {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && number < min
    {
        found.push(format!("{path}: Invalid value: {value}: {path} in body should be greater than or equal to {min}"));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && number > max
    {
        found.push(format!("{path}: Invalid value: {value}: {path} in body should be less than or equal to {max}"));
    }
}

/// `minItems`/`maxItems` (`what` = "Items") or `minProperties`/`maxProperties` ("Properties").
fn check_count(schema: &Value, what: &str, count: usize, path: &str, found: &mut Vec<String>) {
    if let Some(max) = schema.get(format!("max{what}")).and_then(Value::as_u64)
        && count as u64 > max
    {
        found.push(format!("{path}: Too many: {count}: must have at most {max} items"));
    }
    if let Some(min) = schema.get(format!("min{what}")).and_then(Value::as_u64)
        && (count as u64) < min
    {
        found.push(format!("{path}: Invalid value: {count}: {path} in body should have at least {min} items"));
    }
}

fn has_type(value: &Value, expected: &str) -> bool {
    match expected {
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => true,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "metadata": {"type": "object"},
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1.0, "maximum": 10.0},
                "kind": {"type": "string", "enum": ["a", "b"]},
                "id": {"type": "string", "pattern": "^x-[0-9]+$", "minLength": 3, "maxLength": 8},
                "groups": {"type": "array", "maxItems": 2, "items": {"type": "string", "pattern": "^g"}},
                "tags": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string", "maxLength": 2}}}}}})
    }

    #[test]
    fn a_valid_object_has_no_violations() {
        let object = json!({"metadata": {"name": 5}, "spec": {"size": 3, "kind": "a", "id": "x-12", "groups": ["g1"], "tags": {"t": "v"}}});
        assert_eq!(violations(&schema(), &object), Vec::<String>::new());
    }

    #[test]
    fn each_keyword_is_reported_with_the_api_servers_words() {
        let object = json!({"spec": {"size": 0, "kind": "c", "id": "y", "groups": ["g", "h", "g"], "tags": {"a": "long", "b": ""}}});
        let found = violations(&schema(), &object);
        let expected = [
            "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1",
            "spec.kind: Unsupported value: \"c\": supported values: \"a\", \"b\"",
            "spec.id: Invalid value: \"y\": spec.id in body should be at least 3 chars long",
            "spec.id: Invalid value: \"y\": spec.id in body should match '^x-[0-9]+$'",
            "spec.groups: Too many: 3: must have at most 2 items",
            "spec.groups[1]: Invalid value: \"h\": spec.groups[1] in body should match '^g'",
            "spec.tags: Too many: 2: must have at most 1 items",
            "spec.tags.a: Too long: may not be more than 2 bytes",
        ];
        for line in expected {
            assert!(found.iter().any(|found| found == line), "missing {line:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn required_fields_and_types_are_checked() {
        let found = violations(&schema(), &json!({"spec": {"kind": "a"}}));
        assert_eq!(found, ["spec.size: Required value"]);
        let found = violations(&schema(), &json!({"spec": {"size": "big"}}));
        assert_eq!(
            found,
            ["spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\""]
        );
    }
}
