//! Manifests: PostgresHost and BackupPolicy objects read from YAML files (several documents per
//! file allowed) and from the `.yaml`/`.yml` files of directories, as `kubectl apply -f` reads
//! them. Anything else is refused with an error that names the file and the document.

use std::path::{Path, PathBuf};

use pgec2_api::{API_GROUP_VERSION, BackupPolicy, PostgresHost};
use serde::Deserialize;
use serde_json::Value;

use super::kinds::Kind;

/// The namespace of objects that name none, as `kubectl apply` uses.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why manifests could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("failed to read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: no such file or directory", path.display())]
    Missing { path: PathBuf },
    #[error("{}: document {document} is not valid YAML: {source}", path.display())]
    Yaml { path: PathBuf, document: usize, source: serde_yaml_ng::Error },
    #[error(
        "{}: document {document} is apiVersion {api_version:?} kind {kind:?}; local mode loads only PostgresHost and BackupPolicy of {API_GROUP_VERSION}",
        path.display()
    )]
    UnknownKind { path: PathBuf, document: usize, api_version: String, kind: String },
    #[error("{}: document {document} ({kind}) has no metadata.name", path.display())]
    NoName { path: PathBuf, document: usize, kind: Kind },
    #[error("{}: document {document} ({kind} {name:?}) does not match the {kind} schema: {source}", path.display())]
    Schema { path: PathBuf, document: usize, kind: Kind, name: String, source: serde_json::Error },
    #[error("{kind} {namespace}/{name} is declared twice: in {} and in {}", first.display(), second.display())]
    Duplicate { kind: Kind, namespace: String, name: String, first: PathBuf, second: PathBuf },
}

/// Identifies an object across files.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    /// `postgreshost/primary`, or `postgreshost/shop/orders` outside the default namespace.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace == DEFAULT_NAMESPACE {
            write!(f, "{}/{}", self.kind.lower(), self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind.lower(), self.namespace, self.name)
        }
    }
}

/// One object of a manifest file, as written (to be applied as is).
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub key: ObjectKey,
    pub object: Value,
}

/// Parses every document of a manifest file. Empty documents are skipped; the namespace
/// defaults to `default`. Each object must deserialize into its typed resource.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let mut object = Value::deserialize(document).map_err(|source| ManifestError::Yaml {
            path: path.to_path_buf(),
            document: number,
            source,
        })?;
        if object.is_null() {
            continue;
        }
        let field = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
        let (api_version, kind_name) = (field("apiVersion"), field("kind"));
        let Some(kind) = Kind::of_manifest(&api_version, &kind_name) else {
            return Err(ManifestError::UnknownKind {
                path: path.to_path_buf(),
                document: number,
                api_version,
                kind: kind_name,
            });
        };
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(ManifestError::NoName { path: path.to_path_buf(), document: number, kind });
        }
        let namespace = default_namespace(&mut object);
        let schema = |source| ManifestError::Schema {
            path: path.to_path_buf(),
            document: number,
            kind,
            name: name.clone(),
            source,
        };
        match kind {
            Kind::PostgresHost => serde_json::from_value::<PostgresHost>(object.clone()).map(drop).map_err(schema)?,
            Kind::BackupPolicy => serde_json::from_value::<BackupPolicy>(object.clone()).map(drop).map_err(schema)?,
        }
        manifests.push(Manifest { key: ObjectKey { kind, namespace, name }, object });
    }
    Ok(manifests)
}

/// Sets `metadata.namespace` to `default` when missing; answers the namespace.
fn default_namespace(object: &mut Value) -> String {
    let metadata = object.get_mut("metadata").and_then(Value::as_object_mut);
    match metadata {
        Some(metadata) => metadata
            .entry("namespace")
            .or_insert_with(|| Value::String(DEFAULT_NAMESPACE.to_string()))
            .as_str()
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_string(),
        None => DEFAULT_NAMESPACE.to_string(),
    }
}

/// The manifest files named by `paths`: files as given, and the `.yaml`/`.yml` files directly
/// inside directories (not recursive; hidden files and editor backups skipped), sorted.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ManifestError> {
    let mut found = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ManifestError::Missing { path: path.clone() },
            _ => ManifestError::Read { path: path.clone(), source },
        })?;
        if !metadata.is_dir() {
            found.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|source| ManifestError::Read { path: path.clone(), source })?;
        let mut inside = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ManifestError::Read { path: path.clone(), source })?;
            let file = entry.path();
            if is_manifest_name(&file) && file.is_file() {
                inside.push(file);
            }
        }
        inside.sort();
        found.extend(inside);
    }
    Ok(found)
}

/// `*.yaml` and `*.yml`, not hidden (editor swap and temporary files are).
fn is_manifest_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else { return false };
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A valid BackupPolicy manifest (also used by the sources tests).
    pub(in crate::local_mode) const POLICY: &str = "apiVersion: pgec2.io/v1alpha1
kind: BackupPolicy
metadata: {name: nightly}
spec:
  storage: {local: {path: /var/backups/pgec2}}
  schedule: '0 3 * * *'
";

    const HOST: &str = "apiVersion: pgec2.io/v1alpha1
kind: PostgresHost
metadata: {name: orders, namespace: shop}
spec:
  storage: {sizeGiB: 20}
  backup: {policyRef: {name: nightly}}
";

    fn key(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey { kind, namespace: namespace.into(), name: name.into() }
    }

    #[test]
    fn every_document_of_a_file_is_loaded_in_order_with_default_namespace() {
        let text = format!("# comment\n---\n{POLICY}---\n{HOST}---\n");
        let manifests = parse(Path::new("all.yaml"), &text).expect("valid manifests");
        let keys: Vec<_> = manifests.iter().map(|manifest| manifest.key.clone()).collect();
        assert_eq!(keys, [key(Kind::BackupPolicy, "default", "nightly"), key(Kind::PostgresHost, "shop", "orders")]);
        assert_eq!(manifests[0].object.pointer("/metadata/namespace"), Some(&Value::from("default")));
        assert_eq!(manifests[1].object.pointer("/spec/storage/sizeGiB"), Some(&Value::from(20)));
    }

    #[test]
    fn an_unknown_kind_is_refused_naming_the_file_and_the_document() {
        let text = format!("{POLICY}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\n");
        let error = parse(Path::new("/srv/manifests/app.yaml"), &text).expect_err("ConfigMap is not ours");
        let message = error.to_string();
        assert!(matches!(error, ManifestError::UnknownKind { document: 2, .. }), "{error:?}");
        assert!(message.contains("/srv/manifests/app.yaml") && message.contains("ConfigMap"), "{message}");
    }

    #[test]
    fn another_version_of_our_kind_is_refused() {
        let text = HOST.replace("v1alpha1", "v1");
        let error = parse(Path::new("host.yaml"), &text).expect_err("unknown version");
        assert!(matches!(error, ManifestError::UnknownKind { document: 1, .. }), "{error:?}");
    }

    #[test]
    fn a_spec_that_does_not_match_the_schema_is_refused_with_the_object_named() {
        let text = HOST.replace("sizeGiB: 20", "sizeGiB: twenty");
        let error = parse(Path::new("host.yaml"), &text).expect_err("size is not a number");
        let message = error.to_string();
        assert!(message.contains("host.yaml") && message.contains("\"orders\""), "{message}");
    }

    #[test]
    fn an_object_without_a_name_is_refused() {
        let text = POLICY.replace("metadata: {name: nightly}", "metadata: {}");
        let error = parse(Path::new("policy.yaml"), &text).expect_err("no name");
        assert!(matches!(error, ManifestError::NoName { kind: Kind::BackupPolicy, .. }), "{error:?}");
    }

    #[test]
    fn invalid_yaml_is_refused_with_the_document_number() {
        let text = format!("{POLICY}---\nkind: [unclosed\n");
        let error = parse(Path::new("broken.yaml"), &text).expect_err("bad yaml");
        assert!(matches!(error, ManifestError::Yaml { document: 2, .. }), "{error:?}");
    }

    #[test]
    fn directories_contribute_their_yaml_files_sorted_without_hidden_ones() {
        let dir = tempfile::tempdir().expect("temporary directory");
        for name in ["b.yml", "a.yaml", ".a.yaml.swp", ".hidden.yaml", "notes.txt", "c.yaml~"] {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        std::fs::create_dir(dir.path().join("nested.yaml")).expect("mkdir");
        let extra = dir.path().join("notes.txt");
        let found = files(&[dir.path().to_path_buf(), extra.clone()]).expect("list");
        assert_eq!(found, [dir.path().join("a.yaml"), dir.path().join("b.yml"), extra]);
    }

    #[test]
    fn a_missing_path_is_an_error_naming_it() {
        let error = files(&[PathBuf::from("/nonexistent/pgec2.yaml")]).expect_err("missing");
        assert!(error.to_string().contains("/nonexistent/pgec2.yaml"), "{error}");
    }
}
