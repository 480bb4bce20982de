//! Errors: API failures answered as `metav1.Status`, and the crate's own errors.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::registry::ResourceType;

/// A failed API request, answered with a `metav1.Status` body and its HTTP code, as the
/// Kubernetes API server does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, …).
    pub reason: &'static str,
    /// Human-readable message in the API server's wording.
    pub message: String,
    /// `details` of the Status (name, group, kind, causes), when the error is about an object.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self { code, reason, message, details: None }
    }

    fn about(mut self, resource: &ResourceType, name: &str) -> Self {
        self.details = Some(json!({ "name": name, "group": resource.group, "kind": resource.plural }));
        self
    }

    /// 404: the named object does not exist.
    pub fn not_found(resource: &ResourceType, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", resource.qualified_plural()))
            .about(resource, name)
    }

    /// 404: no resource is served at this path.
    pub fn no_such_path() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource".to_owned())
    }

    /// 409: create of an object whose name is taken.
    pub fn already_exists(resource: &ResourceType, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", resource.qualified_plural()))
            .about(resource, name)
    }

    /// 409: a write based on a stale resourceVersion (or a failed precondition).
    pub fn conflict(resource: &ResourceType, name: &str, why: &str) -> Self {
        let message = format!("Operation cannot be fulfilled on {} \"{name}\": {why}", resource.qualified_plural());
        Self::new(409, "Conflict", message).about(resource, name)
    }

    /// 409 with the API server's wording for a stale resourceVersion.
    pub fn stale(resource: &ResourceType, name: &str) -> Self {
        Self::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422: the object fails validation.
    pub fn invalid(resource: &ResourceType, name: &str, field: &str, why: &str) -> Self {
        let kind = if resource.group.is_empty() {
            resource.kind.clone()
        } else {
            format!("{}.{}", resource.kind, resource.group)
        };
        let message = format!("{kind} \"{name}\" is invalid: {why}");
        let mut error = Self::new(422, "Invalid", message).about(resource, name);
        if let Some(details) = error.details.as_mut() {
            details["kind"] = json!(resource.kind);
            details["causes"] = json!([{ "reason": "FieldValueInvalid", "message": why, "field": field }]);
        }
        error
    }

    /// 422 without an object, e.g. a JSON patch whose `test` operation fails.
    pub fn unprocessable(message: String) -> Self {
        Self::new(422, "Invalid", message)
    }

    /// 410: the requested resourceVersion is older than the kept history.
    pub fn gone(message: String) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 400: a malformed request.
    pub fn bad_request(message: String) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405: the verb is not served at this path.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        )
    }

    /// 415: an unknown patch content type.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {content_type:?}"
            ),
        )
    }

    /// 500: an internal error (also what injected faults answer).
    pub fn internal(message: String) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `metav1.Status` object describing this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// Failures of the server's own operations outside the HTTP surface (state directory, loading).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state snapshot could not be read.
    #[error("failed to read the API state from {path}: {source}; check the state directory's permissions")]
    ReadState { path: PathBuf, source: std::io::Error },
    /// The state snapshot is not valid JSON of the expected shape.
    #[error("failed to parse the API state in {path}: {source}; the file is damaged, restore or remove it")]
    ParseState { path: PathBuf, source: serde_json::Error },
    /// The state snapshot parses but holds something that cannot be an object.
    #[error("failed to load the API state from {path}: {reason}; the file is damaged, restore or remove it")]
    InvalidState { path: PathBuf, reason: String },
    /// The state snapshot could not be written.
    #[error("failed to write the API state to {path}: {source}; check free space and permissions")]
    WriteState { path: PathBuf, source: std::io::Error },
    /// A YAML document could not be parsed.
    #[error("failed to parse YAML document {index}: {source}")]
    Yaml { index: usize, source: serde_yaml_ng::Error },
    /// A loaded object names a kind the server does not serve.
    #[error(
        "failed to load object {index}: no resource type is registered for apiVersion {api_version:?} kind {kind:?}"
    )]
    UnknownKind { index: usize, api_version: String, kind: String },
    /// The API refused a write of a loaded object.
    #[error("failed to apply {kind} {name:?}: {source}")]
    Api { kind: String, name: String, source: Box<ApiError> },
}
