//! The custom resources, group `modelship.io`, version `v1alpha1`.
pub mod common;
pub mod deployment;
pub mod pipeline;

pub use common::*;
pub use deployment::*;
pub use pipeline::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The CustomResourceDefinitions, in the order they are printed and stored in `crds/`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![ModelDeployment::crd(), ModelPipeline::crd()]
}

/// The CRDs as one multi-document YAML stream, exactly as `crds/` holds them.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd).expect("a CRD always serialises"));
    }
    out
}

/// File name of a CRD in `crds/`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` and the chart's copy must be exactly what `modelship crd` prints; regenerate
    /// with `make crds`.
    #[test]
    fn committed_crds_match_the_types() {
        let want = crds_yaml();
        for path in [
            "crds/modelship.yaml",
            "charts/modelship/crds/modelship.yaml",
        ] {
            let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
            let have = std::fs::read_to_string(&file).unwrap_or_default();
            assert!(
                have == want,
                "{path} is out of date with the Rust types: run `make crds` and commit the result"
            );
        }
    }

    #[test]
    fn both_kinds_are_in_the_modelship_category_with_short_names() {
        for crd in crds() {
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&["modelship".to_string()][..])
            );
            assert!(
                crd.spec
                    .names
                    .short_names
                    .as_ref()
                    .is_some_and(|s| !s.is_empty())
            );
            let version = &crd.spec.versions[0];
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "status subresource"
            );
            assert!(
                version
                    .additional_printer_columns
                    .as_ref()
                    .is_some_and(|c| c.iter().any(|c| c.name == "Phase"))
            );
        }
    }
}
