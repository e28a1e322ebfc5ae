//! Controller tests against a mock API server: the order and number of requests matter.
use super::reconcile::Context;
use crate::caches::Children;

use super::testing::sample;
use crate::api::{DeploymentPhase, ModelDeployment, ModelDeploymentStatus};
use crate::mock_api::reconcile;
use crate::mock_api::{self, Sent, store, writes};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::Service;
use kube::{Client, Resource};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A mock API server that accepts every write and answers with the written object (a status
/// write with the whole ModelDeployment). The Gateway API is served; no HTTPRoute exists.
fn mock_client(md: &ModelDeployment) -> (Client, Arc<Mutex<Vec<Sent>>>) {
    mock_api::client(serde_json::to_value(md).unwrap(), gateway_api)
}

fn gateway_api(method: &str, path: &str) -> mock_api::Answer {
    if method != "GET" {
        return None;
    }
    if path == "/apis/gateway.networking.k8s.io/v1" {
        return Some((
            200,
            serde_json::json!({
                "kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "gateway.networking.k8s.io/v1",
                "resources": [{"name": "httproutes", "singularName": "httproute", "namespaced": true,
                               "kind": "HTTPRoute", "verbs": ["get", "list", "watch", "patch", "delete"]}],
            }),
        ));
    }
    path.contains("/httproutes/")
        .then(|| (404, mock_api::failure(404, "NotFound", "not found")))
}

/// Like `mock_client`, but answers 422 Invalid to writes of Services, as the API server does
/// for an object it cannot store.
fn mock_client_refusing_services(md: &ModelDeployment) -> (Client, Arc<Mutex<Vec<Sent>>>) {
    mock_api::client(serde_json::to_value(md).unwrap(), |method, path| {
        (method != "GET" && path.contains("/services/")).then(|| {
            let message =
                "Service \"fraud-stable\" is invalid: spec.ports[0].port: Invalid value: 0";
            (422, mock_api::failure(422, "Invalid", message))
        })
    })
}

fn context(client: Client, deployments: Vec<Deployment>, services: Vec<Service>) -> Arc<Context> {
    Arc::new(Context {
        shared: mock_api::shared(client.clone(), "modelship-deployment"),
        deployments: Children::from_objects(deployments),
        services: Children::from_objects(services),
        pipelines: store(vec![]),
        prometheus: crate::analysis::prometheus::Clients::new(Duration::from_secs(1)),
    })
}

/// The objects the operator applied, as the API server would hold them once their
/// controllers caught up: Deployments fully rolled out.
fn live_children(sent: &[Sent]) -> (Vec<Deployment>, Vec<Service>) {
    let mut deployments = Vec::new();
    let mut services = Vec::new();
    for s in sent
        .iter()
        .filter(|s| s.method == "PATCH" && !s.uri.contains("/status"))
    {
        if s.uri.contains("/deployments/") {
            let mut d: Deployment = serde_json::from_value(s.body.clone()).unwrap();
            d.metadata.generation = Some(1);
            let replicas = d.spec.as_ref().and_then(|s| s.replicas);
            d.status = Some(DeploymentStatus {
                observed_generation: Some(1),
                replicas,
                updated_replicas: replicas,
                ready_replicas: replicas,
                available_replicas: replicas,
                ..DeploymentStatus::default()
            });
            deployments.push(d);
        } else if s.uri.contains("/services/") {
            services.push(serde_json::from_value(s.body.clone()).unwrap());
        }
    }
    (deployments, services)
}

fn last_status_written(sent: &[Sent]) -> ModelDeploymentStatus {
    let s = sent
        .iter()
        .rev()
        .find(|s| s.uri.contains("/status"))
        .expect("a status write");
    serde_json::from_value(s.body["status"].clone()).unwrap()
}

/// The last status written, after asserting that it says `Ready=False` for `reason` with a
/// message containing `message`, and that a Warning event with that reason was sent.
fn reported(sent: &[Sent], reason: &str, message: &str) -> ModelDeploymentStatus {
    let status = last_status_written(sent);
    let ready = status.condition("Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reason)
    );
    assert!(ready.message.contains(message), "{}", ready.message);
    let events: Vec<&Sent> = sent.iter().filter(|s| s.uri.contains("/events")).collect();
    assert!(
        events
            .iter()
            .any(|e| e.body["reason"] == reason && e.body["type"] == "Warning"),
        "a Warning event says so: {events:?}"
    );
    status
}

fn status_written(sent: &[Sent]) -> ModelDeploymentStatus {
    let s = sent
        .iter()
        .find(|s| s.uri.contains("/status"))
        .expect("a status write");
    serde_json::from_value(s.body["status"].clone()).unwrap()
}

async fn run(md: &ModelDeployment, ctx: Arc<Context>) {
    tokio::time::timeout(
        Duration::from_secs(10),
        reconcile(Arc::new(md.clone()), ctx),
    )
    .await
    .expect("reconcile finished")
    .expect("reconcile succeeded");
}

#[tokio::test]
async fn a_converged_object_issues_no_request_at_all() {
    let mut md = sample();

    // A new object: status first, then its children, then the event that explains it.
    let (client, log) = mock_client(&md);
    run(&md, context(client, vec![], vec![])).await;
    let sent = log.lock().unwrap().clone();
    assert_eq!(
        writes(&sent),
        vec![
            "PATCH /apis/modelship.io/v1alpha1/namespaces/models/modeldeployments/fraud/status",
            "PATCH /apis/apps/v1/namespaces/models/deployments/fraud-stable",
            "PATCH /apis/apps/v1/namespaces/models/deployments/fraud-router",
            "PATCH /api/v1/namespaces/models/services/fraud-stable",
            "PATCH /api/v1/namespaces/models/services/fraud",
            "POST /apis/events.k8s.io/v1/namespaces/models/events",
        ],
    );
    for s in sent.iter().filter(|s| s.method == "PATCH") {
        assert!(
            s.uri.contains("fieldManager=modelship") && s.uri.contains("force=true"),
            "server-side apply: {}",
            s.uri
        );
    }
    let status_patch = &sent[0];
    assert_eq!(
        status_patch.body["metadata"]["resourceVersion"], "100",
        "the status write is conditional on what was read"
    );
    let status = status_written(&sent);
    assert_eq!(status.phase, Some(DeploymentPhase::Stable));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(sent.last().unwrap().body["reason"], "Deployed");

    // The children became available: Ready turns true, which is one status write.
    let (deployments, services) = live_children(&sent);
    md.status = Some(status);
    md.metadata.resource_version = Some("102".into());
    let (client, log) = mock_client(&md);
    run(&md, context(client, deployments.clone(), services.clone())).await;
    let sent = log.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "only the status changes: {sent:?}");
    let status = status_written(&sent);
    assert!(
        crate::conditions::is_true(&status.conditions, "Ready"),
        "{:?}",
        status.conditions
    );

    // Nothing changed since: not a single request.
    md.status = Some(status);
    md.metadata.resource_version = Some("103".into());
    let (client, log) = mock_client(&md);
    run(&md, context(client, deployments, services)).await;
    let sent = log.lock().unwrap().clone();
    assert!(
        sent.is_empty(),
        "an unchanged object must not be written to: {sent:?}"
    );
}

#[tokio::test]
async fn the_provider_route_changes_after_the_status_like_every_child() {
    let mut md = sample();
    md.spec.traffic.provider = crate::api::TrafficProvider::GatewayApi;
    // Without the built-in router there are no default metrics.
    md.spec.analysis.metrics = vec![crate::analysis::defaults::error_rate()];
    let (client, log) = mock_client(&md);
    run(&md, context(client, vec![], vec![])).await;
    let sent = log.lock().unwrap().clone();
    let order = writes(&sent);
    let status = order
        .iter()
        .position(|w| w.ends_with("/modeldeployments/fraud/status"))
        .expect("a status write");
    let route = order
        .iter()
        .position(|w| {
            w == "PATCH /apis/gateway.networking.k8s.io/v1/namespaces/models/httproutes/fraud"
        })
        .unwrap_or_else(|| panic!("the HTTPRoute is applied: {sent:?}"));
    assert!(
        status < route,
        "a status conflict must stop the reconcile before traffic moves: {order:?}"
    );
    let written = status_written(&sent);
    let traffic = written
        .conditions
        .iter()
        .find(|c| c.type_ == "TrafficConfigured")
        .expect("TrafficConfigured");
    assert_eq!(traffic.status, "True", "{traffic:?}");
}

#[tokio::test]
async fn a_hand_edited_child_is_applied_back() {
    let mut md = sample();
    let (client, log) = mock_client(&md);
    run(&md, context(client, vec![], vec![])).await;
    let sent = log.lock().unwrap().clone();
    let (mut deployments, services) = live_children(&sent);
    md.status = Some(status_written(&sent));
    md.metadata.resource_version = Some("102".into());
    // Someone scaled the stable Deployment by hand.
    let stable = deployments
        .iter_mut()
        .find(|d| d.meta().name.as_deref() == Some("fraud-stable"))
        .unwrap();
    stable.spec.as_mut().unwrap().replicas = Some(7);
    let (client, log) = mock_client(&md);
    run(&md, context(client, deployments, services)).await;
    let sent = log.lock().unwrap().clone();
    let applied: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.uri.contains("/deployments/"))
        .collect();
    assert_eq!(applied.len(), 1, "{sent:?}");
    assert!(applied[0].uri.contains("/deployments/fraud-stable"));
    assert_eq!(applied[0].body["spec"]["replicas"], 1);
}

#[tokio::test]
async fn a_prometheus_url_outside_the_allowed_list_is_refused_naming_the_flag() {
    let allowed = |prefixes: &[&str]| {
        crate::analysis::prometheus::AllowedUrls::new(
            prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        )
    };
    let with = |md: &ModelDeployment, prefixes: &[&str]| {
        let (client, log) = mock_client(md);
        let mut shared = mock_api::shared(client, "modelship-deployment");
        shared.settings.allowed_prometheus_urls = allowed(prefixes);
        let ctx = Arc::new(Context {
            shared,
            deployments: Children::from_objects(vec![]),
            services: Children::from_objects(vec![]),
            pipelines: store(vec![]),
            prometheus: crate::analysis::prometheus::Clients::new(Duration::from_secs(1)),
        });
        (ctx, log)
    };
    let mut md = sample();
    md.spec.analysis.prometheus_url = Some("http://prometheus.team-b.svc:9090".into());
    let (ctx, log) = with(&md, &["http://prometheus.team-a.svc:9090"]);
    let action = reconcile(Arc::new(md.clone()), ctx).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let sent = log.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "one status write and one event: {sent:?}");
    let ready = status_written(&sent).condition("Ready").unwrap().clone();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    for words in [
        "--allowed-prometheus-urls",
        "http://prometheus.team-b.svc:9090",
        "http://prometheus.team-a.svc:9090",
    ] {
        assert!(ready.message.contains(words), "{words}: {}", ready.message);
    }
    assert_eq!(sent[1].body["reason"], "InvalidSpec");

    // A URL under the list, and the operator's own default, go ahead.
    for url in [
        "http://prometheus.team-a.svc:9090/",
        "http://127.0.0.1:1", // mock_api's --prometheus-url
    ] {
        md.spec.analysis.prometheus_url = Some(url.into());
        let (ctx, log) = with(&md, &["http://prometheus.team-a.svc:9090"]);
        reconcile(Arc::new(md.clone()), ctx).await.unwrap();
        let sent = log.lock().unwrap().clone();
        let ready = status_written(&sent).condition("Ready").cloned();
        assert!(
            ready.is_none_or(|c| c.reason != "InvalidSpec"),
            "{url}: {sent:?}"
        );
    }
}

#[tokio::test]
async fn an_invalid_spec_is_reported_once_and_waits_for_a_change() {
    let mut md = sample();
    md.spec.container = Some("sidecar".into());
    let (client, log) = mock_client(&md);
    let ctx = context(client, vec![], vec![]);
    let action = reconcile(Arc::new(md.clone()), ctx.clone()).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let sent = log.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "one status write and one event: {sent:?}");
    let status = status_written(&sent);
    let ready = status.condition("Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(ready.message.contains("\"sidecar\""), "{}", ready.message);
    assert_eq!(sent[1].body["reason"], "InvalidSpec");
    assert_eq!(sent[1].body["type"], "Warning");

    // Looked at again without a change: nothing is written, nothing is announced again.
    md.status = Some(status);
    md.metadata.resource_version = Some("102".into());
    let (client, log) = mock_client(&md);
    let action = reconcile(Arc::new(md), context(client, vec![], vec![]))
        .await
        .unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_child_the_api_server_refuses_costs_one_attempt_until_the_spec_changes() {
    let mut md = sample();
    let (client, log) = mock_client_refusing_services(&md);
    let ctx = context(client, vec![], vec![]);
    let action = reconcile(Arc::new(md.clone()), ctx).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let sent = log.lock().unwrap().clone();
    let refused = sent
        .iter()
        .filter(|s| s.method != "GET" && s.uri.contains("/services/"))
        .count();
    assert_eq!(refused, 1, "one attempt at the refused child: {sent:?}");
    let events: Vec<&Sent> = sent.iter().filter(|s| s.uri.contains("/events")).collect();
    assert_eq!(events.len(), 1, "one event: {sent:?}");
    assert_eq!(events[0].body["reason"], "RejectedByAPIServer");
    let last = sent
        .iter()
        .rev()
        .find(|s| s.uri.contains("/status"))
        .expect("a status write");
    let status: ModelDeploymentStatus =
        serde_json::from_value(last.body["status"].clone()).unwrap();
    let ready = status.condition("Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "RejectedByAPIServer")
    );
    assert!(ready.message.contains("fraud-stable"), "{}", ready.message);

    // Woken again by its own status write, by a resync, by a child's event: not a request.
    md.status = Some(status.clone());
    md.metadata.resource_version = Some("102".into());
    for _ in 0..3 {
        let (client, log) = mock_client_refusing_services(&md);
        let action = reconcile(Arc::new(md.clone()), context(client, vec![], vec![]))
            .await
            .unwrap();
        assert_eq!(action, kube::runtime::controller::Action::await_change());
        let sent = log.lock().unwrap().clone();
        assert!(sent.is_empty(), "nothing until the spec changes: {sent:?}");
    }

    // A new generation of the spec is tried again.
    md.metadata.generation = Some(2);
    md.metadata.resource_version = Some("103".into());
    let (client, log) = mock_client(&md);
    run(&md, context(client, vec![], vec![])).await;
    let sent = log.lock().unwrap().clone();
    assert!(
        sent.iter().any(|s| s.uri.contains("/services/")),
        "the changed spec is acted on: {sent:?}"
    );
}

/// Like `mock_client`, but someone's own Service named `fraud-stable` (without modelship's
/// labels, so no cache holds it) exists.
fn mock_client_with_their_service(md: &ModelDeployment) -> (Client, Arc<Mutex<Vec<Sent>>>) {
    mock_api::client(serde_json::to_value(md).unwrap(), |method, path| {
        (method == "GET" && path.ends_with("/services/fraud-stable")).then(|| {
            let theirs = serde_json::json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": "fraud-stable", "namespace": "models", "uid": "theirs"},
            });
            (200, theirs)
        })
    })
}

#[tokio::test]
async fn a_child_name_someone_else_holds_is_reported_and_their_object_left_alone() {
    let mut md = sample();
    let (client, log) = mock_client_with_their_service(&md);
    let action = reconcile(Arc::new(md.clone()), context(client, vec![], vec![]))
        .await
        .unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(15)),
        "their object is not watched: looked at again"
    );
    let sent = log.lock().unwrap().clone();
    assert!(
        !writes(&sent).iter().any(|w| w.contains("/services/")),
        "their Service is never written: {:?}",
        writes(&sent)
    );
    let status = reported(
        &sent,
        "NameTaken",
        "Service models/fraud-stable already exists and was not created by this ModelDeployment",
    );

    // Still there at the recheck: reads only, no write, no new event.
    md.status = Some(status.clone());
    md.metadata.resource_version = Some("102".into());
    let (client, log) = mock_client_with_their_service(&md);
    let action = reconcile(Arc::new(md.clone()), context(client, vec![], vec![]))
        .await
        .unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(15))
    );
    let sent = log.lock().unwrap().clone();
    assert!(writes(&sent).is_empty(), "{:?}", writes(&sent));

    // Renamed or deleted: the children are created.
    let (client, log) = mock_client(&md);
    run(&md, context(client, vec![], vec![])).await;
    let sent = log.lock().unwrap().clone();
    assert!(
        writes(&sent)
            .iter()
            .any(|w| w == "PATCH /api/v1/namespaces/models/services/fraud-stable"),
        "{:?}",
        writes(&sent)
    );
    let ready = last_status_written(&sent);
    assert_ne!(ready.condition("Ready").unwrap().reason, "NameTaken");
}

#[tokio::test]
async fn a_provider_route_someone_else_made_is_left_alone() {
    let mut md = sample();
    md.spec.traffic.provider = crate::api::TrafficProvider::GatewayApi;
    md.spec.analysis.metrics = vec![crate::analysis::defaults::error_rate()];
    let (client, log) = mock_api::client(serde_json::to_value(&md).unwrap(), |method, path| {
        if method == "GET" && path.ends_with("/httproutes/fraud") {
            let theirs = serde_json::json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "fraud", "namespace": "models", "uid": "theirs"},
                "spec": {"rules": []},
            });
            return Some((200, theirs));
        }
        gateway_api(method, path)
    });
    reconcile(Arc::new(md.clone()), context(client, vec![], vec![]))
        .await
        .unwrap();
    let sent = log.lock().unwrap().clone();
    let written = writes(&sent);
    assert!(
        written
            .iter()
            .all(|w| w.contains("/status") || w.contains("/events")),
        "neither their route nor any child is written: {written:?}"
    );
    let ready = last_status_written(&sent)
        .condition("Ready")
        .unwrap()
        .clone();
    assert_eq!(ready.reason, "NameTaken");
    assert!(
        ready
            .message
            .contains("HTTPRoute models/fraud already exists"),
        "{}",
        ready.message
    );
}

/// Answers like an API server whose RBAC lets `models/tenant` write Services but not
/// Deployments: a write of a Deployment is refused with the authorizer's wording.
fn tenant_may_not_write_deployments(method: &str, path: &str) -> mock_api::Answer {
    (method != "GET" && path.contains("/deployments/")).then(|| {
        let name = path.rsplit('/').next().unwrap_or_default();
        let message = format!(
            "deployments.apps \"{name}\" is forbidden: User \"system:serviceaccount:models:tenant\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"models\""
        );
        (403, mock_api::failure(403, "Forbidden", &message))
    })
}

/// A context whose children are written as ServiceAccounts through `connect`, with
/// `--default-service-account` set to `default`.
fn impersonating_context(
    client: Client,
    connect: crate::tenancy::Connect,
    default: Option<&str>,
) -> Arc<Context> {
    let mut shared = mock_api::shared(client, "modelship-deployment").impersonating(connect);
    shared.settings.default_service_account = default.map(str::to_string);
    Arc::new(Context {
        shared,
        deployments: Children::from_objects(vec![]),
        services: Children::from_objects(vec![]),
        pipelines: store(vec![]),
        prometheus: crate::analysis::prometheus::Clients::new(Duration::from_secs(1)),
    })
}

const TENANT: &str = "system:serviceaccount:models:tenant";

#[tokio::test]
async fn a_child_the_tenants_rbac_refuses_is_reported_as_forbidden_and_tried_again() {
    let mut md = sample();
    md.spec.service_account_name = Some("tenant".into());
    let whole = serde_json::to_value(&md).unwrap();
    let (client, connect, log) =
        mock_api::client_and_connect(whole, tenant_may_not_write_deployments);
    let action = reconcile(
        Arc::new(md.clone()),
        impersonating_context(client, connect, None),
    )
    .await
    .unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(15)),
        "RBAC is not watched: looked at again"
    );
    let sent = log.lock().unwrap().clone();
    let refused: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.method == "PATCH" && s.uri.contains("/deployments/"))
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", writes(&sent));
    assert_eq!(
        refused[0].impersonate.as_deref(),
        Some(TENANT),
        "the child is written as the ServiceAccount"
    );
    assert!(
        !writes(&sent).iter().any(|w| w.contains("/services/")),
        "nothing after the refused write: {:?}",
        writes(&sent)
    );
    for s in sent
        .iter()
        .filter(|s| s.uri.contains("/status") || s.uri.contains("/events"))
    {
        assert_eq!(
            s.impersonate, None,
            "status and events are the operator's own: {s:?}"
        );
    }
    let status = reported(
        &sent,
        "Forbidden",
        "ServiceAccount models/tenant may not patch deployments.apps in models: grant it in the namespace's RBAC",
    );

    // Still refused at the recheck: the write is tried again, the status and events stay.
    md.status = Some(status.clone());
    md.metadata.resource_version = Some("102".into());
    let whole = serde_json::to_value(&md).unwrap();
    let (client, connect, log) =
        mock_api::client_and_connect(whole, tenant_may_not_write_deployments);
    let action = reconcile(
        Arc::new(md.clone()),
        impersonating_context(client, connect, None),
    )
    .await
    .unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(15))
    );
    let sent = log.lock().unwrap().clone();
    assert!(
        writes(&sent).iter().all(|w| w.contains("/deployments/")),
        "no status write, no event: {:?}",
        writes(&sent)
    );

    // Granted: the children are created, as the ServiceAccount, and the condition clears.
    let whole = serde_json::to_value(&md).unwrap();
    let (client, connect, log) = mock_api::client_and_connect(whole, |_, _| None);
    let action = reconcile(
        Arc::new(md.clone()),
        impersonating_context(client, connect, None),
    )
    .await
    .unwrap();
    assert_ne!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(15))
    );
    let sent = log.lock().unwrap().clone();
    let children: Vec<&Sent> = sent
        .iter()
        .filter(|s| {
            s.method == "PATCH" && (s.uri.contains("/deployments/") || s.uri.contains("/services/"))
        })
        .collect();
    assert!(
        children
            .iter()
            .any(|s| s.uri.contains("/services/fraud-stable")),
        "{:?}",
        writes(&sent)
    );
    assert!(
        children
            .iter()
            .all(|s| s.impersonate.as_deref() == Some(TENANT))
    );
    let ready = last_status_written(&sent);
    assert_ne!(ready.condition("Ready").unwrap().reason, "Forbidden");
}

#[tokio::test]
async fn without_a_service_account_nothing_is_impersonated() {
    let md = sample();
    assert_eq!(md.spec.service_account_name, None);
    let whole = serde_json::to_value(&md).unwrap();
    let (client, connect, log) = mock_api::client_and_connect(whole, |_, _| None);
    run(&md, impersonating_context(client, connect, None)).await;
    let sent = log.lock().unwrap().clone();
    assert!(
        writes(&sent).iter().any(|w| w.contains("/deployments/")),
        "{:?}",
        writes(&sent)
    );
    assert!(
        sent.iter().all(|s| s.impersonate.is_none()),
        "no request carries an Impersonate-User header: {sent:?}"
    );
}

#[tokio::test]
async fn the_default_service_account_writes_children_of_objects_that_name_none() {
    let md = sample();
    let whole = serde_json::to_value(&md).unwrap();
    let (client, connect, log) = mock_api::client_and_connect(whole, |_, _| None);
    run(
        &md,
        impersonating_context(client, connect, Some("modelship-tenant")),
    )
    .await;
    let sent = log.lock().unwrap().clone();
    let children: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.method == "PATCH" && !s.uri.contains("/status"))
        .collect();
    assert!(!children.is_empty(), "{:?}", writes(&sent));
    for s in &children {
        assert_eq!(
            s.impersonate.as_deref(),
            Some("system:serviceaccount:models:modelship-tenant"),
            "{s:?}"
        );
    }
    assert!(
        sent.iter()
            .filter(|s| s.method == "GET" || s.uri.contains("/status") || s.uri.contains("/events"))
            .all(|s| s.impersonate.is_none()),
        "reads, status and events stay the operator's own"
    );
}
