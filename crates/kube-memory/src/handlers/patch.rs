//! PATCH: merge, strategic merge (as merge), JSON patch and server-side apply, each computed
//! on the stored object and then stored through the common update path.

use serde_json::Value;

use super::write;
use crate::{
    apply::{self, ApplyOptions},
    error::ApiError,
    request::{ApiRequest, PatchKind},
    state::{State, object_key},
};

/// Applies a patch request; answers the stored object and the HTTP code (201 when apply created it).
pub(crate) fn patch(state: &mut State, request: &ApiRequest, kind: PatchKind) -> Result<(u16, Value), ApiError> {
    let target = &request.target;
    let resource = &target.resource;
    let name = target.object_name();
    let existing = state.store.get(&object_key(target, name)).cloned();
    let dry_run = request.query.dry_run();
    if kind == PatchKind::Apply {
        return server_side_apply(state, request, existing.as_ref());
    }
    let old = existing.ok_or_else(|| ApiError::not_found(resource, name))?;
    let mut patched = old.clone();
    match kind {
        PatchKind::Merge | PatchKind::Strategic => json_patch::merge(&mut patched, &parse_json(&request.body)?),
        PatchKind::Json => json_patch(&mut patched, &request.body)?,
        PatchKind::Apply => {}
    }
    Ok((200, write::update(state, target, &old, patched, dry_run)?))
}

/// Server-side apply: creates the object when missing (not for `/status`), else updates it.
fn server_side_apply(
    state: &mut State,
    request: &ApiRequest,
    existing: Option<&Value>,
) -> Result<(u16, Value), ApiError> {
    let target = &request.target;
    let manager = request.query.get("fieldManager").ok_or_else(|| {
        ApiError::bad_request("PATCH with application/apply-patch+yaml requires a fieldManager".to_owned())
    })?;
    let applied: Value = serde_yaml_ng::from_slice(&request.body)
        .map_err(|error| ApiError::bad_request(format!("failed to decode the applied configuration: {error}")))?;
    let options = ApplyOptions { manager, force: request.query.flag("force"), status: target.is_status() };
    let dry_run = request.query.dry_run();
    match existing {
        Some(old) => {
            let next = apply::apply(&target.resource, Some(old), &applied, &options)?;
            Ok((200, write::update(state, target, old, next, dry_run)?))
        }
        None if target.is_status() => Err(ApiError::not_found(&target.resource, target.object_name())),
        None => {
            let mut next = apply::apply(&target.resource, None, &applied, &options)?;
            crate::meta::set(&mut next, "name", Value::String(target.object_name().to_owned()));
            Ok((201, write::create(state, target, next, dry_run)?))
        }
    }
}

/// Applies an RFC 6902 JSON patch. As in the API server, a `test` for `null` passes when the
/// path does not exist (kube's `finalizer()` relies on this to add the first finalizer).
fn json_patch(document: &mut Value, body: &[u8]) -> Result<(), ApiError> {
    let operations: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("failed to decode the JSON patch: {error}")))?;
    for operation in &operations.0 {
        if let json_patch::PatchOperation::Test(test) = operation
            && test.value.is_null()
            && document.pointer(test.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(document, std::slice::from_ref(operation))
            .map_err(|error| ApiError::unprocessable(format!("the JSON patch could not be applied: {error}")))?;
    }
    Ok(())
}

/// Parses a JSON request body.
pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("failed to decode the request body as JSON: {error}")))
}
