//! The integration stage's temporary serving objects: the candidate run with the serving
//! pod template of the ModelDeployment that follows the pipeline, behind a Service of its
//! own. Pure.
use crate::api::{ModelDeployment, ModelPipeline};
use crate::deployment::desired::{LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGED_BY, set_env};
use crate::deployment::validate::validate;
use crate::pipeline::jobs::{LABEL_PIPELINE, LABEL_RUN};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// `modelship.io/component` of the candidate's serving pods.
pub const COMPONENT_SERVING: &str = "integration-serving";

/// The ModelDeployment whose serving template the integration stage uses, parsed.
#[derive(Clone, Debug)]
pub struct Target {
    pub deployment: String,
    pub template: PodTemplateSpec,
    pub container: usize,
    pub port: i32,
    pub service_port: i32,
}

/// `<pipeline>-<run>-serve`, the name of the temporary Deployment and Service.
pub fn serving_name(pipeline: &str, run: &str) -> String {
    format!("{pipeline}-{run}-serve")
}

/// Labels of the serving objects and pods. They carry no `modelship.io/stage`, so the
/// stage pods' watch does not see them, and a `component` that no Job pod has, so the
/// Service selects only the candidate.
pub fn serving_labels(pipeline: &str, run: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_PIPELINE.to_string(), pipeline.to_string()),
        (LABEL_RUN.to_string(), run.to_string()),
        (LABEL_COMPONENT.to_string(), COMPONENT_SERVING.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ])
}

/// The ModelDeployments that follow `p` (`spec.modelFrom.pipeline`), by name.
pub fn followers<'a>(
    p: &ModelPipeline,
    deployments: &'a [&'a ModelDeployment],
) -> Vec<&'a ModelDeployment> {
    let mut found: Vec<&ModelDeployment> = deployments
        .iter()
        .copied()
        .filter(|md| {
            md.namespace() == p.namespace()
                && md
                    .spec
                    .model_from
                    .as_ref()
                    .is_some_and(|f| f.pipeline == p.name_any())
        })
        .collect();
    found.sort_by_key(|md| md.name_any());
    found
}

/// The ModelDeployment whose serving template the integration stage uses: the one
/// `spec.stages.integration.deployment` names, or else the first that follows the pipeline.
pub fn target(p: &ModelPipeline, deployments: &[&ModelDeployment]) -> Result<Target, String> {
    let named = p
        .spec
        .stages
        .integration
        .as_ref()
        .and_then(|i| i.deployment.clone());
    let md = match &named {
        Some(name) => deployments
            .iter()
            .copied()
            .find(|md| md.namespace() == p.namespace() && md.name_any() == *name)
            .ok_or_else(|| format!("ModelDeployment {name} (spec.stages.integration.deployment) does not exist"))?,
        None => followers(p, deployments).into_iter().next().ok_or_else(|| {
            format!(
                "no ModelDeployment follows this pipeline (spec.modelFrom.pipeline: {}), so there is no serving template to test the candidate with; create one or set spec.stages.integration.deployment",
                p.name_any()
            )
        })?,
    };
    let v = validate(md).map_err(|e| format!("ModelDeployment {}: {e}", md.name_any()))?;
    Ok(Target {
        deployment: md.name_any(),
        template: v.template,
        container: v.container,
        port: md.spec.port,
        service_port: md.spec.service_port,
    })
}

fn meta(p: &ModelPipeline, run: &str) -> ObjectMeta {
    let name = p.name_any();
    ObjectMeta {
        name: Some(serving_name(&name, run)),
        namespace: p.namespace(),
        labels: Some(serving_labels(&name, run)),
        owner_references: Some(vec![p.controller_owner_ref(&()).unwrap_or_default()]),
        ..ObjectMeta::default()
    }
}

/// The candidate served as production would serve it, with one replica.
///
/// The template's own pod labels are left out: a production Service or monitor that selects
/// them must never pick up a candidate that has not passed its tests.
pub fn desired_deployment(
    p: &ModelPipeline,
    run: &str,
    version: &str,
    artifact: &str,
    target: &Target,
) -> Deployment {
    let name = p.name_any();
    let labels = serving_labels(&name, run);
    let mut pod = target.template.clone();
    let mut pod_meta = pod.metadata.take().unwrap_or_default();
    pod_meta.labels = Some(labels.clone());
    pod.metadata = Some(pod_meta);
    if let Some(spec) = pod.spec.as_mut()
        && let Some(c) = spec.containers.get_mut(target.container)
    {
        set_env(c, "MODEL_VERSION", version);
        set_env(c, "MODEL_URI", artifact);
        set_env(c, "MODELSHIP_TRACK", "integration");
    }
    Deployment {
        metadata: meta(p, run),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels),
                match_expressions: None,
            },
            template: pod,
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The Service the integration Job calls.
pub fn desired_service(p: &ModelPipeline, run: &str, target: &Target) -> Service {
    Service {
        metadata: meta(p, run),
        spec: Some(ServiceSpec {
            selector: Some(serving_labels(&p.name_any(), run)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: target.service_port,
                target_port: Some(IntOrString::Int(target.port)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// In-cluster address of the served candidate (`MODELSHIP_SERVICE_URL`).
pub fn service_url(p: &ModelPipeline, run: &str, service_port: i32) -> String {
    format!(
        "http://{}.{}.svc:{service_port}",
        serving_name(&p.name_any(), run),
        p.namespace().unwrap_or_default()
    )
}

/// Whether the temporary Deployment has its replica available.
pub fn available(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .is_some_and(|s| s.available_replicas.unwrap_or(0) >= 1)
        && d.status.as_ref().and_then(|s| s.observed_generation) >= d.meta().generation
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::testing::sample as sample_md;
    use crate::pipeline::testing::sample;

    fn following(name: &str, pipeline: &str) -> ModelDeployment {
        let mut md = sample_md();
        md.metadata.name = Some(name.into());
        md.spec.model = None;
        md.spec.model_from = Some(crate::api::ModelFrom {
            pipeline: pipeline.into(),
        });
        md
    }

    #[test]
    fn the_follower_is_the_target_unless_one_is_named() {
        let mut p = sample();
        let owned = [
            following("zeta", "fraud"),
            following("alpha", "fraud"),
            following("other", "churn"),
        ];
        let mds: Vec<&ModelDeployment> = owned.iter().collect();
        assert_eq!(
            followers(&p, &mds)
                .iter()
                .map(|m| m.name_any())
                .collect::<Vec<_>>(),
            vec!["alpha", "zeta"]
        );
        assert_eq!(target(&p, &mds).unwrap().deployment, "alpha");
        p.spec.stages.integration = Some(
            serde_json::from_value(serde_json::json!({
                "template": {"spec": {"containers": [{"name": "t"}]}}, "deployment": "other"
            }))
            .unwrap(),
        );
        assert_eq!(target(&p, &mds).unwrap().deployment, "other");
        p.spec.stages.integration.as_mut().unwrap().deployment = Some("missing".into());
        assert!(
            target(&p, &mds)
                .unwrap_err()
                .contains("ModelDeployment missing")
        );
    }

    #[test]
    fn without_a_follower_the_error_says_what_to_do() {
        let p = sample();
        let err = target(&p, &[&following("x", "churn")]).unwrap_err();
        assert!(
            err.contains("no ModelDeployment follows this pipeline"),
            "{err}"
        );
    }

    #[test]
    fn candidate_is_served_with_the_serving_template_and_its_own_labels() {
        let p = sample();
        let owned = [following("fraud", "fraud")];
        let mds: Vec<&ModelDeployment> = owned.iter().collect();
        let t = target(&p, &mds).unwrap();
        let d = desired_deployment(&p, "r4", "fraud-v1.1.0-2026-11-26-f4c9a2", "s3://m/x/", &t);
        assert_eq!(d.metadata.name.as_deref(), Some("fraud-r4-serve"));
        assert_eq!(
            d.metadata.owner_references.as_ref().unwrap()[0].kind,
            "ModelPipeline"
        );
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert_eq!(labels, serving_labels("fraud", "r4"));
        assert!(
            !labels.contains_key("app"),
            "the production template's labels are not copied"
        );
        assert_eq!(spec.selector.match_labels.unwrap(), labels);
        let env: BTreeMap<_, _> = spec.template.spec.unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["MODEL_VERSION"], "fraud-v1.1.0-2026-11-26-f4c9a2");
        assert_eq!(env["MODEL_URI"], "s3://m/x/");

        let s = desired_service(&p, "r4", &t);
        assert_eq!(s.metadata.name.as_deref(), Some("fraud-r4-serve"));
        let port = &s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.port, port.target_port.clone()),
            (80, Some(IntOrString::Int(8080)))
        );
        assert_eq!(
            service_url(&p, "r4", t.service_port),
            "http://fraud-r4-serve.models.svc:80"
        );
    }

    #[test]
    fn availability_needs_an_available_replica_of_the_current_generation() {
        let p = sample();
        let t = target(&p, &[&following("fraud", "fraud")]).unwrap();
        let mut d = desired_deployment(&p, "r1", "v", "s3://a/", &t);
        d.metadata.generation = Some(2);
        assert!(!available(&d));
        d.status = Some(
            serde_json::from_value(
                serde_json::json!({"observedGeneration": 2, "availableReplicas": 1}),
            )
            .unwrap(),
        );
        assert!(available(&d));
        d.status = Some(
            serde_json::from_value(
                serde_json::json!({"observedGeneration": 1, "availableReplicas": 1}),
            )
            .unwrap(),
        );
        assert!(!available(&d));
    }
}
