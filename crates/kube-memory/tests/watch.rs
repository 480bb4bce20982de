//! Watches through a real `kube::Client` and the real `kube::runtime::watcher`.

mod common;

use std::time::Duration;

use common::{Widget, create, server, widget, widgets};
use futures::{StreamExt, TryStreamExt};
use kube::{
    ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    runtime::watcher::{self, Event},
};
use serde_json::json;

/// The next watch event, failing the test after five seconds.
async fn next<S>(stream: &mut S) -> WatchEvent<Widget>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<Widget>>> + Unpin,
{
    let item = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("an event within 5s");
    item.expect("the stream is open").expect("a valid event")
}

fn describe(event: &WatchEvent<Widget>) -> String {
    match event {
        WatchEvent::Added(w) => format!("ADDED {} {}", w.name_any(), w.spec.size),
        WatchEvent::Modified(w) => format!("MODIFIED {} {}", w.name_any(), w.spec.size),
        WatchEvent::Deleted(w) => format!("DELETED {} {}", w.name_any(), w.spec.size),
        WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    }
}

#[tokio::test]
async fn watch_from_a_resource_version_delivers_the_later_changes_in_order() {
    let server = server();
    let api = widgets(&server);
    let before = create(&api, "old", 1).await;
    create(&api, "a", 1).await;
    api.patch("a", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "size": 2 } }))).await.expect("patch");
    let since = before.resource_version().expect("set");
    let mut stream = api.watch(&WatchParams::default().disable_bookmarks(), &since).await.expect("watch").boxed();
    api.delete("a", &DeleteParams::default()).await.expect("delete");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(describe(&next(&mut stream).await));
    }
    assert_eq!(seen, ["ADDED a 1", "MODIFIED a 2", "DELETED a 2"]);
}

#[tokio::test]
async fn watch_from_an_expired_resource_version_gets_410_expired() {
    let server = server().with_history_limit(2);
    let api = widgets(&server);
    for name in ["a", "b", "c", "d"] {
        create(&api, name, 1).await;
    }
    let mut stream = api.watch(&WatchParams::default(), "1").await.expect("watch starts").boxed();
    let WatchEvent::Error(status) = next(&mut stream).await else { panic!("expected an ERROR event") };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(stream.next().await.is_none(), "the stream ends after the error");
}

#[tokio::test]
async fn watch_with_a_label_selector_sees_objects_enter_and_leave_it() {
    let server = server();
    let api = widgets(&server);
    create(&api, "a", 1).await;
    let params = WatchParams::default().labels("tier=db").disable_bookmarks();
    let mut stream = api.watch(&params, &server.resource_version().to_string()).await.expect("watch").boxed();
    let label = |tier: &str| json!({ "metadata": { "labels": { "tier": tier } } });
    api.patch("a", &PatchParams::default(), &Patch::Merge(label("db"))).await.expect("patch");
    api.patch("a", &PatchParams::default(), &Patch::Merge(label("web"))).await.expect("patch");
    assert_eq!(describe(&next(&mut stream).await), "ADDED a 1");
    assert_eq!(describe(&next(&mut stream).await), "DELETED a 1");
}

#[tokio::test]
async fn watch_ends_after_its_timeout_with_a_bookmark_at_the_latest_resource_version() {
    let server = server();
    let api = widgets(&server);
    create(&api, "a", 1).await;
    let since = server.resource_version().to_string();
    create(&api, "b", 1).await;
    let mut stream = api.watch(&WatchParams::default().timeout(1), &since).await.expect("watch").boxed();
    assert_eq!(describe(&next(&mut stream).await), "ADDED b 1");
    let latest = server.resource_version();
    assert_eq!(describe(&next(&mut stream).await), format!("BOOKMARK {latest}"));
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("the watch ends");
    assert!(end.is_none());
}

/// Runs a real watcher with `config` over one existing widget, then creates another: the
/// watcher must report the first in its initial list and the second as a change.
async fn watcher_sees_initial_objects_then_changes(config: watcher::Config) {
    let server = server();
    let api = widgets(&server);
    create(&api, "listed", 1).await;
    let mut events = watcher::watcher(api.clone(), config).boxed();
    let mut initial = Vec::new();
    loop {
        match events.try_next().await.expect("no watcher error").expect("the stream continues") {
            Event::Init => {}
            Event::InitApply(object) => initial.push(object.name_any()),
            Event::InitDone => break,
            other => panic!("unexpected event before the initial list ended: {other:?}"),
        }
    }
    assert_eq!(initial, ["listed"]);
    api.create(&PostParams::default(), &widget("watched", 1)).await.expect("create");
    match events.try_next().await.expect("no watcher error").expect("the stream continues") {
        Event::Apply(object) => assert_eq!(object.name_any(), "watched"),
        other => panic!("expected the new object, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_lists_then_follows_changes() {
    watcher_sees_initial_objects_then_changes(watcher::Config::default()).await;
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_then_changes() {
    watcher_sees_initial_objects_then_changes(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test]
async fn watcher_lists_again_after_its_resource_version_expired() {
    let server = server().with_history_limit(1).with_bookmark_interval(Duration::from_secs(3600));
    let api = widgets(&server);
    create(&api, "a", 1).await;
    // A watch with a short timeout ends; while it is down, more changes than the history holds
    // happen, so the watcher's next watch is refused with 410 and it must list again.
    let config = watcher::Config::default().timeout(1).disable_bookmarks();
    let mut events = watcher::watcher(api.clone(), config).boxed();
    let relisted = async {
        let mut initial_lists = 0;
        while let Some(event) = events.next().await {
            if matches!(event, Ok(Event::InitDone)) {
                initial_lists += 1;
                if initial_lists == 2 {
                    return;
                }
                for name in ["b", "c", "d"] {
                    create(&api, name, 1).await;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), relisted).await.expect("a second initial list within 5s");
}
