//! Keeps the in-memory API in step with the manifest files, GitOps in miniature: each changed
//! file is server-side applied (so a field removed from a file is removed from the object), and
//! an object no file declares any more is deleted.
//!
//! Deleting is guarded, because a deleted PostgresHost is a terminated host: only objects this
//! run loaded from its files are ever deleted (never what an earlier run left in the state), only
//! after [`REMOVAL_GRACE`] without any file declaring them (an editor that truncates before
//! writing, or a file moved between directories, does not delete anything), and never while a
//! path given on the command line is missing (an unmounted directory deletes nothing). The
//! host's data volume then follows its `deletionPolicy` (Retain by default).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgec2_kube_memory::{ApiError, MemoryApiServer};
use serde_json::Value;

use super::manifests::{self, Manifest, ManifestError, ObjectKey};

/// Field manager of objects applied from files.
pub const FIELD_MANAGER: &str = "pgec2-local";

/// How long an object must be declared by no file before it is deleted.
pub const REMOVAL_GRACE: Duration = Duration::from_secs(5);

/// Why manifests could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{}: {key} was refused: {source}", path.display())]
    Apply { path: PathBuf, key: ObjectKey, source: Box<pgec2_kube_memory::Error> },
    #[error("failed to delete {key}: {source}")]
    Delete { key: ObjectKey, source: Box<ApiError> },
}

/// What applying the files did.
#[derive(Debug)]
pub enum Change {
    Created(ObjectKey),
    Configured(ObjectKey),
    Deleted(ObjectKey),
    /// An object no file declares any more; deleted after the grace period unless it returns.
    Undeclared(ObjectKey),
    /// A file or object that could not be applied; the previous objects stay as they are.
    Refused(SourceError),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Created(key) => write!(f, "{key} created"),
            Change::Configured(key) => write!(f, "{key} configured"),
            Change::Deleted(key) => write!(f, "{key} deleted (its file no longer declares it)"),
            Change::Undeclared(key) => write!(
                f,
                "{key} is no longer declared by any file; deleting it in {}s unless it returns",
                REMOVAL_GRACE.as_secs()
            ),
            Change::Refused(error) => write!(f, "error: {error}"),
        }
    }
}

/// The text of a file last seen and the objects it declares.
struct FileState {
    text: String,
    keys: Vec<ObjectKey>,
}

/// The manifest paths of one run and what they declared.
pub struct Sources {
    paths: Vec<PathBuf>,
    files: BTreeMap<PathBuf, FileState>,
    /// Every object the files of this run declared and that was not deleted since.
    loaded: BTreeSet<ObjectKey>,
    /// Loaded objects no file declares, with when that was first noticed.
    undeclared: BTreeMap<ObjectKey, Instant>,
    /// The last listing error, reported once.
    listing_error: Option<String>,
}

impl Sources {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            files: BTreeMap::new(),
            loaded: BTreeSet::new(),
            undeclared: BTreeMap::new(),
            listing_error: None,
        }
    }

    /// Applies every file; the first error stops the load (for the start of a run).
    pub fn load(&mut self, server: &MemoryApiServer) -> Result<Vec<Change>, SourceError> {
        let mut changes = Vec::new();
        for path in manifests::files(&self.paths)? {
            let text = read_text(&path)?;
            changes.extend(self.apply_file(server, &path, text)?);
        }
        Ok(changes)
    }

    /// Applies the files that changed since the last look and deletes objects no file has
    /// declared for [`REMOVAL_GRACE`]. Errors are reported as changes; nothing stops.
    pub fn sync(&mut self, server: &MemoryApiServer, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        let listed = match manifests::files(&self.paths) {
            Ok(listed) => {
                self.listing_error = None;
                listed
            }
            Err(error) => {
                // A missing path may come back: keep every object, delete nothing.
                if self.listing_error.replace(error.to_string()) != Some(error.to_string()) {
                    changes.push(Change::Refused(error.into()));
                }
                return changes;
            }
        };
        for path in &listed {
            let text = match read_text(path) {
                Ok(text) => text,
                Err(error) => {
                    changes.push(Change::Refused(error));
                    continue;
                }
            };
            if self.files.get(path).is_some_and(|state| state.text == text) {
                continue;
            }
            match self.apply_file(server, path, text.clone()) {
                Ok(applied) => changes.extend(applied),
                Err(error) => {
                    // Remember the text so the same error is reported once, keep the objects.
                    self.files
                        .entry(path.clone())
                        .or_insert_with(|| FileState { text: String::new(), keys: Vec::new() })
                        .text = text;
                    changes.push(Change::Refused(error));
                }
            }
        }
        self.files.retain(|path, _| listed.contains(path));
        changes.extend(self.prune(server, now));
        changes
    }

    /// Parses and applies one file's objects; records what it declares.
    fn apply_file(&mut self, server: &MemoryApiServer, path: &Path, text: String) -> Result<Vec<Change>, SourceError> {
        let manifests = manifests::parse(path, &text)?;
        self.check_duplicates(path, &manifests)?;
        let mut changes = Vec::new();
        for manifest in &manifests {
            changes.extend(apply_object(server, path, manifest)?);
            self.loaded.insert(manifest.key.clone());
        }
        let keys = manifests.into_iter().map(|manifest| manifest.key).collect();
        self.files.insert(path.to_path_buf(), FileState { text, keys });
        Ok(changes)
    }

    /// Refuses a file that declares an object another file (or itself) declares already.
    fn check_duplicates(&self, path: &Path, manifests: &[Manifest]) -> Result<(), SourceError> {
        let mut seen: BTreeMap<&ObjectKey, &Path> = BTreeMap::new();
        for (other, state) in self.files.iter().filter(|(other, _)| other.as_path() != path) {
            for key in &state.keys {
                seen.insert(key, other);
            }
        }
        for manifest in manifests {
            if let Some(first) = seen.insert(&manifest.key, path) {
                return Err(ManifestError::Duplicate {
                    kind: manifest.key.kind,
                    namespace: manifest.key.namespace.clone(),
                    name: manifest.key.name.clone(),
                    first: first.to_path_buf(),
                    second: path.to_path_buf(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Deletes loaded objects that no file has declared for the grace period.
    fn prune(&mut self, server: &MemoryApiServer, now: Instant) -> Vec<Change> {
        let declared: BTreeSet<&ObjectKey> = self.files.values().flat_map(|state| &state.keys).collect();
        let mut changes = Vec::new();
        self.undeclared.retain(|key, _| !declared.contains(key));
        for key in self.loaded.iter().filter(|key| !declared.contains(key)) {
            if !self.undeclared.contains_key(key) {
                self.undeclared.insert(key.clone(), now);
                changes.push(Change::Undeclared(key.clone()));
            }
        }
        let due: Vec<ObjectKey> = self
            .undeclared
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= REMOVAL_GRACE)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            let resource = key.kind.resource_type();
            match server.delete_object(&resource, Some(&key.namespace), &key.name) {
                Ok(_) => {
                    self.undeclared.remove(&key);
                    self.loaded.remove(&key);
                    changes.push(Change::Deleted(key));
                }
                Err(source) => {
                    // Try again after another grace period.
                    self.undeclared.insert(key.clone(), now);
                    changes.push(Change::Refused(SourceError::Delete { key, source: Box::new(source) }));
                }
            }
        }
        changes
    }
}

/// Applies one object; answers whether it was created or changed (nothing when unchanged).
fn apply_object(server: &MemoryApiServer, path: &Path, manifest: &Manifest) -> Result<Option<Change>, SourceError> {
    let resource = manifest.key.kind.resource_type();
    let key = &manifest.key;
    let before = server.get_object(&resource, Some(&key.namespace), &key.name);
    let stored = server.apply_objects([manifest.object.clone()], FIELD_MANAGER).map_err(|source| {
        SourceError::Apply { path: path.to_path_buf(), key: key.clone(), source: Box::new(source) }
    })?;
    Ok(match before {
        None => Some(Change::Created(key.clone())),
        Some(before) if stored.first().map(bookkeeping_stripped) != Some(bookkeeping_stripped(&before)) => {
            Some(Change::Configured(key.clone()))
        }
        Some(_) => None,
    })
}

/// The object without what every write changes (resourceVersion, managedFields' times).
fn bookkeeping_stripped(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
        metadata.remove("managedFields");
    }
    object
}

fn read_text(path: &Path) -> Result<String, SourceError> {
    std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_path_buf(), source }.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_mode::kinds::{self, Kind};
    use crate::local_mode::manifests::tests::POLICY;

    fn host(name: &str, size: u32) -> String {
        format!(
            "apiVersion: pgec2.io/v1alpha1\nkind: PostgresHost\nmetadata: {{name: {name}}}\nspec:\n  storage: {{sizeGiB: {size}}}\n"
        )
    }

    struct Fixture {
        dir: tempfile::TempDir,
        server: MemoryApiServer,
        sources: Sources,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("temporary directory");
            let server = kinds::api_server(&dir.path().join("api")).expect("api server");
            let manifests = dir.path().join("manifests");
            std::fs::create_dir(&manifests).expect("mkdir");
            Self { sources: Sources::new(vec![manifests]), dir, server }
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.dir.path().join("manifests").join(name), text).expect("write manifest");
        }

        fn remove(&self, name: &str) {
            std::fs::remove_file(self.dir.path().join("manifests").join(name)).expect("remove manifest");
        }

        fn size_of(&self, name: &str) -> Option<Value> {
            let object = self.server.get_object(&Kind::PostgresHost.resource_type(), Some("default"), name)?;
            object.pointer("/spec/storage/sizeGiB").cloned()
        }

        fn lines(&mut self, now: Instant) -> Vec<String> {
            self.sources.sync(&self.server, now).iter().map(ToString::to_string).collect()
        }
    }

    #[test]
    fn an_edited_file_is_applied_and_an_unchanged_one_is_not_reapplied() {
        let mut fixture = Fixture::new();
        fixture.write("db.yaml", &format!("{POLICY}---\n{}", host("db", 20)));
        let loaded = fixture.sources.load(&fixture.server).expect("load");
        assert_eq!(loaded.len(), 2, "{loaded:?}");
        let now = Instant::now();
        assert!(fixture.lines(now).is_empty(), "nothing changed");

        fixture.write("db.yaml", &format!("{POLICY}---\n{}", host("db", 40)));
        assert_eq!(fixture.lines(now), ["postgreshost/db configured"]);
        assert_eq!(fixture.size_of("db"), Some(Value::from(40)));
    }

    #[test]
    fn a_new_file_creates_its_objects() {
        let mut fixture = Fixture::new();
        fixture.sources.load(&fixture.server).expect("load an empty directory");
        fixture.write("later.yaml", &host("later", 20));
        assert_eq!(fixture.lines(Instant::now()), ["postgreshost/later created"]);
        assert_eq!(fixture.size_of("later"), Some(Value::from(20)));
    }

    #[test]
    fn a_removed_file_deletes_its_objects_only_after_the_grace_period() {
        let mut fixture = Fixture::new();
        fixture.write("db.yaml", &host("db", 20));
        fixture.sources.load(&fixture.server).expect("load");
        fixture.remove("db.yaml");
        let start = Instant::now();
        assert_eq!(fixture.lines(start).len(), 1, "announced, not deleted");
        assert!(fixture.size_of("db").is_some());
        let lines = fixture.lines(start + REMOVAL_GRACE);
        assert_eq!(lines, ["postgreshost/db deleted (its file no longer declares it)"]);
        assert!(fixture.size_of("db").is_none());
    }

    #[test]
    fn an_object_that_returns_within_the_grace_period_is_kept() {
        let mut fixture = Fixture::new();
        fixture.write("db.yaml", &host("db", 20));
        fixture.sources.load(&fixture.server).expect("load");
        let start = Instant::now();
        fixture.write("db.yaml", "");
        fixture.lines(start);
        fixture.write("db.yaml", &host("db", 20));
        assert!(fixture.lines(start + REMOVAL_GRACE).is_empty());
        assert!(fixture.size_of("db").is_some());
    }

    #[test]
    fn a_missing_manifest_directory_deletes_nothing() {
        let mut fixture = Fixture::new();
        fixture.write("db.yaml", &host("db", 20));
        fixture.sources.load(&fixture.server).expect("load");
        std::fs::remove_dir_all(fixture.dir.path().join("manifests")).expect("remove directory");
        let start = Instant::now();
        assert_eq!(fixture.lines(start).len(), 1, "the missing path is reported once");
        assert!(fixture.lines(start + REMOVAL_GRACE * 2).is_empty());
        assert!(fixture.size_of("db").is_some());
    }

    #[test]
    fn a_broken_edit_is_reported_once_and_the_object_stays() {
        let mut fixture = Fixture::new();
        fixture.write("db.yaml", &host("db", 20));
        fixture.sources.load(&fixture.server).expect("load");
        fixture.write("db.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\n");
        let start = Instant::now();
        let lines = fixture.lines(start);
        assert!(lines.len() == 1 && lines[0].contains("db.yaml") && lines[0].contains("Secret"), "{lines:?}");
        assert!(fixture.lines(start + REMOVAL_GRACE).is_empty());
        assert_eq!(fixture.size_of("db"), Some(Value::from(20)));
    }

    #[test]
    fn a_spec_the_crd_rules_refuse_is_not_applied() {
        let mut fixture = Fixture::new();
        fixture.write("db.yaml", &host("db", 40));
        fixture.sources.load(&fixture.server).expect("load");
        fixture.write("db.yaml", &host("db", 20));
        let lines = fixture.lines(Instant::now());
        assert!(lines.len() == 1 && lines[0].contains("postgreshost/db was refused"), "{lines:?}");
        assert_eq!(fixture.size_of("db"), Some(Value::from(40)), "volumes never shrink");
    }

    #[test]
    fn the_same_object_in_two_files_is_refused() {
        let mut fixture = Fixture::new();
        fixture.write("a.yaml", &host("db", 20));
        fixture.write("b.yaml", &host("db", 30));
        let error = fixture.sources.load(&fixture.server).expect_err("declared twice");
        assert!(error.to_string().contains("a.yaml") && error.to_string().contains("b.yaml"), "{error}");
    }
}
