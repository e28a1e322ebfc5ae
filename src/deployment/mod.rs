//! The ModelDeployment controller.
pub mod desired;
#[cfg(test)]
mod mock_tests;
pub mod phase;
pub mod reach;
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
pub(crate) fn followed_pipeline(md: &Guarded<ModelDeployment>) -> Vec<String> {
    md.valid()
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
    let following = caches.followers.clone();
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
        // series, and what is kept about it that the watch's delete event did not already
        // drop, once it has left the cache.
        let metrics = shared.metrics.clone();
        tokio::spawn(crate::scope::sweep(
            state,
            model_deployments,
            shared
                .metrics
                .object_state
                .with_label_values(&[reconcile::CONTROLLER]),
            move |store| {
                metrics.sweep(crate::metrics::Kind::ModelDeployment, |ns, name| {
                    crate::scope::in_store(store, &format!("{ns}/{name}"))
                })
            },
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
