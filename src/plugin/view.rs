//! What the plugin reads about one object, gathered before anything is rendered.
use crate::api::ModelDeployment;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use serde::Serialize;

/// A ModelDeployment and the objects that explain it; `-o json|yaml` prints this.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    pub deployment: ModelDeployment,
    /// Its Deployments: the tracks and the router.
    pub workloads: Vec<Deployment>,
    pub pods: Vec<Pod>,
    /// Its events, in any order.
    pub events: Vec<Event>,
}
