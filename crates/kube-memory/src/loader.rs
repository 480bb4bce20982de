//! Direct writes without HTTP, for loading resources from files (local mode) and for tests:
//! each object is server-side applied, so loading the same files again changes nothing and
//! fields removed from a file are removed from the object.

use serde::Deserialize;
use serde_json::Value;

use crate::{
    error::{ApiError, Error},
    handlers::{self, Outcome},
    meta,
    request::{ApiRequest, PatchKind, Query, Target, Verb},
    server::MemoryApiServer,
};

/// The namespace of namespaced objects that name none, as `kubectl apply` uses.
const DEFAULT_NAMESPACE: &str = "default";

impl MemoryApiServer {
    /// Creates or updates every object of a (multi-document) YAML text by server-side apply as
    /// `field_manager`, forcing ownership; answers the stored objects in order.
    pub fn apply_yaml(&self, yaml: &str, field_manager: &str) -> Result<Vec<Value>, Error> {
        let mut objects = Vec::new();
        for (index, document) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
            let object = Value::deserialize(document).map_err(|source| Error::Yaml { index, source })?;
            if !object.is_null() {
                objects.push(object);
            }
        }
        self.apply_objects(objects, field_manager)
    }

    /// Creates or updates each object by server-side apply as `field_manager` (forcing
    /// ownership); answers the stored objects in order. Stops at the first refused object.
    pub fn apply_objects(
        &self,
        objects: impl IntoIterator<Item = Value>,
        field_manager: &str,
    ) -> Result<Vec<Value>, Error> {
        objects
            .into_iter()
            .enumerate()
            .map(|(index, object)| {
                let request = self.apply_request(index, &object, field_manager)?;
                let kind = request.target.resource.kind.clone();
                let name = request.target.object_name().to_owned();
                self.run_direct(&request).map_err(|source| Error::Api { kind, name, source: Box::new(source) })
            })
            .collect()
    }

    /// Deletes an object as a DELETE request would (finalizers are honoured); answers the
    /// object as deleted or marked for deletion, `None` when there was none.
    pub fn delete_object(
        &self,
        resource: &crate::ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let target = Target {
            resource: resource.clone(),
            namespace: namespace.map(str::to_owned),
            name: Some(name.to_owned()),
            subresource: None,
        };
        let request =
            ApiRequest { verb: Verb::Delete, target, query: Query::default(), body: Vec::new(), metadata_only: false };
        match self.run_direct(&request) {
            Ok(object) => Ok(Some(object)),
            Err(error) if error.code == 404 => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The apply request for one loaded object.
    fn apply_request(&self, index: usize, object: &Value, field_manager: &str) -> Result<ApiRequest, Error> {
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
        let unknown = || Error::UnknownKind { index, api_version: api_version.to_owned(), kind: kind.to_owned() };
        let resource = self.resource_of(api_version, kind).ok_or_else(unknown)?;
        let name = meta::name(object).unwrap_or_default().to_owned();
        let namespace =
            resource.namespaced.then(|| meta::string(object, "namespace").unwrap_or(DEFAULT_NAMESPACE).to_owned());
        let target = Target { resource, namespace, name: Some(name), subresource: None };
        let query = Query::from_pairs([("fieldManager", field_manager), ("force", "true")]);
        let body = serde_json::to_vec(object).map_err(|error| Error::Api {
            kind: kind.to_owned(),
            name: meta::name(object).unwrap_or_default().to_owned(),
            source: Box::new(ApiError::bad_request(format!("failed to encode the object: {error}"))),
        })?;
        Ok(ApiRequest { verb: Verb::Patch(PatchKind::Apply), target, query, body, metadata_only: false })
    }

    /// Runs a request on the state without HTTP; answers the JSON body.
    fn run_direct(&self, request: &ApiRequest) -> Result<Value, ApiError> {
        match handlers::handle(&mut self.locked_state(), request)? {
            Outcome::Json(_, body) => Ok(body),
            Outcome::Watch(_) => Err(ApiError::method_not_allowed("WATCH")),
        }
    }
}
