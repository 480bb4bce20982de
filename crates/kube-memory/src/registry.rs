//! The resource types the server knows: which URL paths exist and how objects of each kind behave.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::Resource;

/// One resource type served by the in-memory API, like a CustomResourceDefinition's `spec.names`
/// plus the one served version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, empty for the core group (`""` → paths under `/api/v1`).
    pub group: String,
    /// The served version, e.g. `v1alpha1`.
    pub version: String,
    /// Lower-case plural used in URL paths, e.g. `postgreshosts`.
    pub plural: String,
    /// The kind of objects, e.g. `PostgresHost`.
    pub kind: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether `.status` is a subresource: then writes to the main resource ignore `.status`,
    /// writes to `/status` change only `.status`, and `metadata.generation` counts spec changes only.
    pub status_subresource: bool,
    /// Whether a replace (PUT) without `metadata.resourceVersion` overwrites unconditionally.
    /// False for custom resources, as in the API server (422 Invalid); true for Events and Leases.
    pub unconditional_update: bool,
    /// Lists merged by key under server-side apply (`x-kubernetes-list-type: map`); every other
    /// list is atomic.
    pub list_maps: Vec<ListMap>,
    /// The served version's `openAPIV3Schema`, when taken from a CRD: its `default` values are
    /// filled in on every write, as the API server does.
    pub schema: Option<Arc<serde_json::Value>>,
}

/// A list whose elements server-side apply merges by key, like `status.conditions` by `type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListMap {
    /// The list's field path from the object's root (`["status", "conditions"]`).
    pub path: Vec<String>,
    /// `x-kubernetes-list-map-keys`: the fields that identify an element.
    pub keys: Vec<String>,
}

impl ResourceType {
    /// A resource type from its names.
    pub fn new(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            kind: kind.to_owned(),
            namespaced,
            status_subresource: false,
            unconditional_update: false,
            list_maps: Vec::new(),
            schema: None,
        }
    }

    /// The resource type of a namespaced Rust type, e.g. a `#[derive(CustomResource)]` struct.
    pub fn namespaced<K>() -> Self
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        Self::new(&K::group(&()), &K::version(&()), &K::plural(&()), &K::kind(&()), true)
    }

    /// The resource type of a cluster-scoped Rust type.
    pub fn cluster<K>() -> Self
    where
        K: Resource<DynamicType = (), Scope = ClusterResourceScope>,
    {
        Self::new(&K::group(&()), &K::version(&()), &K::plural(&()), &K::kind(&()), false)
    }

    /// Marks `.status` as a subresource (`subresources: status: {}` in a CRD).
    pub fn with_status_subresource(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// Allows replace (PUT) without a resourceVersion, like most built-in kinds.
    pub fn with_unconditional_update(mut self) -> Self {
        self.unconditional_update = true;
        self
    }

    /// Merges the list at `path` by `keys` under server-side apply.
    pub fn with_list_map(mut self, path: &[&str], keys: &[&str]) -> Self {
        let path = path.iter().map(|key| (*key).to_owned()).collect();
        self.list_maps.push(ListMap { path, keys: keys.iter().map(|key| (*key).to_owned()).collect() });
        self
    }

    /// Takes the lists merged by key (`x-kubernetes-list-type: map`) and the `default` values
    /// from the served version's schema in a CustomResourceDefinition, as the API server does.
    pub fn with_crd_schema(mut self, crd: &CustomResourceDefinition) -> Self {
        let served = crd.spec.versions.iter().find(|version| version.name == self.version);
        let schema = served.and_then(|version| version.schema.as_ref()?.open_api_v3_schema.as_ref());
        if let Some(schema) = schema.and_then(|schema| serde_json::to_value(schema).ok()) {
            collect_list_maps(&schema, &mut Vec::new(), &mut self.list_maps);
            self.schema = Some(Arc::new(schema));
        }
        self
    }

    /// Fills in the schema's `default` values (no-op without a schema).
    pub(crate) fn default_fields(&self, object: &mut serde_json::Value) {
        if let Some(schema) = &self.schema {
            crate::defaults::apply(schema, object);
        }
    }

    /// The keys of the list at `path` (element segments `k:{…}` left out) when it is merged by key.
    pub(crate) fn list_map_keys(&self, path: &[String]) -> Option<&[String]> {
        let plain: Vec<&String> = path.iter().filter(|segment| !segment.starts_with("k:")).collect();
        let found = self.list_maps.iter().find(|list| list.path.iter().eq(plain.iter().copied()));
        found.map(|list| list.keys.as_slice())
    }

    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `plural.group` as the API server names a resource in messages (`plural` for the core group).
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// The key objects of this type are stored under.
    pub(crate) fn key(&self) -> TypeKey {
        TypeKey { group: self.group.clone(), plural: self.plural.clone() }
    }
}

/// Walks an OpenAPI v3 schema for lists with `x-kubernetes-list-type: map`.
fn collect_list_maps(schema: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<ListMap>) {
    if schema.get("x-kubernetes-list-type").and_then(serde_json::Value::as_str) == Some("map") {
        let keys = schema.get("x-kubernetes-list-map-keys").and_then(serde_json::Value::as_array);
        let keys: Vec<String> = keys.into_iter().flatten().filter_map(|key| key.as_str().map(str::to_owned)).collect();
        if !keys.is_empty() {
            out.push(ListMap { path: path.clone(), keys });
        }
    }
    if let Some(properties) = schema.get("properties").and_then(serde_json::Value::as_object) {
        for (name, child) in properties {
            path.push(name.clone());
            collect_list_maps(child, path, out);
            path.pop();
        }
    }
    if let Some(items) = schema.get("items") {
        collect_list_maps(items, path, out);
    }
}

/// Identifies a resource type independently of its served version: `(group, plural)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TypeKey {
    pub group: String,
    pub plural: String,
}

impl TypeKey {
    /// `group/plural` (or `plural` for the core group), the form used in snapshots.
    pub fn to_path(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}/{}", self.group, self.plural) }
    }

    /// Parses the form written by [`TypeKey::to_path`].
    pub fn from_path(path: &str) -> Self {
        match path.rsplit_once('/') {
            Some((group, plural)) => Self { group: group.to_owned(), plural: plural.to_owned() },
            None => Self { group: String::new(), plural: path.to_owned() },
        }
    }
}

/// The built-in types every server serves: Events (both APIs) and Leases.
pub fn builtin_types() -> Vec<ResourceType> {
    vec![
        ResourceType::new("", "v1", "events", "Event", true).with_unconditional_update(),
        ResourceType::new("events.k8s.io", "v1", "events", "Event", true).with_unconditional_update(),
        ResourceType::new("coordination.k8s.io", "v1", "leases", "Lease", true).with_unconditional_update(),
    ]
}

/// All registered resource types.
#[derive(Clone, Debug, Default)]
pub(crate) struct Registry {
    types: BTreeMap<TypeKey, ResourceType>,
}

impl Registry {
    /// A registry with the built-in types.
    pub fn with_builtins() -> Self {
        let mut registry = Self::default();
        for resource in builtin_types() {
            registry.register(resource);
        }
        registry
    }

    /// Adds or replaces a resource type.
    pub fn register(&mut self, resource: ResourceType) {
        self.types.insert(resource.key(), resource);
    }

    /// The type served at `/apis/{group}/{version}/{plural}` (or `/api/v1/{plural}`).
    pub fn by_path(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        let key = TypeKey { group: group.to_owned(), plural: plural.to_owned() };
        self.types.get(&key).filter(|resource| resource.version == version)
    }

    /// The type of an object with this `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        self.types.values().find(|resource| resource.api_version() == api_version && resource.kind == kind)
    }

    /// Every registered type.
    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_group_types_use_bare_version_and_plural() {
        let events = ResourceType::new("", "v1", "events", "Event", true);
        assert_eq!(events.api_version(), "v1");
        assert_eq!(events.qualified_plural(), "events");
        let leases = ResourceType::new("coordination.k8s.io", "v1", "leases", "Lease", true);
        assert_eq!(leases.api_version(), "coordination.k8s.io/v1");
        assert_eq!(leases.qualified_plural(), "leases.coordination.k8s.io");
    }

    #[test]
    fn type_keys_round_trip_through_their_path_form() {
        for resource in builtin_types() {
            assert_eq!(TypeKey::from_path(&resource.key().to_path()), resource.key());
        }
    }

    #[test]
    fn registry_finds_types_by_path_and_by_kind() {
        let registry = Registry::with_builtins();
        assert!(registry.by_path("coordination.k8s.io", "v1", "leases").is_some());
        assert!(registry.by_path("coordination.k8s.io", "v2", "leases").is_none());
        let event = registry.by_kind("events.k8s.io/v1", "Event").expect("events.k8s.io events are built in");
        assert_eq!(event.group, "events.k8s.io");
    }
}
