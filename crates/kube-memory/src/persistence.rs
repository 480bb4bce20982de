//! The state directory: one JSON snapshot of every object and the resourceVersion counter,
//! replaced atomically (temporary file, fsync, rename, fsync of the directory) shortly after
//! each change by a writer thread, and once more when the server is dropped.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use serde_json::{Map, Value, json};

use crate::{
    error::Error,
    meta,
    registry::TypeKey,
    state::State,
    store::{ObjectKey, Store},
};

/// The snapshot's file name inside the state directory.
pub const STATE_FILE: &str = "api-state.json";

/// How long the writer waits after a change for more changes before writing.
const DEBOUNCE: Duration = Duration::from_millis(25);

/// What a snapshot holds.
pub(crate) struct Snapshot {
    pub resource_version: u64,
    pub objects: BTreeMap<ObjectKey, Value>,
}

/// Reads the snapshot in `dir`; `None` when there is none yet.
pub(crate) fn load(dir: &Path) -> Result<Option<Snapshot>, Error> {
    let path = dir.join(STATE_FILE);
    let text = match fs::read(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::ReadState { path, source }),
    };
    let document: Value =
        serde_json::from_slice(&text).map_err(|source| Error::ParseState { path: path.clone(), source })?;
    let invalid = |reason: String| Error::InvalidState { path: path.clone(), reason };
    let resource_version = document
        .get("resourceVersion")
        .and_then(Value::as_str)
        .and_then(|version| version.parse::<u64>().ok())
        .ok_or_else(|| invalid("resourceVersion is missing or not a number".to_owned()))?;
    let mut objects = BTreeMap::new();
    let types = document.get("objects").and_then(Value::as_object).cloned().unwrap_or_default();
    for (type_path, items) in types {
        let type_key = TypeKey::from_path(&type_path);
        for object in items.as_array().cloned().unwrap_or_default() {
            let name = meta::name(&object).ok_or_else(|| invalid(format!("an object of {type_path} has no name")))?;
            let namespace = meta::string(&object, "namespace").unwrap_or_default().to_owned();
            let key = ObjectKey { type_key: type_key.clone(), namespace, name: name.to_owned() };
            objects.insert(key, object);
        }
    }
    Ok(Some(Snapshot { resource_version, objects }))
}

/// The snapshot document of a store.
pub(crate) fn snapshot(store: &Store) -> Value {
    let mut types: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (key, object) in store.all() {
        types.entry(key.type_key.to_path()).or_default().push(object.clone());
    }
    let objects: Map<String, Value> = types.into_iter().map(|(path, items)| (path, Value::Array(items))).collect();
    json!({ "resourceVersion": store.resource_version().to_string(), "objects": objects })
}

/// Writes a snapshot durably: temporary file, fsync, rename over the old one, fsync the directory.
pub(crate) fn write(dir: &Path, document: &Value) -> Result<(), Error> {
    let path = dir.join(STATE_FILE);
    let temporary = dir.join(format!(".{STATE_FILE}.tmp"));
    let failed = |source| Error::WriteState { path: path.clone(), source };
    let text = serde_json::to_vec_pretty(document).map_err(|error| failed(std::io::Error::other(error)))?;
    let mut file = fs::File::create(&temporary).map_err(failed)?;
    file.write_all(&text).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    fs::rename(&temporary, &path).map_err(failed)?;
    fs::File::open(dir).and_then(|directory| directory.sync_all()).map_err(failed)?;
    Ok(())
}

/// Keeps the snapshot of a state up to date.
pub(crate) struct Persistence {
    dir: PathBuf,
    dirty: Arc<AtomicBool>,
    written: Arc<Mutex<u64>>,
}

/// Writes a snapshot unless a newer one was already written (the writer thread and a flush
/// may race; the resourceVersion orders snapshots).
fn write_if_newer(dir: &Path, document: &Value, resource_version: u64, written: &Mutex<u64>) -> Result<(), Error> {
    let Ok(mut last) = written.lock() else {
        return write(dir, document);
    };
    if resource_version <= *last {
        return Ok(());
    }
    write(dir, document)?;
    *last = resource_version;
    Ok(())
}

impl Persistence {
    /// Starts the writer thread for `state` and hooks it to the store's changes.
    pub fn start(dir: PathBuf, state: &Arc<Mutex<State>>, loaded_version: u64) -> Self {
        let dirty = Arc::new(AtomicBool::new(false));
        let written = Arc::new(Mutex::new(loaded_version));
        let (signal, wakeups) = mpsc::sync_channel::<()>(1);
        let flag = dirty.clone();
        if let Ok(mut locked) = state.lock() {
            locked.store.on_change(Box::new(move || {
                flag.store(true, Ordering::SeqCst);
                // A full channel means a write is already due; it will include this change.
                let _ = signal.try_send(());
            }));
        }
        let weak = Arc::downgrade(state);
        let (thread_dir, thread_dirty, thread_written) = (dir.clone(), dirty.clone(), written.clone());
        let spawned = std::thread::Builder::new()
            .name("kube-memory-persist".to_owned())
            .spawn(move || writer_loop(&thread_dir, &weak, &thread_dirty, &thread_written, &wakeups));
        if let Err(error) = spawned {
            tracing::error!(%error, "failed to start the API state writer; state is written only on flush");
        }
        Self { dir, dirty, written }
    }

    /// Writes the snapshot now if anything changed since the last write.
    pub fn flush(&self, state: &State) -> Result<(), Error> {
        if self.dirty.swap(false, Ordering::SeqCst) {
            let version = state.store.resource_version();
            let result = write_if_newer(&self.dir, &snapshot(&state.store), version, &self.written);
            if result.is_err() {
                self.dirty.store(true, Ordering::SeqCst);
            }
            return result;
        }
        Ok(())
    }
}

/// Waits for changes and writes snapshots until the state is dropped.
fn writer_loop(
    dir: &Path,
    state: &Weak<Mutex<State>>,
    dirty: &AtomicBool,
    written: &Mutex<u64>,
    wakeups: &mpsc::Receiver<()>,
) {
    while wakeups.recv().is_ok() {
        std::thread::sleep(DEBOUNCE);
        let Some(state) = state.upgrade() else { return };
        if !dirty.swap(false, Ordering::SeqCst) {
            continue;
        }
        let (document, version) = match state.lock() {
            Ok(locked) => (snapshot(&locked.store), locked.store.resource_version()),
            Err(_) => return,
        };
        drop(state);
        if let Err(error) = write_if_newer(dir, &document, version, written) {
            dirty.store(true, Ordering::SeqCst);
            tracing::error!(%error, "failed to write the API state; retrying on the next change");
        }
    }
}
