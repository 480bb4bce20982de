//! The CustomResourceDefinitions of pgec2, as objects and as the YAML committed in `crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{BackupPolicy, PostgresHost};

/// First lines of every generated CRD file.
pub const HEADER: &str = "# Generated from crates/api by `cargo run -p pgec2-api --bin crdgen`. Do not edit.\n";

/// A CRD and the file in `crds/` it is written to.
#[derive(Clone, Debug)]
pub struct CrdFile {
    /// File name inside `crds/`, e.g. `postgreshost.yaml`.
    pub file_name: &'static str,
    /// The definition.
    pub crd: CustomResourceDefinition,
}

impl CrdFile {
    /// The file's content: [`HEADER`] and the CRD as YAML.
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        Ok(format!("{HEADER}{}", serde_yaml_ng::to_string(&self.crd)?))
    }
}

/// Every pgec2 CRD with its file name.
pub fn crd_files() -> Vec<CrdFile> {
    vec![
        CrdFile { file_name: "postgreshost.yaml", crd: PostgresHost::crd() },
        CrdFile { file_name: "backuppolicy.yaml", crd: BackupPolicy::crd() },
    ]
}
