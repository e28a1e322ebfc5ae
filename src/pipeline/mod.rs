//! The ModelPipeline controller.
pub mod artifact;
pub mod data_source;
pub mod gates;
pub mod history;
pub mod jobs;
#[cfg(test)]
mod mock_tests;
pub mod production;
pub mod reconcile;
pub mod results;
pub mod run;
pub mod schedule;
pub mod serving;
#[cfg(test)]
pub mod testing;
pub mod triggers;
pub mod validate;
pub mod version;

use crate::admin::Readiness;
use crate::api::{ModelDeployment, ModelPipeline};
use crate::caches::{Caches, Index, index_key, key_of};
use crate::compact::Compact;
use crate::context::Shared;
use crate::guarded::Guarded;
use crate::reconciler::{self, key};
use jobs::LABEL_PIPELINE;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::core::PartialObjectMeta;
use kube::runtime::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use std::sync::Arc;

/// The pipelines that read their data version from ConfigMap `namespace/name`, by that key.
fn reads_from(p: &Guarded<ModelPipeline>) -> Vec<String> {
    p.valid()
        .and_then(|p| {
            let from = p.spec.data.version_from.as_ref()?;
            let ns = p.namespace().unwrap_or_default();
            Some(vec![index_key(&ns, &from.config_map_key_ref.name)])
        })
        .unwrap_or_default()
}

/// The pipelines whose integration stage serves like ModelDeployment `namespace/name`, by
/// that key.
fn integrates_with(p: &Guarded<ModelPipeline>) -> Vec<String> {
    p.valid()
        .and_then(|p| {
            let deployment = p.spec.stages.integration.as_ref()?.deployment.as_deref()?;
            Some(vec![index_key(
                &p.namespace().unwrap_or_default(),
                deployment,
            )])
        })
        .unwrap_or_default()
}

/// Subscribes to what the controller reads in `caches`, and returns it running until
/// `shutdown` resolves.
pub fn run<S>(
    caches: &mut Caches,
    client: Client,
    shared: Shared,
    readiness: Readiness,
    shutdown: S,
) -> impl std::future::Future<Output = ()> + Send + use<S>
where
    S: std::future::Future<Output = ()> + Send + Sync + 'static,
{
    // Only the pipeline's own children are read: they carry the managed-by label (shared
    // with the ModelDeployment controller) and the pipeline label.
    let jobs = caches.jobs.children();
    let job_events = caches.jobs.subscribe();
    let deployments = caches.deployments.children();
    let deployment_events = caches.deployments.subscribe();
    let services = caches.services.children();
    let service_events = caches.services.subscribe();
    // Stage pods hold the results (termination messages) until their Job is deleted.
    let pods = caches.pods.children();
    let pod_events = caches.pods.subscribe();
    // A data pipeline announces new data in a ConfigMap that any pipeline may point at. Only
    // metadata is watched: the one ConfigMap a pipeline names is read when it changes.
    let configmaps = caches.configmaps.store();
    let configmap_events = caches.configmaps.subscribe();
    // The ModelDeployments that follow a pipeline say what production trusts.
    let model_deployments = crate::caches::ModelDeployments::new(caches);
    let md_events = caches.model_deployments.subscribe();

    let state = shared.object_state();
    let forget = state.clone();
    caches.pipelines.on_delete(move |p| forget.forget(&key(p)));
    let by_configmap = caches.pipelines.index(reads_from);
    let by_integration = caches.pipelines.index(integrates_with);
    let pipelines = caches.pipelines.store();
    let pipeline_stream = caches.pipelines.subscribe();

    let synced = shared.synced_flag();
    readiness.expect("modelpipelines");
    async move {
        let data_source = data_source::DataSource::new(client);
        let controller = Controller::for_stream(pipeline_stream, pipelines.clone()).with_config(
            kube::runtime::controller::Config::default().concurrency(shared.settings.concurrency),
        );
        let stores = (
            pipelines.clone(),
            jobs.clone(),
            pods.clone(),
            deployments.clone(),
            services.clone(),
            configmaps.clone(),
            model_deployments.clone(),
        );
        tokio::spawn(async move {
            let (p, j, po, d, s, c, m) = stores;
            crate::admin::until_ready(&p).await;
            crate::admin::until_ready(j.store()).await;
            crate::admin::until_ready(po.store()).await;
            crate::admin::until_ready(d.store()).await;
            crate::admin::until_ready(s.store()).await;
            crate::admin::until_ready(&c).await;
            crate::admin::until_ready(m.store()).await;
            synced.store(true, std::sync::atomic::Ordering::Release);
            readiness.set_ready("modelpipelines");
        });

        // Without a finalizer a deleted pipeline is never reconciled again: what is kept
        // about it that the watch's delete event did not already drop, and its series, go
        // once it has left the cache.
        let read = data_source.clone();
        let named = by_configmap.clone();
        let metrics = shared.metrics.clone();
        tokio::spawn(crate::scope::sweep(
            state,
            pipelines,
            shared
                .metrics
                .object_state
                .with_label_values(&[reconcile::CONTROLLER]),
            move |store| {
                read.retain(|ns, name| named.contains(&index_key(ns, name)));
                metrics.sweep(crate::metrics::Kind::ModelPipeline, |ns, name| {
                    crate::scope::in_store(store, &format!("{ns}/{name}"))
                });
            },
        ));

        let ctx = Arc::new(reconcile::Context {
            shared,
            jobs,
            pods,
            deployments,
            services,
            configmaps,
            data_source,
            model_deployments,
        });
        let controller = controller
            .owns_stream(job_events)
            .owns_stream(deployment_events)
            .owns_stream(service_events)
            .watches_stream(pod_events, |pod: Compact<Pod>| {
                let pipeline = pod.labels().get(LABEL_PIPELINE).cloned();
                let ns = pod.namespace();
                pipeline
                    .zip(ns)
                    .map(|(name, ns)| ObjectRef::new(&name).within(&ns))
            })
            .watches_stream(configmap_events, move |cm: PartialObjectMeta<ConfigMap>| {
                by_configmap.get(&key_of(&cm))
            })
            .watches_stream(md_events, move |md: Guarded<ModelDeployment>| {
                pipelines_followed_by(&by_integration, &md)
            })
            .graceful_shutdown_on(shutdown);
        reconciler::run(controller, ctx).await;
    }
}

/// The pipeline `md` follows, and those whose integration stage uses its serving template.
fn pipelines_followed_by(
    by_integration: &Index<Guarded<ModelPipeline>>,
    md: &Guarded<ModelDeployment>,
) -> Vec<ObjectRef<Guarded<ModelPipeline>>> {
    let mut found = by_integration.get(&key_of(md));
    if let Some(md) = md.valid()
        && let Some(from) = &md.spec.model_from
    {
        found.push(ObjectRef::new(&from.pipeline).within(&md.namespace().unwrap_or_default()));
    }
    found
}
