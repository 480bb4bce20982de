//! A tiny custom resource and helpers shared by the integration tests.
#![allow(dead_code)]

use std::{future::Future, time::Duration};

use kube::{Api, CustomResource, api::PostParams};
use pgec2_kube_memory::{MemoryApiServer, ResourceType};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A test kind with a spec and a status subresource.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "example.com",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    derive = "PartialEq"
)]
pub struct WidgetSpec {
    pub size: u32,
}

/// The status of a [`Widget`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct WidgetStatus {
    pub observed_size: Option<u32>,
    pub phase: Option<String>,
}

/// The registered type of [`Widget`].
pub fn widget_type() -> ResourceType {
    ResourceType::namespaced::<Widget>().with_status_subresource()
}

/// A server serving widgets.
pub fn server() -> MemoryApiServer {
    MemoryApiServer::new().with_resource(widget_type())
}

/// A widget named `name` of `size` (not yet stored).
pub fn widget(name: &str, size: u32) -> Widget {
    Widget::new(name, WidgetSpec { size })
}

/// The widgets API of the `default` namespace.
pub fn widgets(server: &MemoryApiServer) -> Api<Widget> {
    Api::namespaced(server.client(), "default")
}

/// Creates a widget and answers the stored object.
pub async fn create(api: &Api<Widget>, name: &str, size: u32) -> Widget {
    api.create(&PostParams::default(), &widget(name, size)).await.expect("create succeeds")
}

/// The API error code of a kube result.
pub fn code<T: std::fmt::Debug>(result: kube::Result<T>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `check` until it answers `Some` or five seconds pass.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
