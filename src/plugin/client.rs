//! The I/O at the edges: reading the objects, writing one annotation, watching for changes.
use super::annotate::{AnnotationPatch, Refusal};
use super::error::PluginError;
use super::view::DeploymentView;
use crate::api::{ModelDeployment, ModelPipeline};
use crate::deployment::desired::LABEL_DEPLOYMENT;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::KubeConfigOptions;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::pin::Pin;

/// A client for the kubeconfig's context (or `context`), and the namespace to use.
pub async fn connect(
    namespace: Option<String>,
    context: Option<String>,
) -> Result<(Client, String), PluginError> {
    let config = match context {
        Some(context) => kube::Config::from_kubeconfig(&KubeConfigOptions {
            context: Some(context),
            ..KubeConfigOptions::default()
        })
        .await
        .map_err(|e| PluginError::Config(e.to_string()))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| PluginError::Config(e.to_string()))?,
    };
    let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(PluginError::Kube)?;
    Ok((client, namespace))
}

/// Reads one object, naming it when it does not exist.
pub async fn get<K>(api: &Api<K>, namespace: &str, name: &str) -> Result<K, PluginError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    match api.get_opt(name).await? {
        Some(obj) => Ok(obj),
        None => Err(PluginError::NotFound {
            kind: K::kind(&()).to_string(),
            namespace: namespace.into(),
            name: name.into(),
        }),
    }
}

/// The ModelDeployment and its Deployments, pods and events.
pub async fn deployment_view(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<DeploymentView, PluginError> {
    let deployment = get(&Api::namespaced(client.clone(), namespace), namespace, name).await?;
    let children = ListParams::default().labels(&format!("{LABEL_DEPLOYMENT}={name}"));
    let workloads = Api::<Deployment>::namespaced(client.clone(), namespace)
        .list(&children)
        .await?
        .items;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&children)
        .await?
        .items;
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&events_selector(name)))
        .await?
        .items;
    Ok(DeploymentView {
        deployment,
        workloads,
        pods,
        events,
    })
}

fn events_selector(name: &str) -> String {
    format!("involvedObject.kind=ModelDeployment,involvedObject.name={name}")
}

/// Writes the annotation `decide` computes from a fresh read; when the object changed in
/// between (409), decides again on the newer copy.
pub async fn annotate<K>(
    api: &Api<K>,
    namespace: &str,
    name: &str,
    decide: impl Fn(&K) -> Result<AnnotationPatch, Refusal>,
) -> Result<AnnotationPatch, PluginError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    for _ in 0..3 {
        let obj = get(api, namespace, name).await?;
        let patch = decide(&obj)?;
        let params = PatchParams::default();
        match api
            .patch(name, &params, &Patch::Merge(patch.merge_patch()))
            .await
        {
            Ok(_) => return Ok(patch),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(PluginError::Conflict(format!("{namespace}/{name}")))
}

/// A stream that yields whenever something the `get deployment` tree shows changes.
pub fn deployment_changes(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Pin<Box<dyn Stream<Item = ()> + Send>> {
    let by_name = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let children = watcher::Config::default().labels(&format!("{LABEL_DEPLOYMENT}={name}"));
    let events = watcher::Config::default().fields(&events_selector(name));
    let streams: Vec<Pin<Box<dyn Stream<Item = ()> + Send>>> = vec![
        changes(
            Api::<ModelDeployment>::namespaced(client.clone(), namespace),
            by_name,
        ),
        changes(
            Api::<Deployment>::namespaced(client.clone(), namespace),
            children.clone(),
        ),
        changes(Api::<Pod>::namespaced(client.clone(), namespace), children),
        changes(Api::<Event>::namespaced(client.clone(), namespace), events),
    ];
    Box::pin(futures::stream::select_all(streams))
}

/// A stream that yields whenever the ModelPipeline changes (its status holds every run).
pub fn pipeline_changes(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Pin<Box<dyn Stream<Item = ()> + Send>> {
    let by_name = watcher::Config::default().fields(&format!("metadata.name={name}"));
    changes(
        Api::<ModelPipeline>::namespaced(client.clone(), namespace),
        by_name,
    )
}

/// The ModelDeployment each time it changes.
pub fn deployment_updates(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Pin<Box<dyn Stream<Item = Result<ModelDeployment, watcher::Error>> + Send>> {
    let by_name = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let api = Api::<ModelDeployment>::namespaced(client.clone(), namespace);
    Box::pin(watcher(api, by_name).default_backoff().applied_objects())
}

fn changes<K>(api: Api<K>, config: watcher::Config) -> Pin<Box<dyn Stream<Item = ()> + Send>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    // Errors are retried with backoff by the watcher; a redraw is harmless either way.
    Box::pin(watcher(api, config).default_backoff().map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_api::{Answer, Sent, client, failure};
    use crate::plugin::annotate;
    use crate::plugin::testdata::deployment;
    use serde_json::{Value, json};
    use std::sync::{Arc, Mutex};

    /// The API server's answer to a read or a patch: the whole object.
    fn fixture(_: &str, _: &str) -> Answer {
        Some((200, serde_json::to_value(deployment()).unwrap()))
    }

    type Log = Arc<Mutex<Vec<Sent>>>;

    fn api(answer: fn(&str, &str) -> Answer) -> (Api<ModelDeployment>, Log) {
        let (client, log) = client(Value::Null, answer);
        (Api::namespaced(client, "models"), log)
    }

    #[tokio::test]
    async fn a_command_reads_then_merge_patches_only_the_annotation() {
        let (api, log) = api(fixture);
        let patch = annotate(&api, "models", "fraud", |md| {
            annotate::approve(md, "fraud-v2")
        })
        .await
        .unwrap();
        assert_eq!(patch.value, "fraud-v2");
        let sent = log.lock().unwrap().clone();
        let calls: Vec<String> = sent
            .iter()
            .map(|s| format!("{} {}", s.method, s.uri))
            .collect();
        assert_eq!(
            calls,
            [
                "GET /apis/modelship.io/v1alpha1/namespaces/models/modeldeployments/fraud",
                "PATCH /apis/modelship.io/v1alpha1/namespaces/models/modeldeployments/fraud?"
            ]
        );
        assert_eq!(
            sent[1].body,
            json!({"metadata": {"annotations": {"modelship.io/approve": "fraud-v2"}, "resourceVersion": "1234"}})
        );
    }

    #[tokio::test]
    async fn a_refusal_writes_nothing() {
        let (api, log) = api(fixture);
        let err = annotate(&api, "models", "fraud", |md| {
            annotate::approve(md, "fraud-v9")
        })
        .await
        .unwrap_err();
        assert!(matches!(err, PluginError::Refused(_)), "{err}");
        assert!(log.lock().unwrap().iter().all(|s| s.method == "GET"));
    }

    #[tokio::test]
    async fn a_conflict_decides_again_on_a_fresh_read_then_gives_up() {
        fn conflicting(method: &str, path: &str) -> Answer {
            match method {
                "PATCH" => Some((
                    409,
                    failure(409, "Conflict", "the object has been modified"),
                )),
                _ => fixture(method, path),
            }
        }
        let (api, log) = api(conflicting);
        let err = annotate(&api, "models", "fraud", |md| {
            annotate::approve(md, "fraud-v2")
        })
        .await
        .unwrap_err();
        assert!(matches!(err, PluginError::Conflict(_)), "{err}");
        let methods: Vec<String> = log
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.method.clone())
            .collect();
        assert_eq!(methods, ["GET", "PATCH", "GET", "PATCH", "GET", "PATCH"]);
    }

    #[tokio::test]
    async fn a_missing_object_is_named() {
        fn missing(_: &str, _: &str) -> Answer {
            Some((404, failure(404, "NotFound", "not found")))
        }
        let (client, _) = client(Value::Null, missing);
        let api = Api::<ModelPipeline>::namespaced(client, "models");
        let err = annotate(&api, "models", "fraud", |mp| annotate::run(mp, "t"))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "ModelPipeline models/fraud not found");
    }
}
