//! `ModelPipeline`: turns a commit, new data, a schedule or a request into a validated,
//! trained, evaluated, gated and versioned model candidate.
use super::common::{Condition, Direction, PodTemplate, Verdict};
use jiff::Timestamp;
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
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS label (lower-case letters, digits and '-', starting with a letter): the integration stage names a Service after it"),
)]
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

    /// Metric gates on the evaluation (and integration) results. One gate per metric and
    /// stage (a list keyed by `metric` and `stage`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["metric", "stage"]))]
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
    #[schemars(
        regex(pattern = r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$"),
        length(max = 1024)
    )]
    pub artifact_base: String,

    /// Other bases under which train may report its artifact (`artifact.uri`). A reported URI
    /// under neither `artifactBase` nor one of these fails the run (`ArtifactRefused`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(
            regex(pattern = r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$"),
            length(max = 1024)
        )
    )]
    pub allowed_artifact_bases: Vec<String>,
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
    #[schemars(
        regex(pattern = r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$"),
        length(max = 2048)
    )]
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
    /// Cron expression (5 fields, or 6 with seconds), for example `0 3 * * 1` for Mondays at
    /// 03:00. It may fire at most once a minute.
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

/// A stage of a run, in the order stages run.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Checks,
    Validate,
    Train,
    Evaluate,
    Integration,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    #[schemars(
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_.:-]{0,62}$"),
        length(min = 1, max = 63)
    )]
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

/// What the pipeline observed and decided. Everything about a run lives here and in the
/// run's Jobs, so a restarted operator resumes where the previous one stopped.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelPipelineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Idle`, `Running`, `WaitingApproval`, `Succeeded` or `Failed`: the newest run's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PipelinePhase>,

    /// The gate verdict of the newest run that was judged: `Pass` or `Fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,

    /// Where the newest run stands, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// What started the newest run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trigger: Option<Trigger>,

    /// A trigger that arrived during a run; the latest wins and starts when the run ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<Trigger>,

    /// Inputs seen last, to tell what changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<RunInputs>,

    /// The inputs of the newest run that passed its gates; the same inputs again start
    /// nothing unless the run is requested (`modelship.io/run`) or scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful: Option<RunInputs>,

    /// The last `modelship.io/approve-run` value handled: the run and candidate (version,
    /// artifact, sha256) it approved and when, or why it was refused. A value acts once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<super::common::HandledApproval>,

    /// The `modelship.io/run` token already acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_run_request: Option<String>,

    /// The schedule and time zone `nextScheduleTime` was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_schedule: Option<String>,

    /// The last time the schedule fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Timestamp>,

    /// The next time the schedule fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Timestamp>,

    /// Runs started so far; the next run is `r<runCount + 1>`.
    #[serde(default)]
    pub run_count: i64,

    /// Runs, newest first, at most `runHistoryLimit` (a run that is still running or waiting
    /// for approval is always kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<Run>,

    /// The newest candidate that passed its gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_candidate: Option<Candidate>,

    /// The newest approved candidate: what a ModelDeployment with `modelFrom` serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_approved: Option<Candidate>,

    /// The version production trusts, as the ModelDeployment that follows this pipeline
    /// reports it, and the metrics it passed its gates with: the baseline of the next run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<ProductionModel>,

    /// `Ready`, `Running`, `WaitingApproval`, `Succeeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Where the newest run stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PipelinePhase {
    /// No run yet.
    Idle,
    /// A run's stages are running.
    Running,
    /// A candidate passed its gates and waits for `modelship.io/approve-run`.
    WaitingApproval,
    /// The newest run produced an approved candidate.
    Succeeded,
    /// The newest run failed a stage or a gate, or its candidate was rejected.
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
    /// The source revision changed (or the pipeline is new).
    Source,
    /// The data version changed.
    Data,
    /// The schedule fired.
    Schedule,
    /// A `modelship.io/run` annotation with a new token.
    Manual,
}

impl TriggerReason {
    pub const ALL: [TriggerReason; 4] = [
        TriggerReason::Source,
        TriggerReason::Data,
        TriggerReason::Schedule,
        TriggerReason::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TriggerReason::Source => "source",
            TriggerReason::Data => "data",
            TriggerReason::Schedule => "schedule",
            TriggerReason::Manual => "manual",
        }
    }

    /// Whether the trigger asks for a run even when the inputs are those of the last
    /// successful run: a request or a retraining cadence is explicit.
    pub fn forces(self) -> bool {
        matches!(self, TriggerReason::Manual | TriggerReason::Schedule)
    }
}

/// A trigger and what it saw.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    pub reason: TriggerReason,
    /// What changed, for example `source revision a1b2c3 -> f4c9a2`.
    pub detail: String,
    pub time: Timestamp,
}

/// The inputs that decide what a run trains.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunInputs {
    pub source_revision: String,
    pub data_version: String,
    /// Hash of the stages (templates, limits), gates and seed.
    pub template_hash: String,
}

/// One run of the pipeline.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// Run name, `r<number>`; its Jobs are `<pipeline>-<run>-<stage>`.
    pub name: String,
    pub trigger: Trigger,
    pub inputs: RunInputs,
    pub phase: RunPhase,
    /// Why the run is where it is, in CamelCase: `StageFailed`, `CheckFailed`,
    /// `InvalidResult`, `ArtifactRefused`, `ArtifactMismatch`, `GatesFailed`, `Approved`,
    /// `Rejected`, `Superseded`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why the run is where it is, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The stage running, or the one that ended the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// The candidate version this run builds (`MODELSHIP_CANDIDATE_VERSION`).
    pub version: String,
    /// Its semantic version.
    pub semver: String,
    /// Where this run's candidate is written (`MODELSHIP_CANDIDATE_URI`).
    pub artifact: String,
    /// The artifact train reported (URI and sha256), fixed when train ended: what evaluate
    /// scores, integration serves and the candidate publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_artifact: Option<ArtifactRef>,
    /// The production model the run is measured against, as it was when the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<ProductionModel>,
    /// The stages of the run, in order, as planned when it started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageStatus>,
    /// The gates' verdicts, once judged: `Pass` only when every gate passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Each gate's verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateResult>,
    /// The candidate, once the run passed its gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Candidate>,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

/// Where a run stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunPhase {
    /// Its stages are running.
    Running,
    /// Its candidate passed and waits for `modelship.io/approve-run` naming the run.
    WaitingApproval,
    /// Its candidate was approved.
    Succeeded,
    /// A stage, a result or a gate failed.
    Failed,
    /// Its candidate was rejected (`modelship.io/reject-run`) or superseded by a newer one
    /// before approval.
    Rejected,
}

impl RunPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Running => "Running",
            RunPhase::WaitingApproval => "WaitingApproval",
            RunPhase::Succeeded => "Succeeded",
            RunPhase::Failed => "Failed",
            RunPhase::Rejected => "Rejected",
        }
    }

    /// Whether the run has ended (nothing more happens to it).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunPhase::Succeeded | RunPhase::Failed | RunPhase::Rejected
        )
    }
}

/// One stage's Job and what it reported.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    pub name: Stage,
    /// The Job's name.
    pub job: String,
    pub phase: StagePhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Exit code of the stage's container when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// What went wrong, or what the stage is waiting for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Metrics the stage reported.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Metrics of the production model, measured by the stage in the same run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub baseline_metrics: BTreeMap<String, f64>,
    /// The artifact the stage reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactRef>,
    /// Digest of the dataset the stage read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    /// Image each container actually ran (its digest where the runtime reports one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// Integration only: the address of the candidate served for the test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_url: Option<String>,
}

/// Where a stage stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StagePhase {
    /// Not started yet.
    Pending,
    /// Integration only: the candidate's temporary Deployment is starting.
    Starting,
    /// Its Job runs.
    Running,
    Succeeded,
    Failed,
}

/// An artifact a stage reported.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A gate's verdict for one run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GateResult {
    pub metric: String,
    pub stage: GateStage,
    /// The candidate's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The baseline's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// Where the baseline's value comes from: `run` (measured by the stage in this run) or
    /// `production` (recorded when the production version passed its own gates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_from: Option<String>,
    /// The bounds applied, for example `>= 0.8; >= 0.892 (baseline 0.902 - 0.01)`.
    pub bound: String,
    /// The gate's relative bound was not applied: no baseline was available.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relative_skipped: bool,
    /// `Pass` or `Fail`.
    pub verdict: Verdict,
    pub reason: String,
}

/// A versioned candidate and how to reproduce it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// Full version, `<model>-v<semver>-<date>-<short revision>`: a label value.
    pub version: String,
    /// The semantic version.
    pub semver: String,
    /// Where the model is.
    pub artifact: String,
    /// The run that produced it.
    pub run: String,
    /// When it passed its gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<Timestamp>,
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
    /// The dataset's digest as the train (or validate) stage reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_digest: Option<String>,
    /// The artifact's sha256 as the train stage reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_sha256: Option<String>,
    pub seed: i64,
    pub template_hash: String,
    /// The production version it was measured against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_version: Option<String>,
    /// Image each stage's containers actually ran, `<stage>/<container>` → image (digest).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// The evaluation metrics the candidate passed its gates with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// The integration metrics the candidate passed its gates with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub integration_metrics: BTreeMap<String, f64>,
}

/// The model production serves: a run's baseline.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProductionModel {
    pub version: String,
    pub artifact: String,
    /// The ModelDeployment that serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The run of this pipeline that produced it, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// When the pipeline first saw production trust it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// The evaluation metrics it passed its gates with (empty for a version this pipeline
    /// did not produce).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// The integration metrics it passed its gates with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub integration_metrics: BTreeMap<String, f64>,
}

impl ModelPipelineStatus {
    /// The condition of a type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// The names of the runs that wait for approval, in status order.
    pub fn waiting_for_approval(&self) -> Vec<&str> {
        self.runs
            .iter()
            .filter(|r| r.phase == RunPhase::WaitingApproval)
            .map(|r| r.name.as_str())
            .collect()
    }
}
