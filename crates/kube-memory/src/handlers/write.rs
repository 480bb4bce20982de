//! The write paths every mutating verb ends in: create, update (with status isolation,
//! generation and finalizer rules) and delete.

use serde_json::{Value, json};

use crate::{
    error::ApiError,
    meta,
    request::Target,
    state::{State, object_key},
    store::ChangeKind,
};

/// Fields of `metadata` the server owns: a write never changes them.
const SERVER_OWNED_METADATA: [&str; 6] =
    ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "namespace"];

/// Characters the API server appends to `generateName`.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Stores a new object (POST): checks identity, fills server fields, validates, refuses taken names.
pub(crate) fn create(state: &mut State, target: &Target, mut object: Value, dry_run: bool) -> Result<Value, ApiError> {
    let resource = &target.resource;
    if !object.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object".to_owned()));
    }
    check_type(target, &object)?;
    stamp_type(target, &mut object);
    let requested_namespace = meta::string(&object, "namespace").map(str::to_owned);
    if requested_namespace.is_some() && requested_namespace != target.namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request".to_owned(),
        ));
    }
    if meta::resource_version(&object).is_some() {
        return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created".to_owned()));
    }
    let name = match (meta::name(&object), meta::string(&object, "generateName")) {
        (Some(name), _) => name.to_owned(),
        (None, Some(prefix)) => format!("{prefix}{}", random_suffix()),
        (None, None) => {
            return Err(ApiError::invalid(resource, "", "metadata.name", "name or generateName is required"));
        }
    };
    let key = object_key(target, &name);
    if state.store.get(&key).is_some() {
        return Err(ApiError::already_exists(resource, &name));
    }
    meta::set(&mut object, "name", json!(name));
    if let Some(namespace) = &target.namespace {
        meta::set(&mut object, "namespace", json!(namespace));
    }
    meta::set(&mut object, "uid", json!(uuid::Uuid::new_v4().to_string()));
    meta::set(&mut object, "creationTimestamp", json!(meta::now()));
    meta::set(&mut object, "generation", json!(1));
    meta::remove(&mut object, "deletionTimestamp");
    meta::remove(&mut object, "deletionGracePeriodSeconds");
    if resource.status_subresource
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    resource.default_fields(&mut object);
    state.validate(resource, None, &object)?;
    if dry_run {
        return Ok(object);
    }
    Ok(state.store.commit(key, ChangeKind::Added, object))
}

/// Replaces a stored object with `new` (PUT, and every patch after it is computed).
///
/// A non-empty `metadata.resourceVersion` in `new` must equal the stored one (409 Conflict
/// otherwise). Writes to `/status` change only `.status`; writes to the main resource of a kind
/// with a status subresource keep the stored `.status`. `metadata.generation` grows when the
/// spec changes. An update that changes nothing is not stored and emits no event. When a
/// deleting object loses its last finalizer, it is removed.
pub(crate) fn update(
    state: &mut State,
    target: &Target,
    old: &Value,
    new: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let resource = &target.resource;
    let name = target.object_name();
    if !new.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object".to_owned()));
    }
    if let Some(version) = meta::resource_version(&new)
        && Some(version) != meta::resource_version(old)
    {
        return Err(ApiError::stale(resource, name));
    }
    if meta::name(&new).is_some_and(|new_name| new_name != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta::name(&new).unwrap_or_default()
        )));
    }
    check_type(target, &new)?;
    let mut next = if target.is_status() { with_status_of(old, &new) } else { with_spec_of(target, old, new) };
    if meta::is_deleting(old) {
        let kept = meta::finalizers(old);
        if meta::finalizers(&next).iter().any(|finalizer| !kept.contains(finalizer)) {
            return Err(ApiError::invalid(
                resource,
                name,
                "metadata.finalizers",
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
            ));
        }
    }
    resource.default_fields(&mut next);
    state.validate(resource, Some(old), &next)?;
    if meta::spec_changed(resource, old, &next) {
        meta::set(&mut next, "generation", json!(meta::generation(old) + 1));
    }
    meta::copy(old, &mut next, "resourceVersion");
    if next == *old || dry_run {
        return Ok(next);
    }
    let key = object_key(target, name);
    if meta::is_deleting(&next) && meta::finalizers(&next).is_empty() {
        return Ok(state.store.commit(key, ChangeKind::Deleted, next));
    }
    Ok(state.store.commit(key, ChangeKind::Modified, next))
}

/// The stored object with only `.status` (and managed fields) taken from `new`.
fn with_status_of(old: &Value, new: &Value) -> Value {
    let mut next = old.clone();
    if let Some(map) = next.as_object_mut() {
        match new.get("status") {
            Some(status) => map.insert("status".to_owned(), status.clone()),
            None => map.remove("status"),
        };
    }
    if new.get("metadata").and_then(|metadata| metadata.get("managedFields")).is_some() {
        meta::copy(new, &mut next, "managedFields");
    }
    next
}

/// `new` with the server-owned metadata of the stored object, and its `.status` when status is
/// a subresource.
fn with_spec_of(target: &Target, old: &Value, mut new: Value) -> Value {
    for field in SERVER_OWNED_METADATA {
        meta::copy(old, &mut new, field);
    }
    meta::set(&mut new, "name", json!(target.object_name()));
    stamp_type(target, &mut new);
    if new.get("metadata").and_then(|metadata| metadata.get("managedFields")).is_none() {
        meta::copy(old, &mut new, "managedFields");
    }
    if target.resource.status_subresource
        && let Some(map) = new.as_object_mut()
    {
        match old.get("status") {
            Some(status) => map.insert("status".to_owned(), status.clone()),
            None => map.remove("status"),
        };
    }
    new
}

/// Refuses an object of another kind and fills in `apiVersion` and `kind` when missing.
fn check_type(target: &Target, object: &Value) -> Result<(), ApiError> {
    let resource = &target.resource;
    let kind = object.get("kind").and_then(Value::as_str).filter(|kind| !kind.is_empty());
    let api_version = object.get("apiVersion").and_then(Value::as_str).filter(|version| !version.is_empty());
    if kind.is_some_and(|kind| kind != resource.kind)
        || api_version.is_some_and(|version| version != resource.api_version())
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({}) or kind {} is not {}",
            api_version.unwrap_or_default(),
            resource.api_version(),
            kind.unwrap_or_default(),
            resource.kind
        )));
    }
    Ok(())
}

/// Sets `apiVersion` and `kind` to the target's.
fn stamp_type(target: &Target, object: &mut Value) {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".to_owned(), json!(target.resource.api_version()));
        map.insert("kind".to_owned(), json!(target.resource.kind));
    }
}

/// Preconditions a delete may carry (`DeleteOptions.preconditions`).
#[derive(Debug, Default)]
pub(crate) struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// Deletes an object: with finalizers, marks it deleting (deletionTimestamp, generation + 1) and
/// keeps it (202 Accepted); without, removes it (200 OK). Answers the object either way.
pub(crate) fn delete(
    state: &mut State,
    target: &Target,
    preconditions: &Preconditions,
    dry_run: bool,
) -> Result<(u16, Value), ApiError> {
    let resource = &target.resource;
    let name = target.object_name();
    let key = object_key(target, name);
    let old = state.store.get(&key).ok_or_else(|| ApiError::not_found(resource, name))?.clone();
    if let Some(uid) = &preconditions.uid
        && Some(uid.as_str()) != meta::string(&old, "uid")
    {
        let why = format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta::string(&old, "uid").unwrap_or_default()
        );
        return Err(ApiError::conflict(resource, name, &why));
    }
    if let Some(version) = &preconditions.resource_version
        && Some(version.as_str()) != meta::resource_version(&old)
    {
        return Err(ApiError::conflict(
            resource,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {version}, ResourceVersion in object meta: {}",
                meta::resource_version(&old).unwrap_or_default()
            ),
        ));
    }
    if meta::finalizers(&old).is_empty() {
        if dry_run {
            return Ok((200, old));
        }
        return Ok((200, state.store.commit(key, ChangeKind::Deleted, old)));
    }
    if meta::is_deleting(&old) || dry_run {
        return Ok((202, old));
    }
    let mut next = old.clone();
    meta::set(&mut next, "deletionTimestamp", json!(meta::now()));
    meta::set(&mut next, "deletionGracePeriodSeconds", json!(0));
    if meta::generation(&old) > 0 {
        meta::set(&mut next, "generation", json!(meta::generation(&old) + 1));
    }
    Ok((202, state.store.commit(key, ChangeKind::Modified, next)))
}

/// A random five-character suffix for `generateName`.
fn random_suffix() -> String {
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|byte| char::from(NAME_ALPHABET[usize::from(*byte) % NAME_ALPHABET.len()]))
        .collect()
}
