//! `ModelDeployment`: serves one model, tries each new version in the shadow of production,
//! promotes it on measured evidence, keeps watching it, and rolls back by itself.
use super::common::{Condition, PodTemplate, Verdict};
use jiff::Timestamp;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired state of a served model.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "modelship.io",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    status = "ModelDeploymentStatus",
    shortname = "md",
    category = "modelship",
    doc = "Serves a model: each new version runs first as a shadow on mirrored production traffic, is promoted when its metrics hold against production, is watched after promotion, and is rolled back automatically when they degrade.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Stable", type_ = "string", json_path = ".status.stable.version"),
    printcolumn(name = "Candidate", type_ = "string", json_path = ".status.candidate.version"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit, without '.': the operator names Services after it, and Service names allow nothing else"),
    validation = Rule::new("size(self.metadata.name) <= 50").message("metadata.name must be at most 50 characters: the operator derives the names of Deployments and Services from it (for example <name>-shadow)"),
)]
#[x_kube(validation = Rule::new("has(self.model) != has(self.modelFrom)").message("set exactly one of spec.model (a fixed version) and spec.modelFrom (follow a ModelPipeline)"))]
#[x_kube(validation = Rule::new("!has(self.traffic) || !has(self.traffic.provider) || self.traffic.provider != 'GatewayAPI' || has(self.traffic.gatewayAPI)").message("spec.traffic.gatewayAPI is required when spec.traffic.provider is GatewayAPI"))]
#[x_kube(validation = Rule::new("!has(self.traffic) || !has(self.traffic.provider) || self.traffic.provider != 'Istio' || has(self.traffic.istio)").message("spec.traffic.istio is required when spec.traffic.provider is Istio"))]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// A fixed model version to serve. Exactly one of `model` and `modelFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,

    /// Serve the latest approved candidate of a ModelPipeline in the same namespace.
    /// Exactly one of `model` and `modelFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_from: Option<ModelFrom>,

    /// The serving pod template. Each version runs it with `MODEL_VERSION` and `MODEL_URI` set
    /// in the model container. The template is shared by every version: a change to it rolls
    /// out to the stable and shadow tracks directly.
    pub template: PodTemplate,

    /// Name of the container that serves the model; defaults to the first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub container: Option<String>,

    /// Replicas of the stable track.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Port the model container serves HTTP on.
    #[serde(default = "default_model_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Port of the `<name>` Service that clients call.
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub service_port: i32,

    /// The protocol the model serves on `port` and clients speak to the `<name>` Service:
    /// `HTTP` (HTTP/1.1), `H2C` (HTTP/2 cleartext with prior knowledge) or `GRPC` (gRPC, on
    /// h2c). With `H2C` and `GRPC` the Services announce `appProtocol: kubernetes.io/h2c` and
    /// the built-in router speaks h2c to both tracks; it compares gRPC answers by their
    /// `grpc-status` and messages, whichever protocol is set.
    #[serde(default)]
    pub protocol: ModelProtocol,

    /// How a new version is tried before it serves users.
    #[serde(default)]
    pub shadow: ShadowSpec,

    /// How traffic reaches the tracks and is mirrored.
    #[serde(default)]
    pub traffic: TrafficSpec,

    /// How versions are judged, while shadowing and after promotion.
    #[serde(default)]
    pub analysis: AnalysisSpec,

    /// How many finished versions `status.history` keeps.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub revision_history_limit: i32,

    /// A ServiceAccount of this object's namespace whose identity creates its workloads
    /// (Deployments, Services, Jobs, routes): the operator impersonates it, so the
    /// namespace's RBAC decides what may be created. Unset: the operator's
    /// `--default-service-account`, or, when that is unset too, the operator's own identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(min = 1, max = 253)
    )]
    pub service_account_name: Option<String>,
}

fn default_replicas() -> i32 {
    1
}
fn default_model_port() -> i32 {
    8080
}
fn default_service_port() -> i32 {
    80
}
fn default_history_limit() -> i32 {
    10
}

/// The protocol a model serves.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModelProtocol {
    /// HTTP/1.1.
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    /// HTTP/2 cleartext with prior knowledge.
    #[serde(rename = "H2C")]
    H2c,
    /// gRPC, on HTTP/2 cleartext.
    #[serde(rename = "GRPC")]
    Grpc,
}

impl ModelProtocol {
    /// Whether the model speaks HTTP/2 cleartext (the router's `h2c` protocol).
    pub fn is_h2c(self) -> bool {
        matches!(self, ModelProtocol::H2c | ModelProtocol::Grpc)
    }
}

/// A model version and where its artifact lives.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelRef {
    /// The version, for example `fraud-v1.3.0-2026-11-26-f4c9a2`. Put on pods as a label, so at
    /// most 63 characters of letters, digits, `.`, `_` and `-`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"))]
    pub version: String,
    /// URI of the model artifact, passed to the server as `MODEL_URI`.
    #[schemars(
        regex(pattern = r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$"),
        length(max = 2048)
    )]
    pub artifact: String,
}

/// Follow the approved candidates of a ModelPipeline.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelFrom {
    /// Name of a ModelPipeline in the same namespace.
    #[schemars(length(min = 1, max = 63))]
    pub pipeline: String,
}

/// How a new version is tried in the shadow of production.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.replicas) || self.replicas >= 1").message("spec.shadow.replicas must be at least 1"))]
pub struct ShadowSpec {
    /// Try each new version as a shadow first. When false, a new version is promoted at once
    /// and then watched for `analysis.bakeTime` like any other.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Share of production requests copied to the shadow, in percent.
    #[serde(default = "default_mirror_percent")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub mirror_percent: f64,

    /// Replicas of the shadow track. Default: the stable replicas scaled by the mirrored
    /// share, at least 1. At most 1,000, like `spec.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub replicas: Option<i32>,

    /// Shortest time a candidate is shadowed before it can be promoted.
    #[serde(default = "default_min_duration")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub min_duration: String,

    /// Fewest mirrored requests the shadow must have answered before it can be promoted.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 0))]
    pub min_requests: i64,

    /// `Automatic` promotes as soon as the analysis passes; `Manual` also waits for the
    /// annotation `modelship.io/approve` naming the candidate version.
    #[serde(default)]
    pub promotion: Promotion,

    /// How the built-in router compares the shadow's answers with production's.
    #[serde(default)]
    pub compare: CompareSpec,

    /// Request headers the built-in router removes from every copy it sends to the shadow,
    /// on top of `Authorization`, `Cookie`, `Proxy-Authorization` and `X-Api-Key`, which are
    /// always removed. Names are case-insensitive. Production requests keep every header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$"))
    )]
    pub strip_headers: Vec<String>,
}

impl Default for ShadowSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            mirror_percent: default_mirror_percent(),
            replicas: None,
            min_duration: default_min_duration(),
            min_requests: default_min_requests(),
            promotion: Promotion::default(),
            compare: CompareSpec::default(),
            strip_headers: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_mirror_percent() -> f64 {
    100.0
}
fn default_min_duration() -> String {
    "10m".into()
}
fn default_min_requests() -> i64 {
    100
}

/// When a candidate that passed its analysis is promoted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Promotion {
    /// As soon as the analysis passes.
    #[default]
    Automatic,
    /// When the analysis passes and `modelship.io/approve` names the candidate version.
    Manual,
}

/// How the built-in router compares answers. Only the `Builtin` provider compares.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.pointers.all(p, p.matches('^(/([^/~,]|~[01])*)*$'))").message("each of spec.shadow.compare.pointers must be a JSON pointer: empty or starting with '/', escaping only ~0 (~) and ~1 (/), without ','"))]
pub struct CompareSpec {
    /// JSON pointers (RFC 6901) to the predictions in a response, for example `/predictions`.
    /// Strings and labels must be equal; numbers within `tolerance`; arrays element by element.
    #[serde(default = "default_pointers")]
    #[schemars(length(min = 1, max = 16), inner(length(max = 256)))]
    pub pointers: Vec<String>,

    /// Largest absolute difference between two numbers that still counts as agreement. A
    /// retrained model's scores always move a little; set 0 to demand identical numbers.
    #[serde(default = "default_tolerance")]
    #[schemars(range(min = 0.0))]
    pub tolerance: f64,

    /// Lowest share (0–1) of compared requests on which the shadow must agree with production
    /// for the default analysis to pass. A retrained model is expected to disagree on some.
    #[serde(default = "default_min_agreement")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_agreement: f64,
}

impl Default for CompareSpec {
    fn default() -> Self {
        Self {
            pointers: default_pointers(),
            tolerance: default_tolerance(),
            min_agreement: default_min_agreement(),
        }
    }
}

fn default_pointers() -> Vec<String> {
    vec!["/predictions".into()]
}
fn default_tolerance() -> f64 {
    0.01
}
fn default_min_agreement() -> f64 {
    0.9
}

/// Who carries traffic to the tracks and mirrors it to the shadow.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSpec {
    /// `Builtin` runs modelship's own router, which also compares the shadow's answers with
    /// production's. `GatewayAPI` and `Istio` mirror with an HTTPRoute or a VirtualService
    /// and do not compare answers.
    #[serde(default)]
    pub provider: TrafficProvider,

    /// Settings of the built-in router.
    #[serde(default)]
    pub router: RouterSpec,

    /// Settings for `provider: GatewayAPI`.
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiSpec>,

    /// Settings for `provider: Istio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioSpec>,
}

/// A traffic provider.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrafficProvider {
    /// modelship's own router (`modelship mirror`), in front of the tracks.
    #[default]
    Builtin,
    /// A Gateway API HTTPRoute with a `RequestMirror` filter.
    #[serde(rename = "GatewayAPI")]
    GatewayApi,
    /// An Istio VirtualService with `mirror` and `mirrorPercentage`.
    Istio,
}

/// The built-in router's Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.shadowTimeout) || !self.shadowTimeout.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || duration(self.shadowTimeout) > duration('0s')").message("spec.traffic.router.shadowTimeout must be greater than zero: the router would give up on every copy at once"))]
pub struct RouterSpec {
    /// Router replicas.
    #[serde(default = "default_router_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,

    /// Router image; defaults to the operator's own image (`--router-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Time a mirrored request may take before the shadow's answer is given up on.
    #[serde(default = "default_shadow_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub shadow_timeout: String,

    /// Compute resources of the router container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
}

impl Default for RouterSpec {
    fn default() -> Self {
        Self {
            replicas: default_router_replicas(),
            image: None,
            shadow_timeout: default_shadow_timeout(),
            resources: None,
        }
    }
}

fn default_router_replicas() -> i32 {
    1
}
fn default_shadow_timeout() -> String {
    "2s".into()
}

/// Where the HTTPRoute attaches.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiSpec {
    /// Gateways the HTTPRoute attaches to.
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<GatewayParentRef>,
    /// Host names the route matches; empty matches all the Gateway allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
}

/// A Gateway the HTTPRoute attaches to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayParentRef {
    /// Gateway name.
    pub name: String,
    /// Gateway namespace; defaults to the ModelDeployment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Listener name on the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// How the VirtualService is addressed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IstioSpec {
    /// Hosts of the VirtualService; defaults to the `<name>` Service's host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Gateways of the VirtualService; empty means the mesh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
}

/// How versions are judged.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.window) || !self.window.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || duration(self.window) <= duration('24h')").message("spec.analysis.window must be at most 24h: every measurement asks Prometheus for the whole window, and a longer one would judge a version on what it did a day ago"))]
#[x_kube(validation = Rule::new("!has(self.interval) || !self.interval.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || duration(self.interval) >= duration('1s')").message("spec.analysis.interval must be at least 1s: each measurement queries Prometheus and writes status"))]
pub struct AnalysisSpec {
    /// Time between two measurements.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub interval: String,

    /// Range of the rate windows in the default queries (`{{window}}` in templates).
    #[serde(default = "default_window")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub window: String,

    /// How long a promoted version is watched before it is trusted (`Baking`).
    /// A degradation in that time rolls back to the previous version.
    #[serde(default = "default_bake_time")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub bake_time: String,

    /// Prometheus to query; defaults to the operator's `--prometheus-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://\S+$"))]
    pub prometheus_url: Option<String>,

    /// Metrics to judge. Empty with the `Builtin` provider: the defaults (error rate and p99
    /// latency of each track against stable, and the shadow's agreement with production,
    /// from the router's metrics). Empty with another provider: no analysis, which is
    /// reported in status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    // Names are the list's keys, so the API server rejects a repeated name.
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub metrics: Vec<AnalysisMetric>,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            window: default_window(),
            bake_time: default_bake_time(),
            prometheus_url: None,
            metrics: Vec::new(),
        }
    }
}

fn default_interval() -> String {
    "30s".into()
}
fn default_window() -> String {
    // Three intervals: a regression that starts during a bake fills the window within three
    // measurements (docs/analysis.md).
    "90s".into()
}
fn default_bake_time() -> String {
    "15m".into()
}

/// One metric measured each interval.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message("min must not be above max"))]
#[x_kube(validation = Rule::new("has(self.min) || has(self.max) || has(self.relativeToStable)").message("give the metric at least one bound: min, max or relativeToStable"))]
#[x_kube(validation = Rule::new("!has(self.minSamples) || self.minSamples == 0 || has(self.samplesQuery) || (has(self.test) && self.test.kind == 'Quantile')").message("minSamples needs samplesQuery, the PromQL that counts the samples behind a measurement"))]
#[x_kube(validation = Rule::new("!has(self.test) || self.test.kind != 'Proportion' || has(self.samplesQuery)").message("a Proportion test needs samplesQuery: the count of which the value is a share (for an error rate, the requests)"))]
#[x_kube(validation = Rule::new("!has(self.test) || self.test.kind != 'Quantile' || !has(self.samplesQuery)").message("a Quantile test counts its samples from the histogram itself: remove samplesQuery"))]
#[x_kube(validation = Rule::new("!has(self.relativeToStable) || self.query.contains('{{track}}') || self.query.contains('{{version}}')").message("a metric compared with stable must select the track in its query with {{track}} or {{version}}"))]
pub struct AnalysisMetric {
    /// Name, unique within the analysis; used in status, events and metrics.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,

    /// PromQL template. `{{name}}`, `{{namespace}}`, `{{track}}` (`stable` or `shadow`),
    /// `{{version}}` and `{{window}}` are replaced before the query runs. The result must be
    /// one number (a scalar or a one-element vector).
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,

    /// PromQL template that returns how many samples (for example requests) the measurement
    /// stands on. Below `minSamples` the measurement is inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub samples_query: Option<String>,

    /// Fewest samples for a measurement to count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_samples: Option<i64>,

    /// Lowest acceptable value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,

    /// Highest acceptable value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,

    /// A bound relative to the same query on the stable track (while shadowing) or to the
    /// value recorded for the previous version (while baking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_to_stable: Option<RelativeBound>,

    /// Failed measurements tolerated; one more fails the analysis.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub failure_limit: i32,

    /// Query errors in a row tolerated; one more fails a shadow analysis (a bake is held
    /// instead, since a broken query is not a measured degradation).
    #[serde(default = "default_consecutive_error_limit")]
    #[schemars(range(min = 0, max = 1000))]
    pub consecutive_error_limit: i32,

    /// Measure and show, never act on.
    #[serde(default)]
    pub dry_run: bool,

    /// Judge only in these phases; default both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<AnalysisPhase>,

    /// How a value beyond its bound is told from noise. Without a test, any measurement
    /// beyond a bound fails; with one, it fails only when the difference is also
    /// statistically significant, and is inconclusive otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<SignificanceTest>,
}

/// A statistical test between the judged track and its reference.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind != 'Quantile' || has(self.quantile)").message("a Quantile test needs quantile, for example 0.99"))]
pub struct SignificanceTest {
    /// `Proportion`: the value is a share of the count `samplesQuery` returns (an error rate,
    /// an agreement); the judged track's share is compared with the reference's (or with the
    /// bound when there is no live reference) by a one-sided binomial z-test.
    /// `Quantile`: `query` returns a histogram's bucket counts over the window, one series
    /// per `le` (for example `sum by (le) (increase(x_bucket{...}[{{window}}]))`); the value
    /// is its `quantile`, and the test compares the share of each track's samples above the
    /// quantile of both tracks pooled.
    pub kind: TestKind,

    /// The quantile a `Quantile` test judges, between 0 and 1 (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.5, max = 0.9999))]
    pub quantile: Option<f64>,

    /// How unlikely under no real difference a measurement must be to fail: it fails when
    /// the one-sided p-value is at most `1 - confidence`.
    #[serde(default = "default_confidence")]
    #[schemars(range(min = 0.5, max = 0.999999))]
    pub confidence: f64,
}

fn default_confidence() -> f64 {
    0.999
}

/// The kind of a significance test.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestKind {
    /// The value is a share of a count: a binomial test.
    Proportion,
    /// The value is a quantile of a histogram: a test of the tail above it.
    Quantile,
}

fn default_consecutive_error_limit() -> i32 {
    4
}

/// A phase in which a metric is judged.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnalysisPhase {
    Shadowing,
    Baking,
}

/// A bound relative to a reference value `r`: the measured value `v` passes when
/// `r*(1-maxDecreasePercent/100) - slack <= v <= r*(1+maxIncreasePercent/100) + slack`
/// for the limits that are set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.maxIncreasePercent) || has(self.maxDecreasePercent)").message("relativeToStable needs maxIncreasePercent, maxDecreasePercent or both"))]
pub struct RelativeBound {
    /// Largest increase over the reference, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_increase_percent: Option<f64>,
    /// Largest decrease below the reference, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_decrease_percent: Option<f64>,
    /// Absolute allowance added on both sides, so a reference of 0 does not demand exactly 0.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub slack: f64,
}

/// What the operator observed and decided.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Where the current version stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DeploymentPhase>,

    /// When the phase was entered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Timestamp>,

    /// Why the phase was entered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The version and artifact the spec asks for (resolved from the pipeline with `modelFrom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<VersionRef>,

    /// What `<name>-stable` serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<VersionRef>,

    /// The version being shadowed, promoted or baked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<VersionRef>,

    /// The version production returns to if the candidate degrades while baking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<VersionRef>,

    /// The current analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,

    /// Finished versions, newest first, at most `revisionHistoryLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,

    /// Values of the `modelship.io/retry` and `modelship.io/abort` annotations already acted
    /// on, so one annotation acts once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_retry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_abort: Option<String>,

    /// The last `modelship.io/approve` value handled: the candidate (version and artifact) it
    /// was bound to when first seen, and when it approved it. A value acts once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<super::common::HandledApproval>,

    /// `Ready`, `Progressing`, `Degraded`, `TrafficConfigured`, `MetricsAvailable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The life of a version.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeploymentPhase {
    /// Production serves the desired version; nothing is being tried.
    Stable,
    /// A candidate answers mirrored traffic next to production and is being analysed.
    Shadowing,
    /// The stable track is rolling over to the candidate.
    Promoting,
    /// The promoted version serves users and is still watched.
    Baking,
    /// The candidate failed its shadow analysis; production never saw it. Sticky.
    Rejected,
    /// The promoted version degraded and production returned to the previous one. Sticky.
    RolledBack,
}

impl DeploymentPhase {
    pub const ALL: [DeploymentPhase; 6] = [
        DeploymentPhase::Stable,
        DeploymentPhase::Shadowing,
        DeploymentPhase::Promoting,
        DeploymentPhase::Baking,
        DeploymentPhase::Rejected,
        DeploymentPhase::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentPhase::Stable => "Stable",
            DeploymentPhase::Shadowing => "Shadowing",
            DeploymentPhase::Promoting => "Promoting",
            DeploymentPhase::Baking => "Baking",
            DeploymentPhase::Rejected => "Rejected",
            DeploymentPhase::RolledBack => "RolledBack",
        }
    }
}

impl std::fmt::Display for DeploymentPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version and its artifact, with when it got there.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VersionRef {
    pub version: String,
    pub artifact: String,
    /// When this version took this place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
}

/// The analysis of the candidate (while shadowing) or the new stable (while baking).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// When the window started; a restart of the operator resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the last measurement ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_measured_at: Option<Timestamp>,
    /// Requests the judged track answered in the window, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<f64>,
    /// One summary of the whole: Pass only when every judged metric passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The latest measurement of each metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricStatus>,
}

/// The latest measurement of one metric.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    pub name: String,
    /// The judged track's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The reference: stable's value while shadowing, the previous version's while baking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_value: Option<f64>,
    /// The effective bounds after relative limits are applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Samples behind the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<f64>,
    /// Samples behind the reference value, where the reference was measured live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_samples: Option<f64>,
    /// Fewest samples for a measurement to count (the metric's `minSamples`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<i64>,
    /// The one-sided p-value of the metric's significance test, when a value beyond its bound
    /// was tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The largest p-value that fails (`1 - test.confidence`), when the metric has a test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p_value: Option<f64>,
    /// Failed measurements tolerated (the metric's `failureLimit`).
    #[serde(default)]
    pub failure_limit: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Failed measurements in the window.
    #[serde(default)]
    pub failures: i32,
    /// Query errors in a row.
    #[serde(default)]
    pub consecutive_errors: i32,
    /// Passing measurements in the window.
    #[serde(default)]
    pub passes: i32,
    #[serde(default)]
    pub dry_run: bool,
    /// Why the verdict is what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<Timestamp>,
    /// Stable's latest value recorded while shadowing: the reference for the bake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
}

/// A finished version.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub version: String,
    pub artifact: String,
    pub outcome: Outcome,
    /// A CamelCase reason, as in events.
    pub reason: String,
    pub message: String,
    pub time: Timestamp,
    /// The measurements at the time of the decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricStatus>,
}

/// How a version's try ended.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Promoted and baked: production trusts it.
    Promoted,
    /// Failed in shadow; never served users.
    Rejected,
    /// Degraded after promotion; production returned to the previous version.
    RolledBack,
    /// Replaced by a newer desired version before its try ended.
    Superseded,
    /// Stopped by hand with `modelship.io/abort`.
    Aborted,
}

impl ModelDeploymentStatus {
    /// The condition of a type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

impl Verdict {
    pub fn is_pass(self) -> bool {
        self == Verdict::Pass
    }
}
