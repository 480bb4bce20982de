//! The real kube-rs `Controller` and `finalizer()` run on the in-memory API.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Widget, WidgetStatus, create, eventually, server, widgets};
use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        finalizer::{Event, finalizer},
        watcher,
    },
};
use pgec2_kube_memory::Fault;
use serde_json::json;

const FINALIZER: &str = "example.com/cleanup";

struct Context {
    api: Api<Widget>,
    cleaned_up: Mutex<Vec<String>>,
}

async fn reconcile(
    widget: Arc<Widget>,
    context: Arc<Context>,
) -> Result<Action, kube::runtime::finalizer::Error<kube::Error>> {
    let api = context.api.clone();
    finalizer(&api.clone(), FINALIZER, widget, |event| async move {
        match event {
            Event::Apply(widget) => {
                let status = WidgetStatus { observed_size: Some(widget.spec.size), phase: Some("Ready".into()) };
                let patch = Patch::Merge(json!({ "status": status }));
                api.patch_status(&widget.name_any(), &PatchParams::default(), &patch).await?;
                Ok(Action::await_change())
            }
            Event::Cleanup(widget) => {
                context.cleaned_up.lock().expect("not poisoned").push(widget.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(_: Arc<Widget>, _: &kube::runtime::finalizer::Error<kube::Error>, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_millis(50))
}

#[tokio::test]
async fn controller_with_finalizer_reconciles_retries_conflicts_and_cleans_up_before_the_object_disappears() {
    let server = server();
    let api = widgets(&server);
    let context = Arc::new(Context { api: api.clone(), cleaned_up: Mutex::new(Vec::new()) });
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(reconcile, error_policy, context.clone())
        .for_each(|_| async {});
    let running = tokio::spawn(controller);

    server.inject_fault(Fault::status_conflicts("widgets", 1));
    create(&api, "first", 3).await;
    let ready = eventually("the widget to be reconciled", || async {
        let widget = api.get("first").await.expect("get succeeds");
        (widget.status.as_ref().and_then(|status| status.observed_size) == Some(3)).then_some(widget)
    })
    .await;
    assert_eq!(ready.finalizers(), [FINALIZER.to_owned()]);
    assert_eq!(server.pending_faults(), 0, "the first status write failed and was retried");

    api.patch("first", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "size": 5 } })))
        .await
        .expect("spec patch succeeds");
    eventually("the spec change to be reconciled", || async {
        let widget = api.get("first").await.expect("get succeeds");
        (widget.status.and_then(|status| status.observed_size) == Some(5)).then_some(())
    })
    .await;

    api.delete("first", &DeleteParams::default()).await.expect("delete is accepted");
    eventually("the widget to disappear", || async {
        api.get_opt("first").await.expect("get succeeds").is_none().then_some(())
    })
    .await;
    assert_eq!(*context.cleaned_up.lock().expect("not poisoned"), vec!["first".to_owned()]);
    running.abort();
}
