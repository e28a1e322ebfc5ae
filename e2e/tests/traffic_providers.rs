//! The Gateway API and Istio traffic providers against the real API server with the
//! providers' real CRDs (from the Go modules pinned in `e2e/providers/versions.env`).
//!
//! Each provider is one test, so the order inside it is fixed: its CRD is deleted first
//! (a missing provider must be reported, never silently ignored), installed without touching
//! the ModelDeployment (the operator must notice by itself), then the route is followed
//! through a shadow and back, and garbage-collected with its ModelDeployment. CRDs are
//! cluster-scoped and the cluster is shared, so a test holds a lock (a Lease) on its CRD
//! for as long as it deletes or replaces it, also against runs in other processes.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use modelship::api::{ModelDeployment, ModelDeploymentSpec};
use modelship_e2e::{
    TestNamespace, client, kubeconfig_path, kubectl, operator, repo_root, test_namespace, wait_for,
};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
/// While its traffic provider is not set up, a ModelDeployment is looked at again within
/// 10 s without any change to it; a provider installed meanwhile is noticed within that and
/// slack for a loaded machine. The operator here resyncs only every 10 minutes (see
/// `start_operator`), so noticing within this shows the recheck, not the resync.
const RECHECK: Duration = Duration::from_secs(60);

/// The operator, with a resync far longer than `RECHECK`, allowed to attach routes to the
/// shared Gateway `infra/edge` (outside the test's namespace).
async fn start_operator(namespace: &str) -> operator::Operator {
    let options = operator::Options {
        resync: "10m".into(),
        args: vec!["--allowed-gateways=infra/edge".into()],
        ..operator::Options::default()
    };
    operator::start_with(namespace, options).await
}
/// The garbage collector discovers a newly installed CRD's resources within about 30 s.
const GARBAGE_COLLECTION: Duration = Duration::from_secs(90);
/// How long a CRD lock lasts when its holder dies without releasing it.
const LOCK_TTL: i64 = 600;

const NAME: &str = "fraud";

/// A provider: its CRD and the kind the operator manages.
struct Provider {
    crd: &'static str,
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
}

const GATEWAY_API: Provider = Provider {
    crd: "httproutes.gateway.networking.k8s.io",
    group: "gateway.networking.k8s.io",
    kind: "HTTPRoute",
    plural: "httproutes",
};
const ISTIO: Provider = Provider {
    crd: "virtualservices.networking.istio.io",
    group: "networking.istio.io",
    kind: "VirtualService",
    plural: "virtualservices",
};

impl Provider {
    fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::gvk(self.group, "v1", self.kind)
    }

    fn api(&self, client: &Client, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            client.clone(),
            ns,
            &ApiResource::from_gvk_with_plural(&self.gvk(), self.plural),
        )
    }

    /// Whether discovery serves the kind, as the operator looks it up.
    async fn served(&self, client: &Client) -> bool {
        kube::discovery::pinned_kind(client, &self.gvk())
            .await
            .is_ok()
    }

    /// Deletes the CRD (and with it every object of the kind) and waits until discovery no
    /// longer serves the kind.
    async fn remove(&self, client: &Client) {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        match crds.delete(self.crd, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("deleting CRD {}: {e}", self.crd),
        }
        wait_for(
            &format!("CRD {} to be deleted", self.crd),
            TIMEOUT,
            || async { Ok(crds.get_opt(self.crd).await?.is_none().then_some(())) },
        )
        .await;
        wait_for(
            &format!("discovery to stop serving {}", self.kind),
            TIMEOUT,
            || async { Ok((!self.served(client).await).then_some(())) },
        )
        .await;
    }

    /// Installs (or replaces) the CRD from `file` and waits until discovery serves the kind.
    async fn install(&self, client: &Client, file: &Path) {
        let out = kubectl()
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(file)
            .output()
            .await
            .expect("running kubectl");
        assert!(
            out.status.success(),
            "kubectl apply -f {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        wait_for(
            &format!("CRD {} to be established", self.crd),
            TIMEOUT,
            || async {
                let crd = crds.get(self.crd).await?;
                let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                Ok(conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(()))
            },
        )
        .await;
        wait_for(
            &format!("discovery to serve {}", self.kind),
            TIMEOUT,
            || async { Ok(self.served(client).await.then_some(())) },
        )
        .await;
    }
}

/// Path of a pinned CRD, written by `e2e/providers/crds` (from the Go module cache, or the
/// Go module proxy when the cache is cold).
async fn crd_file(which: &str) -> PathBuf {
    let script = repo_root().join("e2e/providers/crds");
    let out = tokio::process::Command::new(&script)
        .arg(which)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "e2e/providers/crds {which} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("paths are UTF-8");
    let path = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("the script prints the CRD's path"),
    );
    assert!(path.is_file(), "{} is not a file", path.display());
    path
}

/// A lock on one CRD, for every test on this cluster that deletes or replaces it: the Lease
/// `default/modelship-e2e-crd-<crd>`, taken by creating it. A Lease not renewed for
/// [`LOCK_TTL`] seconds (its holder died) is taken over. A test that fails while holding it
/// installs the pinned CRD (`restore`) again before letting go.
struct CrdLock {
    leases: Api<Lease>,
    name: String,
    restore: PathBuf,
    released: bool,
}

impl CrdLock {
    async fn acquire(client: &Client, crd: &str, restore: &Path) -> CrdLock {
        let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
        let name = format!("modelship-e2e-crd-{crd}");
        let holder = format!(
            "pid-{}-{}",
            std::process::id(),
            std::thread::current()
                .name()
                .unwrap_or("test")
                .replace("::", "-")
        );
        let lease = |resource_version: Option<String>| Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                resource_version,
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.clone()),
                lease_duration_seconds: Some(LOCK_TTL as i32),
                acquire_time: Some(MicroTime(Timestamp::now())),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        let wait = Duration::from_secs(LOCK_TTL as u64 + 60);
        wait_for(
            &format!("the lock on CRD {crd} (Lease default/{name})"),
            wait,
            || async {
                match leases.create(&PostParams::default(), &lease(None)).await {
                    Ok(_) => return Ok(Some(())),
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
                let Some(live) = leases.get_opt(&name).await? else {
                    return Ok(None);
                };
                let renewed = live.spec.and_then(|s| s.renew_time).map(|t| t.0);
                if renewed.is_some_and(|t| {
                    Timestamp::now().duration_since(t) < SignedDuration::from_secs(LOCK_TTL)
                }) {
                    return Ok(None);
                }
                // Abandoned: take it over, unless someone else does first (409).
                match leases
                    .replace(
                        &name,
                        &PostParams::default(),
                        &lease(live.metadata.resource_version),
                    )
                    .await
                {
                    Ok(_) => Ok(Some(())),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
                    Err(e) => Err(e.into()),
                }
            },
        )
        .await;
        CrdLock {
            leases,
            name,
            restore: restore.to_path_buf(),
            released: false,
        }
    }

    async fn release(mut self) {
        self.released = true;
        match self
            .leases
            .delete(&self.name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("releasing Lease default/{}: {e}", self.name),
        }
    }
}

impl Drop for CrdLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // A failed test: put the pinned CRD back and release the lock, with the pinned kubectl
        // (no runtime needed here).
        let kubectl = |args: &[&std::ffi::OsStr]| {
            let _ = std::process::Command::new(repo_root().join("e2e/.cluster/bin/kubectl"))
                .env("KUBECONFIG", kubeconfig_path())
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        kubectl(&[
            "apply".as_ref(),
            "--server-side".as_ref(),
            "--force-conflicts".as_ref(),
            "-f".as_ref(),
            self.restore.as_os_str(),
        ]);
        kubectl(
            &[
                "delete",
                "lease",
                "-n",
                "default",
                &self.name,
                "--ignore-not-found",
            ]
            .map(std::ffi::OsStr::new),
        );
    }
}

fn model(version: &str) -> Value {
    let file = format!("{}.json", version);
    json!({"version": version, "artifact": format!("file://{}", repo_root().join("model-server/models").join(file).display())})
}

/// A ModelDeployment of `churn-v1` with `traffic`, mirroring `mirror_percent` while a shadow
/// runs. Without the built-in router there are no default metrics: one that always passes
/// keeps the shadow running (and `minDuration` keeps it from being promoted).
fn spec(traffic: Value, mirror_percent: f64) -> ModelDeploymentSpec {
    serde_json::from_value(json!({
        "model": model("churn-v1"),
        "replicas": 2,
        "template": {"spec": {"containers": [{"name": "server", "image": "model-server:e2e", "ports": [{"containerPort": 8080}]}]}},
        "shadow": {"mirrorPercent": mirror_percent, "minDuration": "1h"},
        "traffic": traffic,
        "analysis": {"interval": "2s", "metrics": [{"name": "errors", "query": "vector(0)", "max": 1.0}]},
    }))
    .expect("a valid spec")
}

fn condition(md: &ModelDeployment, type_: &str) -> Option<Condition> {
    md.status.as_ref().and_then(|s| s.condition(type_)).cloned()
}

/// Waits until condition `type_` has `status` and `reason`, and returns the object.
async fn wait_condition(
    mds: &Api<ModelDeployment>,
    type_: &str,
    status: &str,
    reason: &str,
    timeout: Duration,
) -> ModelDeployment {
    wait_for(
        &format!("{NAME}: condition {type_}={status} ({reason})"),
        timeout,
        || async {
            let md = mds.get(NAME).await?;
            Ok(condition(&md, type_)
                .is_some_and(|c| c.status == status && c.reason == reason)
                .then_some(md))
        },
    )
    .await
}

/// Waits for an event about the ModelDeployment with `reason`.
async fn wait_event(events: &Api<Event>, reason: &str) -> Event {
    wait_for(
        &format!("a {reason} event about {NAME}"),
        TIMEOUT,
        || async {
            Ok(events
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(NAME)
                }))
        },
    )
    .await
}

async fn wait_phase(mds: &Api<ModelDeployment>, phase: &str) -> ModelDeployment {
    wait_for(&format!("{NAME} to be {phase}"), TIMEOUT, || async {
        let md = mds.get(NAME).await?;
        let current = md.status.as_ref().and_then(|s| s.phase).map(|p| p.as_str());
        Ok((current == Some(phase)).then_some(md))
    })
    .await
}

/// Waits until the provider's object exists and `check` holds for it (as JSON).
async fn wait_route(
    routes: &Api<DynamicObject>,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, TIMEOUT, || async {
        let Some(obj) = routes.get_opt(NAME).await? else {
            return Ok(None);
        };
        let route = serde_json::to_value(obj)?;
        Ok(check(&route).then_some(route))
    })
    .await
}

async fn patch_spec(mds: &Api<ModelDeployment>, spec: Value) {
    mds.patch(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": spec})),
    )
    .await
    .expect("patching the ModelDeployment");
}

fn available(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
        })
}

/// With another provider than the built-in router, the `<name>` Service selects the stable
/// pods directly and no router is deployed.
async fn served_without_router(ns: &TestNamespace) {
    let deployments: Api<Deployment> = ns.api();
    wait_for("the stable Deployment to be available", TIMEOUT, || async {
        Ok(deployments
            .get_opt(&format!("{NAME}-stable"))
            .await?
            .filter(available)
            .map(|_| ()))
    })
    .await;
    assert!(
        deployments
            .get_opt(&format!("{NAME}-router"))
            .await
            .unwrap()
            .is_none(),
        "a router Deployment exists"
    );
    let services: Api<Service> = ns.api();
    let front = services.get(NAME).await.expect("the <name> Service");
    let selector = front.spec.and_then(|s| s.selector).unwrap_or_default();
    assert_eq!(
        selector.get("modelship.io/track").map(String::as_str),
        Some("stable"),
        "{selector:?}"
    );
    assert_eq!(
        selector.get("modelship.io/deployment").map(String::as_str),
        Some(NAME),
        "{selector:?}"
    );
    assert!(
        !selector.contains_key("modelship.io/component"),
        "{selector:?}"
    );
}

/// The object is controlled by the ModelDeployment, so it goes with it.
fn assert_owned(route: &Value, md: &ModelDeployment) {
    let owners = route["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let owner = &owners[0];
    assert_eq!(owner["kind"], "ModelDeployment");
    assert_eq!(owner["apiVersion"], "modelship.io/v1alpha1");
    assert_eq!(owner["name"], NAME);
    assert_eq!(owner["uid"].as_str(), md.metadata.uid.as_deref());
    assert_eq!(owner["controller"], true);
    assert_eq!(route["metadata"]["labels"]["modelship.io/deployment"], NAME);
}

/// The provider is missing: the ModelDeployment says so in its conditions and an event, and
/// production is still served by the stable pods.
async fn provider_missing_is_reported(
    ns: &TestNamespace,
    mds: &Api<ModelDeployment>,
    provider: &Provider,
) {
    // Once the stable pods are available, the missing provider is what keeps it from Ready.
    let md = wait_condition(mds, "Ready", "False", "ProviderNotInstalled", TIMEOUT).await;
    let traffic = condition(&md, "TrafficConfigured").expect("TrafficConfigured is set");
    assert_eq!(
        (traffic.status.as_str(), traffic.reason.as_str()),
        ("False", "ProviderNotInstalled"),
        "{traffic:?}"
    );
    let served_kind = format!("{}.{}/v1", provider.kind, provider.group);
    assert!(
        traffic.message.contains(&served_kind),
        "{}",
        traffic.message
    );
    let degraded = condition(&md, "Degraded").expect("Degraded is set");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "ProviderNotInstalled"),
        "{degraded:?}"
    );
    let events: Api<Event> = ns.api();
    let event = wait_event(&events, "ProviderNotInstalled").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.unwrap_or_default();
    assert!(note.contains(provider.kind), "{note}");
    served_without_router(ns).await;
}

/// Installs the provider without touching the ModelDeployment and waits until the operator
/// has noticed on its own.
async fn provider_installed_is_noticed(
    client: &Client,
    mds: &Api<ModelDeployment>,
    provider: &Provider,
    file: &Path,
) -> ModelDeployment {
    let generation = mds.get(NAME).await.unwrap().metadata.generation;
    provider.install(client, file).await;
    let installed = Instant::now();
    let md = wait_condition(mds, "TrafficConfigured", "True", "Configured", RECHECK).await;
    eprintln!(
        "{}: the operator noticed the installed {} CRD after {:.1} s",
        NAME,
        provider.kind,
        installed.elapsed().as_secs_f64()
    );
    assert_eq!(
        md.metadata.generation, generation,
        "the spec was not changed"
    );
    let ready = condition(&md, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Available"),
        "{ready:?}"
    );
    assert_eq!(condition(&md, "Degraded").unwrap().status, "False");
    md
}

/// Starts shadowing `churn-v2` and checks the shadow's objects.
async fn start_shadow(ns: &TestNamespace, mds: &Api<ModelDeployment>) {
    patch_spec(mds, json!({"model": model("churn-v2")})).await;
    let md = wait_phase(mds, "Shadowing").await;
    let status = md.status.unwrap();
    assert_eq!(
        status.candidate.map(|c| c.version).as_deref(),
        Some("churn-v2")
    );
    assert_eq!(
        status.stable.map(|c| c.version).as_deref(),
        Some("churn-v1")
    );
    let deployments: Api<Deployment> = ns.api();
    let shadow = wait_for("the shadow Deployment to be available", TIMEOUT, || async {
        Ok(deployments
            .get_opt(&format!("{NAME}-shadow"))
            .await?
            .filter(available))
    })
    .await;
    let labels = shadow
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    assert_eq!(labels["modelship.io/track"], "shadow");
    assert_eq!(labels["modelship.io/version"], "churn-v2");
    let services: Api<Service> = ns.api();
    let selector = services
        .get(&format!("{NAME}-shadow"))
        .await
        .expect("the shadow Service")
        .spec
        .unwrap()
        .selector
        .unwrap();
    assert_eq!(selector["modelship.io/track"], "shadow");
    served_without_router(ns).await;
}

/// Ends the shadow by asking for the stable version again: the shadow's objects go away.
async fn end_shadow(ns: &TestNamespace, mds: &Api<ModelDeployment>) {
    patch_spec(mds, json!({"model": model("churn-v1")})).await;
    let md = wait_phase(mds, "Stable").await;
    assert!(md.status.unwrap().candidate.is_none());
    let deployments: Api<Deployment> = ns.api();
    let services: Api<Service> = ns.api();
    wait_for(
        "the shadow Deployment and Service to be deleted",
        TIMEOUT,
        || async {
            let gone = deployments
                .get_opt(&format!("{NAME}-shadow"))
                .await?
                .is_none()
                && services.get_opt(&format!("{NAME}-shadow")).await?.is_none();
            Ok(gone.then_some(()))
        },
    )
    .await;
}

/// Deleting the ModelDeployment garbage-collects the provider's object.
async fn deleted_with_its_model_deployment(
    mds: &Api<ModelDeployment>,
    routes: &Api<DynamicObject>,
    kind: &str,
) {
    mds.delete(NAME, &DeleteParams::default())
        .await
        .expect("deleting the ModelDeployment");
    wait_for(
        &format!("the {kind} to be garbage-collected"),
        GARBAGE_COLLECTION,
        || async { Ok(routes.get_opt(NAME).await?.is_none().then_some(())) },
    )
    .await;
}

fn gateway_traffic() -> Value {
    json!({"provider": "GatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "edge", "namespace": "infra", "sectionName": "http"}], "hostnames": ["fraud.example.com"]}})
}

/// The rule's RequestMirror filter, if any.
fn request_mirror(route: &Value) -> Option<&Value> {
    let filters = route["spec"]["rules"][0]["filters"].as_array()?;
    assert!(
        filters.iter().all(|f| f["type"] == "RequestMirror"),
        "only a RequestMirror filter is expected: {filters:?}"
    );
    assert!(filters.len() <= 1, "{filters:?}");
    filters.first().map(|f| &f["requestMirror"])
}

fn mirrors_to_shadow(mirror: &Value) -> bool {
    mirror["backendRef"]["name"] == format!("{NAME}-shadow").as_str()
        && mirror["backendRef"]["port"] == 80
}

#[tokio::test]
async fn gateway_api_http_route_routes_to_stable_and_mirrors_the_configured_share() {
    let client = client().await;
    let provider = &GATEWAY_API;
    let current = crd_file("gateway-api").await;
    let old = crd_file("gateway-api-old").await;
    let lock = CrdLock::acquire(&client, provider.crd, &current).await;
    provider.remove(&client).await;

    let ns = test_namespace(&client, "gatewayapi").await;
    let _operator = start_operator(ns.name()).await;
    let mds: Api<ModelDeployment> = ns.api();
    mds.create(
        &PostParams::default(),
        &ModelDeployment::new(NAME, spec(gateway_traffic(), 25.0)),
    )
    .await
    .unwrap();

    // 1. No HTTPRoute CRD: reported, never a silent success.
    provider_missing_is_reported(&ns, &mds, provider).await;

    // 2. A Gateway API whose HTTPRoute has RequestMirror without percent or fraction. Without
    //    a shadow nothing needs them: traffic is configured, to stable.
    let md = provider_installed_is_noticed(&client, &mds, provider, &old).await;
    let routes = provider.api(&client, ns.name());
    let route = wait_route(&routes, "the HTTPRoute to route to stable", |r| {
        r["spec"]["rules"][0]["backendRefs"][0]["name"] == "fraud-stable"
    })
    .await;
    assert_owned(&route, &md);
    let rule = &route["spec"]["rules"][0];
    assert_eq!(
        rule["backendRefs"].as_array().map(Vec::len),
        Some(1),
        "{rule}"
    );
    assert_eq!(rule["backendRefs"][0]["port"], 80);
    assert!(
        request_mirror(&route).is_none(),
        "no mirror without a shadow: {rule}"
    );
    let parent = &route["spec"]["parentRefs"][0];
    assert_eq!(
        (
            parent["name"].as_str(),
            parent["namespace"].as_str(),
            parent["sectionName"].as_str()
        ),
        (Some("edge"), Some("infra"), Some("http"))
    );
    assert_eq!(route["spec"]["hostnames"], json!(["fraud.example.com"]));

    // 3. A shadow at 25 % cannot be expressed with that CRD: the setting is refused in status
    //    and an event, and the route does not mirror (rather than mirror everything).
    start_shadow(&ns, &mds).await;
    let md = wait_condition(
        &mds,
        "TrafficConfigured",
        "False",
        "SettingNotSupported",
        TIMEOUT,
    )
    .await;
    let message = condition(&md, "TrafficConfigured").unwrap().message;
    assert!(
        message.contains("HTTPRoute") && message.contains("25"),
        "{message}"
    );
    assert_eq!(
        condition(&md, "Degraded").unwrap().reason,
        "SettingNotSupported"
    );
    let events: Api<Event> = ns.api();
    let event = wait_event(&events, "SettingNotSupported").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let route = routes.get(NAME).await.unwrap();
    let route = serde_json::to_value(route).unwrap();
    assert!(
        request_mirror(&route).is_none(),
        "a share the CRD cannot hold must not turn into mirroring everything: {}",
        route["spec"]
    );
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"][0]["name"],
        "fraud-stable"
    );

    // 4. The pinned, current CRD holds the share: the operator mirrors 25 % to the shadow.
    provider.install(&client, &current).await;
    let route = wait_route(&routes, "the HTTPRoute to mirror 25 % to the shadow", |r| {
        request_mirror(r).is_some_and(|m| mirrors_to_shadow(m) && m["percent"] == 25)
    })
    .await;
    assert!(
        request_mirror(&route).unwrap().get("fraction").is_none(),
        "{}",
        route["spec"]
    );
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"][0]["name"],
        "fraud-stable"
    );
    let md = wait_condition(&mds, "TrafficConfigured", "True", "Configured", TIMEOUT).await;
    let message = condition(&md, "TrafficConfigured").unwrap().message;
    assert!(message.contains("mirrors 25% to the shadow"), "{message}");

    // 5. A share that is not a whole percentage is a fraction.
    patch_spec(&mds, json!({"shadow": {"mirrorPercent": 12.5}})).await;
    let route = wait_route(
        &routes,
        "the HTTPRoute to mirror 12.5 % as a fraction",
        |r| {
            request_mirror(r)
                .is_some_and(|m| mirrors_to_shadow(m) && m["fraction"]["numerator"] == 12500)
        },
    )
    .await;
    let mirror = request_mirror(&route).unwrap();
    assert_eq!(mirror["fraction"]["denominator"], 100000);
    assert!(
        mirror.get("percent").is_none(),
        "percent and fraction are exclusive: {mirror}"
    );
    wait_for("TrafficConfigured to say 12.5%", TIMEOUT, || async {
        let md = mds.get(NAME).await?;
        Ok(condition(&md, "TrafficConfigured")
            .filter(|c| c.status == "True" && c.message.contains("mirrors 12.5% to the shadow")))
    })
    .await;

    // 6. Everything: neither percent nor fraction is left over from before.
    patch_spec(&mds, json!({"shadow": {"mirrorPercent": 100.0}})).await;
    wait_route(&routes, "the HTTPRoute to mirror every request", |r| {
        request_mirror(r).is_some_and(|m| {
            mirrors_to_shadow(m) && m.get("fraction").is_none() && m.get("percent").is_none()
        })
    })
    .await;

    // 7. The shadow ends: the route stops mirroring.
    end_shadow(&ns, &mds).await;
    wait_route(&routes, "the HTTPRoute to stop mirroring", |r| {
        request_mirror(r).is_none()
            && r["spec"]["rules"][0]["backendRefs"][0]["name"] == "fraud-stable"
    })
    .await;
    served_without_router(&ns).await;

    // 8. The route goes with its ModelDeployment.
    deleted_with_its_model_deployment(&mds, &routes, provider.kind).await;
    ns.delete().await;
    lock.release().await;
}

fn istio_traffic() -> Value {
    json!({"provider": "Istio", "istio": {"gateways": ["mesh"]}})
}

#[tokio::test]
async fn istio_virtual_service_routes_to_stable_and_mirrors_the_configured_share() {
    let client = client().await;
    let provider = &ISTIO;
    let file = crd_file("istio").await;
    let lock = CrdLock::acquire(&client, provider.crd, &file).await;
    provider.remove(&client).await;

    let ns = test_namespace(&client, "istio").await;
    let _operator = start_operator(ns.name()).await;
    let mds: Api<ModelDeployment> = ns.api();
    mds.create(
        &PostParams::default(),
        &ModelDeployment::new(NAME, spec(istio_traffic(), 12.5)),
    )
    .await
    .unwrap();
    let host = |name: &str| format!("{name}.{}.svc.cluster.local", ns.name());

    // 1. No VirtualService CRD: reported, never a silent success.
    provider_missing_is_reported(&ns, &mds, provider).await;

    // 2. Installed: the VirtualService routes the <name> host to stable, without a mirror.
    let md = provider_installed_is_noticed(&client, &mds, provider, &file).await;
    let routes = provider.api(&client, ns.name());
    let vs = wait_route(&routes, "the VirtualService to route to stable", |v| {
        v["spec"]["http"][0]["route"][0]["destination"]["host"] == host("fraud-stable").as_str()
    })
    .await;
    assert_owned(&vs, &md);
    assert_eq!(vs["spec"]["hosts"], json!([host(NAME)]));
    assert_eq!(vs["spec"]["gateways"], json!(["mesh"]));
    let http = &vs["spec"]["http"][0];
    assert_eq!(http["route"].as_array().map(Vec::len), Some(1), "{http}");
    assert_eq!(http["route"][0]["destination"]["port"]["number"], 80);
    assert!(
        http.get("mirror").is_none() && http.get("mirrorPercentage").is_none(),
        "no mirror without a shadow: {http}"
    );

    // 3. A shadow: mirror to it with the configured percentage.
    start_shadow(&ns, &mds).await;
    let vs = wait_route(
        &routes,
        "the VirtualService to mirror 12.5 % to the shadow",
        |v| {
            let http = &v["spec"]["http"][0];
            http["mirror"]["host"] == host("fraud-shadow").as_str()
                && http["mirrorPercentage"]["value"].as_f64() == Some(12.5)
        },
    )
    .await;
    let http = &vs["spec"]["http"][0];
    assert_eq!(http["mirror"]["port"]["number"], 80);
    assert_eq!(
        http["route"][0]["destination"]["host"],
        host("fraud-stable").as_str()
    );
    let md = wait_condition(&mds, "TrafficConfigured", "True", "Configured", TIMEOUT).await;
    let message = condition(&md, "TrafficConfigured").unwrap().message;
    assert!(message.contains("mirrors 12.5% to the shadow"), "{message}");

    // 4. A changed share is applied.
    patch_spec(&mds, json!({"shadow": {"mirrorPercent": 40.0}})).await;
    wait_route(&routes, "the VirtualService to mirror 40 %", |v| {
        v["spec"]["http"][0]["mirrorPercentage"]["value"].as_f64() == Some(40.0)
    })
    .await;

    // 5. The shadow ends: the VirtualService stops mirroring.
    end_shadow(&ns, &mds).await;
    wait_route(&routes, "the VirtualService to stop mirroring", |v| {
        let http = &v["spec"]["http"][0];
        http.get("mirror").is_none()
            && http.get("mirrorPercentage").is_none()
            && http["route"][0]["destination"]["host"] == host("fraud-stable").as_str()
    })
    .await;
    served_without_router(&ns).await;

    // 6. The VirtualService goes with its ModelDeployment.
    deleted_with_its_model_deployment(&mds, &routes, provider.kind).await;
    ns.delete().await;
    lock.release().await;
}
