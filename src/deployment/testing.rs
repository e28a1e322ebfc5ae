//! Fixtures for the deployment controller's unit tests.
use crate::api::{ModelDeployment, ModelDeploymentSpec};

/// A ModelDeployment as the API server would return it: defaults filled in, a uid set.
pub fn sample() -> ModelDeployment {
    let spec: ModelDeploymentSpec = serde_json::from_value(serde_json::json!({
        "model": {"version": "v1", "artifact": "s3://models/fraud/v1"},
        "template": {
            "metadata": {"labels": {"app": "fraud"}},
            "spec": {"containers": [{
                "name": "server",
                "image": "registry.example/model-server:1.0",
                "env": [{"name": "MODEL_VERSION", "value": "overridden"}],
                "ports": [{"containerPort": 8080}]
            }]}
        }
    }))
    .expect("sample spec");
    let mut md = ModelDeployment::new("fraud", spec);
    md.metadata.namespace = Some("models".into());
    md.metadata.uid = Some("0b8f6a39-6d64-4b8e-9b43-4a5f3f1f9c11".into());
    md.metadata.generation = Some(1);
    md.metadata.resource_version = Some("100".into());
    md
}
