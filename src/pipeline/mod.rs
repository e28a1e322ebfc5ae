//! The ModelPipeline controller.
pub mod gates;
pub mod history;
pub mod jobs;
pub mod production;
pub mod reconcile;
pub mod results;
pub mod run;
pub mod schedule;
pub mod serving;
pub mod triggers;
pub mod validate;
pub mod version;
#[cfg(test)]
pub mod testing;

use crate::admin::Readiness;
use crate::api::ModelPipeline;
use crate::context::Shared;
use crate::scope::Scope;
use futures::StreamExt;
use kube::Client;
use kube::runtime::{Controller, watcher};
use std::sync::Arc;

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    scope: Scope,
    shared: Shared,
    readiness: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let controller = Controller::new(scope.api::<ModelPipeline>(&client), watcher::Config::default());
    let pipelines = controller.store();
    readiness.expect("modelpipelines");
    let ready = readiness.clone();
    tokio::spawn(async move {
        if pipelines.wait_until_ready().await.is_ok() {
            ready.set_ready("modelpipelines");
        }
    });
    let ctx = Arc::new(reconcile::Context { shared });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "pipeline controller");
            }
        })
        .await;
}
