//! The life of a pipeline's runs: what starts one, how its stages advance, how gates,
//! candidates and approvals settle it. Pure: everything observed is given, and the next
//! status comes back with the events and metrics that explain it. The reconciler then
//! makes the Jobs and serving objects match the status.
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
    Approval, Candidate, GateStage, ModelPipeline, ModelPipelineStatus, PipelinePhase,
    ProductionModel, Reproducibility, Run, RunInputs, RunPhase, StagePhase, Trigger, TriggerReason,
    Verdict,
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

fn parse_ts(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

fn seconds_between(from: Option<&str>, to: Timestamp) -> f64 {
    parse_ts(from)
        .map(|t| to.duration_since(t).as_secs_f64().max(0.0))
        .unwrap_or(0.0)
}

/// The artifact a run's candidate is at: where train said it wrote it, else where it was told to.
pub fn effective_artifact(run: &Run) -> String {
    run.stages
        .iter()
        .find(|s| s.name == Stage::Train.as_str())
        .and_then(|s| s.artifact.as_ref())
        .and_then(|a| a.uri.clone())
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
        let now = self.w.now.to_string();
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
        st.finished_at = Some(now.to_string());
        st.message = Some(message.clone());
        st.exit_code = exit_code.or(st.exit_code);
        let stage = Stage::parse(&st.name)
            .map(Stage::as_str)
            .unwrap_or("unknown");
        let took = seconds_between(st.started_at.as_deref(), now);
        run.stage = Some(st.name.clone());
        let name = run.name.clone();
        self.d.stage_durations.push((stage, "failed", took));
        let text = format!("{name}: {message}");
        self.note(true, reason, text.clone());
        self.finish(idx, RunPhase::Failed, reason, text);
    }

    /// Advances the running run, stage by stage, as far as what was observed allows.
    fn advance(&mut self) {
        let Some(idx) = self.active() else { return };
        loop {
            let run = &self.d.status.runs[idx];
            let Some(si) = run
                .stages
                .iter()
                .position(|s| s.phase != StagePhase::Succeeded)
            else {
                self.passed(idx);
                return;
            };
            let Some(stage) = Stage::parse(&run.stages[si].name) else {
                let message = format!("unknown stage {:?}", run.stages[si].name);
                self.fail_stage(idx, si, "StageFailed", message, None);
                return;
            };
            let progressed = match run.stages[si].phase {
                StagePhase::Pending => {
                    self.start_stage(idx, si, stage);
                    false
                }
                StagePhase::Starting => {
                    self.starting(idx, si);
                    false
                }
                StagePhase::Running => self.running(idx, si, stage),
                StagePhase::Failed => {
                    let message = run.stages[si]
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("stage {} failed", stage.as_str()));
                    self.finish(idx, RunPhase::Failed, "StageFailed", message);
                    false
                }
                StagePhase::Succeeded => true,
            };
            if !progressed {
                return;
            }
        }
    }

    fn start_stage(&mut self, idx: usize, si: usize, stage: Stage) {
        let now = self.w.now.to_string();
        let pipeline = self.w.pipeline.name_any();
        let run_name = self.d.status.runs[idx].name.clone();
        let message = if stage == Stage::Integration {
            let port = match &self.w.integration {
                Ok(port) => *port,
                Err(why) => {
                    self.fail_stage(
                        idx,
                        si,
                        "NoServingTemplate",
                        format!("stage integration cannot start: {why}"),
                        None,
                    );
                    return;
                }
            };
            let st = &mut self.d.status.runs[idx].stages[si];
            st.phase = StagePhase::Starting;
            st.service_url = Some(serving::service_url(self.w.pipeline, &run_name, port));
            let deadline = self.integration_timeout();
            self.wake_in(deadline);
            format!(
                "starting the candidate as Deployment {} for the integration test",
                serving::serving_name(&pipeline, &run_name)
            )
        } else {
            self.d.status.runs[idx].stages[si].phase = StagePhase::Running;
            format!("Job {} started", job_name(&pipeline, &run_name, stage))
        };
        let run = &mut self.d.status.runs[idx];
        run.stage = Some(stage.as_str().to_string());
        run.message = Some(format!("{}: stage {}: {message}", run.name, stage.as_str()));
        let st = &mut run.stages[si];
        st.started_at = Some(now);
        st.message = Some(message.clone());
        let text = format!("{run_name}: stage {}: {message}", stage.as_str());
        self.note(false, "StageStarted", text);
    }

    fn integration_timeout(&self) -> Duration {
        let secs = self
            .w
            .pipeline
            .spec
            .stages
            .integration
            .as_ref()
            .map(|i| i.ready_timeout_seconds)
            .unwrap_or(600);
        Duration::from_secs(u64::try_from(secs).unwrap_or(600))
    }

    /// The integration stage waits for its temporary Deployment.
    fn starting(&mut self, idx: usize, si: usize) {
        let now = self.w.now;
        let pipeline = self.w.pipeline.name_any();
        let run_name = self.d.status.runs[idx].name.clone();
        let deployment = serving::serving_name(&pipeline, &run_name);
        if self.w.serving.get(&deployment).copied().unwrap_or(false) {
            let job = job_name(&pipeline, &run_name, Stage::Integration);
            let message = format!("Deployment {deployment} is available; Job {job} started");
            let run = &mut self.d.status.runs[idx];
            run.stages[si].phase = StagePhase::Running;
            run.stages[si].message = Some(message.clone());
            run.message = Some(format!("{run_name}: stage integration: {message}"));
            self.note(false, "ServingReady", format!("{run_name}: {message}"));
            return;
        }
        let timeout = self.integration_timeout();
        let waited = seconds_between(
            self.d.status.runs[idx].stages[si].started_at.as_deref(),
            now,
        );
        if waited >= timeout.as_secs_f64() {
            let message = format!(
                "stage integration: Deployment {deployment} serving the candidate did not become available within {}s (spec.stages.integration.readyTimeoutSeconds)",
                timeout.as_secs()
            );
            self.fail_stage(idx, si, "ServingUnavailable", message, None);
            return;
        }
        self.wake_in(Duration::from_secs_f64(
            (timeout.as_secs_f64() - waited).max(1.0),
        ));
    }

    /// A stage whose Job runs. Returns whether the stage succeeded (the next may start).
    fn running(&mut self, idx: usize, si: usize, stage: Stage) -> bool {
        let now = self.w.now;
        let job = self.d.status.runs[idx].stages[si].job.clone();
        let Some(view) = self.w.jobs.get(&job) else {
            return false;
        };
        match &view.state {
            JobState::Missing | JobState::Active => false,
            JobState::Foreign => {
                self.d.status.runs[idx].stages[si].message = Some(format!(
                    "waiting for Job {job}, left by an earlier pipeline of the same name, to be deleted"
                ));
                self.wake_in(Duration::from_secs(5));
                false
            }
            JobState::Failed {
                reason,
                message,
                failed_at,
            } => {
                // Failed pods stay with their Job; give the pod watch a moment to show the
                // exit code and message. A deadline deletes the pods, so nothing is waited for.
                let pods_kept = reason != "DeadlineExceeded";
                let recent = failed_at
                    .is_none_or(|t| now.duration_since(t).as_secs_f64() <= POD_GRACE.as_secs_f64());
                if view.pod.is_none() && pods_kept && recent {
                    self.wake_in(Duration::from_secs(1));
                    return false;
                }
                let pod = view.pod.clone().unwrap_or_default();
                self.stage_failed(idx, si, stage, reason, message, &pod);
                false
            }
            JobState::Succeeded { completed_at } => {
                let Some(pod) = &view.pod else {
                    let lost = completed_at.is_some_and(|t| {
                        now.duration_since(t).as_secs_f64() > POD_GRACE.as_secs_f64()
                    });
                    if lost {
                        let message = format!(
                            "stage {}: Job {job} succeeded but its pod is gone, so its result cannot be read",
                            stage.as_str()
                        );
                        self.fail_stage(idx, si, "InvalidResult", message, None);
                    } else {
                        self.wake_in(Duration::from_secs(1));
                    }
                    return false;
                };
                self.stage_succeeded(idx, si, stage, pod)
            }
        }
    }

    fn stage_failed(
        &mut self,
        idx: usize,
        si: usize,
        stage: Stage,
        job_reason: &str,
        job_message: &str,
        pod: &PodOutcome,
    ) {
        let st = &mut self.d.status.runs[idx].stages[si];
        st.images = pod.images.clone();
        // A stage may still report what it measured before it failed (a validation's drift).
        if let Ok(Some(r)) = results::parse(pod.message.as_deref(), false) {
            st.metrics = r.metrics;
            st.baseline_metrics = r.baseline_metrics;
        }
        let said = pod
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| truncate(m, MAX_MESSAGE));
        let (reason, message) = if pod.exit_code == Some(EXIT_CHECK_FAILED) {
            let mut m = format!(
                "stage {} failed its check (exit code {EXIT_CHECK_FAILED}, not retried)",
                stage.as_str()
            );
            if let Some(said) = &said {
                m.push_str(&format!(": {said}"));
            }
            ("CheckFailed", m)
        } else {
            let mut m = format!("stage {} failed: {job_reason}", stage.as_str());
            if !job_message.is_empty() {
                m.push_str(&format!(" ({job_message})"));
            }
            if let Some(code) = pod.exit_code {
                m.push_str(&format!("; exit code {code}"));
            }
            if let Some(said) = &said {
                m.push_str(&format!(": {said}"));
            }
            ("StageFailed", m)
        };
        self.fail_stage(idx, si, reason, message, pod.exit_code);
    }

    fn stage_succeeded(&mut self, idx: usize, si: usize, stage: Stage, pod: &PodOutcome) -> bool {
        let now = self.w.now;
        self.d.status.runs[idx].stages[si].images = pod.images.clone();
        let result = match results::parse(pod.message.as_deref(), stage.requires_result()) {
            Ok(r) => r.unwrap_or_default(),
            Err(why) => {
                let message = format!("stage {} reported an invalid result: {why}", stage.as_str());
                self.fail_stage(idx, si, "InvalidResult", message, pod.exit_code);
                return false;
            }
        };
        let run = &mut self.d.status.runs[idx];
        let run_name = run.name.clone();
        let st = &mut run.stages[si];
        let StageResult {
            metrics,
            baseline_metrics,
            artifact,
            dataset_digest,
        } = result;
        st.metrics = metrics;
        st.baseline_metrics = baseline_metrics;
        st.artifact = artifact;
        st.dataset_digest = dataset_digest;
        st.phase = StagePhase::Succeeded;
        st.finished_at = Some(now.to_string());
        st.exit_code = pod.exit_code;
        st.message = Some("succeeded".into());
        let took = seconds_between(st.started_at.as_deref(), now);
        let reported = if st.metrics.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                st.metrics
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        self.d
            .stage_durations
            .push((stage.as_str(), "succeeded", took));
        self.note(
            false,
            "StageSucceeded",
            format!(
                "{run_name}: stage {} succeeded in {took:.0}s{reported}",
                stage.as_str()
            ),
        );

        let gate_stage = match stage {
            Stage::Evaluate => GateStage::Evaluate,
            Stage::Integration => GateStage::Integration,
            _ => return true,
        };
        self.judge(idx, si, gate_stage)
    }

    /// Judges the gates of one stage; a failure ends the run. Returns whether they passed.
    fn judge(&mut self, idx: usize, si: usize, gate_stage: GateStage) -> bool {
        let empty = BTreeMap::new();
        let run = &self.d.status.runs[idx];
        let st = &run.stages[si];
        let production = run.baseline.as_ref().map(|b| match gate_stage {
            GateStage::Evaluate => &b.metrics,
            GateStage::Integration => &b.integration_metrics,
        });
        let measured = Measured {
            metrics: &st.metrics,
            run_baseline: &st.baseline_metrics,
            production: production.unwrap_or(&empty),
        };
        let results = gates::judge_stage(&self.w.pipeline.spec.gates, gate_stage, measured);
        self.d
            .gate_verdicts
            .extend(results.iter().map(|r| r.verdict));
        let passed = gates::all_pass(&results);
        let summary = gates::failures(&results);
        let run = &mut self.d.status.runs[idx];
        run.gates.retain(|g| g.stage != gate_stage);
        run.gates.extend(results);
        if !passed {
            run.verdict = Some(Verdict::Fail);
            run.stage = Some(run.stages[si].name.clone());
            let name = run.name.clone();
            let message = format!("{name}: gates failed, no candidate published: {summary}");
            self.note(true, "GatesFailed", message.clone());
            self.finish(idx, RunPhase::Failed, "GatesFailed", message);
        }
        passed
    }

    /// Every stage succeeded and every gate passed: the run has a candidate.
    fn passed(&mut self, idx: usize) {
        let now = self.w.now;
        let spec = &self.w.pipeline.spec;
        let run = &self.d.status.runs[idx];
        let stage = |s: Stage| run.stages.iter().find(|st| st.name == s.as_str());
        let metrics_of = |s: Stage| stage(s).map(|st| st.metrics.clone()).unwrap_or_default();
        let images = run
            .stages
            .iter()
            .flat_map(|st| {
                st.images
                    .iter()
                    .map(move |(c, image)| (format!("{}/{c}", st.name), image.clone()))
            })
            .collect();
        let digest = [Stage::Train, Stage::Validate, Stage::Evaluate]
            .into_iter()
            .find_map(|s| stage(s).and_then(|st| st.dataset_digest.clone()));
        let candidate = Candidate {
            version: run.version.clone(),
            semver: run.semver.clone(),
            artifact: effective_artifact(run),
            run: run.name.clone(),
            created_at: Some(now.to_string()),
            approved_at: None,
            reproducibility: Some(Reproducibility {
                source_repository: spec.source.repository.clone(),
                source_revision: run.inputs.source_revision.clone(),
                data_uri: spec.data.uri.clone(),
                data_version: run.inputs.data_version.clone(),
                data_digest: digest,
                artifact_sha256: stage(Stage::Train)
                    .and_then(|st| st.artifact.as_ref())
                    .and_then(|a| a.sha256.clone()),
                seed: spec.seed,
                template_hash: run.inputs.template_hash.clone(),
                baseline_version: run.baseline.as_ref().map(|b| b.version.clone()),
                images,
                metrics: metrics_of(Stage::Evaluate),
                integration_metrics: metrics_of(Stage::Integration),
            }),
        };
        let name = run.name.clone();
        let inputs = run.inputs.clone();
        let gates_summary = if run.gates.is_empty() {
            "no gates are configured".to_string()
        } else {
            run.gates
                .iter()
                .map(|g| format!("{} {}", g.metric, g.bound))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let skipped = run.gates.iter().any(|g| g.bound.contains("skipped"));

        let run = &mut self.d.status.runs[idx];
        run.verdict = Some(Verdict::Pass);
        run.stage = None;
        run.candidate = Some(candidate.clone());
        self.d.status.latest_candidate = Some(candidate.clone());
        self.d.status.last_successful = Some(inputs);
        let mut message = format!("{name}: every gate passed ({gates_summary})");
        if skipped {
            message.push_str("; no baseline was available, so relative bounds were skipped");
        }
        self.note(false, "GatesPassed", message);

        // An older candidate still waiting for approval is superseded by this newer one.
        for i in 0..self.d.status.runs.len() {
            if i != idx && self.d.status.runs[i].phase == RunPhase::WaitingApproval {
                let old = &self.d.status.runs[i];
                let message = format!(
                    "{}: candidate {} superseded by {} from {name} before it was approved",
                    old.name, old.version, candidate.version
                );
                self.note(false, "CandidateSuperseded", message.clone());
                self.finish(i, RunPhase::Rejected, "Superseded", message);
            }
        }

        match spec.approval {
            Approval::Automatic => {
                self.approve(idx, "approved automatically (spec.approval: Automatic)")
            }
            Approval::Manual => {
                let p = self.w.pipeline.name_any();
                let message = format!(
                    "{name}: candidate {} passed its gates and waits for approval: kubectl annotate modelpipeline {p} {ANNOTATION_APPROVE_RUN}={name} (or {ANNOTATION_REJECT_RUN}={name})",
                    candidate.version
                );
                let run = &mut self.d.status.runs[idx];
                run.phase = RunPhase::WaitingApproval;
                run.reason = Some("WaitingApproval".into());
                run.message = Some(message.clone());
                self.note(false, "AwaitingApproval", message);
            }
        }
    }

    fn approve(&mut self, idx: usize, how: &str) {
        let now = self.w.now.to_string();
        let run = &mut self.d.status.runs[idx];
        let Some(candidate) = run.candidate.as_mut() else {
            return;
        };
        candidate.approved_at = Some(now);
        let candidate = candidate.clone();
        let name = run.name.clone();
        if self
            .d
            .status
            .latest_candidate
            .as_ref()
            .is_some_and(|c| c.version == candidate.version)
        {
            self.d.status.latest_candidate = Some(candidate.clone());
        }
        // Approvals only move forward: an older run never replaces a newer approved one.
        let newer_approved = self
            .d
            .status
            .latest_approved
            .as_ref()
            .is_some_and(|a| run_number(&a.run) > run_number(&name));
        if !newer_approved {
            self.d.status.latest_approved = Some(candidate.clone());
        }
        let message = format!(
            "{name}: candidate {} {how}; it is published as status.latestApproved",
            candidate.version
        );
        self.note(false, "CandidateApproved", message.clone());
        self.finish(idx, RunPhase::Succeeded, "Approved", message);
    }

    /// The approve and reject annotations, for runs waiting for them.
    fn approvals(&mut self) {
        let a = self.w.annotations;
        for idx in 0..self.d.status.runs.len() {
            let run = &self.d.status.runs[idx];
            if run.phase != RunPhase::WaitingApproval {
                continue;
            }
            // Rejection wins when both name the run: the safe side.
            if a.reject_run.as_deref() == Some(run.name.as_str()) {
                let message = format!(
                    "{}: candidate {} rejected with {ANNOTATION_REJECT_RUN}; nothing is published",
                    run.name, run.version
                );
                self.note(true, "CandidateRejected", message.clone());
                self.finish(idx, RunPhase::Rejected, "Rejected", message);
            } else if a.approve_run.as_deref() == Some(run.name.as_str()) {
                self.approve(idx, &format!("approved with {ANNOTATION_APPROVE_RUN}"));
            }
        }
    }

    /// New triggers start a run, or queue behind the running one.
    fn triggers(&mut self, inputs: &RunInputs) {
        let now = self.w.now;
        let status = &self.d.status;
        let next = parse_ts(status.next_schedule_time.as_deref());
        let tick = match schedule::tick(
            self.w.schedule,
            status.observed_schedule.as_deref(),
            next,
            now,
        ) {
            Ok(t) => t,
            Err(why) => {
                self.note(true, "ScheduleInvalid", why);
                schedule::Tick::default()
            }
        };
        let status = &mut self.d.status;
        status.observed_schedule = tick.key.clone();
        status.next_schedule_time = tick.next.map(|t| t.to_string());
        if let Some(fired) = tick.fired {
            status.last_schedule_time = Some(fired.to_string());
        }
        if let Some(next) = tick.next {
            let wait = Duration::try_from(next.duration_since(now)).unwrap_or_default();
            self.wake_in(wait.max(Duration::from_millis(100)));
        }
        let status = &self.d.status;
        let changes = Changes {
            observed: status.observed.as_ref(),
            current: inputs,
            token: self.w.annotations.run.as_deref(),
            handled_token: status.handled_run_request.as_deref(),
            schedule_fired: tick.fired,
            schedule_key: tick.key.as_deref(),
        };
        let trigger = triggers::detect(&changes, now);
        let status = &mut self.d.status;
        status.observed = Some(inputs.clone());
        if let Some(token) = &self.w.annotations.run {
            status.handled_run_request = Some(token.clone());
        }
        let busy = self.active().is_some();
        match trigger {
            Some(t) if busy => {
                let running = self
                    .active()
                    .map(|i| self.d.status.runs[i].name.clone())
                    .unwrap_or_default();
                let message = format!(
                    "{} trigger queued behind {running}: {}",
                    t.reason.as_str(),
                    t.detail
                );
                if let Some(old) = &self.d.status.queued {
                    self.note(
                        false,
                        "RunQueued",
                        format!(
                            "{message} (replaces the queued {} trigger)",
                            old.reason.as_str()
                        ),
                    );
                } else {
                    self.note(false, "RunQueued", message);
                }
                self.d.status.queued = Some(t);
            }
            Some(t) => {
                self.d.status.queued = None;
                self.start_or_skip(t, inputs);
            }
            None if !busy => {
                if let Some(q) = self.d.status.queued.take() {
                    self.start_or_skip(q, inputs);
                }
            }
            None => {}
        }
    }

    fn start_or_skip(&mut self, t: Trigger, inputs: &RunInputs) {
        if !triggers::worth_running(t.reason, inputs, self.d.status.last_successful.as_ref()) {
            let last = self
                .d
                .status
                .latest_candidate
                .as_ref()
                .map(|c| c.run.clone())
                .unwrap_or_else(|| "the last successful run".into());
            self.note(
                false,
                "RunSkipped",
                format!(
                    "{} trigger ({}) starts nothing: the source revision, data version and templates are those of {last}; annotate {ANNOTATION_RUN}=<new token> to run anyway",
                    t.reason.as_str(),
                    t.detail
                ),
            );
            return;
        }
        self.start(t, inputs);
    }

    fn start(&mut self, t: Trigger, inputs: &RunInputs) {
        let now = self.w.now;
        let p = self.w.pipeline;
        let pipeline = p.name_any();
        let status = &mut self.d.status;
        status.run_count += 1;
        let name = format!("r{}", status.run_count);
        let latest = status.latest_candidate.as_ref().map(|c| c.semver.as_str());
        let planned = version::plan(&p.spec.model, latest, now, &inputs.source_revision);
        let (semver, version, artifact) = match &planned {
            Ok(v) => (v.semver.clone(), v.version.clone(), v.artifact.clone()),
            Err(_) => Default::default(),
        };
        let stages = pending_stages(&p.spec, &pipeline, &name);
        let run = Run {
            name: name.clone(),
            trigger: t.clone(),
            inputs: inputs.clone(),
            phase: RunPhase::Running,
            reason: Some("Started".into()),
            message: Some(format!("{name} started")),
            stage: None,
            version: version.clone(),
            semver,
            artifact,
            baseline: status.production.clone(),
            stages,
            verdict: None,
            gates: Vec::new(),
            candidate: None,
            started_at: now.to_string(),
            finished_at: None,
        };
        status.runs.insert(0, run);
        status.last_trigger = Some(t.clone());
        self.d.started.push(t.reason);
        let baseline = self
            .d
            .status
            .production
            .as_ref()
            .map(|b| format!(" against {}", b.version))
            .unwrap_or_default();
        self.note(
            false,
            "RunStarted",
            format!(
                "{name} started by {} ({}): builds {version}{baseline}",
                t.reason.as_str(),
                t.detail
            ),
        );
        if let Err(why) = planned {
            self.note(true, "InvalidVersion", format!("{name}: {why}"));
            self.finish(
                0,
                RunPhase::Failed,
                "InvalidVersion",
                format!("{name}: {why}"),
            );
            return;
        }
        self.advance();
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
        let waiting: Vec<&str> = status
            .runs
            .iter()
            .filter(|r| r.phase == RunPhase::WaitingApproval)
            .map(|r| r.name.as_str())
            .collect();
        if let Some(first) = waiting.first() {
            let msg = format!("{first} waits for {ANNOTATION_APPROVE_RUN}={first}");
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
    s.advance();
    s.approvals();
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
            .position(|st| st.name == stage.as_str())
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

#[cfg(test)]
mod tests;
