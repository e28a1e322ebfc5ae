//! Local processes standing for the pods of one ModelDeployment.
//!
//! KWOK makes pods Running without running anything. This stands in for the kubelet and
//! kube-proxy of one ModelDeployment: for each of its Deployments (`<name>-stable`,
//! `<name>-shadow`, `<name>-router`) it runs a local process from the Deployment's own pod
//! template — `model-server` with the template's `MODEL_VERSION` and `MODEL_URI`, or
//! `modelship mirror` with the router container's arguments — and rolls it when the template
//! changes, the way a Deployment rolls its pods. Each Service is a fixed local port that
//! forwards to the current process, so a rollout leaves no gap. Every process is registered
//! with Prometheus with the labels of its pods (namespace, deployment, track, version).
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::{Process, binary, free_port, prom, wait_for};

/// The kinds of pods a ModelDeployment has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Stable,
    Shadow,
    Router,
}

impl Role {
    fn of(d: &Deployment) -> Option<Role> {
        let labels = d.labels();
        match (
            labels.get("modelship.io/track").map(String::as_str),
            labels.get("modelship.io/component").map(String::as_str),
        ) {
            (Some("stable"), _) => Some(Role::Stable),
            (Some("shadow"), _) => Some(Role::Shadow),
            (_, Some("router")) => Some(Role::Router),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Shadow => "shadow",
            Role::Router => "router",
        }
    }
}

/// A local TCP port that forwards every connection to the current backend, like a Service.
struct Forwarder {
    port: u16,
    backend: Arc<Mutex<Option<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl Forwarder {
    async fn start() -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a service port");
        let port = listener.local_addr().expect("local address").port();
        let backend: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let current = backend.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = *current.lock().unwrap();
                // What a Service without endpoints does: the connection is dropped. Said, so
                // that a client error in a test can be traced to it.
                let Some(target) = target else {
                    eprintln!("{} service {port}: no backend", crate::now());
                    continue;
                };
                tokio::spawn(async move {
                    match TcpStream::connect(target).await {
                        Ok(mut outbound) => {
                            let _ = inbound.set_nodelay(true);
                            let _ = outbound.set_nodelay(true);
                            let r =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            if let Err(e) = r {
                                eprintln!("{} service {port} -> {target}: {e}", crate::now());
                            }
                        }
                        Err(e) => {
                            eprintln!("{} service {port} -> {target}: connect: {e}", crate::now())
                        }
                    }
                });
            }
        });
        Forwarder {
            port,
            backend,
            task,
        }
    }

    fn point_at(&self, addr: Option<SocketAddr>) {
        *self.backend.lock().unwrap() = addr;
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One running "pod".
struct Pod {
    /// What it was started from: rolled when this changes.
    spec: String,
    version: String,
    port: u16,
    process: Process,
    _target: prom::Target,
}

#[derive(Default)]
struct State {
    pods: HashMap<Role, Pod>,
    /// Roles whose process was crashed by the test: not restarted until their spec changes.
    crashed: HashMap<Role, String>,
    /// Extra environment for model servers of a version (degradation knobs).
    env: HashMap<String, Vec<(String, String)>>,
}

/// The local pods of one ModelDeployment; stopped when dropped.
pub struct LocalPods {
    namespace: String,
    name: String,
    services: Arc<HashMap<Role, Forwarder>>,
    router_metrics: Arc<Forwarder>,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl LocalPods {
    /// Starts following the Deployments of ModelDeployment `namespace/name`. `env` gives extra
    /// environment for the model servers of a version, e.g. `MODEL_SERVER_ALTER_SHARE`.
    pub async fn start(
        client: &Client,
        namespace: &str,
        name: &str,
        env: HashMap<String, Vec<(String, String)>>,
    ) -> LocalPods {
        let mut services = HashMap::new();
        for role in [Role::Stable, Role::Shadow, Role::Router] {
            services.insert(role, Forwarder::start().await);
        }
        let services = Arc::new(services);
        let router_metrics = Arc::new(Forwarder::start().await);
        let state = Arc::new(Mutex::new(State {
            env,
            ..State::default()
        }));
        let task = tokio::spawn(follow(
            client.clone(),
            namespace.to_string(),
            name.to_string(),
            services.clone(),
            router_metrics.clone(),
            state.clone(),
        ));
        LocalPods {
            namespace: namespace.to_string(),
            name: name.to_string(),
            services,
            router_metrics,
            state,
            task,
        }
    }

    /// The address clients use: the `<name>` Service (the router with the built-in provider).
    pub fn client_url(&self) -> String {
        self.services[&Role::Router].url()
    }

    /// The `<name>-<track>` Service's local address.
    pub fn service_url(&self, role: Role) -> String {
        self.services[&role].url()
    }

    /// The router's metrics address.
    pub fn router_metrics_url(&self) -> String {
        self.router_metrics.url()
    }

    /// The version a role's process runs now.
    pub fn version(&self, role: Role) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .pods
            .get(&role)
            .map(|p| p.version.clone())
    }

    /// Waits until a process serves `role` behind its Service (a KWOK pod is ready at once; the
    /// local process that stands for it starts a moment later).
    pub async fn wait_running(&self, role: Role, timeout: Duration) {
        let what = format!("{}/{} {} to run", self.namespace, self.name, role.name());
        wait_for(&what, timeout, || async {
            Ok(self.version(role).map(|_| ()))
        })
        .await;
    }

    /// The admin URL of a model server (`PUT /admin/knobs` changes its knobs at runtime).
    pub fn admin_url(&self, role: Role) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .pods
            .get(&role)
            .map(|p| format!("http://127.0.0.1:{}", p.port))
    }

    /// Changes a running model server's knobs (JSON, e.g. `{"error_rate": 0.5}`).
    pub async fn set_knobs(&self, role: Role, knobs: serde_json::Value) {
        let url = self
            .admin_url(role)
            .unwrap_or_else(|| panic!("no {} process runs", role.name()));
        let response = crate::http_client()
            .put(format!("{url}/admin/knobs"))
            .json(&knobs)
            .send()
            .await
            .expect("PUT /admin/knobs");
        assert!(
            response.status().is_success(),
            "PUT /admin/knobs: {}",
            response.status()
        );
    }

    /// Kills a role's process and keeps it down until its Deployment changes, like a crash.
    pub fn crash(&self, role: Role) {
        let mut state = self.state.lock().unwrap();
        if let Some(mut pod) = state.pods.remove(&role) {
            pod.process.kill();
            state.crashed.insert(role, pod.spec.clone());
        }
        drop(state);
        self.services[&role].point_at(None);
    }

    /// Waits until a role runs `version` (or nothing, with `None`).
    pub async fn wait_for_version(&self, role: Role, version: Option<&str>, timeout: Duration) {
        let what = format!(
            "{}/{} {} to run {version:?}",
            self.namespace,
            self.name,
            role.name()
        );
        wait_for(&what, timeout, || async {
            Ok((self.version(role).as_deref() == version).then_some(()))
        })
        .await;
    }
}

impl Drop for LocalPods {
    fn drop(&mut self) {
        self.task.abort();
        let pods: Vec<Pod> = self
            .state
            .lock()
            .unwrap()
            .pods
            .drain()
            .map(|(_, p)| p)
            .collect();
        for mut pod in pods {
            pod.process.kill();
        }
    }
}

/// What a Deployment asks to run: the spec string that identifies it, the version, and the
/// command.
#[allow(clippy::too_many_arguments)]
fn desired(
    role: Role,
    d: &Deployment,
    namespace: &str,
    name: &str,
    services: &HashMap<Role, Forwarder>,
    env: &HashMap<String, Vec<(String, String)>>,
    port: u16,
    metrics_port: u16,
) -> Option<(String, String, Command)> {
    let spec = d.spec.as_ref()?;
    if spec.replicas == Some(0) {
        return None;
    }
    let pod = spec.template.spec.as_ref()?;
    let container = pod.containers.first()?;
    let version = spec
        .template
        .metadata
        .as_ref()?
        .labels
        .as_ref()?
        .get("modelship.io/version")
        .cloned()
        .unwrap_or_default();
    match role {
        Role::Stable | Role::Shadow => {
            let get = |n: &str| {
                container
                    .env
                    .as_ref()?
                    .iter()
                    .find(|e| e.name == n)
                    .and_then(|e| e.value.clone())
            };
            let uri = get("MODEL_URI")?;
            let model_version = get("MODEL_VERSION")?;
            let mut cmd = Command::new(binary("model-server"));
            cmd.args(["--listen", &format!("127.0.0.1:{port}")])
                .env("MODEL_URI", &uri)
                .env("MODEL_VERSION", &model_version)
                .env("RUST_LOG", "warn");
            for (k, v) in env.get(&model_version).into_iter().flatten() {
                cmd.env(k, v);
            }
            Some((format!("{model_version} {uri}"), model_version, cmd))
        }
        Role::Router => {
            let stable_host = format!("http://{name}-stable.{namespace}.svc:");
            let shadow_host = format!("http://{name}-shadow.{namespace}.svc:");
            let args: Vec<String> = container.args.clone().unwrap_or_default();
            let spec_key = args.join(" ");
            let local: Vec<String> = args
                .iter()
                .map(|a| {
                    if a.starts_with("--listen=") {
                        format!("--listen=127.0.0.1:{port}")
                    } else if a.starts_with("--metrics-listen=") {
                        format!("--metrics-listen=127.0.0.1:{metrics_port}")
                    } else if a.starts_with(&format!("--stable={stable_host}")) {
                        format!("--stable={}", services[&Role::Stable].url())
                    } else if a.starts_with(&format!("--shadow={shadow_host}")) {
                        format!("--shadow={}", services[&Role::Shadow].url())
                    } else {
                        a.clone()
                    }
                })
                .collect();
            let mut cmd = Command::new(binary("modelship"));
            cmd.args(&local)
                .env("MODELSHIP_LOG_FORMAT", "text")
                .env("MODELSHIP_LOG", "info");
            Some((spec_key, version, cmd))
        }
    }
}

async fn follow(
    client: Client,
    namespace: String,
    name: String,
    services: Arc<HashMap<Role, Forwarder>>,
    router_metrics: Arc<Forwarder>,
    state: Arc<Mutex<State>>,
) {
    let api: Api<Deployment> = Api::namespaced(client, &namespace);
    let selector = ListParams::default().labels(&format!("modelship.io/deployment={name}"));
    loop {
        if let Ok(list) = api.list(&selector).await {
            let mut seen = Vec::new();
            for d in &list.items {
                let Some(role) = Role::of(d) else { continue };
                seen.push(role);
                let port = free_port();
                let metrics_port = free_port();
                let env = state.lock().unwrap().env.clone();
                let Some((spec, version, cmd)) = desired(
                    role,
                    d,
                    &namespace,
                    &name,
                    &services,
                    &env,
                    port,
                    metrics_port,
                ) else {
                    stop(&state, &services, role).await;
                    continue;
                };
                let (running, crashed) = {
                    let s = state.lock().unwrap();
                    (
                        s.pods.get(&role).map(|p| p.spec.clone()),
                        s.crashed.get(&role).cloned(),
                    )
                };
                if running.as_deref() == Some(spec.as_str())
                    || crashed.as_deref() == Some(spec.as_str())
                {
                    continue;
                }
                roll(
                    &namespace,
                    &name,
                    role,
                    spec,
                    version,
                    cmd,
                    port,
                    metrics_port,
                    &services,
                    &router_metrics,
                    &state,
                )
                .await;
            }
            for role in [Role::Stable, Role::Shadow, Role::Router] {
                if !seen.contains(&role) {
                    stop(&state, &services, role).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts the new process, waits until it answers, points the Service at it, then stops the
/// old one gracefully: a rollout without a gap.
#[allow(clippy::too_many_arguments)]
async fn roll(
    namespace: &str,
    name: &str,
    role: Role,
    spec: String,
    version: String,
    cmd: Command,
    port: u16,
    metrics_port: u16,
    services: &HashMap<Role, Forwarder>,
    router_metrics: &Forwarder,
    state: &Arc<Mutex<State>>,
) {
    let label = format!("{name}-{}-{}", role.name(), port);
    let process = Process::spawn(&label, cmd);
    let health = match role {
        Role::Router => format!("http://127.0.0.1:{metrics_port}/readyz"),
        _ => format!("http://127.0.0.1:{port}/healthz"),
    };
    let up = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if crate::http_client()
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if up.is_err() {
        eprintln!("{label} did not become ready:\n{}", process.log_tail(30));
        return;
    }
    let mut labels = BTreeMap::from([
        ("namespace".to_string(), namespace.to_string()),
        ("deployment".to_string(), name.to_string()),
    ]);
    // `component` as the chart's PodMonitor sets it: `router` on the router only.
    let scrape = match role {
        Role::Router => {
            labels.insert("component".into(), "router".into());
            format!("127.0.0.1:{metrics_port}")
        }
        _ => {
            labels.insert("component".into(), "model".into());
            labels.insert("track".into(), role.name().into());
            labels.insert("version".into(), version.clone());
            labels.insert("pod".into(), label.clone());
            format!("127.0.0.1:{port}")
        }
    };
    let target = prom::register_target(
        &format!("{namespace}-{name}-{}", role.name()),
        &scrape,
        &labels,
    );
    services[&role].point_at(Some(SocketAddr::from(([127, 0, 0, 1], port))));
    if role == Role::Router {
        router_metrics.point_at(Some(SocketAddr::from(([127, 0, 0, 1], metrics_port))));
    }
    let old = {
        let mut s = state.lock().unwrap();
        s.crashed.remove(&role);
        s.pods.insert(
            role,
            Pod {
                spec,
                version,
                port,
                process,
                _target: target,
            },
        )
    };
    if let Some(old) = old {
        // The new pod registered the same target file: keep it. The old one drains in the
        // background, as a terminating pod does.
        tokio::spawn(retire(old, true));
    }
}

async fn stop(state: &Arc<Mutex<State>>, services: &HashMap<Role, Forwarder>, role: Role) {
    let old = state.lock().unwrap().pods.remove(&role);
    if let Some(old) = old {
        services[&role].point_at(None);
        retire(old, false).await;
    }
}

/// Lets in-flight requests finish, then stops the process. `replaced`: a new pod took over
/// its scrape target, which must stay registered.
async fn retire(pod: Pod, replaced: bool) {
    let Pod {
        mut process,
        _target,
        ..
    } = pod;
    if replaced {
        std::mem::forget(_target);
    } else {
        drop(_target);
    }
    let _ = tokio::task::spawn_blocking(move || {
        process.terminate(Duration::from_secs(15));
    })
    .await;
}

/// What client traffic saw.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub sent: u64,
    pub ok: u64,
    /// Answers per `model_version`.
    pub versions: BTreeMap<String, u64>,
    /// The first failures (status or transport error), for the assertion message.
    pub failures: Vec<String>,
    pub failed: u64,
}

/// Steady client traffic against a ModelDeployment; stopped when dropped.
pub struct Traffic {
    stats: Arc<Mutex<Stats>>,
    task: JoinHandle<()>,
}

impl Traffic {
    /// What was seen so far.
    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }

    /// Forgets what was seen so far.
    pub fn reset(&self) {
        *self.stats.lock().unwrap() = Stats::default();
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LocalPods {
    /// Sends `per_second` prediction requests per second to the client address, each with its
    /// own `x-request-id` and features, and records every answer.
    pub fn drive(&self, per_second: u32) -> Traffic {
        let url = format!("{}/predict", self.client_url());
        let stats: Arc<Mutex<Stats>> = Arc::default();
        let seen = stats.clone();
        let task = tokio::spawn(async move {
            // As the README advises clients: idle connections are dropped well within the
            // router's shutdown delay, so a request never races the close of a connection
            // that a retiring router pod ends.
            crate::install_crypto_provider();
            let http = reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(1))
                .build()
                .expect("an HTTP client");
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 0u64.. {
                tick.tick().await;
                let (http, url, seen) = (http.clone(), url.clone(), seen.clone());
                tokio::spawn(async move {
                    let x = n as f64;
                    let body = serde_json::json!({"instances": [[(x * 0.37) % 10.0, (x * 1.3) % 7.0 - 3.0, (x * 0.11) % 4.0]]});
                    let answer = http
                        .post(&url)
                        .header("x-request-id", format!("req-{n}"))
                        .json(&body)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let outcome = match answer {
                        Ok(r) if r.status().is_success() => {
                            match r.json::<serde_json::Value>().await {
                                Ok(v) => {
                                    Ok(v["model_version"].as_str().unwrap_or_default().to_string())
                                }
                                Err(e) => Err(format!("unreadable answer: {e}")),
                            }
                        }
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => {
                            let mut chain = e.to_string();
                            let mut source = std::error::Error::source(&e);
                            while let Some(s) = source {
                                chain.push_str(&format!(": {s}"));
                                source = s.source();
                            }
                            Err(chain)
                        }
                    };
                    let mut s = seen.lock().unwrap();
                    s.sent += 1;
                    match outcome {
                        Ok(version) => {
                            s.ok += 1;
                            *s.versions.entry(version).or_default() += 1;
                        }
                        Err(e) => {
                            let e = format!("{} {e}", crate::now());
                            s.failed += 1;
                            if s.failures.len() < 10 {
                                s.failures.push(e);
                            }
                        }
                    }
                });
            }
        });
        Traffic { stats, task }
    }
}
