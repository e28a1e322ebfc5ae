//! The ModelPipeline controller.
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
use crate::context::Shared;
use crate::guarded::Guarded;
use crate::scope::Scope;
use futures::StreamExt;
use jobs::LABEL_PIPELINE;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use std::sync::Arc;

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    scope: Scope,
    shared: Shared,
    readiness: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Only the pipeline's own children are watched: they carry the pipeline label.
    let children = watcher::Config::default().labels(LABEL_PIPELINE);
    let (jobs, job_events) = scope.reflect::<Job>(&client, children.clone());
    let (deployments, deployment_events) = scope.reflect::<Deployment>(&client, children.clone());
    let (services, service_events) = scope.reflect::<Service>(&client, children);
    // Stage pods hold the results (termination messages) until their Job is deleted.
    let (pods, pod_events) = scope.reflect::<Pod>(
        &client,
        watcher::Config::default().labels(&reconcile::stage_pod_selector()),
    );
    // A data pipeline announces new data in a ConfigMap that any pipeline may point at. Only
    // metadata is watched: the one ConfigMap a pipeline names is read when it changes.
    let (configmaps, configmap_events) =
        scope.reflect_metadata::<ConfigMap>(&client, watcher::Config::default());
    let data_source = data_source::DataSource::new(client.clone());
    // The ModelDeployments that follow a pipeline say what production trusts.
    // Both kinds through kube's error boundary: an object that does not deserialize is kept
    // as its metadata and error, and the others go on.
    let (model_deployments, md_events) =
        scope.reflect::<Guarded<ModelDeployment>>(&client, watcher::Config::default());

    let state = shared.object_state();
    let forget = state.clone();
    let (pipelines, pipeline_stream) =
        scope.primary::<Guarded<ModelPipeline>, _>(&client, watcher::Config::default(), move |p| {
            forget.forget(&reconcile::key(p))
        });
    let controller = Controller::for_stream(pipeline_stream, pipelines.clone());

    readiness.expect("modelpipelines");
    let stores = (
        pipelines.clone(),
        jobs.clone(),
        pods.clone(),
        deployments.clone(),
        services.clone(),
        configmaps.clone(),
        model_deployments.clone(),
    );
    let ready = readiness.clone();
    tokio::spawn(async move {
        let (p, j, po, d, s, c, m) = stores;
        crate::admin::until_ready(&p).await;
        crate::admin::until_ready(&j).await;
        crate::admin::until_ready(&po).await;
        crate::admin::until_ready(&d).await;
        crate::admin::until_ready(&s).await;
        crate::admin::until_ready(&c).await;
        crate::admin::until_ready(&m).await;
        ready.set_ready("modelpipelines");
    });

    // Without a finalizer a deleted pipeline is never reconciled again: what is kept about it
    // that the watch's delete event did not already drop goes once it has left the cache.
    let read = data_source.clone();
    tokio::spawn(crate::scope::sweep(
        state,
        pipelines.clone(),
        shared
            .metrics
            .object_state
            .with_label_values(&[reconcile::CONTROLLER]),
        move |pipelines| read.retain(|ns, name| reads_configmap(pipelines, ns, name)),
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
    let by_configmap = pipelines.clone();
    let by_deployment = pipelines;
    controller
        .owns_stream(job_events)
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .watches_stream(pod_events, |pod: Pod| {
            let pipeline = pod.labels().get(LABEL_PIPELINE).cloned();
            let ns = pod.namespace();
            pipeline
                .zip(ns)
                .map(|(name, ns)| ObjectRef::new(&name).within(&ns))
        })
        .watches_stream(configmap_events, move |cm: PartialObjectMeta<ConfigMap>| {
            pipelines_reading(&by_configmap, &cm)
        })
        .watches_stream(md_events, move |md: Guarded<ModelDeployment>| match &md.0 {
            Ok(md) => pipelines_followed_by(&by_deployment, md),
            Err(_) => Vec::new(),
        })
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile::reconcile_guarded,
            reconcile::error_policy_guarded,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "pipeline controller");
            }
        })
        .await;
}

/// Whether `p` reads its data version from ConfigMap `namespace/name`.
fn reads(p: &ModelPipeline, namespace: &str, name: &str) -> bool {
    p.namespace().as_deref() == Some(namespace)
        && p.spec
            .data
            .version_from
            .as_ref()
            .is_some_and(|f| f.config_map_key_ref.name == name)
}

/// Whether any pipeline reads its data version from ConfigMap `namespace/name`.
fn reads_configmap(pipelines: &Store<Guarded<ModelPipeline>>, namespace: &str, name: &str) -> bool {
    pipelines
        .state()
        .iter()
        .filter_map(|p| p.0.as_ref().ok())
        .any(|p| reads(p, namespace, name))
}

/// The pipelines whose data version is read from `cm`.
fn pipelines_reading(
    pipelines: &Store<Guarded<ModelPipeline>>,
    cm: &PartialObjectMeta<ConfigMap>,
) -> Vec<ObjectRef<Guarded<ModelPipeline>>> {
    let ns = cm.namespace().unwrap_or_default();
    let name = cm.name_any();
    pipelines
        .state()
        .into_iter()
        .filter(|p| p.0.as_ref().is_ok_and(|p| reads(p, &ns, &name)))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The pipelines `md` follows, or whose integration stage uses its serving template.
fn pipelines_followed_by(
    pipelines: &Store<Guarded<ModelPipeline>>,
    md: &ModelDeployment,
) -> Vec<ObjectRef<Guarded<ModelPipeline>>> {
    let ns = md.namespace();
    let name = md.name_any();
    let follows = md.spec.model_from.as_ref().map(|f| f.pipeline.clone());
    pipelines
        .state()
        .into_iter()
        .filter(|p| p.namespace() == ns)
        .filter(|guard| {
            let Ok(p) = &guard.0 else { return false };
            follows.as_deref() == Some(p.name_any().as_str())
                || p.spec
                    .stages
                    .integration
                    .as_ref()
                    .and_then(|i| i.deployment.as_deref())
                    == Some(name.as_str())
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}
