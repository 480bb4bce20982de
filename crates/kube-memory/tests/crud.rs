//! Reads and writes through a real `kube::Client`, compared with the Kubernetes API conventions.

mod common;

use common::{WidgetStatus, code, create, server, widget, widgets};
use kube::{
    ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions},
};
use serde_json::json;

#[tokio::test]
async fn create_assigns_uid_timestamp_resource_version_and_generation_one() {
    let server = server();
    let api = widgets(&server);
    let created = create(&api, "a", 1).await;
    assert!(created.uid().is_some_and(|uid| uid.len() == 36));
    assert!(created.creation_timestamp().is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.namespace().as_deref(), Some("default"));
    let version: u64 = created.resource_version().expect("set").parse().expect("a number");
    let second = create(&api, "b", 1).await;
    let next: u64 = second.resource_version().expect("set").parse().expect("a number");
    assert!(next > version, "resourceVersion grows globally: {version} then {next}");
    assert_eq!(api.get("a").await.expect("get succeeds"), created);
}

#[tokio::test]
async fn create_of_a_taken_name_is_already_exists_and_a_missing_object_is_not_found() {
    let server = server();
    let api = widgets(&server);
    create(&api, "a", 1).await;
    let taken = api.create(&PostParams::default(), &widget("a", 2)).await.expect_err("name is taken");
    let kube::Error::Api(status) = taken else { panic!("expected a Status, got {taken:?}") };
    assert_eq!((status.code, status.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(status.message, "widgets.example.com \"a\" already exists");
    let missing = api.get("nope").await.expect_err("not there");
    let kube::Error::Api(status) = missing else { panic!("expected a Status, got {missing:?}") };
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.details.expect("details name the object").name, "nope");
}

#[tokio::test]
async fn create_with_generate_name_appends_a_random_suffix() {
    let server = server();
    let api = widgets(&server);
    let mut template = widget("", 1);
    template.metadata.name = None;
    template.metadata.generate_name = Some("gen-".into());
    let first = api.create(&PostParams::default(), &template).await.expect("create succeeds");
    let second = api.create(&PostParams::default(), &template).await.expect("create succeeds");
    assert!(first.name_any().starts_with("gen-") && first.name_any().len() == 9, "{}", first.name_any());
    assert_ne!(first.name_any(), second.name_any());
}

#[tokio::test]
async fn list_filters_by_labels_and_fields_and_reports_the_current_resource_version() {
    let server = server();
    let api = widgets(&server);
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "db")] {
        let mut object = widget(name, 1);
        object.labels_mut().insert("tier".into(), tier.into());
        api.create(&PostParams::default(), &object).await.expect("create succeeds");
    }
    let all = api.list(&ListParams::default()).await.expect("list succeeds");
    assert_eq!(all.items.iter().map(|w| w.name_any()).collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(all.metadata.resource_version, Some(server.resource_version().to_string()));
    let databases = api.list(&ListParams::default().labels("tier=db")).await.expect("list succeeds");
    assert_eq!(databases.items.len(), 2);
    let one = api.list(&ListParams::default().fields("metadata.name=c")).await.expect("list succeeds");
    assert_eq!(one.items.iter().map(|w| w.name_any()).collect::<Vec<_>>(), ["c"]);
    let other_namespace = kube::Api::<common::Widget>::namespaced(server.client(), "other");
    assert!(other_namespace.list(&ListParams::default()).await.expect("list succeeds").items.is_empty());
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let server = server();
    let api = widgets(&server);
    for name in ["a", "b", "c"] {
        create(&api, name, 1).await;
    }
    let first = api.list(&ListParams::default().limit(2)).await.expect("list succeeds");
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.expect("more items remain");
    let rest = api.list(&ListParams::default().limit(2).continue_token(&token)).await.expect("list succeeds");
    assert_eq!(rest.items.iter().map(|w| w.name_any()).collect::<Vec<_>>(), ["c"]);
    assert_eq!(rest.metadata.continue_, None);
}

#[tokio::test]
async fn replace_with_a_stale_resource_version_is_conflict() {
    let server = server();
    let api = widgets(&server);
    let original = create(&api, "a", 1).await;
    let mut first = original.clone();
    first.spec.size = 2;
    let replaced = api.replace("a", &PostParams::default(), &first).await.expect("fresh replace succeeds");
    assert_eq!(replaced.metadata.generation, Some(2));
    let mut stale = original;
    stale.spec.size = 3;
    let error = api.replace("a", &PostParams::default(), &stale).await.expect_err("stale");
    let kube::Error::Api(status) = error else { panic!("expected a Status, got {error:?}") };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(status.message.contains("the object has been modified"), "{}", status.message);
    assert_eq!(api.get("a").await.expect("get succeeds").spec.size, 2);
    let mut unversioned = widget("a", 4);
    unversioned.metadata.resource_version = None;
    let error = api.replace("a", &PostParams::default(), &unversioned).await;
    assert_eq!(code(error), 422, "custom resources need a resourceVersion to be replaced");
}

#[tokio::test]
async fn status_writes_change_only_status_and_main_writes_ignore_status() {
    let server = server();
    let api = widgets(&server);
    let mut with_status = widget("a", 1);
    with_status.status = Some(WidgetStatus { observed_size: Some(7), phase: None });
    let created = api.create(&PostParams::default(), &with_status).await.expect("create succeeds");
    assert_eq!(created.status, None, "a create does not set a status subresource");
    let status = WidgetStatus { observed_size: Some(1), phase: Some("Ready".into()) };
    let patch = json!({ "spec": { "size": 9 }, "metadata": { "labels": { "x": "y" } }, "status": status });
    let after_status = api.patch_status("a", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    assert_eq!(after_status.status, Some(status.clone()));
    assert_eq!(after_status.spec.size, 1, "a status write leaves the spec alone");
    assert!(after_status.labels().is_empty(), "a status write leaves metadata alone");
    assert_eq!(after_status.metadata.generation, Some(1), "status changes do not count as generations");

    let main = json!({ "spec": { "size": 2 }, "status": { "phase": "Hacked" } });
    let after_main = api.patch("a", &PatchParams::default(), &Patch::Merge(&main)).await.expect("patch");
    assert_eq!(after_main.status, Some(status), "a main write leaves the status alone");
    assert_eq!(after_main.metadata.generation, Some(2), "spec changes count");

    let relabel = json!({ "metadata": { "labels": { "x": "y" } } });
    let relabelled = api.patch("a", &PatchParams::default(), &Patch::Merge(&relabel)).await.expect("patch");
    assert_eq!(relabelled.metadata.generation, Some(2), "metadata changes do not count");
}

#[tokio::test]
async fn a_write_that_changes_nothing_keeps_the_resource_version() {
    let server = server();
    let api = widgets(&server);
    let created = create(&api, "a", 1).await;
    let same = api.patch("a", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "size": 1 } }))).await;
    assert_eq!(same.expect("patch succeeds").resource_version(), created.resource_version());
    assert_eq!(server.resource_version().to_string(), created.resource_version().expect("set"));
}

#[tokio::test]
async fn deleting_an_object_with_finalizers_marks_it_until_the_last_finalizer_is_removed() {
    let server = server();
    let api = widgets(&server);
    let mut object = widget("a", 1);
    object.finalizers_mut().push("example.com/keep".into());
    api.create(&PostParams::default(), &object).await.expect("create succeeds");

    let marked = api.delete("a", &DeleteParams::default()).await.expect("delete is accepted");
    let marked = marked.left().expect("a deleting object is answered, not a Status");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.generation, Some(2), "marking for deletion counts as a generation");
    assert!(api.get("a").await.expect("still there").metadata.deletion_timestamp.is_some());

    let add = json!({ "metadata": { "finalizers": ["example.com/keep", "example.com/new"] } });
    let refused = api.patch("a", &PatchParams::default(), &Patch::Merge(&add)).await;
    assert_eq!(code(refused), 422, "no new finalizers on a deleting object");

    let remove = json!({ "metadata": { "finalizers": null } });
    api.patch("a", &PatchParams::default(), &Patch::Merge(&remove)).await.expect("patch succeeds");
    assert!(api.get_opt("a").await.expect("get succeeds").is_none(), "gone with its last finalizer");
}

#[tokio::test]
async fn deleting_an_object_without_finalizers_removes_it_and_honours_preconditions() {
    let server = server();
    let api = widgets(&server);
    let created = create(&api, "a", 1).await;
    let stale = DeleteParams {
        preconditions: Some(Preconditions { resource_version: Some("1".into()), uid: None }),
        ..DeleteParams::default()
    };
    create(&api, "b", 1).await;
    api.patch("a", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "size": 2 } }))).await.expect("patch");
    assert_eq!(code(api.delete("a", &stale).await), 409);
    let deleted = api.delete("a", &DeleteParams::default()).await.expect("delete succeeds");
    assert_eq!(deleted.left().expect("the deleted object is answered").uid(), created.uid());
    assert_eq!(code(api.get("a").await), 404);
    assert_eq!(code(api.delete("a", &DeleteParams::default()).await), 404);
}

#[tokio::test]
async fn a_json_patch_whose_test_fails_is_invalid_and_changes_nothing() {
    let server = server();
    let api = widgets(&server);
    let created = create(&api, "a", 1).await;
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/spec/size", "value": 7 },
        { "op": "replace", "path": "/spec/size", "value": 8 }
    ]))
    .expect("valid patch");
    assert_eq!(code(api.patch("a", &PatchParams::default(), &Patch::<()>::Json(patch)).await), 422);
    assert_eq!(api.get("a").await.expect("get succeeds"), created);
}

#[tokio::test]
async fn delete_collection_deletes_the_matching_objects() {
    let server = server();
    let api = widgets(&server);
    for name in ["a", "b"] {
        create(&api, name, 1).await;
    }
    let only_a = ListParams::default().fields("metadata.name=a");
    let deleted = api
        .delete_collection(&DeleteParams::default(), &only_a)
        .await
        .expect("delete succeeds")
        .left()
        .expect("a list of deleted objects");
    assert_eq!(deleted.items.iter().map(|w| w.name_any()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(api.list(&ListParams::default()).await.expect("list").items.len(), 1);
}

#[tokio::test]
async fn metadata_only_requests_answer_partial_object_metadata() {
    let server = server();
    let api = widgets(&server);
    let created = create(&api, "a", 1).await;
    let metadata = api.get_metadata("a").await.expect("get succeeds");
    assert_eq!(metadata.metadata.uid, created.uid());
    let listed = api.list_metadata(&ListParams::default()).await.expect("list succeeds");
    assert_eq!(listed.items.len(), 1);
}
