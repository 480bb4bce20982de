//! Everything the server keeps, behind one mutex: registered types, validators, objects, faults.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::Value;

use crate::{
    error::ApiError,
    faults::Faults,
    registry::{Registry, ResourceType, TypeKey},
    request::Target,
    store::{ObjectKey, Store},
};

/// An admission check for one kind: gets the stored object (`None` on create) and the object
/// about to be stored; an `Err` message refuses the write with 422 Invalid.
pub type Validator = Arc<dyn Fn(Option<&Value>, &Value) -> Result<(), String> + Send + Sync>;

/// The server's state.
pub(crate) struct State {
    pub registry: Registry,
    pub validators: BTreeMap<TypeKey, Validator>,
    pub store: Store,
    pub faults: Faults,
}

impl State {
    /// A state with the built-in types and an empty store.
    pub fn new(history_limit: usize) -> Self {
        Self {
            registry: Registry::with_builtins(),
            validators: BTreeMap::new(),
            store: Store::new(history_limit),
            faults: Faults::default(),
        }
    }

    /// Checks the kind's CRD schema (when it has one), then runs its validator, if registered.
    pub fn validate(&self, resource: &ResourceType, old: Option<&Value>, new: &Value) -> Result<(), ApiError> {
        let violations = resource.schema.as_deref().map(|schema| crate::schema::violations(schema, new));
        if let Some(first) = violations.as_ref().and_then(|found| found.first()) {
            let name = crate::meta::name(new).unwrap_or_default();
            let field = first.split(':').next().unwrap_or_default();
            let found = violations.as_deref().unwrap_or_default();
            let why = if found.len() == 1 { first.clone() } else { format!("[{}]", found.join(", ")) };
            return Err(ApiError::invalid(resource, name, field, &why));
        }
        let Some(validator) = self.validators.get(&resource.key()) else {
            return Ok(());
        };
        validator(old, new).map_err(|message| {
            let name = crate::meta::name(new).unwrap_or_default();
            ApiError::invalid(resource, name, "", &message)
        })
    }
}

/// The store key of the named object a request addresses.
pub(crate) fn object_key(target: &Target, name: &str) -> ObjectKey {
    ObjectKey {
        type_key: target.resource.key(),
        namespace: target.namespace.clone().unwrap_or_default(),
        name: name.to_owned(),
    }
}
