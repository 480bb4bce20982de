//! The CRDs committed in `crds/` are exactly what the types generate.

use std::path::Path;

#[test]
fn committed_crds_match_the_generated_ones() {
    let crds_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    for file in pgec2_api::crd::crd_files() {
        let generated = file.to_yaml().expect("the CRD renders as YAML");
        let path = crds_dir.join(file.file_name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is stale or missing: run `cargo run -p pgec2-api --bin crdgen` and commit the result",
            path.display()
        );
    }
}

#[test]
fn crds_name_the_kinds_short_names_and_status_subresource() {
    for (file, plural, short_name) in
        [("postgreshost.yaml", "postgreshosts", "pgh"), ("backuppolicy.yaml", "backuppolicies", "bp")]
    {
        let crd = pgec2_api::crd::crd_files()
            .into_iter()
            .find(|candidate| candidate.file_name == file)
            .expect("the CRD is generated")
            .crd;
        assert_eq!(crd.spec.group, pgec2_api::API_GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&[short_name.to_string()][..]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, pgec2_api::API_VERSION);
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{file} has no status");
    }
}
