//! Watches: a chunked stream of newline-delimited `WatchEvent`s from a resourceVersion, with
//! bookmarks, `sendInitialEvents`, `timeoutSeconds`, and 410 Expired for a too old resourceVersion.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    error::ApiError,
    handlers::read,
    registry::ResourceType,
    request::ApiRequest,
    selector::Selector,
    state::State,
    store::{Change, ChangeKind, Subscription},
};

/// A watch without `timeoutSeconds` ends after this long, as the API server ends watches after
/// a while (clients then watch again from their last resourceVersion).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Annotation of the bookmark that ends the initial events of a streaming list.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// Everything a watch stream needs, gathered under the state lock so no change is missed.
pub(crate) struct WatchPlan {
    resource: ResourceType,
    namespace: Option<String>,
    selector: Selector,
    /// Synthetic ADDED events for the current objects (watch from "0", unset, or sendInitialEvents).
    initial: Vec<Value>,
    initial_end_bookmark: bool,
    /// `None` when the resourceVersion is too old.
    subscription: Option<Subscription>,
    since: u64,
    current: u64,
    bookmarks: bool,
    timeout: Duration,
    metadata_only: bool,
}

/// Prepares a watch request: parses its options and subscribes to changes.
pub(crate) fn plan(state: &mut State, request: &ApiRequest) -> Result<WatchPlan, ApiError> {
    let query = &request.query;
    let selector = Selector::parse(query.get("labelSelector"), query.get("fieldSelector"))?;
    let current = state.store.resource_version();
    let send_initial = query.flag("sendInitialEvents");
    let requested = match query.get("resourceVersion") {
        None | Some("0") => None,
        Some(version) => Some(
            version
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {version:?}")))?,
        ),
    };
    let (initial, subscription, since) = match requested {
        Some(version) if !send_initial => (Vec::new(), state.store.subscribe(version), version),
        _ => {
            let initial = read::matching(state, request)?.into_iter().map(|(_, object)| object.clone()).collect();
            (initial, Some(state.store.subscribe_now()), current)
        }
    };
    let timeout = query.get("timeoutSeconds").and_then(|seconds| seconds.parse::<u64>().ok()).map(Duration::from_secs);
    Ok(WatchPlan {
        resource: request.target.resource.clone(),
        namespace: request.target.namespace.clone(),
        selector,
        initial,
        initial_end_bookmark: send_initial && query.flag("allowWatchBookmarks"),
        subscription,
        since,
        current,
        bookmarks: query.flag("allowWatchBookmarks"),
        timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
        metadata_only: request.metadata_only,
    })
}

impl WatchPlan {
    /// The watch event a change becomes for this watch, if any: objects entering the selector
    /// are ADDED, objects leaving it DELETED.
    fn event_for(&self, change: &Change) -> Option<Value> {
        let key = &change.key;
        if key.type_key != self.resource.key()
            || self.namespace.as_ref().is_some_and(|namespace| *namespace != key.namespace)
            || change.resource_version <= self.since
        {
            return None;
        }
        let matches_now = self.selector.matches(&change.object);
        let kind = match change.kind {
            ChangeKind::Added | ChangeKind::Deleted if matches_now => change.kind,
            ChangeKind::Modified => {
                let matched_before = change.previous.as_ref().is_some_and(|previous| self.selector.matches(previous));
                match (matched_before, matches_now) {
                    (true, true) => ChangeKind::Modified,
                    (false, true) => ChangeKind::Added,
                    (true, false) => ChangeKind::Deleted,
                    (false, false) => return None,
                }
            }
            ChangeKind::Added | ChangeKind::Deleted => return None,
        };
        Some(self.event(kind.as_str(), &change.object))
    }

    fn event(&self, kind: &str, object: &Value) -> Value {
        let object = if self.metadata_only { read::metadata_only(object) } else { object.clone() };
        json!({ "type": kind, "object": object })
    }

    fn bookmark(&self, resource_version: u64, initial_end: bool) -> Value {
        let mut metadata = json!({ "resourceVersion": resource_version.to_string() });
        if initial_end {
            metadata["annotations"] = json!({ INITIAL_EVENTS_END: "true" });
        }
        let object =
            json!({ "apiVersion": self.resource.api_version(), "kind": self.resource.kind, "metadata": metadata });
        json!({ "type": "BOOKMARK", "object": object })
    }
}

/// The 410 Expired event a watch from a too old resourceVersion gets (the API server answers
/// such a watch with 200 and this one ERROR event, and clients list again).
fn expired_event(since: u64, oldest: u64) -> Value {
    let status = ApiError::gone(format!("too old resource version: {since} ({oldest})")).to_status();
    json!({ "type": "ERROR", "object": status })
}

/// Runs a watch until its timeout or until the client goes away, sending JSON lines on `lines`.
pub(crate) async fn run(mut plan: WatchPlan, oldest: u64, bookmark_interval: Duration, lines: mpsc::Sender<Bytes>) {
    let send = |event: Value| {
        let lines = lines.clone();
        async move {
            let mut line = event.to_string().into_bytes();
            line.push(b'\n');
            lines.send(Bytes::from(line)).await.is_ok()
        }
    };
    let Some(mut subscription) = plan.subscription.take() else {
        send(expired_event(plan.since, oldest)).await;
        return;
    };
    for object in std::mem::take(&mut plan.initial) {
        if !send(plan.event("ADDED", &object)).await {
            return;
        }
    }
    let mut last_seen = plan.since.max(plan.current);
    if plan.initial_end_bookmark && !send(plan.bookmark(last_seen, true)).await {
        return;
    }
    for change in std::mem::take(&mut subscription.backlog) {
        last_seen = last_seen.max(change.resource_version);
        if let Some(event) = plan.event_for(&change)
            && !send(event).await
        {
            return;
        }
    }
    let deadline = tokio::time::sleep(plan.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + bookmark_interval, bookmark_interval);
    loop {
        tokio::select! {
            () = &mut deadline => {
                if plan.bookmarks {
                    send(plan.bookmark(last_seen, false)).await;
                }
                return;
            }
            _ = ticker.tick(), if plan.bookmarks => {
                if !send(plan.bookmark(last_seen, false)).await {
                    return;
                }
            }
            () = lines.closed() => return,
            change = subscription.live.recv() => {
                let Some(change): Option<Arc<Change>> = change else { return };
                last_seen = last_seen.max(change.resource_version);
                if let Some(event) = plan.event_for(&change)
                    && !send(event).await
                {
                    return;
                }
            }
        }
    }
}
