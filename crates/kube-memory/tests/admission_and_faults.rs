//! Validators, server-side apply between field managers, injected faults and discovery.

mod common;

use common::{WidgetStatus, code, create, server, widget, widget_type, widgets};
use kube::api::{Patch, PatchParams, PostParams};
use pgec2_kube_memory::{Fault, MemoryApiServer};
use serde_json::{Value, json};

fn size_limit(_: Option<&Value>, new: &Value) -> Result<(), String> {
    match new["spec"]["size"].as_u64() {
        Some(size) if size > 10 => Err(format!("spec.size: Invalid value: {size}: must be at most 10")),
        _ => Ok(()),
    }
}

#[tokio::test]
async fn a_validator_refuses_invalid_creates_and_updates_with_422_invalid() {
    let server = MemoryApiServer::new().with_resource(widget_type()).with_validator(&widget_type(), size_limit);
    let api = widgets(&server);
    let error = api.create(&PostParams::default(), &widget("big", 11)).await.expect_err("too big");
    let kube::Error::Api(status) = error else { panic!("expected a Status, got {error:?}") };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(status.message.contains("must be at most 10"), "{}", status.message);
    create(&api, "small", 1).await;
    let grow = Patch::Merge(json!({ "spec": { "size": 20 } }));
    assert_eq!(code(api.patch("small", &PatchParams::default(), &grow).await), 422);
}

#[tokio::test]
async fn server_side_apply_creates_updates_and_reports_conflicts_between_managers() {
    let server = server();
    let api = widgets(&server);
    let applied =
        json!({ "apiVersion": "example.com/v1", "kind": "Widget", "metadata": { "name": "a" }, "spec": { "size": 1 } });
    let created = api.patch("a", &PatchParams::apply("first"), &Patch::Apply(&applied)).await.expect("apply creates");
    assert_eq!(created.spec.size, 1);
    let mut other = applied.clone();
    other["spec"]["size"] = json!(2);
    assert_eq!(code(api.patch("a", &PatchParams::apply("second"), &Patch::Apply(&other)).await), 409);
    let forced = api.patch("a", &PatchParams::apply("second").force(), &Patch::Apply(&other)).await;
    assert_eq!(forced.expect("force takes over").spec.size, 2);

    let status = json!({ "apiVersion": "example.com/v1", "kind": "Widget", "status": { "phase": "Ready" } });
    let with_status = api.patch_status("a", &PatchParams::apply("controller"), &Patch::Apply(&status)).await;
    assert_eq!(with_status.expect("status apply").status.and_then(|s| s.phase).as_deref(), Some("Ready"));
}

#[tokio::test]
async fn injected_status_conflicts_fail_the_next_status_writes_then_let_them_through() {
    let server = server();
    let api = widgets(&server);
    create(&api, "a", 1).await;
    server.inject_fault(Fault::status_conflicts("widgets", 2));
    let status = Patch::Merge(json!({ "status": WidgetStatus { observed_size: Some(1), phase: None } }));
    api.patch("a", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "size": 2 } })))
        .await
        .expect("main writes pass");
    assert_eq!(code(api.patch_status("a", &PatchParams::default(), &status).await), 409);
    assert_eq!(code(api.patch_status("a", &PatchParams::default(), &status).await), 409);
    assert_eq!(server.pending_faults(), 0);
    let written = api.patch_status("a", &PatchParams::default(), &status).await.expect("third write passes");
    assert_eq!(written.status.and_then(|s| s.observed_size), Some(1));
}

#[tokio::test]
async fn injected_conflicts_fail_the_next_writes_of_one_kind_only() {
    let server = server();
    let api = widgets(&server);
    server.inject_fault(Fault::conflicts(1).on("widgets"));
    assert_eq!(api.get_opt("a").await.expect("reads pass").map(|w| w.spec.size), None);
    assert_eq!(code(api.create(&PostParams::default(), &widget("a", 1)).await), 409);
    create(&api, "a", 1).await;
}

#[tokio::test]
async fn injected_internal_errors_fail_any_request_with_500() {
    let server = server();
    let api = widgets(&server);
    server.inject_fault(Fault::internal_errors(1).on("widgets"));
    assert_eq!(code(api.get("a").await), 500);
    assert_eq!(code(api.get("a").await), 404, "only one request failed");
}

#[tokio::test]
async fn discovery_lists_registered_groups_and_resources() {
    let server = server();
    let client = server.client();
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.major, "1");
    let resources = client.list_api_group_resources("example.com/v1").await.expect("resources");
    let names: Vec<&str> = resources.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["widgets", "widgets/status"]);
    let groups = client.list_api_groups().await.expect("groups");
    assert!(groups.groups.iter().any(|group| group.name == "coordination.k8s.io"));
}
