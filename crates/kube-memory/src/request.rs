//! Turning an HTTP request into an API operation: which resource, which verb, which options.

use std::collections::BTreeMap;

use http::{Method, header::CONTENT_TYPE};

use crate::{error::ApiError, registry::Registry, registry::ResourceType};

/// What a request addresses: a resource type, optionally one namespace, one object and a subresource.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub resource: ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// Whether the request addresses the `/status` subresource.
    pub fn is_status(&self) -> bool {
        self.subresource.as_deref() == Some("status")
    }

    /// The object's name; only called for item requests, which always carry one.
    pub fn object_name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

/// How a PATCH body is to be applied, from its content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchKind {
    /// RFC 7386 JSON merge patch.
    Merge,
    /// Strategic merge patch, treated as a merge patch (our kinds have no patch strategies).
    Strategic,
    /// RFC 6902 JSON patch.
    Json,
    /// Server-side apply.
    Apply,
}

impl PatchKind {
    fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        match media_type {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/json-patch+json" => Ok(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }
}

/// The API verb of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    List,
    Watch,
    Create,
    Replace,
    Patch(PatchKind),
    Delete,
    DeleteCollection,
}

/// Query parameters of a request.
#[derive(Clone, Debug, Default)]
pub(crate) struct Query(BTreeMap<String, String>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned();
        Self(pairs.filter(|(key, _)| !key.is_empty()).collect())
    }

    /// Parameters given directly.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(pairs.into_iter().map(|(key, value)| (key.to_owned(), value.to_owned())).collect())
    }

    /// A parameter's value, `None` when absent or empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|value| !value.is_empty())
    }

    /// A boolean parameter (`true`/`1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    /// Whether `dryRun=All` was asked for.
    pub fn dry_run(&self) -> bool {
        self.get("dryRun").is_some()
    }
}

/// One parsed request to a resource path.
#[derive(Debug)]
pub(crate) struct ApiRequest {
    pub verb: Verb,
    pub target: Target,
    pub query: Query,
    pub body: Vec<u8>,
    /// The client asked for `PartialObjectMetadata` (metadata-only) answers.
    pub metadata_only: bool,
}

/// What a request path names.
#[derive(Debug)]
pub(crate) enum Route {
    /// A discovery document (`/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`, …).
    Discovery(Vec<String>),
    /// An operation on a resource.
    Resource(Box<ApiRequest>),
}

/// Parses a request's path, method and headers against the registry.
pub(crate) fn route(registry: &Registry, parts: &http::request::Parts, body: Vec<u8>) -> Result<Route, ApiError> {
    let segments: Vec<String> = parts.uri.path().split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let (group, version, rest) = match segments.as_slice() {
        [api, version, rest @ ..] if api == "api" && !rest.is_empty() => (String::new(), version.clone(), rest),
        [apis, group, version, rest @ ..] if apis == "apis" && !rest.is_empty() => {
            (group.clone(), version.clone(), rest)
        }
        _ => return Ok(Route::Discovery(segments)),
    };
    let (namespace, rest) = match rest {
        [namespaces, namespace, rest @ ..] if namespaces == "namespaces" && !rest.is_empty() => {
            (Some(namespace.clone()), rest)
        }
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (plural, None, None),
        [plural, name] => (plural, Some(name.clone()), None),
        [plural, name, subresource] => (plural, Some(name.clone()), Some(subresource.clone())),
        _ => return Err(ApiError::no_such_path()),
    };
    let resource = registry.by_path(&group, &version, plural).ok_or_else(ApiError::no_such_path)?.clone();
    check_scope(&resource, namespace.is_some(), name.is_some(), subresource.as_deref())?;
    let query = Query::parse(parts.uri.query());
    let verb = verb(&parts.method, &parts.headers, name.is_some(), &query)?;
    let metadata_only = parts
        .headers
        .get(http::header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("as=PartialObjectMetadata"));
    let target = Target { resource, namespace, name, subresource };
    Ok(Route::Resource(Box::new(ApiRequest { verb, target, query, body, metadata_only })))
}

/// Refuses paths that do not exist for the resource's scope and subresources.
fn check_scope(
    resource: &ResourceType,
    has_namespace: bool,
    has_name: bool,
    subresource: Option<&str>,
) -> Result<(), ApiError> {
    if has_namespace && !resource.namespaced {
        return Err(ApiError::no_such_path());
    }
    if has_name && resource.namespaced && !has_namespace {
        return Err(ApiError::no_such_path());
    }
    match subresource {
        None => Ok(()),
        Some("status") if resource.status_subresource => Ok(()),
        Some(_) => Err(ApiError::no_such_path()),
    }
}

/// The verb from the method, whether an object is named, and `watch=true`.
fn verb(method: &Method, headers: &http::HeaderMap, has_name: bool, query: &Query) -> Result<Verb, ApiError> {
    let verb = match (method.as_str(), has_name) {
        ("GET", true) => Verb::Get,
        ("GET", false) if query.flag("watch") => Verb::Watch,
        ("GET", false) => Verb::List,
        ("POST", false) => Verb::Create,
        ("PUT", true) => Verb::Replace,
        ("PATCH", true) => {
            let content_type = headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
            Verb::Patch(PatchKind::from_content_type(content_type)?)
        }
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        (method, _) => return Err(ApiError::method_not_allowed(method)),
    };
    Ok(verb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str) -> http::request::Parts {
        http::Request::builder().method(method).uri(uri).body(()).expect("valid request").into_parts().0
    }

    fn resource_request(method: &str, uri: &str) -> Result<ApiRequest, ApiError> {
        match route(&Registry::with_builtins(), &parts(method, uri), Vec::new())? {
            Route::Resource(request) => Ok(*request),
            Route::Discovery(path) => panic!("expected a resource path, got discovery {path:?}"),
        }
    }

    #[test]
    fn namespaced_item_paths_name_namespace_object_and_verb() {
        let request = resource_request("GET", "/apis/coordination.k8s.io/v1/namespaces/ops/leases/leader")
            .expect("leases are served");
        assert_eq!(request.verb, Verb::Get);
        assert_eq!(request.target.namespace.as_deref(), Some("ops"));
        assert_eq!(request.target.name.as_deref(), Some("leader"));
    }

    #[test]
    fn collection_get_with_watch_flag_is_a_watch_with_decoded_selectors() {
        let request = resource_request("GET", "/api/v1/events?watch=true&labelSelector=app%3Ddb%2Ctier+in+%28a%29")
            .expect("core events are served");
        assert_eq!(request.verb, Verb::Watch);
        assert_eq!(request.query.get("labelSelector"), Some("app=db,tier in (a)"));
    }

    #[test]
    fn unknown_resources_and_subresources_are_not_found() {
        let unknown = resource_request("GET", "/apis/example.com/v1/widgets").expect_err("not registered");
        assert_eq!(unknown.code, 404);
        let scale = resource_request("GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases/b/status")
            .expect_err("leases have no status subresource");
        assert_eq!(scale.code, 404);
    }

    #[test]
    fn posting_to_an_item_is_method_not_allowed() {
        let error = resource_request("POST", "/api/v1/namespaces/a/events/b").expect_err("post needs a collection");
        assert_eq!(error.code, 405);
    }
}
