//! GET of one object and of collections (label/field selectors, limit and continue).

use serde_json::{Value, json};

use crate::{
    error::ApiError,
    request::ApiRequest,
    selector::Selector,
    state::{State, object_key},
    store::ObjectKey,
};

/// Answers one object.
pub(crate) fn get(state: &State, request: &ApiRequest) -> Result<Value, ApiError> {
    let target = &request.target;
    let name = target.object_name();
    state.store.get(&object_key(target, name)).cloned().ok_or_else(|| ApiError::not_found(&target.resource, name))
}

/// The matching objects of a list or delete-collection request, in namespace/name order.
pub(crate) fn matching<'a>(
    state: &'a State,
    request: &ApiRequest,
) -> Result<Vec<(&'a ObjectKey, &'a Value)>, ApiError> {
    let selector = Selector::parse(request.query.get("labelSelector"), request.query.get("fieldSelector"))?;
    let target = &request.target;
    Ok(state
        .store
        .list(&target.resource.key(), target.namespace.as_deref())
        .into_iter()
        .filter(|(_, object)| selector.matches(object))
        .collect())
}

/// Answers a list: the matching objects and the current resourceVersion, paged by
/// `limit`/`continue` when asked (the continue token is the last returned `namespace/name`).
pub(crate) fn list(state: &State, request: &ApiRequest) -> Result<Value, ApiError> {
    let resource_version = state.store.resource_version();
    if request.query.get("resourceVersionMatch") == Some("Exact")
        && request.query.get("resourceVersion") != Some(resource_version.to_string().as_str())
    {
        return Err(ApiError::gone(format!(
            "too old resource version: {} ({resource_version})",
            request.query.get("resourceVersion").unwrap_or_default()
        )));
    }
    let after = request.query.get("continue").map(str::to_owned);
    let limit = request.query.get("limit").and_then(|limit| limit.parse::<usize>().ok()).filter(|limit| *limit > 0);
    let all = matching(state, request)?;
    let remaining: Vec<_> =
        all.into_iter().filter(|(key, _)| after.as_ref().is_none_or(|after| continue_token(key) > *after)).collect();
    let page_size = limit.unwrap_or(remaining.len()).min(remaining.len());
    let mut metadata = json!({ "resourceVersion": resource_version.to_string() });
    if page_size < remaining.len()
        && let Some((last, _)) = remaining.get(page_size.saturating_sub(1))
    {
        metadata["continue"] = json!(continue_token(last));
        metadata["remainingItemCount"] = json!(remaining.len() - page_size);
    }
    let items: Vec<Value> = remaining.into_iter().take(page_size).map(|(_, object)| object.clone()).collect();
    Ok(list_of(&request.target.resource.api_version(), &request.target.resource.kind, metadata, items))
}

/// A `{Kind}List` object.
pub(crate) fn list_of(api_version: &str, kind: &str, metadata: Value, items: Vec<Value>) -> Value {
    json!({ "apiVersion": api_version, "kind": format!("{kind}List"), "metadata": metadata, "items": items })
}

/// The continue token naming an object: its `namespace/name`, which orders like the store.
fn continue_token(key: &ObjectKey) -> String {
    format!("{}/{}", key.namespace, key.name)
}

/// The `PartialObjectMetadata` form of an object, for clients asking for metadata only.
pub(crate) fn metadata_only(object: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The `PartialObjectMetadataList` form of a list.
pub(crate) fn metadata_only_list(list: &Value) -> Value {
    let items: Option<Vec<Value>> =
        list.get("items").and_then(Value::as_array).map(|items| items.iter().map(metadata_only).collect());
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadataList",
        "metadata": list.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "items": items.unwrap_or_default(),
    })
}
