//! Request dispatch: one function per verb, all run with the state locked.

pub(crate) mod patch;
pub(crate) mod read;
pub(crate) mod write;

use serde_json::{Value, json};

use crate::{
    error::ApiError,
    meta,
    request::{ApiRequest, Verb},
    state::State,
    watch::{self, WatchPlan},
};

/// What a request is answered with.
pub(crate) enum Outcome {
    /// A JSON body with an HTTP status code.
    Json(u16, Value),
    /// A watch stream.
    Watch(Box<WatchPlan>),
}

/// Serves one resource request.
pub(crate) fn handle(state: &mut State, request: &ApiRequest) -> Result<Outcome, ApiError> {
    if let Some(error) = state.faults.take(request) {
        return Err(error);
    }
    let target = &request.target;
    let dry_run = request.query.dry_run();
    let (code, body) = match request.verb {
        Verb::Get => (200, read::get(state, request)?),
        Verb::List => (200, read::list(state, request)?),
        Verb::Watch => return Ok(Outcome::Watch(Box::new(watch::plan(state, request)?))),
        Verb::Create if target.subresource.is_some() => {
            return Err(ApiError::method_not_allowed("POST"));
        }
        Verb::Create => (201, write::create(state, target, patch::parse_json(&request.body)?, dry_run)?),
        Verb::Replace => {
            let old = read::get(state, request)?;
            let new = patch::parse_json(&request.body)?;
            if !target.resource.unconditional_update && meta::resource_version(&new).is_none() {
                let why = "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update";
                return Err(ApiError::invalid(&target.resource, target.object_name(), "metadata.resourceVersion", why));
            }
            (200, write::update(state, target, &old, new, dry_run)?)
        }
        Verb::Patch(kind) => patch::patch(state, request, kind)?,
        Verb::Delete if target.subresource.is_some() => return Err(ApiError::method_not_allowed("DELETE")),
        Verb::Delete => write::delete(state, target, &preconditions(&request.body)?, dry_run)?,
        Verb::DeleteCollection => (200, delete_collection(state, request)?),
    };
    let body = match (request.metadata_only, request.verb) {
        (true, Verb::List) => read::metadata_only_list(&body),
        (true, _) => read::metadata_only(&body),
        (false, _) => body,
    };
    Ok(Outcome::Json(code, body))
}

/// The preconditions of a DELETE's `DeleteOptions` body (empty body: none).
fn preconditions(body: &[u8]) -> Result<write::Preconditions, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(write::Preconditions::default());
    }
    let options = patch::parse_json(body)?;
    let field = |name: &str| {
        options.get("preconditions").and_then(|preconditions| preconditions.get(name)).and_then(Value::as_str)
    };
    Ok(write::Preconditions {
        uid: field("uid").map(str::to_owned),
        resource_version: field("resourceVersion").map(str::to_owned),
    })
}

/// Deletes every matching object; answers the list of them as they were deleted or marked.
fn delete_collection(state: &mut State, request: &ApiRequest) -> Result<Value, ApiError> {
    let names: Vec<(String, String)> =
        read::matching(state, request)?.into_iter().map(|(key, _)| (key.namespace.clone(), key.name.clone())).collect();
    let mut deleted = Vec::new();
    for (namespace, name) in names {
        let mut target = request.target.clone();
        target.namespace = (!namespace.is_empty()).then_some(namespace);
        target.name = Some(name);
        let (_, object) = write::delete(state, &target, &write::Preconditions::default(), request.query.dry_run())?;
        deleted.push(object);
    }
    let metadata = json!({ "resourceVersion": state.store.resource_version().to_string() });
    let resource = &request.target.resource;
    Ok(read::list_of(&resource.api_version(), &resource.kind, metadata, deleted))
}
