//! Label selectors (`a=b,c!=d,e in (f,g),h notin (i),j,!k`) and field selectors
//! (`metadata.name=x,metadata.namespace!=y`).

use serde_json::Value;

use crate::{error::ApiError, meta};

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// One requirement of a field selector: a dotted path that must (or must not) equal a value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldRequirement {
    path: String,
    value: String,
    equal: bool,
}

/// A parsed label and field selector; the empty selector matches everything.
#[derive(Clone, Debug, Default)]
pub(crate) struct Selector {
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

impl Selector {
    /// Parses the `labelSelector` and `fieldSelector` query parameters.
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, ApiError> {
        let labels = match labels {
            Some(selector) => split_top_level(selector).map(parse_label).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let fields = match fields {
            Some(selector) => split_top_level(selector).map(parse_field).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(Self { labels, fields })
    }

    /// Whether the object satisfies every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = meta::labels(object);
        let label = |key: &str| labels.iter().find(|(name, _)| *name == key).map(|(_, value)| *value);
        let labels_match = self.labels.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(key, value) => label(key) == Some(value.as_str()),
            LabelRequirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
            LabelRequirement::In(key, values) => label(key).is_some_and(|found| values.iter().any(|v| v == found)),
            LabelRequirement::NotIn(key, values) => label(key).is_none_or(|found| values.iter().all(|v| v != found)),
            LabelRequirement::Exists(key) => label(key).is_some(),
            LabelRequirement::DoesNotExist(key) => label(key).is_none(),
        });
        labels_match
            && self.fields.iter().all(|requirement| {
                let found = field_value(object, &requirement.path);
                (found == requirement.value) == requirement.equal
            })
    }
}

/// Splits on commas outside parentheses, skipping empty parts.
fn split_top_level(selector: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (index, character) in selector.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&selector[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    parts.into_iter().map(str::trim).filter(|part| !part.is_empty())
}

fn invalid_selector(selector: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: invalid selector {selector:?}"))
}

fn parse_label(requirement: &str) -> Result<LabelRequirement, ApiError> {
    if let Some(key) = requirement.strip_prefix('!') {
        return Ok(LabelRequirement::DoesNotExist(key.trim().to_owned()));
    }
    if let Some((key, value)) = requirement.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(key.trim().to_owned(), value.trim().to_owned()));
    }
    if let Some((key, value)) = requirement.split_once("==").or_else(|| requirement.split_once('=')) {
        return Ok(LabelRequirement::Equals(key.trim().to_owned(), value.trim().to_owned()));
    }
    for (operator, negated) in [(" notin ", true), (" in ", false)] {
        if let Some((key, set)) = requirement.split_once(operator) {
            let set = set.trim().strip_prefix('(').and_then(|s| s.strip_suffix(')'));
            let set = set.ok_or_else(|| invalid_selector(requirement))?;
            let values = set.split(',').map(|value| value.trim().to_owned()).filter(|v| !v.is_empty()).collect();
            let key = key.trim().to_owned();
            return Ok(if negated { LabelRequirement::NotIn(key, values) } else { LabelRequirement::In(key, values) });
        }
    }
    if requirement.contains(|c: char| c.is_whitespace() || "<>()".contains(c)) {
        return Err(invalid_selector(requirement));
    }
    Ok(LabelRequirement::Exists(requirement.to_owned()))
}

fn parse_field(requirement: &str) -> Result<FieldRequirement, ApiError> {
    let (path, value, equal) = if let Some((path, value)) = requirement.split_once("!=") {
        (path, value, false)
    } else if let Some((path, value)) = requirement.split_once("==").or_else(|| requirement.split_once('=')) {
        (path, value, true)
    } else {
        return Err(invalid_selector(requirement));
    };
    Ok(FieldRequirement { path: path.trim().to_owned(), value: value.trim().to_owned(), equal })
}

/// The string form of the value at a dotted path, empty when absent (as the API server compares).
fn field_value(object: &Value, path: &str) -> String {
    let found = path.split('.').try_fold(object, |value, segment| value.get(segment));
    match found {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object() -> Value {
        json!({"metadata": {"name": "db", "namespace": "prod", "labels": {"app": "pg", "tier": "data"}}})
    }

    fn matches(labels: Option<&str>, fields: Option<&str>) -> bool {
        Selector::parse(labels, fields).expect("valid selector").matches(&object())
    }

    #[test]
    fn label_selectors_support_equality_sets_and_existence() {
        assert!(matches(Some("app=pg,tier==data"), None));
        assert!(!matches(Some("app!=pg"), None));
        assert!(matches(Some("tier in (web, data),app notin (mysql)"), None));
        assert!(!matches(Some("tier notin (data)"), None));
        assert!(matches(Some("app,!missing"), None));
        assert!(!matches(Some("missing"), None));
    }

    #[test]
    fn field_selectors_compare_metadata_name_and_namespace() {
        assert!(matches(None, Some("metadata.name=db,metadata.namespace=prod")));
        assert!(!matches(None, Some("metadata.name=other")));
        assert!(matches(None, Some("metadata.namespace!=dev")));
    }

    #[test]
    fn malformed_selectors_are_bad_requests() {
        let error = Selector::parse(Some("tier in data"), None).expect_err("set needs parentheses");
        assert_eq!(error.code, 400);
        assert!(Selector::parse(None, Some("metadata.name")).is_err());
    }
}
