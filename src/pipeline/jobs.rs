//! The Jobs of a run: one per stage, built from the user's pod template with the run's
//! environment contract. Pure.
use crate::api::{ModelPipeline, ModelPipelineSpec, Run, StagePhase, StageSpec, StageStatus};
use crate::deployment::desired::{LABEL_MANAGED_BY, MANAGED_BY, set_env};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

pub const LABEL_PIPELINE: &str = "modelship.io/pipeline";
pub const LABEL_RUN: &str = "modelship.io/run";
pub const LABEL_STAGE: &str = "modelship.io/stage";

/// The exit code that means "the check failed": the Job fails at once, without retries.
pub const EXIT_CHECK_FAILED: i32 = 3;

/// Where a container writes its result unless its template says otherwise.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

pub use crate::api::Stage;

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Checks,
        Stage::Validate,
        Stage::Train,
        Stage::Evaluate,
        Stage::Integration,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Checks => "checks",
            Stage::Validate => "validate",
            Stage::Train => "train",
            Stage::Evaluate => "evaluate",
            Stage::Integration => "integration",
        }
    }

    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the stage must leave a result document (train, evaluate and integration
    /// report what the gates and the candidate need; checks and validate may).
    pub fn requires_result(self) -> bool {
        matches!(self, Stage::Train | Stage::Evaluate | Stage::Integration)
    }
}

/// The stages a run of `spec` goes through, in order.
pub fn planned_stages(spec: &ModelPipelineSpec) -> Vec<Stage> {
    Stage::ALL
        .into_iter()
        .filter(|s| stage_spec(spec, *s).is_some())
        .collect()
}

/// The status of a new run's stages: each planned stage, pending, with its Job's name.
pub fn pending_stages(spec: &ModelPipelineSpec, pipeline: &str, run: &str) -> Vec<StageStatus> {
    planned_stages(spec)
        .into_iter()
        .map(|stage| StageStatus {
            name: stage,
            job: job_name(pipeline, run, stage),
            phase: StagePhase::Pending,
            started_at: None,
            finished_at: None,
            exit_code: None,
            message: None,
            metrics: BTreeMap::new(),
            baseline_metrics: BTreeMap::new(),
            artifact: None,
            dataset_digest: None,
            images: BTreeMap::new(),
            service_url: None,
        })
        .collect()
}

/// The Job settings of a stage, if the spec has the stage.
pub fn stage_spec(spec: &ModelPipelineSpec, stage: Stage) -> Option<&StageSpec> {
    match stage {
        Stage::Checks => spec.stages.checks.as_ref(),
        Stage::Validate => spec.stages.validate.as_ref(),
        Stage::Train => Some(&spec.stages.train),
        Stage::Evaluate => Some(&spec.stages.evaluate),
        Stage::Integration => spec.stages.integration.as_ref().map(|i| &i.stage),
    }
}

/// `<pipeline>-<run>-<stage>`: deterministic, so a restarted operator finds the Job it
/// created instead of starting a second one.
pub fn job_name(pipeline: &str, run: &str, stage: Stage) -> String {
    format!("{pipeline}-{run}-{}", stage.as_str())
}

/// Labels of a stage's Job and pods.
pub fn labels(pipeline: &str, run: &str, stage: Stage) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_PIPELINE.to_string(), pipeline.to_string()),
        (LABEL_RUN.to_string(), run.to_string()),
        (LABEL_STAGE.to_string(), stage.as_str().to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ])
}

/// The environment every container of a stage gets.
pub fn environment(
    p: &ModelPipeline,
    run: &Run,
    stage: Stage,
    service_url: Option<&str>,
) -> Vec<(&'static str, String)> {
    let spec = &p.spec;
    let baseline = run.baseline.as_ref();
    // After train, every stage works on the artifact fixed when train ended, not on the
    // planned URI: what is evaluated and served is what is published.
    let fixed = (stage > Stage::Train)
        .then_some(run.trained_artifact.as_ref())
        .flatten();
    let candidate_uri = fixed
        .and_then(|a| a.uri.clone())
        .unwrap_or_else(|| run.artifact.clone());
    let mut env = vec![
        ("MODELSHIP_PIPELINE", p.name_any()),
        ("MODELSHIP_RUN", run.name.clone()),
        ("MODELSHIP_STAGE", stage.as_str().to_string()),
        ("MODELSHIP_TRIGGER", run.trigger.reason.as_str().to_string()),
        (
            "MODELSHIP_SOURCE_REPOSITORY",
            spec.source.repository.clone(),
        ),
        (
            "MODELSHIP_SOURCE_REVISION",
            run.inputs.source_revision.clone(),
        ),
        ("MODELSHIP_DATA_URI", spec.data.uri.clone()),
        ("MODELSHIP_DATA_VERSION", run.inputs.data_version.clone()),
        ("MODELSHIP_MODEL", spec.model.name.clone()),
        ("MODELSHIP_CANDIDATE_VERSION", run.version.clone()),
        ("MODELSHIP_CANDIDATE_URI", candidate_uri),
        (
            "MODELSHIP_BASELINE_VERSION",
            baseline.map(|b| b.version.clone()).unwrap_or_default(),
        ),
        (
            "MODELSHIP_BASELINE_URI",
            baseline.map(|b| b.artifact.clone()).unwrap_or_default(),
        ),
        ("MODELSHIP_SEED", spec.seed.to_string()),
    ];
    if let Some(a) = fixed {
        env.push(("MODELSHIP_ARTIFACT_URI", a.uri.clone().unwrap_or_default()));
        env.push((
            "MODELSHIP_ARTIFACT_SHA256",
            a.sha256.clone().unwrap_or_default(),
        ));
    }
    if let Some(url) = service_url {
        env.push(("MODELSHIP_SERVICE_URL", url.to_string()));
    }
    env
}

fn contract(c: &mut Container, env: &[(&'static str, String)]) {
    for (name, value) in env {
        set_env(c, name, value);
    }
    let path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.to_string());
    set_env(c, "MODELSHIP_RESULT_FILE", &path);
}

/// The Job of one stage of `run`. `service_url` is the served candidate's address
/// (integration only). The error says what is wrong with the template.
pub fn desired_job(
    p: &ModelPipeline,
    run: &Run,
    stage: Stage,
    service_url: Option<&str>,
) -> Result<Job, String> {
    let settings = stage_spec(&p.spec, stage).ok_or_else(|| {
        format!(
            "spec.stages.{} was removed while run {} was running",
            stage.as_str(),
            run.name
        )
    })?;
    let mut pod: PodTemplateSpec = settings.template.parse().map_err(|e| {
        format!(
            "spec.stages.{}.template is not a pod template: {e}",
            stage.as_str()
        )
    })?;
    let name = p.name_any();
    let labels = labels(&name, &run.name, stage);

    let mut meta = pod.metadata.take().unwrap_or_default();
    let mut pod_labels = meta.labels.take().unwrap_or_default();
    pod_labels.extend(labels.clone());
    meta.labels = Some(pod_labels);
    pod.metadata = Some(meta);

    let env = environment(p, run, stage, service_url);
    let spec = pod.spec.get_or_insert_with(Default::default);
    if spec.containers.is_empty() {
        return Err(format!(
            "spec.stages.{}.template has no containers",
            stage.as_str()
        ));
    }
    // A pod failure policy needs pods that are not restarted in place.
    spec.restart_policy = Some("Never".into());
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        contract(c, &env);
    }

    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, &run.name, stage)),
            namespace: p.namespace(),
            labels: Some(labels),
            // Only a pipeline read from the API server reaches here, so it has a uid.
            owner_references: Some(vec![p.controller_owner_ref(&()).unwrap_or_default()]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(settings.backoff_limit),
            active_deadline_seconds: Some(settings.active_deadline_seconds),
            pod_failure_policy: Some(failure_policy()),
            template: pod,
            ..JobSpec::default()
        }),
        status: None,
    })
}

/// Exit code 3 is a verdict ("the check failed"), not a crash: fail the Job without retries.
/// A pod evicted or preempted did not fail: retry it without counting against the limit.
fn failure_policy() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: None,
                    operator: "In".into(),
                    values: vec![EXIT_CHECK_FAILED],
                }),
                on_pod_conditions: None,
            },
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    status: "True".into(),
                    type_: "DisruptionTarget".into(),
                }]),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testing::{run, sample};

    fn env_of(c: &Container) -> BTreeMap<String, String> {
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn stages_run_in_order_and_optional_ones_only_when_set() {
        let mut p = sample();
        assert_eq!(planned_stages(&p.spec), vec![Stage::Train, Stage::Evaluate]);
        p.spec.stages.checks = Some(p.spec.stages.train.clone());
        p.spec.stages.validate = Some(p.spec.stages.train.clone());
        assert_eq!(
            planned_stages(&p.spec),
            vec![
                Stage::Checks,
                Stage::Validate,
                Stage::Train,
                Stage::Evaluate
            ]
        );
    }

    #[test]
    fn names_and_stage_parsing() {
        assert_eq!(
            job_name("fraud", "r12", Stage::Evaluate),
            "fraud-r12-evaluate"
        );
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(s));
        }
        assert_eq!(Stage::parse("deploy"), None);
        assert!(Stage::Train.requires_result() && !Stage::Checks.requires_result());
    }

    #[test]
    fn job_is_labelled_owned_limited_and_fails_fast_on_exit_code_3() {
        let mut p = sample();
        p.spec.stages.train.backoff_limit = 2;
        p.spec.stages.train.active_deadline_seconds = 900;
        let r = run(&p, "r3");
        let job = desired_job(&p, &r, Stage::Train, None).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("fraud-r3-train"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("models"));
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_PIPELINE], "fraud");
        assert_eq!(labels[LABEL_RUN], "r3");
        assert_eq!(labels[LABEL_STAGE], "train");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "modelship");
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("ModelPipeline", "fraud", Some(true))
        );

        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(2));
        assert_eq!(spec.active_deadline_seconds, Some(900));
        let rules = &spec.pod_failure_policy.as_ref().unwrap().rules;
        assert_eq!(rules[0].action, "FailJob");
        let on_exit = rules[0].on_exit_codes.as_ref().unwrap();
        assert_eq!(
            (on_exit.operator.as_str(), on_exit.values.as_slice()),
            ("In", &[3][..])
        );
        assert_eq!(rules[1].action, "Ignore");

        let pod = &spec.template;
        assert_eq!(
            pod.spec.as_ref().unwrap().restart_policy.as_deref(),
            Some("Never")
        );
        let pod_labels = pod.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(pod_labels[LABEL_STAGE], "train");
    }

    #[test]
    fn every_container_gets_the_environment_contract() {
        let mut p = sample();
        p.spec.stages.evaluate.template = crate::api::PodTemplate(serde_json::json!({
            "metadata": {"labels": {"team": "risk"}, "annotations": {"note": "kept"}},
            "spec": {
                "restartPolicy": "OnFailure",
                "initContainers": [{"name": "fetch", "image": "fetch:1"}],
                "containers": [
                    {"name": "main", "image": "eval:1", "env": [{"name": "MODELSHIP_SEED", "value": "overridden"}, {"name": "OWN", "value": "x"}]},
                    {"name": "side", "image": "side:1", "terminationMessagePath": "/tmp/result.json"}
                ]
            }
        }));
        let mut r = run(&p, "r7");
        r.baseline = Some(crate::api::ProductionModel {
            version: "fraud-v1.2.0-2026-11-01-aaaaaa".into(),
            artifact: "s3://models/fraud/fraud-v1.2.0-2026-11-01-aaaaaa/".into(),
            ..Default::default()
        });
        let job = desired_job(&p, &r, Stage::Evaluate, None).unwrap();
        let pod = job.spec.unwrap().template;
        let meta = pod.metadata.unwrap();
        assert_eq!(meta.labels.unwrap()["team"], "risk");
        assert_eq!(meta.annotations.unwrap()["note"], "kept");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let main = env_of(&spec.containers[0]);
        let want = [
            ("MODELSHIP_PIPELINE", "fraud"),
            ("MODELSHIP_RUN", "r7"),
            ("MODELSHIP_STAGE", "evaluate"),
            ("MODELSHIP_TRIGGER", "source"),
            (
                "MODELSHIP_SOURCE_REPOSITORY",
                "https://git.example/fraud.git",
            ),
            ("MODELSHIP_SOURCE_REVISION", "f4c9a2e1"),
            ("MODELSHIP_DATA_URI", "s3://data/fraud"),
            ("MODELSHIP_DATA_VERSION", "2026-11-26"),
            ("MODELSHIP_MODEL", "fraud"),
            (
                "MODELSHIP_CANDIDATE_VERSION",
                "fraud-v1.0.0-2026-11-26-f4c9a2",
            ),
            (
                "MODELSHIP_CANDIDATE_URI",
                "s3://models/fraud/fraud-v1.0.0-2026-11-26-f4c9a2/",
            ),
            (
                "MODELSHIP_BASELINE_VERSION",
                "fraud-v1.2.0-2026-11-01-aaaaaa",
            ),
            (
                "MODELSHIP_BASELINE_URI",
                "s3://models/fraud/fraud-v1.2.0-2026-11-01-aaaaaa/",
            ),
            ("MODELSHIP_SEED", "42"),
            ("MODELSHIP_RESULT_FILE", "/dev/termination-log"),
            ("OWN", "x"),
        ];
        for (k, v) in want {
            assert_eq!(main.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(!main.contains_key("MODELSHIP_SERVICE_URL"));
        assert_eq!(
            env_of(&spec.containers[1])["MODELSHIP_RESULT_FILE"],
            "/tmp/result.json"
        );
        assert_eq!(
            env_of(&spec.init_containers.as_ref().unwrap()[0])["MODELSHIP_RUN"],
            "r7"
        );
    }

    #[test]
    fn integration_gets_the_service_url_and_empty_baseline_without_production() {
        let mut p = sample();
        p.spec.stages.integration = Some(
            serde_json::from_value(serde_json::json!({
                "template": {"spec": {"containers": [{"name": "test", "image": "it:1"}]}}
            }))
            .unwrap(),
        );
        let r = run(&p, "r1");
        let job = desired_job(
            &p,
            &r,
            Stage::Integration,
            Some("http://fraud-r1-serve.models.svc:80"),
        )
        .unwrap();
        let env = env_of(&job.spec.unwrap().template.spec.unwrap().containers[0]);
        assert_eq!(
            env["MODELSHIP_SERVICE_URL"],
            "http://fraud-r1-serve.models.svc:80"
        );
        assert_eq!(env["MODELSHIP_BASELINE_VERSION"], "");
    }

    #[test]
    fn a_removed_stage_or_broken_template_is_explained() {
        let mut p = sample();
        let r = run(&p, "r1");
        assert!(
            desired_job(&p, &r, Stage::Checks, None)
                .unwrap_err()
                .contains("spec.stages.checks was removed")
        );
        p.spec.stages.train.template.0["spec"]["containers"][0]["ports"] =
            serde_json::json!("8080");
        assert!(
            desired_job(&p, &r, Stage::Train, None)
                .unwrap_err()
                .starts_with("spec.stages.train.template is not a pod template")
        );
    }
}
