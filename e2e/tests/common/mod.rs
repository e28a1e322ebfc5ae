//! What the ModelDeployment end-to-end tests share: a namespace, the operator under the chart's
//! RBAC, local pods that follow the Deployments, and quick analysis settings.
#![allow(dead_code)]
use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use modelship::api::{DeploymentPhase, ModelDeployment, ModelDeploymentStatus};
use modelship_e2e::operator::{self, Operator};
use modelship_e2e::pods::LocalPods;
use modelship_e2e::{TestNamespace, client, test_namespace, wait_for};
use serde_json::{Value, json};

/// Analysis every 2 s over 10 s windows; Prometheus scrapes every second.
pub const INTERVAL_SECS: f64 = 2.0;
pub const SCRAPE_SECS: f64 = 1.0;
pub const TIMEOUT: Duration = Duration::from_secs(120);
pub const NAME: &str = "churn";

pub fn model_uri(file: &str) -> String {
    format!(
        "file://{}",
        modelship_e2e::repo_root()
            .join("model-server/models")
            .join(file)
            .display()
    )
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// A ModelDeployment serving `version` from `file`, with quick shadow and analysis settings,
/// changed by `overrides` (merged into the spec).
pub fn model_deployment(version: &str, file: &str, overrides: Value) -> ModelDeployment {
    let mut spec = json!({
        "model": {"version": version, "artifact": model_uri(file)},
        "replicas": 2,
        "template": {"spec": {"containers": [{"name": "server", "image": "model-server:e2e", "ports": [{"containerPort": 8080}]}]}},
        "shadow": {"minDuration": "10s", "minRequests": 100, "mirrorPercent": 100.0, "compare": {"pointers": ["/predictions"], "minAgreement": 0.9}},
        "analysis": {"interval": "2s", "window": "10s", "bakeTime": "15s"},
    });
    merge(&mut spec, &overrides);
    ModelDeployment::new(NAME, serde_json::from_value(spec).expect("a valid spec"))
}

/// `spec.analysis.metrics` with only the default error-rate and agreement metrics, for tests
/// about something other than latency: a p99 over a 10 s window on a busy 2-core machine is
/// noise, and the latency default is shown by the tests that use every default.
pub fn without_latency() -> Value {
    use modelship::analysis::defaults;
    json!({"analysis": {"metrics": [defaults::error_rate(), defaults::agreement(0.9)]}})
}

/// Merges several overrides into one.
pub fn overrides(parts: &[Value]) -> Value {
    let mut out = json!({});
    for p in parts {
        merge(&mut out, p);
    }
    out
}

/// Everything one test needs.
pub struct World {
    pub client: Client,
    pub ns: TestNamespace,
    pub operator: Operator,
    pub pods: LocalPods,
    pub mds: Api<ModelDeployment>,
    pub deployments: Api<Deployment>,
}

impl World {
    /// A namespace, the operator, the local pods, and a ModelDeployment that is Stable on
    /// `churn-v1`. `knobs` gives model-server environment per version.
    pub async fn stable(
        prefix: &str,
        overrides: Value,
        knobs: &[(&str, &[(&str, &str)])],
    ) -> World {
        let client = client().await;
        let ns = test_namespace(&client, prefix).await;
        let operator = operator::start(ns.name()).await;
        let env: HashMap<String, Vec<(String, String)>> = knobs
            .iter()
            .map(|(v, kv)| {
                (
                    v.to_string(),
                    kv.iter()
                        .map(|(k, x)| (k.to_string(), x.to_string()))
                        .collect(),
                )
            })
            .collect();
        let pods = LocalPods::start(&client, ns.name(), NAME, env).await;
        let mds: Api<ModelDeployment> = ns.api();
        mds.create(
            &PostParams::default(),
            &model_deployment("churn-v1", "churn-v1.json", overrides),
        )
        .await
        .expect("creating the ModelDeployment");
        let world = World {
            deployments: ns.api(),
            client,
            ns,
            operator,
            pods,
            mds,
        };
        world.wait_phase(DeploymentPhase::Stable).await;
        world
            .pods
            .wait_for_version(modelship_e2e::pods::Role::Stable, Some("churn-v1"), TIMEOUT)
            .await;
        // Clients reach the model through the router: traffic starts once it serves.
        world
            .pods
            .wait_running(modelship_e2e::pods::Role::Router, TIMEOUT)
            .await;
        world
    }

    /// Waits until the shadow Deployment is gone (the children follow the status, so it goes
    /// right after the phase that ends the shadow is written).
    pub async fn wait_shadow_removed(&self) {
        wait_for("the shadow Deployment to be removed", TIMEOUT, || async {
            Ok(self
                .deployments
                .get_opt(&format!("{NAME}-shadow"))
                .await?
                .is_none()
                .then_some(()))
        })
        .await;
    }

    pub async fn status(&self) -> ModelDeploymentStatus {
        self.mds
            .get(NAME)
            .await
            .expect("reading the ModelDeployment")
            .status
            .unwrap_or_default()
    }

    /// Waits for a phase and returns the status seen then.
    pub async fn wait_phase(&self, phase: DeploymentPhase) -> ModelDeploymentStatus {
        wait_for(&format!("phase {phase}"), TIMEOUT, || async {
            Ok(self
                .mds
                .get(NAME)
                .await?
                .status
                .filter(|s| s.phase == Some(phase)))
        })
        .await
    }

    /// Asks for another version.
    pub async fn set_model(&self, version: &str, file: &str) {
        let patch = json!({"spec": {"model": {"version": version, "artifact": model_uri(file)}}});
        self.mds
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("changing spec.model");
    }

    pub async fn annotate(&self, key: &str, value: &str) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.mds
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotating");
    }

    /// The version `<name>-stable` runs, from its pod template.
    pub async fn stable_deployment_version(&self) -> Option<String> {
        let d = self
            .deployments
            .get_opt(&format!("{NAME}-stable"))
            .await
            .ok()??;
        d.spec?
            .template
            .metadata?
            .labels?
            .get("modelship.io/version")
            .cloned()
    }

    /// The reasons of the events about the ModelDeployment, oldest first.
    pub async fn event_reasons(&self) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> = self.ns.api();
        let mut list = events
            .list(&Default::default())
            .await
            .expect("listing events")
            .items;
        list.retain(|e| {
            e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("ModelDeployment")
        });
        list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        list.into_iter().filter_map(|e| e.reason).collect()
    }

    /// Waits for an event with `reason` about the ModelDeployment (events are published just
    /// after the status is written).
    pub async fn wait_event(&self, reason: &str) {
        wait_for(
            &format!("a {reason} event"),
            Duration::from_secs(30),
            || async {
                Ok(self
                    .event_reasons()
                    .await
                    .iter()
                    .any(|r| r == reason)
                    .then_some(()))
            },
        )
        .await;
    }

    /// Asserts that for `during`, the phase never becomes one of `never` (a negative can only
    /// be shown over a window; it is checked at every poll, not slept through).
    pub async fn never(
        &self,
        never: &[DeploymentPhase],
        during: Duration,
    ) -> ModelDeploymentStatus {
        let deadline = tokio::time::Instant::now() + during;
        let mut last = self.status().await;
        while tokio::time::Instant::now() < deadline {
            last = self.status().await;
            assert!(
                !last.phase.is_some_and(|p| never.contains(&p)),
                "phase became {:?}: {:?}",
                last.phase,
                last.message
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        last
    }
}
