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
use crate::caches::{Caches, index_key, key_of};
use crate::context::Shared;
use crate::guarded::Guarded;
use crate::reconciler::{self, key};
use kube::ResourceExt;
use kube::runtime::Controller;
use std::sync::Arc;

/// Children carry this label; only they are watched.
pub const CHILD_SELECTOR: &str = "app.kubernetes.io/managed-by=modelship";

/// The ModelDeployments that follow pipeline `namespace/name`, by that key.
fn followed_pipeline(md: &Guarded<ModelDeployment>) -> Vec<String> {
    md.0.as_ref()
        .ok()
        .and_then(|md| {
            let from = md.spec.model_from.as_ref()?;
            Some(vec![index_key(
                &md.namespace().unwrap_or_default(),
                &from.pipeline,
            )])
        })
        .unwrap_or_default()
}

/// Subscribes to what the controller reads in `caches`, and returns it running until
/// `shutdown` resolves.
pub fn run<S>(
    caches: &mut Caches,
    shared: Shared,
    prometheus: crate::analysis::prometheus::Clients,
    readiness: Readiness,
    shutdown: S,
) -> impl std::future::Future<Output = ()> + Send + use<S>
where
    S: std::future::Future<Output = ()> + Send + Sync + 'static,
{
    let deployments = caches.deployments.children();
    let deployment_events = caches.deployments.subscribe();
    let services = caches.services.children();
    let service_events = caches.services.subscribe();
    let pipelines = caches.pipelines.store();
    let pipeline_events = caches.pipelines.subscribe();
    let state = shared.object_state();
    let forget = state.clone();
    caches
        .model_deployments
        .on_delete(move |md| forget.forget(&key(md)));
    let following = caches.model_deployments.index(followed_pipeline);
    let model_deployments = caches.model_deployments.store();
    let md_stream = caches.model_deployments.subscribe();

    let synced = shared.synced_flag();
    readiness.expect("modeldeployments");
    async move {
        let controller = Controller::for_stream(md_stream, model_deployments.clone()).with_config(
            kube::runtime::controller::Config::default().concurrency(shared.settings.concurrency),
        );
        let stores = (
            model_deployments.clone(),
            deployments.clone(),
            services.clone(),
            pipelines.clone(),
        );
        tokio::spawn(async move {
            let (m, d, s, p) = stores;
            until_ready(&m).await;
            until_ready(d.store()).await;
            until_ready(s.store()).await;
            until_ready(&p).await;
            synced.store(true, std::sync::atomic::Ordering::Release);
            readiness.set_ready("modeldeployments");
        });

        // Without a finalizer a deleted ModelDeployment is never reconciled again: drop its
        // exported measurements, and what is kept about it that the watch's delete event did
        // not already drop, once it has left the cache.
        let analysis_value = shared.metrics.analysis_value.clone();
        tokio::spawn(crate::scope::sweep(
            state,
            model_deployments,
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
        let controller = controller
            .owns_stream(deployment_events)
            .owns_stream(service_events)
            // A pipeline that approves a candidate wakes the deployments that follow it.
            .watches_stream(pipeline_events, move |pipeline: Guarded<ModelPipeline>| {
                following.get(&key_of(&pipeline))
            })
            .graceful_shutdown_on(shutdown);
        reconciler::run(controller, ctx).await;
    }
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
