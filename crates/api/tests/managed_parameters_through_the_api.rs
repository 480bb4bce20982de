//! A PostgresHost whose `parameters` set what pgec2 manages is refused when it is created, with
//! 422 Invalid, before the operator can launch anything for it: by the CRD's CEL rule (what
//! `kubectl apply` meets in a cluster) and by the Rust validation (what local mode's API runs).
//! Both run here behind the in-memory Kubernetes API the operator's tests and local mode use.

use kube::CustomResourceExt;
use kube::api::{Api, PostParams};
use pgec2_api::PostgresHost;
use pgec2_api::rules::PARAMETERS_NOT_MANAGED;
use pgec2_contract::parameters::MANAGED_PARAMETERS;
use pgec2_kube_memory::{MemoryApiServer, ResourceType};
use serde_json::{Value, json};

fn host_type() -> ResourceType {
    ResourceType::namespaced::<PostgresHost>().with_status_subresource().with_crd_schema(&PostgresHost::crd())
}

/// What an API server does with a CRD's `x-kubernetes-validations`: evaluates them.
fn cel_rules(old: Option<&Value>, new: &Value) -> Result<(), String> {
    let crd = PostgresHost::crd();
    let schema = crd.spec.versions[0].schema.as_ref().and_then(|schema| schema.open_api_v3_schema.as_ref());
    let schema = serde_json::to_value(schema.ok_or("the CRD has no schema")?).map_err(|error| error.to_string())?;
    kube_cel::Validator::new()
        .validate(&schema, new, old)
        .map_err(|errors| errors.into_vec().into_iter().map(|error| error.message).collect::<Vec<_>>().join("; "))
}

/// What local mode's API runs: the API crate's Rust validation.
fn rust_validation(_old: Option<&Value>, new: &Value) -> Result<(), String> {
    let host: PostgresHost = serde_json::from_value(new.clone()).map_err(|error| error.to_string())?;
    host.spec.validate().map_err(|invalid| invalid.to_string())
}

fn host_setting(name: &str, parameter: &str) -> PostgresHost {
    serde_json::from_value(json!({
        "apiVersion": "pgec2.io/v1alpha1",
        "kind": "PostgresHost",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"storage": {"sizeGiB": 100}, "postgres": {"parameters": {parameter: "on"}}},
    }))
    .expect("a PostgresHost")
}

/// Creates a host setting each managed parameter through `server`; every create must fail with
/// 422 Invalid naming the rule, and a host setting an ordinary parameter must be stored.
async fn assert_every_managed_parameter_is_refused(server: MemoryApiServer) {
    let hosts: Api<PostgresHost> = Api::namespaced(server.client(), "shop");
    for (index, parameter) in MANAGED_PARAMETERS.iter().enumerate() {
        let created = hosts.create(&PostParams::default(), &host_setting(&format!("db-{index}"), parameter)).await;
        match created {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{parameter}: {status:?}");
                assert!(status.message.contains(PARAMETERS_NOT_MANAGED.message), "{parameter}: {}", status.message);
            }
            other => panic!("a host setting {parameter} was not refused: {other:?}"),
        }
    }
    let ordinary = hosts.create(&PostParams::default(), &host_setting("tuned", "work_mem")).await;
    assert!(ordinary.is_ok(), "a host setting work_mem was refused: {ordinary:?}");
}

#[tokio::test]
async fn the_crd_rule_refuses_every_managed_parameter_with_422_when_a_host_is_created() {
    let server = MemoryApiServer::new().with_resource(host_type()).with_validator(&host_type(), cel_rules);
    assert_every_managed_parameter_is_refused(server).await;
}

#[tokio::test]
async fn the_rust_validation_refuses_every_managed_parameter_with_422_when_a_host_is_created() {
    let server = MemoryApiServer::new().with_resource(host_type()).with_validator(&host_type(), rust_validation);
    assert_every_managed_parameter_is_refused(server).await;
}
