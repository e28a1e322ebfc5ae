//! The ModelDeployment controller.
pub mod desired;
#[cfg(test)]
mod mock_tests;
pub mod phase;
pub mod reconcile;
pub mod status;
#[cfg(test)]
pub mod testing;
pub mod traffic;
pub mod validate;

use crate::admin::{Readiness, until_ready};
use crate::api::{ModelDeployment, ModelPipeline};
use crate::context::Shared;
use crate::guarded::{self, Guarded};
use crate::scope::Scope;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use std::sync::Arc;

/// Children carry this label; only they are watched.
pub const CHILD_SELECTOR: &str = "app.kubernetes.io/managed-by=modelship";

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    scope: Scope,
    shared: Shared,
    prometheus: crate::analysis::prometheus::Clients,
    readiness: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let children = watcher::Config::default().labels(CHILD_SELECTOR);
    let (deployments, deployment_events) = scope.reflect::<Deployment>(&client, children.clone());
    let (services, service_events) = scope.reflect::<Service>(&client, children);
    // Both kinds through kube's error boundary: an object that does not deserialize is kept
    // as its metadata and error, and the others go on.
    let (pipelines, pipeline_events) =
        scope.reflect::<Guarded<ModelPipeline>>(&client, watcher::Config::default());

    let state = shared.object_state();
    let forget = state.clone();
    let (model_deployments, md_stream) = scope.primary::<Guarded<ModelDeployment>, _>(
        &client,
        watcher::Config::default(),
        move |md| forget.forget(&reconcile::key(md)),
    );
    let controller = Controller::for_stream(md_stream, model_deployments.clone());

    readiness.expect("modeldeployments");
    let stores = (
        model_deployments.clone(),
        deployments.clone(),
        services.clone(),
        pipelines.clone(),
    );
    let ready = readiness.clone();
    tokio::spawn(async move {
        let (m, d, s, p) = stores;
        until_ready(&m).await;
        until_ready(&d).await;
        until_ready(&s).await;
        until_ready(&p).await;
        ready.set_ready("modeldeployments");
    });

    // Without a finalizer a deleted ModelDeployment is never reconciled again: drop its
    // exported measurements, and what is kept about it that the watch's delete event did not
    // already drop, once it has left the cache.
    let analysis_value = shared.metrics.analysis_value.clone();
    tokio::spawn(crate::scope::sweep(
        state,
        model_deployments.clone(),
        shared
            .metrics
            .object_state
            .with_label_values(&[reconcile::CONTROLLER]),
        move |store| sweep_series(&analysis_value, store),
    ));

    let ctx = Arc::new(reconcile::Context {
        shared,
        deployments,
        services,
        pipelines,
        prometheus,
    });
    controller
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        // A pipeline that approves a candidate wakes the deployments that follow it.
        .watches_stream(pipeline_events, move |pipeline: Guarded<ModelPipeline>| {
            let ns = pipeline.namespace();
            let name = pipeline.name_any();
            guarded::valid(&model_deployments)
                .into_iter()
                .filter(|md| {
                    md.namespace() == ns
                        && md
                            .spec
                            .model_from
                            .as_ref()
                            .is_some_and(|f| f.pipeline == name)
                })
                .map(|md| {
                    ObjectRef::<Guarded<ModelDeployment>>::new(&md.name_any())
                        .within(&md.namespace().unwrap_or_default())
                })
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile::reconcile_guarded,
            reconcile::error_policy_guarded,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "deployment controller");
            }
        })
        .await;
}

/// Removes the measurement series of ModelDeployments that no longer exist.
fn sweep_series(
    gauge: &prometheus::GaugeVec,
    store: &kube::runtime::reflector::Store<Guarded<ModelDeployment>>,
) {
    use prometheus::core::Collector;
    let live: std::collections::HashSet<(String, String)> = store
        .state()
        .iter()
        .map(|md| (md.namespace().unwrap_or_default(), md.name_any()))
        .collect();
    for family in gauge.collect() {
        for metric in family.get_metric() {
            let labels: std::collections::HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            let key = (
                labels
                    .get("namespace")
                    .copied()
                    .unwrap_or_default()
                    .to_string(),
                labels
                    .get("deployment")
                    .copied()
                    .unwrap_or_default()
                    .to_string(),
            );
            if !live.contains(&key) {
                let values = ["namespace", "deployment", "metric", "series"]
                    .map(|n| labels.get(n).copied().unwrap_or_default());
                let _ = gauge.remove_label_values(&values);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher;

    #[test]
    fn series_of_deleted_model_deployments_are_swept() {
        let gauge = prometheus::GaugeVec::new(
            prometheus::Opts::new("g", "h"),
            &["namespace", "deployment", "metric", "series"],
        )
        .unwrap();
        gauge
            .with_label_values(&["models", "fraud", "error-rate", "judged"])
            .set(0.1);
        gauge
            .with_label_values(&["models", "gone", "error-rate", "judged"])
            .set(0.2);
        let (store, mut writer) = kube::runtime::reflector::store();
        writer.apply_watcher_event(&watcher::Event::Apply(kube::core::DeserializeGuard(Ok(
            testing::sample(),
        ))));
        sweep_series(&gauge, &store);
        assert!(
            gauge
                .get_metric_with_label_values(&["models", "fraud", "error-rate", "judged"])
                .is_ok()
        );
        use prometheus::core::Collector;
        let left: usize = gauge.collect().iter().map(|f| f.get_metric().len()).sum();
        assert_eq!(left, 1);
    }
}
