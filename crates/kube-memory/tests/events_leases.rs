//! The built-in kinds: Events published by kube's `Recorder`, and Leases as leader election uses them.

mod common;

use common::{code, create, server, widgets};
use k8s_openapi::{
    api::{coordination::v1::Lease, events::v1::Event as KubeEvent},
    jiff::Timestamp,
};
use kube::{
    Api, Resource,
    api::{ListParams, ObjectMeta, PostParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};

#[tokio::test]
async fn recorder_publishes_events_and_counts_repeats_in_a_series() {
    let server = server();
    let widget = create(&widgets(&server), "a", 1).await;
    let reporter = Reporter { controller: "widget-controller".into(), instance: None };
    let recorder = Recorder::new(server.client(), reporter);
    let event = Event {
        type_: EventType::Normal,
        reason: "Reconciled".into(),
        note: Some("widget is ready".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = widget.object_ref(&());
    recorder.publish(&event, &reference).await.expect("first publish succeeds");
    recorder.publish(&event, &reference).await.expect("repeat publish succeeds");

    let events: Api<KubeEvent> = Api::namespaced(server.client(), "default");
    let listed = events.list(&ListParams::default()).await.expect("list succeeds").items;
    assert_eq!(listed.len(), 1, "a repeat is a series on the same event");
    let stored = &listed[0];
    assert_eq!(stored.reason.as_deref(), Some("Reconciled"));
    assert_eq!(stored.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("a"));
    assert_eq!(stored.series.as_ref().map(|series| series.count), Some(2));
}

fn lease(holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta { name: Some("leader".into()), ..ObjectMeta::default() },
        spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(Timestamp::now())),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn leases_are_taken_by_one_contender_and_renewed_with_optimistic_concurrency() {
    let server = server();
    let leases: Api<Lease> = Api::namespaced(server.client(), "default");
    let held = leases.create(&PostParams::default(), &lease("one")).await.expect("first contender creates it");
    assert_eq!(code(leases.create(&PostParams::default(), &lease("two")).await), 409, "second contender loses");

    let mut renewal = held.clone();
    renewal.spec = lease("one").spec;
    let renewed = leases.replace("leader", &PostParams::default(), &renewal).await.expect("holder renews");
    assert_ne!(renewed.metadata.resource_version, held.metadata.resource_version);

    let mut takeover = held;
    takeover.spec = lease("two").spec;
    assert_eq!(code(leases.replace("leader", &PostParams::default(), &takeover).await), 409, "stale takeover fails");
    let current = leases.get("leader").await.expect("get succeeds");
    assert_eq!(current.spec.and_then(|spec| spec.holder_identity).as_deref(), Some("one"));
}
