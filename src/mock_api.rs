//! A mock API server for the controllers' tests, where the order and number of requests
//! matter: it records every request and answers writes with the written object.
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// One request the operator sent.
#[derive(Clone, Debug)]
pub struct Sent {
    pub method: String,
    pub uri: String,
    pub body: Value,
    /// The user the request was sent as (`Impersonate-User`), if not the operator's own.
    pub impersonate: Option<String>,
}

/// An answer of the mock server other than the default: status code and body.
pub type Answer = Option<(u16, Value)>;

/// A Kubernetes `Status` failure with `code`, `reason` and `message`.
pub fn failure(code: u16, reason: &str, message: &str) -> Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
}

/// A mock API server. `answer(method, path)` may answer a request itself; otherwise every
/// write is answered with the written object (a status write with `whole` and the written
/// status), stamped `resourceVersion: "101"`, and every GET with 404 Not Found.
pub fn client(whole: Value, answer: fn(&str, &str) -> Answer) -> (Client, Arc<Mutex<Vec<Sent>>>) {
    let (service, log) = server(whole, answer);
    (Client::new(service, "default"), log)
}

/// Like `client`, plus how to connect to the same server as a ServiceAccount: with the
/// impersonation header kube's own configuration adds.
pub fn client_and_connect(
    whole: Value,
    answer: fn(&str, &str) -> Answer,
) -> (Client, crate::tenancy::Connect, Arc<Mutex<Vec<Sent>>>) {
    use kube::client::ConfigExt;
    let (service, log) = server(whole, answer);
    let client = Client::new(service.clone(), "default");
    let connect: crate::tenancy::Connect = Arc::new(move |user: &str| {
        let mut config = kube::Config::new("http://mock.invalid".parse().expect("a URI"));
        config.auth_info.impersonate = Some(user.to_string());
        let layer = config.extra_headers_layer()?;
        Ok(kube::client::ClientBuilder::new(service.clone(), "default")
            .with_layer(&layer)
            .build())
    });
    (client, connect, log)
}

type Service = tower_test::mock::Mock<Request<Body>, Response<Body>>;

fn server(whole: Value, answer: fn(&str, &str) -> Answer) -> (Service, Arc<Mutex<Vec<Sent>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sent = log.clone();
    tokio::spawn(async move {
        while let Some((request, reply)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let mut body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            sent.lock().unwrap().push(Sent {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                body: body.clone(),
                impersonate: parts
                    .headers
                    .get("impersonate-user")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            });
            if let Some((code, answer)) = answer(parts.method.as_str(), parts.uri.path()) {
                reply.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap(),
                );
                continue;
            }
            if parts.method == http::Method::GET {
                // Nothing exists but what `answer` says exists.
                let missing = failure(404, "NotFound", "not found");
                reply.send_response(
                    Response::builder()
                        .status(404)
                        .body(Body::from(serde_json::to_vec(&missing).unwrap()))
                        .unwrap(),
                );
                continue;
            }
            if parts.uri.path().ends_with("/status") {
                let mut obj = whole.clone();
                obj["status"] = body["status"].clone();
                body = obj;
            }
            if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), Value::String("101".into()));
            }
            reply.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
    });
    (service, log)
}

/// The controllers' shared state over `client`, as `controller` would run with it.
pub fn shared(client: Client, controller: &str) -> crate::context::Shared {
    let settings = crate::context::Settings {
        router_image: "modelship:test".into(),
        prometheus_url: "http://127.0.0.1:1".into(),
        allowed_prometheus_urls: Default::default(),
        resync: std::time::Duration::from_secs(300),
        concurrency: 4,
        reach: Default::default(),
        default_service_account: None,
    };
    let reporter = kube::runtime::events::Reporter {
        controller: controller.into(),
        instance: Some("test".into()),
    };
    let shared =
        crate::context::Shared::new(client, reporter, crate::metrics::Metrics::new(), settings);
    shared
        .synced_flag()
        .store(true, std::sync::atomic::Ordering::Release);
    shared
}

/// A cache holding `objects`, as a reflector would after its first list.
pub fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let (reader, mut writer) = reflector::store();
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(o));
    }
    reader
}

/// The writes of `sent`, as `METHOD path`.
pub fn writes(sent: &[Sent]) -> Vec<String> {
    sent.iter()
        .filter(|s| s.method != "GET")
        .map(|s| {
            format!(
                "{} {}",
                s.method,
                s.uri.split('?').next().unwrap_or_default()
            )
        })
        .collect()
}

/// A controller's entry, as the controller calls it with an object that deserialized.
pub async fn reconcile<K: crate::reconciler::Reconciled>(
    object: Arc<K>,
    ctx: Arc<K::Context>,
) -> crate::Result<kube::runtime::controller::Action> {
    let guarded = crate::guarded::Guarded::new(object.as_ref());
    crate::reconciler::reconcile(Arc::new(guarded), ctx).await
}
