//! Server-side apply, simplified.
//!
//! Like the API server: the applied configuration is merged into the live object; each field
//! manager owns the fields it applied (recorded in `metadata.managedFields` as `FieldsV1`);
//! fields a manager applied before and omits now are removed unless another manager owns them;
//! applying a different value to a field another apply manager owns is a 409 Conflict unless
//! `force=true`, which takes the field over.
//!
//! Lists the resource type declares `x-kubernetes-list-type: map` are merged by key: each
//! element is addressed as `k:{"type":"Ready"}` in a field path, so two managers can own
//! different elements (or different fields of one element) of `status.conditions`. An element
//! goes when the last of its non-key fields does.
//!
//! Simplifications: other lists are atomic (no `set` lists); only `Apply` operations are
//! tracked, so fields written by PUT/PATCH (`Update` managers) never conflict; fields are
//! compared as JSON values.

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
    // In the applied document's order, so that new list elements keep the order they were applied in.
    let applied_order = owned_fields(resource, applied, options.status);
    let applied_fields: BTreeSet<FieldPath> = applied_order.iter().cloned().collect();

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
    for path in removal_order(previous.difference(&applied_fields).collect()) {
        let owned_elsewhere = managed
            .iter()
            .any(|entry| entry.manager != options.manager && entry.fields.iter().any(|owned| overlaps(owned, path)));
        if !owned_elsewhere {
            remove_path(&mut result, path);
        }
    }
    for path in &applied_order {
        let Some(value) = get_path(applied, path) else { continue };
        // An applied empty map creates the map; it never clears fields others set inside it.
        let keeps_map =
            value.as_object().is_some_and(Map::is_empty) && get_path(&result, path).is_some_and(Value::is_object);
        if !keeps_map {
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
fn owned_fields(resource: &ResourceType, applied: &Value, status: bool) -> Vec<FieldPath> {
    let mut fields = Vec::new();
    let Some(root) = applied.as_object() else {
        return fields;
    };
    for (key, value) in root {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "status" if status || !resource.status_subresource => {
                leaves(resource, value, vec![key.clone()], &mut fields);
            }
            _ if status => {}
            "metadata" => {
                for owned in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(value) = value.get(owned) {
                        leaves(resource, value, vec![key.clone(), owned.to_owned()], &mut fields);
                    }
                }
            }
            "status" => {}
            _ => leaves(resource, value, vec![key.clone()], &mut fields),
        }
    }
    fields
}

/// Collects the leaf paths of a value: maps are walked, so are the elements of lists merged by
/// key; everything else is a leaf, and so is an empty map (as in the API server, applying
/// `initdb: {}` sets and owns `initdb`).
fn leaves(resource: &ResourceType, value: &Value, path: FieldPath, out: &mut Vec<FieldPath>) {
    if let (Some(items), Some(keys)) = (value.as_array(), resource.list_map_keys(&path)) {
        for item in items {
            if let Some(segment) = element_segment(keys, item) {
                let mut item_path = path.clone();
                item_path.push(segment);
                leaves(resource, item, item_path, out);
            }
        }
        return;
    }
    match value.as_object() {
        Some(map) if map.is_empty() && path.len() > 1 => out.push(path),
        Some(map) => {
            for (key, child) in map {
                let mut child_path = path.clone();
                child_path.push(key.clone());
                leaves(resource, child, child_path, out);
            }
        }
        None => out.push(path),
    }
}

/// The path segment of a list element merged by `keys`: `k:{"type":"Ready"}`; `None` when the
/// element lacks a key.
fn element_segment(keys: &[String], item: &Value) -> Option<String> {
    let mut identity = Map::new();
    for key in keys {
        identity.insert(key.clone(), item.get(key)?.clone());
    }
    Some(format!("k:{}", Value::Object(identity)))
}

/// The key fields of an element segment, `None` for a plain field name.
fn element_keys(segment: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(segment.strip_prefix("k:")?) {
        Ok(Value::Object(keys)) => Some(keys),
        _ => None,
    }
}

fn is_element(item: &Value, keys: &Map<String, Value>) -> bool {
    keys.iter().all(|(key, value)| item.get(key) == Some(value))
}

/// The child of `node` at one segment: a map's field or a keyed list's element.
fn child<'a>(node: &'a Value, segment: &str) -> Option<&'a Value> {
    match element_keys(segment) {
        Some(keys) => node.as_array()?.iter().find(|item| is_element(item, &keys)),
        None => node.get(segment),
    }
}

fn child_mut<'a>(node: &'a mut Value, segment: &str) -> Option<&'a mut Value> {
    match element_keys(segment) {
        Some(keys) => node.as_array_mut()?.iter_mut().find(|item| is_element(item, &keys)),
        None => node.get_mut(segment),
    }
}

/// Encodes paths as `FieldsV1` (`{"f:spec": {"f:replicas": {}}}`).
fn fields_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for key in path {
            let name = if key.starts_with("k:") { key.clone() } else { format!("f:{key}") };
            let child = node.entry(name).or_insert_with(|| json!({}));
            if !child.is_object() {
                *child = json!({});
            }
            node = child.as_object_mut().expect("child was just made a map");
        }
    }
    Value::Object(root)
}

/// Decodes `FieldsV1` written by [`fields_v1`]; a node without `f:` children is a leaf.
fn parse_fields_v1<'a>(value: &'a Value, path: FieldPath, out: &mut BTreeSet<FieldPath>) {
    let children: BTreeMap<&str, &Value> = value
        .as_object()
        .map(|map| {
            let named = |key: &'a String| key.strip_prefix("f:").or(key.starts_with("k:").then_some(key.as_str()));
            map.iter().filter_map(|(key, child)| Some((named(key)?, child))).collect()
        })
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
    path.iter().try_fold(value, |node, key| child(node, key))
}

fn set_path(value: &mut Value, path: &FieldPath, leaf: Value) {
    let mut node = value;
    for key in path {
        node = match element_keys(key) {
            Some(keys) => {
                if !node.is_array() {
                    *node = json!([]);
                }
                let items = node.as_array_mut().expect("node was just made a list");
                let at = match items.iter().position(|item| is_element(item, &keys)) {
                    Some(at) => at,
                    None => {
                        items.push(Value::Object(keys));
                        items.len() - 1
                    }
                };
                &mut items[at]
            }
            None => {
                if !node.is_object() {
                    *node = json!({});
                }
                let map = node.as_object_mut().expect("node was just made a map");
                map.entry(key.clone()).or_insert(Value::Null)
            }
        };
    }
    *node = leaf;
}

/// Removes the field at `path` and then any map, list or list element that removal left empty.
/// A key field of a list element stays while the element has other fields, and takes the
/// element with it when it has none.
fn remove_path(value: &mut Value, path: &FieldPath) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if let Some((element, _)) = parents.split_last()
        && let Some(keys) = element_keys(element)
        && keys.contains_key(last)
    {
        let only_keys = get_path(value, &parents.to_vec())
            .and_then(Value::as_object)
            .is_some_and(|item| item.keys().all(|field| keys.contains_key(field)));
        if only_keys {
            remove_path(value, &parents.to_vec());
        }
        return;
    }
    let Some(parent) = parents.iter().try_fold(&mut *value, |node, key| child_mut(node, key)) else {
        return;
    };
    let emptied = match (element_keys(last), parent) {
        (Some(keys), Value::Array(items)) => {
            items.retain(|item| !is_element(item, &keys));
            items.is_empty()
        }
        (None, Value::Object(map)) => {
            map.remove(last);
            map.is_empty()
        }
        _ => false,
    };
    let parent_is_element = parents.last().is_some_and(|segment| segment.starts_with("k:"));
    if emptied && !parents.is_empty() && !parent_is_element {
        remove_path(value, &parents.to_vec());
    }
}

/// Orders removals so that key fields of list elements go after the element's other fields.
fn removal_order(paths: Vec<&FieldPath>) -> Vec<&FieldPath> {
    let is_key = |path: &FieldPath| {
        let mut segments = path.iter().rev();
        let (Some(last), Some(element)) = (segments.next(), segments.next()) else { return false };
        element_keys(element).is_some_and(|keys| keys.contains_key(last))
    };
    let (keys, others): (Vec<&FieldPath>, Vec<&FieldPath>) = paths.into_iter().partition(|path| is_key(path));
    others.into_iter().chain(keys).collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

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
    fn an_applied_empty_map_is_set_and_owned_until_left_out() {
        let applied = json!({"metadata": {"name": "a"}, "spec": {"x": 1, "mode": {}}});
        let first = apply_as("loader", false, None, applied).expect("first apply");
        assert_eq!(first["spec"], json!({"x": 1, "mode": {}}));
        assert_eq!(first["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:mode"], json!({}));
        let second = apply_as("loader", false, Some(&first), json!({"metadata": {"name": "a"}, "spec": {"x": 1}}))
            .expect("second apply");
        assert_eq!(second["spec"], json!({"x": 1}), "the empty map went with its manager");
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

    fn conditions_of(object: &Value) -> Vec<(String, String)> {
        let items = object["status"]["conditions"].as_array().cloned().unwrap_or_default();
        items.iter().map(|item| (item["type"].as_str().unwrap_or("").to_owned(), item["status"].to_string())).collect()
    }

    fn apply_status_as(manager: &str, existing: &Value, status: Value) -> Result<Value, ApiError> {
        let resource = thing().with_list_map(&["status", "conditions"], &["type"]);
        let options = ApplyOptions { manager, force: true, status: true };
        apply(&resource, Some(existing), &json!({"metadata": {"name": "a"}, "status": status}), &options)
    }

    #[test]
    fn two_managers_own_different_elements_of_a_list_merged_by_key() {
        let live = json!({"metadata": {"name": "a"}, "spec": {}});
        let host = json!({"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]});
        let live = apply_status_as("host", &live, host).expect("host apply");
        let backups = json!({"conditions": [{"type": "LastBackupSucceeded", "status": "True"}], "lastBackup": "b1"});
        let live = apply_status_as("backups", &live, backups).expect("backups apply");
        let host = json!({"phase": "Degraded", "conditions": [{"type": "Ready", "status": "False"}]});
        let live = apply_status_as("host", &live, host).expect("host apply again");
        assert_eq!(
            conditions_of(&live),
            [("Ready".to_owned(), "\"False\"".to_owned()), ("LastBackupSucceeded".to_owned(), "\"True\"".to_owned())]
        );
        assert_eq!(
            (live["status"]["phase"].clone(), live["status"]["lastBackup"].clone()),
            (json!("Degraded"), json!("b1"))
        );
        let mut parsed = BTreeSet::new();
        let entries = managed_entries(&live);
        let host_entry = entries.iter().find(|entry| entry.manager == "host").expect("host entry");
        parse_fields_v1(&host_entry.raw["fieldsV1"], Vec::new(), &mut parsed);
        assert!(parsed.contains(&vec![
            "status".into(),
            "conditions".into(),
            r#"k:{"type":"Ready"}"#.into(),
            "status".into()
        ]));
        assert!(parsed.iter().all(|path| !path.iter().any(|segment| segment.contains("LastBackupSucceeded"))));
    }

    #[test]
    fn an_element_its_manager_no_longer_applies_goes_and_the_others_stay() {
        let live = json!({"metadata": {"name": "a"}, "spec": {}});
        let both = json!({"conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "True"}]});
        let live = apply_status_as("host", &live, both).expect("host apply");
        let live = apply_status_as("backups", &live, json!({"conditions": [{"type": "C", "status": "False"}]}))
            .expect("backups apply");
        let live = apply_status_as("host", &live, json!({"conditions": [{"type": "B", "status": "True"}]}))
            .expect("host drops A");
        let types: Vec<String> = conditions_of(&live).into_iter().map(|(type_, _)| type_).collect();
        assert_eq!(types, ["B", "C"]);
        let live = apply_status_as("host", &live, json!({"conditions": [{"type": "Z"}, {"type": "A"}]}))
            .expect("host adds two");
        let types: Vec<String> = conditions_of(&live).into_iter().map(|(type_, _)| type_).collect();
        assert_eq!(types, ["C", "Z", "A"], "new elements come in the order they were applied");
        let live = apply_status_as("host", &live, json!({})).expect("host drops everything");
        let live = apply_status_as("backups", &live, json!({})).expect("backups drops everything");
        assert_eq!(live.get("status").and_then(|status| status.get("conditions")), None, "{live}");
    }

    #[test]
    fn list_maps_are_read_from_a_crd_schema() {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "metadata": {"name": "things.x.io"},
            "spec": {"group": "x.io", "names": {"kind": "Thing", "plural": "things"}, "scope": "Namespaced",
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object", "properties": {"status": {"type": "object", "properties": {
                        "conditions": {"type": "array", "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["type"], "items": {"type": "object"}},
                        "names": {"type": "array", "items": {"type": "string"}}}}}}}}]}
        }))
        .expect("crd");
        let resource = thing().with_crd_schema(&crd);
        assert_eq!(resource.list_map_keys(&["status".into(), "conditions".into()]), Some(&["type".to_owned()][..]));
        assert_eq!(resource.list_map_keys(&["status".into(), "names".into()]), None);
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
