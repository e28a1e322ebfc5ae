//! The life of a pipeline's runs: what starts one, how its stages advance, how gates,
//! candidates and approvals settle it. Pure: everything observed is given, and the next
//! status comes back with the events and metrics that explain it. The reconciler then
//! makes the Jobs and serving objects match the status. `decide` is here; the steps it takes
//! are in `starts` (triggers), `stages` (each stage's Job) and `approval` (gates, approval,
//! the published candidate).
use super::artifact;
use super::gates::{self, Measured};
use super::history;
use super::jobs::{EXIT_CHECK_FAILED, Stage, job_name, pending_stages};
use super::results::{self, StageResult};
use super::schedule::{self, Schedule};
use super::serving;
use super::triggers::{
    self, ANNOTATION_APPROVE_RUN, ANNOTATION_REJECT_RUN, ANNOTATION_RUN, Annotations, Changes,
};
use super::version;
use crate::api::{
    Approval, ApprovalResult, ArtifactRef, Candidate, GateStage, HandledApproval, ModelPipeline,
    ModelPipelineStatus, PipelinePhase, ProductionModel, Reproducibility, Run, RunInputs, RunPhase,
    StagePhase, Trigger, TriggerReason, Verdict,
};
use crate::conditions::{Status, set};
use jiff::Timestamp;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a finished Job's pod may stay unseen before the result counts as lost.
pub const POD_GRACE: Duration = Duration::from_secs(60);
/// Longest piece of a container's message kept in status.
const MAX_MESSAGE: usize = 1024;

/// What a stage's Job was seen doing.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    /// Not created yet (it is created once the status that starts the stage is written).
    Missing,
    /// A Job of that name that another object owns (a deleted pipeline of the same name).
    Foreign,
    Active,
    Succeeded {
        completed_at: Option<Timestamp>,
    },
    Failed {
        reason: String,
        message: String,
        failed_at: Option<Timestamp>,
    },
}

/// What the pod that decided a Job's outcome left behind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodOutcome {
    /// The stage's (first) container's exit code and termination message.
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    /// Each container's image as actually run (its digest where the runtime reports one).
    pub images: BTreeMap<String, String>,
}

/// A stage's Job and its decisive pod.
#[derive(Clone, Debug, PartialEq)]
pub struct JobView {
    pub state: JobState,
    pub pod: Option<PodOutcome>,
}

/// Everything a decision depends on.
#[derive(Clone, Debug)]
pub struct World<'a> {
    pub now: Timestamp,
    pub pipeline: &'a ModelPipeline,
    pub annotations: &'a Annotations,
    /// The inputs a run would use now, or why they are unknown (a missing ConfigMap).
    pub inputs: Result<RunInputs, String>,
    pub schedule: Option<&'a Schedule>,
    /// Stage Jobs by name.
    pub jobs: &'a BTreeMap<String, JobView>,
    /// Temporary serving Deployments by name, and whether each is available.
    pub serving: &'a BTreeMap<String, bool>,
    /// The integration stage's serving Service port, or why there is no serving template.
    pub integration: Result<i32, String>,
    /// What production trusts now.
    pub production: Option<ProductionModel>,
}

/// An event to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The next status and what explains it.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    pub status: ModelPipelineStatus,
    pub notes: Vec<Note>,
    /// Triggers of the runs started.
    pub started: Vec<TriggerReason>,
    /// Results of the runs finished: `succeeded`, `failed`, `rejected`.
    pub finished: Vec<&'static str>,
    /// Stages that ended: stage, `succeeded` or `failed`, seconds.
    pub stage_durations: Vec<(&'static str, &'static str, f64)>,
    /// Each gate verdict judged.
    pub gate_verdicts: Vec<Verdict>,
    /// Runs dropped from the history.
    pub dropped: Vec<String>,
    /// When to look again at the latest, whatever the watches say.
    pub wake: Option<Duration>,
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn seconds_between(from: Option<Timestamp>, to: Timestamp) -> f64 {
    from.map(|t| to.duration_since(t).as_secs_f64().max(0.0))
        .unwrap_or(0.0)
}

/// The artifact the run evaluates, serves and publishes: the one fixed when train ended, else
/// (train has not ended) where train was told to write it.
pub fn effective_artifact(run: &Run) -> ArtifactRef {
    run.trained_artifact.clone().unwrap_or_else(|| ArtifactRef {
        uri: Some(run.artifact.clone()),
        sha256: None,
    })
}

/// The artifact's URI, as the candidate and the serving objects name it.
pub fn artifact_uri(run: &Run) -> String {
    effective_artifact(run)
        .uri
        .unwrap_or_else(|| run.artifact.clone())
}

struct Step<'a> {
    w: &'a World<'a>,
    d: Decision,
}

impl<'a> Step<'a> {
    fn note(&mut self, warning: bool, reason: &'static str, message: String) {
        self.d.notes.push(Note {
            warning,
            reason,
            message,
        });
    }

    fn wake_in(&mut self, after: Duration) {
        self.d.wake = Some(self.d.wake.map_or(after, |w| w.min(after)));
    }

    fn active(&self) -> Option<usize> {
        self.d
            .status
            .runs
            .iter()
            .position(|r| r.phase == RunPhase::Running)
    }

    /// Production as the following ModelDeployment reports it.
    fn production(&mut self) {
        let seen = self.w.production.clone();
        if seen.as_ref().map(|p| &p.version)
            != self.d.status.production.as_ref().map(|p| &p.version)
            && let Some(p) = &seen
        {
            let from = p.deployment.as_deref().unwrap_or("its ModelDeployment");
            self.note(
                false,
                "ProductionChanged",
                format!(
                    "production ({from}) now trusts {}: the baseline of the next run",
                    p.version
                ),
            );
        }
        self.d.status.production = seen;
    }

    /// Ends the run at `idx` with `phase`.
    fn finish(&mut self, idx: usize, phase: RunPhase, reason: &str, message: String) {
        let now = self.w.now;
        let run = &mut self.d.status.runs[idx];
        run.phase = phase;
        run.reason = Some(reason.to_string());
        run.message = Some(message);
        run.finished_at = Some(now);
        self.d.finished.push(match phase {
            RunPhase::Succeeded => "succeeded",
            RunPhase::Rejected => "rejected",
            _ => "failed",
        });
    }

    /// Fails the run at `idx` because of stage `si`.
    fn fail_stage(
        &mut self,
        idx: usize,
        si: usize,
        reason: &'static str,
        message: String,
        exit_code: Option<i32>,
    ) {
        let now = self.w.now;
        let run = &mut self.d.status.runs[idx];
        let st = &mut run.stages[si];
        st.phase = StagePhase::Failed;
        st.finished_at = Some(now);
        st.message = Some(message.clone());
        st.exit_code = exit_code.or(st.exit_code);
        let stage = st.name.as_str();
        let took = seconds_between(st.started_at, now);
        run.stage = Some(st.name);
        let name = run.name.clone();
        self.d.stage_durations.push((stage, "failed", took));
        let text = format!("{name}: {message}");
        self.note(true, reason, text.clone());
        self.finish(idx, RunPhase::Failed, reason, text);
    }

    /// Phase, verdict, message and conditions from the runs.
    fn summarize(&mut self) {
        let now = self.w.now;
        let generation = self.w.pipeline.metadata.generation;
        let status = &mut self.d.status;
        let newest = status.runs.first();
        status.phase = Some(match newest.map(|r| r.phase) {
            None => PipelinePhase::Idle,
            Some(RunPhase::Running) => PipelinePhase::Running,
            Some(RunPhase::WaitingApproval) => PipelinePhase::WaitingApproval,
            Some(RunPhase::Succeeded) => PipelinePhase::Succeeded,
            Some(RunPhase::Failed) | Some(RunPhase::Rejected) => PipelinePhase::Failed,
        });
        status.message = newest
            .and_then(|r| r.message.clone())
            .or_else(|| Some("no run yet".into()));
        status.verdict = status.runs.iter().find_map(|r| r.verdict);

        let running = status.runs.iter().find(|r| r.phase == RunPhase::Running);
        match running {
            Some(r) => {
                let msg = r
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("{} is running", r.name));
                set(
                    &mut status.conditions,
                    "Running",
                    Status::True,
                    "RunInProgress",
                    msg,
                    generation,
                    now,
                )
            }
            None => set(
                &mut status.conditions,
                "Running",
                Status::False,
                "Idle",
                "no run is in progress",
                generation,
                now,
            ),
        }
        let waiting = status.waiting_for_approval();
        if let Some(first) = waiting.first() {
            let value = approval::approval_value(status, first);
            let msg = format!("{first} waits for {ANNOTATION_APPROVE_RUN}={value}");
            set(
                &mut status.conditions,
                "WaitingApproval",
                Status::True,
                "CandidateWaiting",
                msg,
                generation,
                now,
            );
        } else {
            set(
                &mut status.conditions,
                "WaitingApproval",
                Status::False,
                "NothingWaiting",
                "no candidate waits for approval",
                generation,
                now,
            );
        }
        if let Some(r) = status.runs.iter().find(|r| r.phase.is_finished()) {
            let reason = r.reason.clone().unwrap_or_else(|| r.phase.as_str().into());
            let msg = r.message.clone().unwrap_or_default();
            let ok = Status::from_bool(r.phase == RunPhase::Succeeded);
            set(
                &mut status.conditions,
                "Succeeded",
                ok,
                &reason,
                msg,
                generation,
                now,
            );
        }
    }
}

/// The number in a run name (`r12` → 12), for ordering.
pub fn run_number(name: &str) -> i64 {
    name.strip_prefix('r')
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Decides the next status of a pipeline.
pub fn decide(w: &World<'_>) -> Decision {
    let current = w.pipeline.status.clone().unwrap_or_default();
    let mut s = Step {
        w,
        d: Decision {
            status: current,
            ..Decision::default()
        },
    };
    s.d.status.observed_generation = w.pipeline.metadata.generation;
    s.production();
    // An approval is judged against the runs as they were when it was seen, before any run
    // advances to waiting in this same decision.
    s.rejections();
    s.approvals();
    s.advance();
    s.rejections();
    if let Ok(inputs) = &w.inputs {
        s.triggers(inputs);
    }
    let limit = usize::try_from(w.pipeline.spec.run_history_limit).unwrap_or(1);
    s.d.dropped = history::trim(&mut s.d.status.runs, limit);
    s.summarize();
    let (now, generation) = (w.now, w.pipeline.metadata.generation);
    let conditions = &mut s.d.status.conditions;
    match &w.inputs {
        Ok(_) => set(
            conditions,
            "Ready",
            Status::True,
            "Accepted",
            "the pipeline is valid and its inputs are known",
            generation,
            now,
        ),
        Err(why) => set(
            conditions,
            "Ready",
            Status::False,
            "InputsUnavailable",
            why.clone(),
            generation,
            now,
        ),
    }
    s.d
}

/// The API server refused an object the stage needs (its Job, or the serving objects):
/// the run fails with the server's reason instead of retrying a template that cannot work.
pub fn rejected(
    p: &ModelPipeline,
    status: &ModelPipelineStatus,
    run: &str,
    stage: Stage,
    what: &str,
    why: &str,
    now: Timestamp,
) -> Decision {
    let annotations = Annotations::default();
    let jobs = BTreeMap::new();
    let serving = BTreeMap::new();
    let w = World {
        now,
        pipeline: p,
        annotations: &annotations,
        inputs: Err(String::new()),
        schedule: None,
        jobs: &jobs,
        serving: &serving,
        integration: Err(String::new()),
        production: status.production.clone(),
    };
    let mut s = Step {
        w: &w,
        d: Decision {
            status: status.clone(),
            ..Decision::default()
        },
    };
    if let Some(idx) =
        s.d.status
            .runs
            .iter()
            .position(|r| r.name == run && r.phase == RunPhase::Running)
        && let Some(si) = s.d.status.runs[idx]
            .stages
            .iter()
            .position(|st| st.name == stage)
    {
        let message = format!(
            "stage {}: the API server rejected {what}: {why}",
            stage.as_str()
        );
        s.fail_stage(idx, si, "Rejected", message, None);
    }
    s.summarize();
    s.d
}

mod approval;
pub use approval::approval_value;
mod stages;
mod starts;

#[cfg(test)]
mod tests;
