//! Fixtures for the pipeline controller's unit tests.
use crate::api::{ModelPipeline, ModelPipelineSpec, Run, RunPhase, Trigger, TriggerReason};
use crate::pipeline::jobs::pending_stages;
use crate::pipeline::triggers::current_inputs;
use kube::ResourceExt;

/// When the fixtures' runs start.
pub const T0: &str = "2026-11-26T10:00:00Z";

fn stage(image: &str) -> serde_json::Value {
    serde_json::json!({"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": image}]}}})
}

/// A ModelPipeline as the API server would return it: defaults filled in, a uid set.
pub fn sample() -> ModelPipeline {
    let spec: ModelPipelineSpec = serde_json::from_value(serde_json::json!({
        "model": {"name": "fraud", "artifactBase": "s3://models/fraud"},
        "source": {"repository": "https://git.example/fraud.git", "revision": "f4c9a2e1"},
        "data": {"uri": "s3://data/fraud", "version": "2026-11-26"},
        "stages": {"train": stage("trainer:1"), "evaluate": stage("evaluator:1")},
        "gates": [{"metric": "f1", "direction": "HigherIsBetter", "min": 0.8, "maxRegression": 0.01}]
    }))
    .expect("sample spec");
    let mut p = ModelPipeline::new("fraud", spec);
    p.metadata.namespace = Some("models".into());
    p.metadata.uid = Some("5c0e3a1c-2a44-4a9c-8c1e-0f3b8d2e7a10".into());
    p.metadata.generation = Some(1);
    p.metadata.resource_version = Some("200".into());
    p
}

/// A run of `p` that has just started, every stage pending.
pub fn run(p: &ModelPipeline, name: &str) -> Run {
    let pipeline = p.name_any();
    Run {
        name: name.into(),
        trigger: Trigger {
            reason: TriggerReason::Source,
            detail: "new pipeline".into(),
            time: T0.parse().unwrap(),
        },
        inputs: current_inputs(&p.spec, "2026-11-26".into()),
        phase: RunPhase::Running,
        reason: None,
        message: None,
        stage: None,
        version: "fraud-v1.0.0-2026-11-26-f4c9a2".into(),
        semver: "1.0.0".into(),
        artifact: "s3://models/fraud/fraud-v1.0.0-2026-11-26-f4c9a2/".into(),
        trained_artifact: None,
        baseline: None,
        stages: pending_stages(&p.spec, &pipeline, name),
        verdict: None,
        gates: Vec::new(),
        candidate: None,
        started_at: T0.parse().unwrap(),
        finished_at: None,
    }
}
