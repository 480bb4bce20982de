//! The state directory and the YAML loader of local mode.

mod common;

use common::{create, eventually, widget_type, widgets};
use futures::StreamExt;
use kube::{
    ResourceExt,
    api::{Patch, PatchParams, WatchEvent, WatchParams},
};
use pgec2_kube_memory::{MemoryApiServer, STATE_FILE};
use serde_json::json;

fn open(dir: &std::path::Path) -> MemoryApiServer {
    MemoryApiServer::with_state_dir(dir).expect("state loads").with_resource(widget_type())
}

#[tokio::test]
async fn objects_keep_uid_and_resource_version_across_restarts_and_the_counter_resumes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (created, version) = {
        let server = open(dir.path());
        let created = create(&widgets(&server), "a", 1).await;
        server.flush().expect("state is written");
        (created, server.resource_version())
    };
    assert!(dir.path().join(STATE_FILE).exists());

    let server = open(dir.path());
    let api = widgets(&server);
    let loaded = api.get("a").await.expect("the object survived");
    assert_eq!((loaded.uid(), loaded.resource_version()), (created.uid(), created.resource_version()));
    assert_eq!(server.resource_version(), version);
    let patched = api.patch("a", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "size": 2 } }))).await;
    let patched: u64 = patched.expect("patch").resource_version().expect("set").parse().expect("a number");
    assert!(patched > version, "the counter resumed: {patched} after {version}");
}

#[tokio::test]
async fn changes_reach_the_state_directory_shortly_without_an_explicit_flush() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = open(dir.path());
    create(&widgets(&server), "a", 1).await;
    eventually("the snapshot to hold the new object", || async {
        let reopened = MemoryApiServer::with_state_dir(dir.path()).expect("state loads");
        (reopened.objects(&widget_type()).len() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn dropping_the_last_handle_writes_the_latest_changes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let server = open(dir.path());
        server.apply_yaml(WIDGETS_YAML, "loader").expect("documents load");
    }
    assert_eq!(open(dir.path()).objects(&widget_type()).len(), 2);
}

#[tokio::test]
async fn a_watch_from_before_a_restart_gets_410_so_clients_list_again() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let server = open(dir.path());
        let api = widgets(&server);
        create(&api, "a", 1).await;
        create(&api, "b", 1).await;
        server.flush().expect("state is written");
    }
    let server = open(dir.path());
    let api = widgets(&server);
    let mut stream = api.watch(&WatchParams::default(), "1").await.expect("watch starts").boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(status))) => assert_eq!(status.code, 410),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
}

#[tokio::test]
async fn a_damaged_state_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join(STATE_FILE), "{ not json").expect("write");
    let Err(error) = MemoryApiServer::with_state_dir(dir.path()) else { panic!("a damaged file must not load") };
    assert!(error.to_string().contains(STATE_FILE), "{error}");
}

const WIDGETS_YAML: &str = "
apiVersion: example.com/v1
kind: Widget
metadata:
  name: from-file
  labels:
    source: file
spec:
  size: 4
---
apiVersion: example.com/v1
kind: Widget
metadata:
  name: other
  namespace: team
spec:
  size: 1
";

#[tokio::test]
async fn loading_yaml_creates_objects_and_loading_it_again_changes_nothing() {
    let server = MemoryApiServer::new().with_resource(widget_type());
    let loaded = server.apply_yaml(WIDGETS_YAML, "local-loader").expect("documents load");
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[1]["metadata"]["namespace"], "team");
    let version = server.resource_version();
    server.apply_yaml(WIDGETS_YAML, "local-loader").expect("documents load again");
    assert_eq!(server.resource_version(), version, "an unchanged file writes nothing");

    let edited = WIDGETS_YAML.replace("  labels:\n    source: file\n", "").replace("size: 4", "size: 5");
    server.apply_yaml(&edited, "local-loader").expect("edited documents load");
    let object = widgets(&server).get("from-file").await.expect("get succeeds");
    assert_eq!(object.spec.size, 5);
    assert!(object.labels().is_empty(), "a label removed from the file is removed from the object");
    assert_eq!(object.metadata.generation, Some(2));
}

#[tokio::test]
async fn loading_an_unknown_kind_names_it() {
    let server = MemoryApiServer::new();
    let error = server.apply_yaml("apiVersion: x.io/v1\nkind: Gadget\nmetadata: {name: g}\n", "loader");
    let message = error.expect_err("gadgets are not served").to_string();
    assert!(message.contains("Gadget"), "{message}");
}
