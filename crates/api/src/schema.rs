//! Schema adjustments the derive cannot express as attributes.

use schemars::Schema;

/// Bounds a `map[string]string` field: at most `MAX_PROPERTIES` entries and values of at most
/// `MAX_VALUE_LENGTH` characters. Bounds keep the API server's cost estimate of the CEL rules
/// that iterate the map within budget.
pub(crate) fn bounded_map<const MAX_PROPERTIES: u64, const MAX_VALUE_LENGTH: u64>(schema: &mut Schema) {
    schema.insert("maxProperties".to_string(), MAX_PROPERTIES.into());
    if let Some(values) = schema.get_mut("additionalProperties").and_then(|values| values.as_object_mut()) {
        values.insert("maxLength".to_string(), MAX_VALUE_LENGTH.into());
    }
}
