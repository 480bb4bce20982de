//! Events on PostgresHosts (best effort: a failure to publish is logged, never fatal).

use kube::Resource;
use kube::runtime::events::{Event, EventType};
use pgec2_api::PostgresHost;

use crate::context::Context;

/// Publishes a Normal event.
pub async fn normal(ctx: &Context, host: &PostgresHost, reason: &str, note: String) {
    publish(ctx, host, EventType::Normal, reason, note).await;
}

/// Publishes a Warning event.
pub async fn warning(ctx: &Context, host: &PostgresHost, reason: &str, note: String) {
    publish(ctx, host, EventType::Warning, reason, note).await;
}

async fn publish(ctx: &Context, host: &PostgresHost, type_: EventType, reason: &str, note: String) {
    let event =
        Event { type_, reason: reason.to_string(), note: Some(note), action: reason.to_string(), secondary: None };
    if let Err(error) = ctx.recorder.publish(&event, &host.object_ref(&())).await {
        tracing::warn!(host = %host.qualified_name(), reason, %error, "failed to publish an event");
    }
}
