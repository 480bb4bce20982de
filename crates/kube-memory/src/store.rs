//! The object store: objects by type, namespace and name, the global resourceVersion counter,
//! a bounded history of changes for watches from a resourceVersion, and the live watchers.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::{meta, registry::TypeKey};

/// Where an object is stored: its type, namespace (empty when cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjectKey {
    pub type_key: TypeKey,
    pub namespace: String,
    pub name: String,
}

/// The type of a change, as named in watch events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    /// The watch event type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub(crate) struct Change {
    pub resource_version: u64,
    pub key: ObjectKey,
    pub kind: ChangeKind,
    /// The object after the change (for a deletion: its last state, with the deletion's resourceVersion).
    pub object: Value,
    /// The object before a modification, so watches with selectors see objects enter and leave.
    pub previous: Option<Value>,
}

/// The changes a new watcher must see first, and the channel of later ones.
pub(crate) struct Subscription {
    pub backlog: Vec<Arc<Change>>,
    pub live: mpsc::UnboundedReceiver<Arc<Change>>,
}

/// Objects, counter, history and watchers. Not synchronised: the server keeps it under a mutex.
pub(crate) struct Store {
    objects: BTreeMap<ObjectKey, Value>,
    resource_version: u64,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Every change with a resourceVersion above this one is in `history`.
    history_complete_after: u64,
    watchers: Vec<mpsc::UnboundedSender<Arc<Change>>>,
    changed: Option<Box<dyn Fn() + Send>>,
}

impl Store {
    /// An empty store keeping at most `history_limit` changes for watches.
    pub fn new(history_limit: usize) -> Self {
        Self {
            objects: BTreeMap::new(),
            resource_version: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            history_complete_after: 0,
            watchers: Vec::new(),
            changed: None,
        }
    }

    /// A store holding loaded objects at a resourceVersion; the history starts empty, so watches
    /// from an older resourceVersion are answered with 410 Gone and clients list again.
    pub fn restore(&mut self, resource_version: u64, objects: BTreeMap<ObjectKey, Value>) {
        self.objects = objects;
        self.resource_version = resource_version;
        self.history.clear();
        self.history_complete_after = resource_version;
    }

    /// Changes how many changes are kept for watches.
    pub fn set_history_limit(&mut self, history_limit: usize) {
        self.history_limit = history_limit.max(1);
    }

    /// Sets the callback run after every committed change (persistence).
    pub fn on_change(&mut self, callback: Box<dyn Fn() + Send>) {
        self.changed = Some(callback);
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of a type, in one namespace or all, ordered by namespace and name.
    pub fn list(&self, type_key: &TypeKey, namespace: Option<&str>) -> Vec<(&ObjectKey, &Value)> {
        self.objects
            .iter()
            .filter(|(key, _)| {
                &key.type_key == type_key && namespace.is_none_or(|namespace| key.namespace == namespace)
            })
            .collect()
    }

    /// Every stored object.
    pub fn all(&self) -> impl Iterator<Item = (&ObjectKey, &Value)> {
        self.objects.iter()
    }

    /// Stores (or, for a deletion, removes) an object under a new resourceVersion, records the
    /// change and tells the watchers. Returns the object as stored.
    pub fn commit(&mut self, key: ObjectKey, kind: ChangeKind, mut object: Value) -> Value {
        self.resource_version += 1;
        let resource_version = self.resource_version;
        meta::set(&mut object, "resourceVersion", Value::String(resource_version.to_string()));
        let previous = match kind {
            ChangeKind::Deleted => self.objects.remove(&key).and(None),
            ChangeKind::Added | ChangeKind::Modified => self.objects.insert(key.clone(), object.clone()),
        };
        let change = Arc::new(Change { resource_version, key, kind, object: object.clone(), previous });
        self.record(change);
        if let Some(changed) = &self.changed {
            changed();
        }
        object
    }

    fn record(&mut self, change: Arc<Change>) {
        self.watchers.retain(|watcher| watcher.send(change.clone()).is_ok());
        self.history.push_back(change);
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.history_complete_after = dropped.resource_version;
            }
        }
    }

    /// Subscribes to changes after `resource_version`: the kept ones now, later ones as they
    /// happen. `None` when changes after it were already dropped from the history.
    pub fn subscribe(&mut self, resource_version: u64) -> Option<Subscription> {
        if resource_version < self.history_complete_after {
            return None;
        }
        let backlog =
            self.history.iter().filter(|change| change.resource_version > resource_version).cloned().collect();
        let (sender, live) = mpsc::unbounded_channel();
        self.watchers.push(sender);
        Some(Subscription { backlog, live })
    }

    /// Subscribes to changes after the current resourceVersion.
    pub fn subscribe_now(&mut self) -> Subscription {
        let (sender, live) = mpsc::unbounded_channel();
        self.watchers.push(sender);
        Subscription { backlog: Vec::new(), live }
    }

    /// The oldest resourceVersion a watch can start from.
    pub fn oldest_watchable(&self) -> u64 {
        self.history_complete_after
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey { type_key: TypeKey::from_path("x.io/things"), namespace: "ns".into(), name: name.into() }
    }

    #[test]
    fn commits_number_changes_with_a_global_increasing_resource_version() {
        let mut store = Store::new(10);
        let first = store.commit(key("a"), ChangeKind::Added, json!({"metadata": {"name": "a"}}));
        let second = store.commit(key("b"), ChangeKind::Added, json!({"metadata": {"name": "b"}}));
        assert_eq!(meta::resource_version(&first), Some("1"));
        assert_eq!(meta::resource_version(&second), Some("2"));
        store.commit(key("a"), ChangeKind::Deleted, first);
        assert!(store.get(&key("a")).is_none());
        assert_eq!(store.resource_version(), 3);
    }

    #[test]
    fn subscriptions_replay_kept_history_and_refuse_dropped_history() {
        let mut store = Store::new(2);
        for name in ["a", "b", "c"] {
            store.commit(key(name), ChangeKind::Added, json!({"metadata": {"name": name}}));
        }
        assert!(store.subscribe(0).is_none(), "change 1 was dropped from a history of two");
        let subscription = store.subscribe(1).expect("changes 2 and 3 are kept");
        let versions: Vec<u64> = subscription.backlog.iter().map(|change| change.resource_version).collect();
        assert_eq!(versions, vec![2, 3]);
    }

    #[test]
    fn live_subscribers_receive_later_changes() {
        let mut store = Store::new(10);
        let mut subscription = store.subscribe_now();
        store.commit(key("a"), ChangeKind::Added, json!({"metadata": {"name": "a"}}));
        let change = subscription.live.try_recv().expect("the change was sent");
        assert_eq!(change.kind, ChangeKind::Added);
    }
}
