//! `ModelPipeline`: turns a commit, new data, a schedule or a request into a validated,
//! trained, evaluated, gated and versioned model candidate.
use super::common::{Condition, Direction, PodTemplate, Verdict};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The desired state of a model's pipeline.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "modelship.io",
    version = "v1alpha1",
    kind = "ModelPipeline",
    namespaced,
    status = "ModelPipelineStatus",
    shortname = "mp",
    category = "modelship",
    doc = "Builds one model: each run (started by a new source revision, new data, a schedule or a request) runs checks, data validation, training, evaluation against the production model with metric gates, and an integration test, then publishes an approved, versioned, reproducible candidate.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Trigger", type_ = "string", json_path = ".status.lastTrigger.reason"),
    printcolumn(name = "Candidate", type_ = "string", json_path = ".status.latestCandidate.version"),
    printcolumn(name = "Verdict", type_ = "string", json_path = ".status.verdict"),
    printcolumn(name = "Approved", type_ = "string", json_path = ".status.latestApproved.version", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name must be at most 40 characters: Job names are <pipeline>-<run>-<stage> and must fit in 63"),
)]
#[x_kube(validation = Rule::new("!has(self.gates) || self.gates.all(g, self.gates.exists_one(h, h.metric == g.metric && h.stage == g.stage))").message("spec.gates must not gate the same metric of the same stage twice"))]
#[x_kube(validation = Rule::new("!has(self.gates) || self.gates.all(g, g.stage != 'Integration' || has(self.stages.integration))").message("a gate on stage Integration needs spec.stages.integration"))]
#[serde(rename_all = "camelCase")]
pub struct ModelPipelineSpec {
    /// The model this pipeline builds.
    pub model: ModelSpec,

    /// The training code.
    pub source: SourceSpec,

    /// The training data.
    pub data: DataSpec,

    /// What starts a run besides a new source revision or data version.
    #[serde(default)]
    pub triggers: TriggerSpec,

    /// The Jobs of a run, in order: checks, validate, train, evaluate, integration.
    pub stages: StagesSpec,

    /// Metric gates on the evaluation (and integration) results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub gates: Vec<Gate>,

    /// `Manual` waits for `modelship.io/approve-run` (or `reject-run`) naming the run;
    /// `Automatic` approves a passing candidate at once.
    #[serde(default)]
    pub approval: Approval,

    /// Random seed every stage receives as `MODELSHIP_SEED`, so a run can be reproduced.
    #[serde(default = "default_seed")]
    #[schemars(range(min = 0))]
    pub seed: i64,

    /// How many runs `status.runs` keeps; Jobs of older runs are deleted.
    #[serde(default = "default_run_history_limit")]
    #[schemars(range(min = 1, max = 50))]
    pub run_history_limit: i32,
}

fn default_seed() -> i64 {
    42
}
fn default_run_history_limit() -> i32 {
    5
}

/// The model and how its candidates are named.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Model name, the first part of every candidate version (`<name>-v1.3.0-2026-11-26-f4c9a2`).
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$"))]
    pub name: String,

    /// Semantic version of the first candidate, when no candidate exists yet.
    #[serde(default = "default_initial_version")]
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$"))]
    pub initial_version: String,

    /// Which part of the semantic version each new candidate bumps.
    #[serde(default)]
    pub bump: Bump,

    /// Base URI under which candidates' artifacts are written: a run's candidate goes to
    /// `<artifactBase>/<version>/`.
    #[schemars(regex(pattern = r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$"), length(max = 1024))]
    pub artifact_base: String,
}

fn default_initial_version() -> String {
    "1.0.0".into()
}

/// A semantic-version part.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bump {
    Major,
    #[default]
    Minor,
    Patch,
}

/// Where the training code is.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Repository URL, passed to the stages.
    #[schemars(length(min = 1, max = 1024))]
    pub repository: String,
    /// Revision to build, usually a commit SHA. A new value starts a run (trigger `source`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"))]
    pub revision: String,
}

/// Where the training data is, and which version of it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.version) != has(self.versionFrom)").message("set exactly one of spec.data.version and spec.data.versionFrom"))]
pub struct DataSpec {
    /// URI of the dataset, passed to the stages.
    #[schemars(regex(pattern = r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$"), length(max = 2048))]
    pub uri: String,
    /// The data version. A new value starts a run (trigger `data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub version: Option<String>,
    /// Read the data version from a ConfigMap key that a data pipeline updates, so new data
    /// retrains without anyone touching this spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_from: Option<DataVersionSource>,
}

/// Where the data version is read from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataVersionSource {
    pub config_map_key_ref: ConfigMapKey,
}

/// A key of a ConfigMap in the pipeline's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKey {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Schedule of retraining.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSpec {
    /// Cron expression (5 fields, or 6 with seconds), for example `0 3 * * 1` for Mondays at 03:00.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: Option<String>,
    /// IANA time zone of the schedule, for example `Europe/Paris`; default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
}

/// The stages of a run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StagesSpec {
    /// The training code's lint, type checks and unit tests. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<StageSpec>,
    /// Data schema, distribution and quality checks. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<StageSpec>,
    /// Trains the candidate and writes it to `MODELSHIP_CANDIDATE_URI`.
    pub train: StageSpec,
    /// Measures the candidate, and the baseline where it can, on held-out data.
    pub evaluate: StageSpec,
    /// Serves the candidate as production would and tests it. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<IntegrationSpec>,
}

/// One stage's Job.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageSpec {
    /// The pod template of the stage's Job. Its containers get the run's environment contract.
    pub template: PodTemplate,
    /// Retries of a crashed pod. A gate failure (exit code 3) is never retried.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,
    /// Longest the stage may run, in seconds.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: i64,
}

fn default_deadline() -> i64 {
    3600
}

/// The integration stage: the candidate served with a ModelDeployment's pod template, and a
/// test Job that calls it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationSpec {
    /// The test Job; it finds the served candidate at `MODELSHIP_SERVICE_URL`.
    #[serde(flatten)]
    pub stage: StageSpec,
    /// The ModelDeployment whose serving template is used. Default: the one whose `modelFrom`
    /// names this pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Longest wait for the temporary Deployment to become available, in seconds.
    #[serde(default = "default_ready_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub ready_timeout_seconds: i64,
}

fn default_ready_timeout() -> i64 {
    600
}

/// The stage whose reported metrics a gate judges.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GateStage {
    #[default]
    Evaluate,
    Integration,
}

/// A gate on one reported metric.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message("min must not be above max"))]
#[x_kube(validation = Rule::new("[has(self.maxRegression), has(self.maxRegressionPercent), has(self.minImprovement), has(self.minImprovementPercent)].filter(x, x).size() <= 1").message("set at most one of maxRegression, maxRegressionPercent, minImprovement and minImprovementPercent"))]
pub struct Gate {
    /// Metric name as the stage reports it, for example `f1` or `p99_latency_ms`.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_.:-]{0,62}$"))]
    pub metric: String,
    /// Which stage reports it.
    #[serde(default)]
    pub stage: GateStage,
    /// Which way the metric improves.
    #[serde(default)]
    pub direction: Direction,
    /// Lowest acceptable value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest acceptable value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Tolerated worsening against the baseline, in the metric's units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_regression: Option<f64>,
    /// Tolerated worsening against the baseline, in percent of the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_regression_percent: Option<f64>,
    /// Required improvement over the baseline, in the metric's units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub min_improvement: Option<f64>,
    /// Required improvement over the baseline, in percent of the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub min_improvement_percent: Option<f64>,
}

/// How a passing candidate is approved.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Approval {
    /// Wait for `modelship.io/approve-run: <run>` (or `modelship.io/reject-run: <run>`).
    #[default]
    Manual,
    /// Approve at once.
    Automatic,
}

/// What the pipeline observed and decided.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelPipelineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Idle`, `Running`, `WaitingApproval`, `Succeeded` or `Failed`: the latest run's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PipelinePhase>,

    /// The gate verdict of the latest finished run: `Passed` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,

    /// What started the latest run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trigger: Option<Trigger>,

    /// A trigger that arrived during a run; the latest wins and starts when the run ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<Trigger>,

    /// Inputs seen last, to tell what changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<RunInputs>,

    /// The inputs of the latest successful run; the same inputs again start nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful: Option<RunInputs>,

    /// The `modelship.io/run` token already acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_run_request: Option<String>,

    /// The last time the schedule fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,

    /// The next time the schedule fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<String>,

    /// Counter for run names.
    #[serde(default)]
    pub run_count: i64,

    /// Runs, newest first, at most `runHistoryLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<Run>,

    /// The latest candidate that passed its gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_candidate: Option<Candidate>,

    /// The latest approved candidate: what a ModelDeployment with `modelFrom` serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_approved: Option<Candidate>,

    /// The version production serves, as reported by the following ModelDeployment, and the
    /// metrics it passed with: the baseline of the next run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<Candidate>,

    /// `Ready`, `Running`, `Failed`, `WaitingApproval`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Where the latest run stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PipelinePhase {
    /// No run yet, or nothing to do.
    Idle,
    /// A run's Jobs are running.
    Running,
    /// A candidate passed and waits for `modelship.io/approve-run`.
    WaitingApproval,
    /// The latest run produced an approved candidate.
    Succeeded,
    /// The latest run failed a stage or a gate, or was rejected.
    Failed,
}

impl PipelinePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelinePhase::Idle => "Idle",
            PipelinePhase::Running => "Running",
            PipelinePhase::WaitingApproval => "WaitingApproval",
            PipelinePhase::Succeeded => "Succeeded",
            PipelinePhase::Failed => "Failed",
        }
    }
}

/// What starts a run.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum TriggerReason {
    /// The source revision changed.
    Source,
    /// The data version changed.
    Data,
    /// The schedule fired.
    Schedule,
    /// A `modelship.io/run` annotation with a new token.
    Manual,
}

impl TriggerReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerReason::Source => "source",
            TriggerReason::Data => "data",
            TriggerReason::Schedule => "schedule",
            TriggerReason::Manual => "manual",
        }
    }
}

/// A trigger and what it saw.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    pub reason: TriggerReason,
    /// What changed, for example `revision a1b2c3 -> f4c9a2`.
    pub detail: String,
    pub time: String,
}

/// The inputs that decide what a run trains.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunInputs {
    pub source_revision: String,
    pub data_version: String,
    /// Hash of the stage templates, gates and seed.
    pub template_hash: String,
}

/// One run of the pipeline.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// Run name, `r<number>`; Jobs are `<pipeline>-<run>-<stage>`.
    pub name: String,
    pub trigger: Trigger,
    pub inputs: RunInputs,
    pub phase: RunPhase,
    /// Why the run is where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The stage running or the one that ended the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageStatus>,
    /// Each gate's verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateResult>,
    /// The candidate this run produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Candidate>,
    /// The production version the run was measured against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_version: Option<String>,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// Where a run stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunPhase {
    Running,
    WaitingApproval,
    Succeeded,
    Failed,
    Rejected,
}

/// One stage's Job and what it reported.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    pub name: String,
    pub job: String,
    pub phase: StagePhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Metrics the stage reported.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Baseline metrics the stage measured in the same run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub baseline_metrics: BTreeMap<String, f64>,
}

/// Where a stage stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StagePhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// A gate's verdict for one run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GateResult {
    pub metric: String,
    pub stage: GateStage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The bound applied, for example `>= 0.912 (baseline 0.902 + 0.01)`.
    pub bound: String,
    pub verdict: Verdict,
    pub reason: String,
}

/// A versioned candidate and how to reproduce it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// Full version, `<model>-v<semver>-<date>-<short revision>`.
    pub version: String,
    /// The semantic version.
    pub semver: String,
    pub artifact: String,
    /// The run that produced it.
    pub run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reproducibility: Option<Reproducibility>,
}

/// Everything needed to rebuild a candidate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Reproducibility {
    pub source_repository: String,
    pub source_revision: String,
    pub data_uri: String,
    pub data_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_sha256: Option<String>,
    pub seed: i64,
    pub template_hash: String,
    /// Image digests the stage pods actually ran, `<stage>/<container>` → image ID.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// The metrics the candidate passed its gates with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}
