//! Fixture objects for the plugin's tests, from the YAML beside this file.
use crate::api::{ModelDeployment, ModelPipeline};
use crate::plugin::view::DeploymentView;
use jiff::Timestamp;
use serde::Deserialize;

/// The time every fixture is rendered at.
pub fn now() -> Timestamp {
    "2026-11-26T10:30:00Z".parse().unwrap()
}

/// `fraud`, shadowing fraud-v2 next to fraud-v1 with manual promotion.
pub fn deployment() -> ModelDeployment {
    serde_yaml_ng::from_str(include_str!("deployment.yaml")).unwrap()
}

/// `fraud` with run r3 waiting for approval, r2 failed at its gates.
pub fn pipeline() -> ModelPipeline {
    serde_yaml_ng::from_str(include_str!("pipeline.yaml")).unwrap()
}

/// The deployment with its Deployments, pods and events.
pub fn deployment_view() -> DeploymentView {
    let mut view = DeploymentView {
        deployment: deployment(),
        workloads: vec![],
        pods: vec![],
        events: vec![],
    };
    for doc in serde_yaml_ng::Deserializer::from_str(include_str!("children.yaml")) {
        let value = serde_json::Value::deserialize(doc).unwrap();
        match value["kind"].as_str() {
            Some("Deployment") => view.workloads.push(serde_json::from_value(value).unwrap()),
            Some("Pod") => view.pods.push(serde_json::from_value(value).unwrap()),
            Some("Event") => view.events.push(serde_json::from_value(value).unwrap()),
            other => panic!("unexpected kind {other:?}"),
        }
    }
    view
}

/// Compares with the golden file `name` beside this file; `UPDATE_GOLDEN=1` rewrites it.
pub fn assert_golden(name: &str, have: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/plugin/testdata")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, have).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    pretty_assertions::assert_eq!(
        want,
        have,
        "{name} differs; after checking the new output, rewrite it with UPDATE_GOLDEN=1"
    );
}
