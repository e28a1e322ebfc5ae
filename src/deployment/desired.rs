//! The children of a ModelDeployment, computed from its spec and the versions its status
//! says each track serves. Pure: no I/O.
use crate::api::{ModelDeployment, TrafficProvider, VersionRef};
use crate::mirror::CREDENTIAL_HEADERS;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

pub const LABEL_DEPLOYMENT: &str = "modelship.io/deployment";
pub const LABEL_TRACK: &str = "modelship.io/track";
pub const LABEL_VERSION: &str = "modelship.io/version";
pub const LABEL_COMPONENT: &str = "modelship.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "modelship";

/// A Service port's `appProtocol` for HTTP/2 cleartext with prior knowledge (KEP-3726).
pub const H2C_APP_PROTOCOL: &str = "kubernetes.io/h2c";

/// Port the router serves clients on, and its metrics port.
pub const ROUTER_PORT: i32 = 8080;
pub const ROUTER_METRICS_PORT: i32 = 9090;

/// A track of a model: the version production trusts, or the one being tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Track {
    Stable,
    Shadow,
}

impl Track {
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Stable => "stable",
            Track::Shadow => "shadow",
        }
    }
}

/// Names of a ModelDeployment's children.
pub fn track_name(md: &ModelDeployment, track: Track) -> String {
    format!("{}-{}", md.name_any(), track.as_str())
}
pub fn router_name(md: &ModelDeployment) -> String {
    format!("{}-router", md.name_any())
}

/// Settings of the operator that shape children.
#[derive(Clone, Debug)]
pub struct ChildConfig {
    /// Image of the built-in router (the operator's own image).
    pub router_image: String,
}

fn owner_ref(md: &ModelDeployment) -> OwnerReference {
    // Only a ModelDeployment read from the API server reaches here, so it has a uid.
    md.controller_owner_ref(&()).unwrap_or_default()
}

fn base_labels(md: &ModelDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_DEPLOYMENT.to_string(), md.name_any()),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ])
}

fn meta(md: &ModelDeployment, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: md.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![owner_ref(md)]),
        ..ObjectMeta::default()
    }
}

fn track_selector(md: &ModelDeployment, track: Track) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_DEPLOYMENT.to_string(), md.name_any()),
        (LABEL_TRACK.to_string(), track.as_str().to_string()),
    ])
}

fn router_selector(md: &ModelDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_DEPLOYMENT.to_string(), md.name_any()),
        (LABEL_COMPONENT.to_string(), "router".to_string()),
    ])
}

/// Rolls pods one at a time and never below the wanted count, so production keeps its capacity.
fn surge_strategy() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

/// Sets `name=value` in a container's environment, replacing what the template had.
pub fn set_env(container: &mut Container, name: &str, value: &str) {
    let env = container.env.get_or_insert_with(Vec::new);
    env.retain(|e| e.name != name);
    env.push(EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    });
}

/// The index of the container that serves the model.
pub fn model_container_index(
    template: &PodTemplateSpec,
    container: Option<&str>,
) -> Result<usize, String> {
    let containers = template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    match container {
        None if containers.is_empty() => Err("spec.template.spec.containers is empty".into()),
        None => Ok(0),
        Some(name) => containers
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "spec.container {name:?} is not a container of spec.template (containers: {})",
                    names.join(", ")
                )
            }),
    }
}

/// The Deployment of one track, serving `version`.
pub fn track_deployment(
    md: &ModelDeployment,
    template: &PodTemplateSpec,
    container_index: usize,
    track: Track,
    version: &VersionRef,
    replicas: i32,
) -> Deployment {
    let mut pod = template.clone();
    let mut pod_meta = pod.metadata.take().unwrap_or_default();
    let mut pod_labels = pod_meta.labels.take().unwrap_or_default();
    pod_labels.extend(base_labels(md));
    pod_labels.insert(LABEL_TRACK.into(), track.as_str().into());
    pod_labels.insert(LABEL_VERSION.into(), version.version.clone());
    pod_meta.labels = Some(pod_labels);
    pod.metadata = Some(pod_meta);
    if let Some(spec) = pod.spec.as_mut()
        && let Some(c) = spec.containers.get_mut(container_index)
    {
        set_env(c, "MODEL_VERSION", &version.version);
        set_env(c, "MODEL_URI", &version.artifact);
        set_env(c, "MODELSHIP_TRACK", track.as_str());
    }
    let mut labels = base_labels(md);
    labels.insert(LABEL_TRACK.into(), track.as_str().into());
    Deployment {
        metadata: meta(md, track_name(md, track), labels),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(track_selector(md, track)),
                match_expressions: None,
            },
            strategy: Some(surge_strategy()),
            template: pod,
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn service(
    md: &ModelDeployment,
    name: String,
    labels: BTreeMap<String, String>,
    selector: BTreeMap<String, String>,
    port: i32,
    target: i32,
) -> Service {
    Service {
        metadata: meta(md, name, labels),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(IntOrString::Int(target)),
                protocol: Some("TCP".into()),
                // So that meshes and gateways speak HTTP/2 to it, not HTTP/1.1.
                app_protocol: md.spec.protocol.is_h2c().then(|| H2C_APP_PROTOCOL.into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The Service in front of one track's pods.
pub fn track_service(md: &ModelDeployment, track: Track) -> Service {
    let mut labels = base_labels(md);
    labels.insert(LABEL_TRACK.into(), track.as_str().into());
    service(
        md,
        track_name(md, track),
        labels,
        track_selector(md, track),
        md.spec.service_port,
        md.spec.port,
    )
}

/// The `<name>` Service clients call: the router with the built-in provider, the stable
/// pods otherwise (the mesh or gateway mirrors in front of it).
pub fn client_service(md: &ModelDeployment) -> Service {
    let (selector, target) = match md.spec.traffic.provider {
        TrafficProvider::Builtin => (router_selector(md), ROUTER_PORT),
        TrafficProvider::GatewayApi | TrafficProvider::Istio => {
            (track_selector(md, Track::Stable), md.spec.port)
        }
    };
    service(
        md,
        md.name_any(),
        base_labels(md),
        selector,
        md.spec.service_port,
        target,
    )
}

/// In-cluster URL of a track's Service.
pub fn track_url(md: &ModelDeployment, track: Track) -> String {
    format!(
        "http://{}.{}.svc:{}",
        track_name(md, track),
        md.namespace().unwrap_or_default(),
        md.spec.service_port
    )
}

/// The router's command line: every setting is a flag, so the Deployment says exactly how
/// the router behaves. Without a shadow the router only forwards.
pub fn router_args(md: &ModelDeployment, mirror: bool) -> Vec<String> {
    let spec = &md.spec;
    let mut args = vec![
        "mirror".to_string(),
        format!("--listen=0.0.0.0:{ROUTER_PORT}"),
        format!("--metrics-listen=0.0.0.0:{ROUTER_METRICS_PORT}"),
        format!("--stable={}", track_url(md, Track::Stable)),
    ];
    if spec.protocol.is_h2c() {
        args.push("--stable-protocol=h2c".into());
    }
    if mirror {
        args.push(format!("--shadow={}", track_url(md, Track::Shadow)));
        if spec.protocol.is_h2c() {
            args.push("--shadow-protocol=h2c".into());
        }
        args.push(format!("--mirror-percent={}", spec.shadow.mirror_percent));
        // In milliseconds: the spec's form (`1.5s`, `1m30s`) is not what the router parses.
        let timeout = super::validate::parse_duration("", &spec.traffic.router.shadow_timeout)
            .map(|d| format!("{}ms", d.as_millis().max(1)))
            .unwrap_or_else(|_| spec.traffic.router.shadow_timeout.clone());
        args.push(format!("--shadow-timeout={timeout}"));
        args.push(format!("--tolerance={}", spec.shadow.compare.tolerance));
        for p in &spec.shadow.compare.pointers {
            args.push(format!("--compare-pointer={p}"));
        }
        let mut strip: Vec<String> = CREDENTIAL_HEADERS.iter().map(|h| h.to_string()).collect();
        for header in &spec.shadow.strip_headers {
            let header = header.trim().to_ascii_lowercase();
            if !strip.contains(&header) {
                strip.push(header);
            }
        }
        args.push(format!("--strip-headers={}", strip.join(",")));
    }
    args
}

/// The built-in router's Deployment.
pub fn router_deployment(md: &ModelDeployment, cfg: &ChildConfig, mirror: bool) -> Deployment {
    let router = &md.spec.traffic.router;
    let mut pod_labels = router_selector(md);
    pod_labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    };
    // The runtime sizes its worker pool to the node's cores; a router limited to fewer CPUs
    // should run as many threads as it may use.
    let threads = router
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("cpu"))
        .and_then(|q| cpu_cores(&q.0))
        .map(|cores| EnvVar {
            name: "TOKIO_WORKER_THREADS".into(),
            value: Some(cores.to_string()),
            value_from: None,
        });
    let container = Container {
        name: "router".into(),
        env: threads.map(|t| vec![t]),
        image: Some(
            router
                .image
                .clone()
                .unwrap_or_else(|| cfg.router_image.clone()),
        ),
        args: Some(router_args(md, mirror)),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: ROUTER_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: ROUTER_METRICS_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/livez")),
        resources: router.resources.clone(),
        // Pod Security's `restricted` profile, so the router runs in any namespace the
        // model pods may run in.
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let mut labels = base_labels(md);
    labels.insert(LABEL_COMPONENT.into(), "router".into());
    Deployment {
        metadata: meta(md, router_name(md), labels),
        spec: Some(DeploymentSpec {
            replicas: Some(router.replicas),
            selector: LabelSelector {
                match_labels: Some(router_selector(md)),
                match_expressions: None,
            },
            strategy: Some(surge_strategy()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // The router never calls the API server.
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// Whole cores of a CPU quantity (`2`, `1500m` → 2), at least one.
fn cpu_cores(q: &str) -> Option<u32> {
    let cores = match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
        None => q.parse::<f64>().ok()?,
    };
    Some((cores.ceil() as u32).max(1))
}

/// What the shadow track runs: the candidate while it is shadowed; and, with shadowing on,
/// the version it replaced while it is promoted and baked, so that the bake judges the new
/// stable against the previous version on the same mirrored traffic at the same time.
/// `None`: no shadow.
pub fn shadow_version<'a>(
    md: &ModelDeployment,
    status: &'a crate::api::ModelDeploymentStatus,
) -> Option<&'a VersionRef> {
    use crate::api::DeploymentPhase;
    match status.phase {
        Some(DeploymentPhase::Shadowing) => status.candidate.as_ref(),
        Some(DeploymentPhase::Promoting | DeploymentPhase::Baking) if md.spec.shadow.enabled => {
            status.previous.as_ref()
        }
        _ => None,
    }
}

/// Shadow replicas: as the spec says, or the stable replicas scaled by the mirrored share,
/// at least one.
pub fn shadow_replicas(md: &ModelDeployment) -> i32 {
    md.spec.shadow.replicas.unwrap_or_else(|| {
        let scaled = (f64::from(md.spec.replicas) * md.spec.shadow.mirror_percent / 100.0).ceil();
        (scaled as i32).max(1)
    })
}

/// The version a track's Deployment runs, read from its pod template.
pub fn deployment_version(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .labels
        .as_ref()?
        .get(LABEL_VERSION)
        .cloned()
}

/// Whether a Deployment has rolled out its current template to every replica and they are
/// available.
pub fn rollout_complete(d: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (d.spec.as_ref(), d.status.as_ref()) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
}

/// Whether a Deployment gave up rolling out (its progress deadline passed).
pub fn rollout_failed(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::testing::sample;

    #[test]
    fn stable_deployment_carries_version_labels_env_and_owner() {
        let md = sample();
        let template = md.spec.template.parse().unwrap();
        let v = VersionRef {
            version: "v1".into(),
            artifact: "s3://m/v1".into(),
            since: None,
        };
        let d = track_deployment(&md, &template, 0, Track::Stable, &v, 3);
        assert_eq!(d.metadata.name.as_deref(), Some("fraud-stable"));
        assert_eq!(
            d.metadata.owner_references.as_ref().unwrap()[0].kind,
            "ModelDeployment"
        );
        assert_eq!(
            d.metadata.owner_references.as_ref().unwrap()[0].controller,
            Some(true)
        );
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        let selector = spec.selector.match_labels.unwrap();
        assert!(
            !selector.contains_key(LABEL_VERSION),
            "the selector is immutable, so it must not hold the version"
        );
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels[LABEL_DEPLOYMENT], "fraud");
        assert_eq!(labels[LABEL_TRACK], "stable");
        assert_eq!(labels[LABEL_VERSION], "v1");
        assert_eq!(labels["app"], "fraud", "the template's own labels are kept");
        let env = spec.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let get = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(get("MODEL_VERSION").as_deref(), Some("v1"));
        assert_eq!(get("MODEL_URI").as_deref(), Some("s3://m/v1"));
        assert_eq!(
            env.iter().filter(|e| e.name == "MODEL_VERSION").count(),
            1,
            "a template value is replaced, not duplicated"
        );
    }

    #[test]
    fn client_service_points_at_router_with_builtin_and_at_stable_otherwise() {
        let mut md = sample();
        let s = client_service(&md);
        assert_eq!(
            s.spec.as_ref().unwrap().selector.as_ref().unwrap()[LABEL_COMPONENT],
            "router"
        );
        md.spec.traffic.provider = TrafficProvider::Istio;
        let s = client_service(&md);
        let sel = s.spec.unwrap().selector.unwrap();
        assert_eq!(sel[LABEL_TRACK], "stable");
        assert!(!sel.contains_key(LABEL_COMPONENT));
    }

    #[test]
    fn the_previous_version_answers_copies_while_the_new_one_is_promoted_and_baked() {
        use crate::api::{DeploymentPhase, ModelDeploymentStatus};
        let mut md = sample();
        let v = |name: &str| VersionRef {
            version: name.into(),
            artifact: format!("s3://m/{name}"),
            since: None,
        };
        let cfg = ChildConfig {
            router_image: "img".into(),
        };
        let template = md.spec.template.parse().unwrap();
        let mut status = ModelDeploymentStatus {
            stable: Some(v("v1")),
            candidate: Some(v("v2")),
            ..Default::default()
        };
        let shadow_of = |md: &ModelDeployment, status: &ModelDeploymentStatus| {
            let kids = children(md, &template, 0, status, &cfg);
            let shadow = kids
                .deployments
                .iter()
                .find(|d| d.name_any() == "fraud-shadow")
                .map(|d| deployment_version(d).unwrap());
            let router = kids
                .deployments
                .iter()
                .find(|d| d.name_any() == "fraud-router")
                .unwrap();
            let mirrors = router
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .args
                .as_ref()
                .unwrap()
                .iter()
                .any(|a| a.starts_with("--shadow="));
            assert_eq!(
                mirrors,
                shadow.is_some(),
                "the router mirrors exactly when a shadow runs"
            );
            shadow
        };
        status.phase = Some(DeploymentPhase::Shadowing);
        assert_eq!(shadow_of(&md, &status).as_deref(), Some("v2"));
        // Promoted: stable serves v2, and v1 answers the copies.
        status.previous = status.stable.replace(v("v2"));
        for phase in [DeploymentPhase::Promoting, DeploymentPhase::Baking] {
            status.phase = Some(phase);
            assert_eq!(shadow_of(&md, &status).as_deref(), Some("v1"), "{phase:?}");
        }
        for phase in [
            DeploymentPhase::Stable,
            DeploymentPhase::Rejected,
            DeploymentPhase::RolledBack,
        ] {
            status.phase = Some(phase);
            assert_eq!(shadow_of(&md, &status), None, "{phase:?}");
        }
        // Without shadowing there is nothing to mirror to, and nothing during the bake.
        md.spec.shadow.enabled = false;
        status.phase = Some(DeploymentPhase::Baking);
        assert_eq!(shadow_of(&md, &status), None);
    }

    #[test]
    fn router_mirrors_only_with_a_shadow() {
        let md = sample();
        let args = router_args(&md, false);
        assert!(
            args.iter()
                .any(|a| a == "--stable=http://fraud-stable.models.svc:80")
        );
        assert!(!args.iter().any(|a| a.starts_with("--shadow=")));
        let args = router_args(&md, true);
        assert!(
            args.iter()
                .any(|a| a == "--shadow=http://fraud-shadow.models.svc:80")
        );
        assert!(args.iter().any(|a| a == "--compare-pointer=/predictions"));
        assert!(args.iter().any(|a| a == "--mirror-percent=100"));
    }

    #[test]
    fn copies_lose_credentials_and_the_headers_the_spec_adds() {
        let mut md = sample();
        let args = router_args(&md, true);
        assert!(
            args.iter()
                .any(|a| a == "--strip-headers=authorization,cookie,proxy-authorization,x-api-key")
        );
        md.spec.shadow.strip_headers = vec!["X-Tenant-Token".into(), "Cookie".into()];
        let args = router_args(&md, true);
        assert!(args.iter().any(|a| a
            == "--strip-headers=authorization,cookie,proxy-authorization,x-api-key,x-tenant-token"));
    }

    #[test]
    fn h2c_and_grpc_models_get_h2c_services_and_router_tracks() {
        use crate::api::ModelProtocol;
        let app_protocols = |md: &ModelDeployment| {
            [
                client_service(md),
                track_service(md, Track::Stable),
                track_service(md, Track::Shadow),
            ]
            .map(|s| s.spec.unwrap().ports.unwrap()[0].app_protocol.clone())
        };
        let protocol_flags = |md: &ModelDeployment, mirror: bool| {
            router_args(md, mirror)
                .into_iter()
                .filter(|a| a.contains("-protocol="))
                .collect::<Vec<_>>()
        };
        let mut md = sample();
        assert_eq!(md.spec.protocol, ModelProtocol::Http);
        assert_eq!(app_protocols(&md), [None, None, None]);
        assert!(protocol_flags(&md, true).is_empty());
        for protocol in [ModelProtocol::H2c, ModelProtocol::Grpc] {
            md.spec.protocol = protocol;
            let h2c = Some(H2C_APP_PROTOCOL.to_owned());
            assert_eq!(app_protocols(&md), [h2c.clone(), h2c.clone(), h2c]);
            assert_eq!(
                protocol_flags(&md, true),
                ["--stable-protocol=h2c", "--shadow-protocol=h2c"]
            );
            assert_eq!(protocol_flags(&md, false), ["--stable-protocol=h2c"]);
        }
    }

    #[test]
    fn protocol_names_in_the_spec() {
        use crate::api::ModelProtocol;
        for (name, protocol) in [
            ("HTTP", ModelProtocol::Http),
            ("H2C", ModelProtocol::H2c),
            ("GRPC", ModelProtocol::Grpc),
        ] {
            assert_eq!(
                serde_json::from_value::<ModelProtocol>(serde_json::json!(name)).unwrap(),
                protocol
            );
        }
    }

    #[test]
    fn the_router_pod_meets_the_restricted_pod_security_profile() {
        let cfg = ChildConfig {
            router_image: "img".into(),
        };
        let d = router_deployment(&sample(), &cfg, true);
        let pod = d.spec.unwrap().template.spec.unwrap();
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
    }

    #[test]
    fn router_threads_follow_its_cpu_limit() {
        let mut md = sample();
        let cfg = ChildConfig {
            router_image: "img".into(),
        };
        let env = |md: &ModelDeployment| {
            router_deployment(md, &cfg, false)
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .containers[0]
                .env
                .clone()
        };
        assert_eq!(env(&md), None);
        md.spec.traffic.router.resources =
            Some(serde_json::from_value(serde_json::json!({"limits": {"cpu": "1500m"}})).unwrap());
        let env = env(&md).unwrap();
        assert_eq!(
            (env[0].name.as_str(), env[0].value.as_deref()),
            ("TOKIO_WORKER_THREADS", Some("2"))
        );
        assert_eq!(cpu_cores("250m"), Some(1));
        assert_eq!(cpu_cores("4"), Some(4));
    }

    #[test]
    fn shadow_replicas_follow_the_mirrored_share() {
        let mut md = sample();
        md.spec.replicas = 10;
        md.spec.shadow.mirror_percent = 25.0;
        assert_eq!(shadow_replicas(&md), 3);
        md.spec.shadow.mirror_percent = 0.0;
        assert_eq!(shadow_replicas(&md), 1);
        md.spec.shadow.replicas = Some(4);
        assert_eq!(shadow_replicas(&md), 4);
    }

    #[test]
    fn unknown_model_container_is_named_in_the_error() {
        let md = sample();
        let template = md.spec.template.parse().unwrap();
        assert_eq!(model_container_index(&template, None), Ok(0));
        let err = model_container_index(&template, Some("nope")).unwrap_err();
        assert!(err.contains("\"nope\"") && err.contains("server"), "{err}");
    }
}

/// Every child a ModelDeployment should have given its status, and those it should not.
#[derive(Clone, Debug, Default)]
pub struct Children {
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
}

/// The children for a status the phase machine decided.
pub fn children(
    md: &ModelDeployment,
    template: &PodTemplateSpec,
    container_index: usize,
    status: &crate::api::ModelDeploymentStatus,
    cfg: &ChildConfig,
) -> Children {
    let mut out = Children::default();
    if let Some(stable) = &status.stable {
        out.deployments.push(track_deployment(
            md,
            template,
            container_index,
            Track::Stable,
            stable,
            md.spec.replicas,
        ));
    }
    out.services.push(track_service(md, Track::Stable));
    out.services.push(client_service(md));
    let shadow = shadow_version(md, status);
    // Without a shadow its Deployment and Service are not wanted: they go.
    if let Some(version) = shadow {
        out.deployments.push(track_deployment(
            md,
            template,
            container_index,
            Track::Shadow,
            version,
            shadow_replicas(md),
        ));
        out.services.push(track_service(md, Track::Shadow));
    }
    // Another provider routes traffic: the router's Deployment is not wanted.
    if md.spec.traffic.provider == TrafficProvider::Builtin {
        out.deployments
            .push(router_deployment(md, cfg, shadow.is_some()));
    }
    out
}
