//! Reading and writing `metadata` fields of objects kept as JSON values.

use serde_json::{Map, Value};

use crate::registry::ResourceType;

/// A string field of `metadata`, `None` when absent or empty.
pub(crate) fn string<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str().filter(|value| !value.is_empty())
}

/// The object's `metadata.name`.
pub(crate) fn name(object: &Value) -> Option<&str> {
    string(object, "name")
}

/// The object's `metadata.resourceVersion`.
pub(crate) fn resource_version(object: &Value) -> Option<&str> {
    string(object, "resourceVersion")
}

/// `metadata`, created as an empty map when missing or not a map.
pub(crate) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let map = object.as_object_mut().expect("object was just made a map");
    let metadata = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    metadata.as_object_mut().expect("metadata was just made a map")
}

/// Sets a `metadata` field.
pub(crate) fn set(object: &mut Value, field: &str, value: Value) {
    metadata_mut(object).insert(field.to_owned(), value);
}

/// Removes a `metadata` field.
pub(crate) fn remove(object: &mut Value, field: &str) {
    metadata_mut(object).remove(field);
}

/// Copies a `metadata` field from `from` to `to` (removing it from `to` when `from` lacks it).
pub(crate) fn copy(from: &Value, to: &mut Value, field: &str) {
    match from.get("metadata").and_then(|metadata| metadata.get(field)) {
        Some(value) => set(to, field, value.clone()),
        None => remove(to, field),
    }
}

/// The object's finalizers.
pub(crate) fn finalizers(object: &Value) -> Vec<&str> {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get("finalizers"))
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether deletion was requested (`metadata.deletionTimestamp` is set).
pub(crate) fn is_deleting(object: &Value) -> bool {
    string(object, "deletionTimestamp").is_some()
}

/// `metadata.generation`, 0 when unset.
pub(crate) fn generation(object: &Value) -> i64 {
    object.get("metadata").and_then(|metadata| metadata.get("generation")).and_then(Value::as_i64).unwrap_or(0)
}

/// The object's labels as pairs.
pub(crate) fn labels(object: &Value) -> Vec<(&str, &str)> {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get("labels"))
        .and_then(Value::as_object)
        .map(|labels| labels.iter().filter_map(|(key, value)| Some((key.as_str(), value.as_str()?))).collect())
        .unwrap_or_default()
}

/// Whether the parts of an object that `metadata.generation` counts differ: everything except
/// `metadata`, and except `status` when status is a subresource.
pub(crate) fn spec_changed(resource: &ResourceType, old: &Value, new: &Value) -> bool {
    let counted = |object: &Value| -> Map<String, Value> {
        let mut map = object.as_object().cloned().unwrap_or_default();
        map.remove("metadata");
        map.remove("apiVersion");
        map.remove("kind");
        if resource.status_subresource {
            map.remove("status");
        }
        map
    };
    counted(old) != counted(new)
}

/// The current time as the API server writes timestamps (RFC 3339, seconds, `Z`).
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn generation_counts_spec_but_not_metadata_or_subresource_status() {
        let with_status = ResourceType::new("x.io", "v1", "things", "Thing", true).with_status_subresource();
        let old = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"n": 1}, "status": {"s": 1}});
        let relabelled = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"n": 1}, "status": {"s": 2}});
        assert!(!spec_changed(&with_status, &old, &relabelled));
        let respecced = json!({"metadata": {}, "spec": {"n": 2}, "status": {"s": 1}});
        assert!(spec_changed(&with_status, &old, &respecced));
        let without_status = ResourceType::new("x.io", "v1", "things", "Thing", true);
        assert!(spec_changed(&without_status, &old, &relabelled));
    }

    #[test]
    fn metadata_helpers_treat_empty_strings_as_absent() {
        let object = json!({"metadata": {"name": "a", "resourceVersion": ""}});
        assert_eq!(name(&object), Some("a"));
        assert_eq!(resource_version(&object), None);
        assert!(!is_deleting(&object));
    }
}
