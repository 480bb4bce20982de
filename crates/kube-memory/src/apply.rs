//! Server-side apply, simplified.
//!
//! Like the API server: the applied configuration is merged into the live object; each field
//! manager owns the fields it applied (recorded in `metadata.managedFields` as `FieldsV1`);
//! fields a manager applied before and omits now are removed unless another manager owns them;
//! applying a different value to a field another apply manager owns is a 409 Conflict unless
//! `force=true`, which takes the field over.
//!
//! Simplifications: lists are atomic (no `listType=map` merging by key); only `Apply`
//! operations are tracked, so fields written by PUT/PATCH (`Update` managers) never conflict;
//! fields are compared as JSON values.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::{error::ApiError, meta, registry::ResourceType};

/// A field path: the keys from the object's root.
type FieldPath = Vec<String>;

/// The options of an apply request.
pub(crate) struct ApplyOptions<'a> {
    pub manager: &'a str,
    pub force: bool,
    /// Applying to `/status`: only `.status` is owned and changed.
    pub status: bool,
}

/// One `managedFields` entry.
#[derive(Clone, Debug)]
struct ManagedEntry {
    raw: Value,
    manager: String,
    apply: bool,
    status: bool,
    fields: BTreeSet<FieldPath>,
}

/// Computes the object resulting from applying `applied` to `existing` (or to nothing).
pub(crate) fn apply(
    resource: &ResourceType,
    existing: Option<&Value>,
    applied: &Value,
    options: &ApplyOptions<'_>,
) -> Result<Value, ApiError> {
    let name = meta::name(applied).or(existing.and_then(meta::name)).unwrap_or_default().to_owned();
    let mut result = existing.cloned().unwrap_or_else(|| json!({}));
    let mut managed = managed_entries(&result);
    let applied_fields = owned_fields(resource, applied, options.status);

    let conflicts = conflicts(&managed, &result, applied, &applied_fields, options);
    if !conflicts.is_empty() && !options.force {
        let list: Vec<String> = conflicts
            .iter()
            .map(|(manager, path)| format!("conflict with \"{manager}\": .{}", path.join(".")))
            .collect();
        let why = format!("Apply failed with {} conflict(s): {}", conflicts.len(), list.join(", "));
        return Err(ApiError::conflict(resource, &name, &why));
    }
    for (manager, path) in &conflicts {
        for entry in managed.iter_mut().filter(|entry| &entry.manager == manager && entry.status == options.status) {
            entry.fields.retain(|owned| !overlaps(owned, path));
        }
    }

    let previous = managed
        .iter()
        .find(|entry| entry.apply && entry.manager == options.manager && entry.status == options.status)
        .map(|entry| entry.fields.clone())
        .unwrap_or_default();
    for path in previous.difference(&applied_fields) {
        let owned_elsewhere = managed
            .iter()
            .any(|entry| entry.manager != options.manager && entry.fields.iter().any(|owned| overlaps(owned, path)));
        if !owned_elsewhere {
            remove_path(&mut result, path);
        }
    }
    for path in &applied_fields {
        if let Some(value) = get_path(applied, path) {
            set_path(&mut result, path, value.clone());
        }
    }
    for field in ["name", "namespace", "resourceVersion", "generateName"] {
        if meta::string(applied, field).is_some() {
            meta::copy(applied, &mut result, field);
        }
    }
    for field in ["apiVersion", "kind"] {
        if let (Some(value), Some(map)) = (applied.get(field), result.as_object_mut()) {
            map.insert(field.to_owned(), value.clone());
        }
    }
    record_manager(&mut managed, resource, applied_fields, options);
    let entries: Vec<Value> =
        managed.into_iter().filter(|entry| !entry.fields.is_empty()).map(|entry| entry.raw).collect();
    meta::set(&mut result, "managedFields", Value::Array(entries));
    Ok(result)
}

/// Fields applied with a value different from the live one, and owned by another apply manager.
fn conflicts(
    managed: &[ManagedEntry],
    live: &Value,
    applied: &Value,
    applied_fields: &BTreeSet<FieldPath>,
    options: &ApplyOptions<'_>,
) -> Vec<(String, FieldPath)> {
    let mut found = Vec::new();
    for path in applied_fields {
        if get_path(live, path) == get_path(applied, path) {
            continue;
        }
        for entry in managed {
            let other_owner = entry.apply && entry.manager != options.manager && entry.status == options.status;
            if other_owner && entry.fields.iter().any(|owned| overlaps(owned, path)) {
                found.push((entry.manager.clone(), path.clone()));
            }
        }
    }
    found
}

/// Sets this manager's entry to the applied fields. An apply that owns the same fields as
/// before keeps its entry as it was (its time and place too), so that applying an unchanged
/// configuration changes nothing, as in the API server.
fn record_manager(
    managed: &mut Vec<ManagedEntry>,
    resource: &ResourceType,
    fields: BTreeSet<FieldPath>,
    options: &ApplyOptions<'_>,
) {
    let mine = |entry: &ManagedEntry| entry.apply && entry.manager == options.manager && entry.status == options.status;
    let unchanged = managed.iter().any(|entry| mine(entry) && entry.fields == fields);
    if !unchanged {
        managed.retain(|entry| !mine(entry));
        let mut raw = json!({
            "manager": options.manager,
            "operation": "Apply",
            "apiVersion": resource.api_version(),
            "time": meta::now(),
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(&fields),
        });
        if options.status {
            raw["subresource"] = json!("status");
        }
        managed.push(ManagedEntry {
            raw,
            manager: options.manager.to_owned(),
            apply: true,
            status: options.status,
            fields,
        });
    }
    // Entries whose fields were taken over keep their raw form in sync.
    for entry in managed.iter_mut() {
        entry.raw["fieldsV1"] = fields_v1(&entry.fields);
    }
}

/// Whether one path is the other or contains it.
fn overlaps(a: &FieldPath, b: &FieldPath) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The leaf fields an applied configuration sets: `.status` only for a status apply; otherwise
/// everything except identity metadata (and except `.status` when it is a subresource).
fn owned_fields(resource: &ResourceType, applied: &Value, status: bool) -> BTreeSet<FieldPath> {
    let mut fields = BTreeSet::new();
    let Some(root) = applied.as_object() else {
        return fields;
    };
    for (key, value) in root {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "status" if status || !resource.status_subresource => leaves(value, vec![key.clone()], &mut fields),
            _ if status => {}
            "metadata" => {
                for owned in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(value) = value.get(owned) {
                        leaves(value, vec![key.clone(), owned.to_owned()], &mut fields);
                    }
                }
            }
            "status" => {}
            _ => leaves(value, vec![key.clone()], &mut fields),
        }
    }
    fields
}

/// Collects the leaf paths of a value: maps are walked (an empty map owns nothing), everything
/// else is a leaf.
fn leaves(value: &Value, path: FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value.as_object() {
        Some(map) => {
            for (key, child) in map {
                let mut child_path = path.clone();
                child_path.push(key.clone());
                leaves(child, child_path, out);
            }
        }
        None => {
            out.insert(path);
        }
    }
}

/// Encodes paths as `FieldsV1` (`{"f:spec": {"f:replicas": {}}}`).
fn fields_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for key in path {
            let child = node.entry(format!("f:{key}")).or_insert_with(|| json!({}));
            if !child.is_object() {
                *child = json!({});
            }
            node = child.as_object_mut().expect("child was just made a map");
        }
    }
    Value::Object(root)
}

/// Decodes `FieldsV1` written by [`fields_v1`]; a node without `f:` children is a leaf.
fn parse_fields_v1(value: &Value, path: FieldPath, out: &mut BTreeSet<FieldPath>) {
    let children: BTreeMap<&str, &Value> = value
        .as_object()
        .map(|map| map.iter().filter_map(|(key, child)| Some((key.strip_prefix("f:")?, child))).collect())
        .unwrap_or_default();
    if children.is_empty() {
        if !path.is_empty() {
            out.insert(path);
        }
        return;
    }
    for (key, child) in children {
        let mut child_path = path.clone();
        child_path.push(key.to_owned());
        parse_fields_v1(child, child_path, out);
    }
}

/// The object's `managedFields` entries.
fn managed_entries(object: &Value) -> Vec<ManagedEntry> {
    let entries = object.get("metadata").and_then(|m| m.get("managedFields")).and_then(Value::as_array);
    entries
        .into_iter()
        .flatten()
        .map(|raw| {
            let mut fields = BTreeSet::new();
            if let Some(fields_v1) = raw.get("fieldsV1") {
                parse_fields_v1(fields_v1, Vec::new(), &mut fields);
            }
            ManagedEntry {
                raw: raw.clone(),
                manager: raw.get("manager").and_then(Value::as_str).unwrap_or_default().to_owned(),
                apply: raw.get("operation").and_then(Value::as_str) == Some("Apply"),
                status: raw.get("subresource").and_then(Value::as_str) == Some("status"),
                fields,
            }
        })
        .collect()
}

fn get_path<'a>(value: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    path.iter().try_fold(value, |node, key| node.get(key))
}

fn set_path(value: &mut Value, path: &FieldPath, leaf: Value) {
    let mut node = value;
    for key in path {
        if !node.is_object() {
            *node = json!({});
        }
        let map = node.as_object_mut().expect("node was just made a map");
        node = map.entry(key.clone()).or_insert(Value::Null);
    }
    *node = leaf;
}

/// Removes the field at `path` and then any map that removal left empty.
fn remove_path(value: &mut Value, path: &FieldPath) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if let Some(parent) = parents.iter().try_fold(&mut *value, |node, key| node.get_mut(key))
        && let Some(map) = parent.as_object_mut()
    {
        map.remove(last);
        if map.is_empty() && !parents.is_empty() {
            remove_path(value, &parents.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thing() -> ResourceType {
        ResourceType::new("x.io", "v1", "things", "Thing", true).with_status_subresource()
    }

    fn apply_as(manager: &str, force: bool, existing: Option<&Value>, applied: Value) -> Result<Value, ApiError> {
        apply(&thing(), existing, &applied, &ApplyOptions { manager, force, status: false })
    }

    #[test]
    fn applying_again_without_a_field_removes_it() {
        let first = apply_as("loader", false, None, json!({"metadata": {"name": "a"}, "spec": {"x": 1, "y": 2}}))
            .expect("first apply");
        let second = apply_as("loader", false, Some(&first), json!({"metadata": {"name": "a"}, "spec": {"x": 1}}))
            .expect("second apply");
        assert_eq!(second["spec"], json!({"x": 1}));
    }

    #[test]
    fn fields_set_by_other_writers_survive_an_apply() {
        let mut live =
            apply_as("loader", false, None, json!({"metadata": {"name": "a"}, "spec": {"x": 1}})).expect("first apply");
        live["spec"]["z"] = json!(3);
        let next = apply_as("loader", false, Some(&live), json!({"metadata": {"name": "a"}, "spec": {"x": 2}}))
            .expect("second apply");
        assert_eq!(next["spec"], json!({"x": 2, "z": 3}));
    }

    #[test]
    fn a_different_value_for_another_managers_field_conflicts_unless_forced() {
        let live =
            apply_as("loader", false, None, json!({"metadata": {"name": "a"}, "spec": {"x": 1}})).expect("first apply");
        let error = apply_as("other", false, Some(&live), json!({"metadata": {"name": "a"}, "spec": {"x": 2}}))
            .expect_err("x belongs to loader");
        assert_eq!(error.code, 409);
        assert!(error.message.contains("conflict with \"loader\": .spec.x"), "{}", error.message);
        let forced = apply_as("other", true, Some(&live), json!({"metadata": {"name": "a"}, "spec": {"x": 2}}))
            .expect("force takes the field over");
        assert_eq!(forced["spec"]["x"], json!(2));
        let back = apply_as("loader", false, Some(&forced), json!({"metadata": {"name": "a"}, "spec": {}}))
            .expect("loader no longer owns x");
        assert_eq!(back["spec"]["x"], json!(2), "x now belongs to other and is kept");
    }

    #[test]
    fn applying_the_same_configuration_again_changes_nothing() {
        let applied = json!({"metadata": {"name": "a"}, "spec": {"x": 1}});
        let first = apply_as("loader", false, None, applied.clone()).expect("first apply");
        let mut live = apply_as("other", false, Some(&first), json!({"metadata": {"name": "a"}, "spec": {"y": 2}}))
            .expect("another manager");
        live["metadata"]["resourceVersion"] = json!("7");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let again = apply_as("loader", false, Some(&live), applied).expect("same apply");
        assert_eq!(again, live, "an unchanged apply must leave the object (and its managedFields) alone");
    }

    #[test]
    fn managed_fields_round_trip_through_fields_v1() {
        let fields: BTreeSet<FieldPath> =
            [vec!["spec".to_owned(), "x".to_owned()], vec!["metadata".to_owned(), "labels".to_owned(), "a".to_owned()]]
                .into_iter()
                .collect();
        let mut parsed = BTreeSet::new();
        parse_fields_v1(&fields_v1(&fields), Vec::new(), &mut parsed);
        assert_eq!(parsed, fields);
    }
}
