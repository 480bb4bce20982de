//! Events on pgec2 objects (best effort: a failure to publish is logged, never fatal).

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

/// Publishes a Normal event about `object`.
pub async fn normal<K>(recorder: &Recorder, object: &K, reason: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    publish(recorder, object, EventType::Normal, reason, note).await;
}

/// Publishes a Warning event about `object`.
pub async fn warning<K>(recorder: &Recorder, object: &K, reason: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    publish(recorder, object, EventType::Warning, reason, note).await;
}

async fn publish<K>(recorder: &Recorder, object: &K, type_: EventType, reason: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    let event =
        Event { type_, reason: reason.to_string(), note: Some(note), action: reason.to_string(), secondary: None };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        let object = format!(
            "{}/{}",
            object.meta().namespace.as_deref().unwrap_or_default(),
            object.meta().name.as_deref().unwrap_or_default()
        );
        tracing::warn!(kind = %K::kind(&()), %object, reason, %error, "failed to publish an event");
    }
}
