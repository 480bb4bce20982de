//! Backup annotations: `key=value` notes `backup-push --annotation` records in a backup's commit
//! record (why it was taken). The agent's parser and the operator's rendering share these rules.

/// Longest key, in bytes.
pub const MAX_KEY: usize = 128;
/// Longest value, in characters.
pub const MAX_VALUE: usize = 1024;

/// One `key=value` note: a key of 1 to [`MAX_KEY`] letters, digits and `._/-`, a value of at most
/// [`MAX_VALUE`] printable characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotation {
    key: String,
    value: String,
}

/// Why a note is not a valid annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("annotation {0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("annotation key {0:?}: use 1-128 letters, digits and ._/-")]
    Key(String),
    #[error("annotation {0}: the value must be at most 1024 printable characters")]
    Value(String),
}

impl Annotation {
    /// Checks `key` and `value`.
    pub fn new(key: &str, value: &str) -> Result<Self, AnnotationError> {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_KEY
            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'));
        if !key_ok {
            return Err(AnnotationError::Key(key.to_string()));
        }
        if value.chars().count() > MAX_VALUE || value.chars().any(char::is_control) {
            return Err(AnnotationError::Value(key.to_string()));
        }
        Ok(Self { key: key.to_string(), value: value.to_string() })
    }

    /// An annotation whose value is made to fit: control characters become spaces and the
    /// value is cut to [`MAX_VALUE`] characters (for values that come from users, such as an
    /// on-demand backup request). Fails only on an invalid key.
    pub fn lossy(key: &str, value: &str) -> Result<Self, AnnotationError> {
        let printable: String = value.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_VALUE).collect();
        Self::new(key, &printable)
    }

    /// Parses `key=value` (the value may contain `=`).
    pub fn parse(text: &str) -> Result<Self, AnnotationError> {
        let (key, value) = text.split_once('=').ok_or_else(|| AnnotationError::NotKeyValue(text.to_string()))?;
        Self::new(key, value)
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// The key and the value.
    pub fn into_pair(self) -> (String, String) {
        (self.key, self.value)
    }
}

impl std::fmt::Display for Annotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_are_key_value_pairs_with_safe_keys() {
        let parsed = Annotation::parse("a.b/c-d_e=x=y").expect("valid");
        assert_eq!((parsed.key(), parsed.value()), ("a.b/c-d_e", "x=y"));
        assert_eq!(Annotation::parse("empty=").expect("valid").value(), "");
        assert!(Annotation::parse("novalue").is_err());
        assert!(Annotation::parse("=value").is_err());
        assert!(Annotation::parse("sp ace=1").is_err());
        assert!(Annotation::parse("key=line\nbreak").is_err());
        assert!(Annotation::parse(&format!("key={}", "v".repeat(1025))).is_err());
    }

    #[test]
    fn a_lossy_annotation_replaces_control_characters_and_cuts_long_values() {
        let annotation = Annotation::lossy("k", &format!("a\nb{}", "c".repeat(2000))).expect("valid key");
        assert!(annotation.value().starts_with("a bccc"), "{}", annotation.value());
        assert_eq!(annotation.value().chars().count(), MAX_VALUE);
    }
}
