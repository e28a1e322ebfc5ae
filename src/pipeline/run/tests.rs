//! Unit tests of the run state machine: what starts a run, how stages advance, how gates,
//! approvals, queueing and history settle it.
use super::*;
use crate::api::{ArtifactRef, ModelPipeline, StageStatus};
use crate::pipeline::testing::{T0, sample};
use crate::pipeline::triggers::current_inputs;

const SHA: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A stage's result that names the artifact train reports (what evaluate must score).
fn result(metrics: &str) -> String {
    format!(r#"{{"schemaVersion":1,"metrics":{metrics},"artifact":{{"sha256":"{SHA}"}}}}"#)
}

/// A pipeline and what the reconciler would observe around it.
struct Fixture {
    p: ModelPipeline,
    now: Timestamp,
    annotations: Annotations,
    data_error: Option<String>,
    schedule: Option<Schedule>,
    jobs: BTreeMap<String, JobView>,
    serving: BTreeMap<String, bool>,
    integration: Result<i32, String>,
    production: Option<ProductionModel>,
}

impl Fixture {
    fn new() -> Self {
        Self::with(sample())
    }

    fn with(p: ModelPipeline) -> Self {
        Self {
            p,
            now: ts(T0),
            annotations: Annotations::default(),
            data_error: None,
            schedule: None,
            jobs: BTreeMap::new(),
            serving: BTreeMap::new(),
            integration: Ok(80),
            production: None,
        }
    }

    fn inputs(&self) -> Result<RunInputs, String> {
        match &self.data_error {
            Some(e) => Err(e.clone()),
            None => Ok(current_inputs(
                &self.p.spec,
                self.p.spec.data.version.clone().unwrap_or_default(),
            )),
        }
    }

    fn decide(&self) -> Decision {
        let w = World {
            now: self.now,
            pipeline: &self.p,
            annotations: &self.annotations,
            inputs: self.inputs(),
            schedule: self.schedule.as_ref(),
            jobs: &self.jobs,
            serving: &self.serving,
            integration: self.integration.clone(),
            production: self.production.clone(),
        };
        decide(&w)
    }

    /// Decides and keeps the status, as the reconciler's write would.
    fn step(&mut self) -> Decision {
        let d = self.decide();
        self.p.status = Some(d.status.clone());
        d
    }

    fn status(&self) -> &ModelPipelineStatus {
        self.p.status.as_ref().unwrap()
    }

    fn run(&self, name: &str) -> &Run {
        self.status()
            .runs
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no run {name}"))
    }

    fn later(&mut self, secs: i64) {
        self.now = self
            .now
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .unwrap();
    }

    fn job(&mut self, name: &str, state: JobState, pod: Option<PodOutcome>) {
        self.jobs.insert(name.into(), JobView { state, pod });
    }

    fn succeed(&mut self, name: &str, message: Option<&str>) {
        let pod = PodOutcome {
            exit_code: Some(0),
            message: message.map(Into::into),
            images: BTreeMap::from([(
                "main".into(),
                format!("registry.example/{name}@sha256:{}", &SHA[..12]),
            )]),
        };
        self.job(
            name,
            JobState::Succeeded {
                completed_at: Some(self.now),
            },
            Some(pod),
        );
    }

    fn fail(&mut self, name: &str, exit_code: i32, message: &str, job_reason: &str) {
        let pod = PodOutcome {
            exit_code: Some(exit_code),
            message: Some(message.into()),
            images: BTreeMap::new(),
        };
        let state = JobState::Failed {
            reason: job_reason.into(),
            message: "Job has failed".into(),
            failed_at: Some(self.now),
        };
        self.job(name, state, Some(pod));
    }

    /// Runs r1 to the end of evaluate with `f1`.
    fn through_evaluate(&mut self, f1: f64) -> Decision {
        self.step();
        self.succeed("fraud-r1-train", Some(&train_result()));
        self.step();
        self.succeed(
            "fraud-r1-evaluate",
            Some(&result(&format!(r#"{{"f1":{f1}}}"#))),
        );
        self.step()
    }
}

fn train_result() -> String {
    format!(
        r#"{{"schemaVersion":1,"metrics":{{"loss":0.12}},"artifact":{{"uri":"s3://models/fraud/fraud-v1.0.0-2026-11-26-f4c9a2/","sha256":"{SHA}"}},"datasetDigest":"sha256:data"}}"#
    )
}

fn reasons(d: &Decision) -> Vec<&'static str> {
    d.notes.iter().map(|n| n.reason).collect()
}

fn stage<'a>(run: &'a Run, name: &str) -> &'a StageStatus {
    run.stages.iter().find(|s| s.name.as_str() == name).unwrap()
}

fn condition<'a>(s: &'a ModelPipelineStatus, t: &str) -> (&'a str, &'a str) {
    let c = s.condition(t).unwrap_or_else(|| panic!("no condition {t}"));
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn a_new_pipeline_starts_its_first_run_at_once() {
    let mut f = Fixture::new();
    let d = f.step();
    assert_eq!(reasons(&d), vec!["RunStarted", "StageStarted"]);
    assert_eq!(d.started, vec![TriggerReason::Source]);
    let s = f.status();
    assert_eq!(s.run_count, 1);
    assert_eq!(s.phase, Some(PipelinePhase::Running));
    assert_eq!(
        s.last_trigger.as_ref().unwrap().reason,
        TriggerReason::Source
    );
    assert_eq!(s.observed.as_ref().unwrap().source_revision, "f4c9a2e1");
    let r = f.run("r1");
    assert_eq!(r.phase, RunPhase::Running);
    assert_eq!(r.version, "fraud-v1.0.0-2026-11-26-f4c9a2");
    assert_eq!(
        r.artifact,
        "s3://models/fraud/fraud-v1.0.0-2026-11-26-f4c9a2/"
    );
    assert_eq!(r.stage, Some(Stage::Train));
    assert_eq!(stage(r, "train").phase, StagePhase::Running);
    assert_eq!(stage(r, "train").job, "fraud-r1-train");
    assert_eq!(stage(r, "evaluate").phase, StagePhase::Pending);
    assert_eq!(condition(s, "Running"), ("True", "RunInProgress"));
    assert_eq!(condition(s, "Ready"), ("True", "Accepted"));
}

#[test]
fn nothing_new_decides_nothing_new() {
    let mut f = Fixture::new();
    f.step();
    let before = f.status().clone();
    // Label and annotation edits change nothing the decision reads.
    f.p.metadata.labels = Some(BTreeMap::from([("team".into(), "risk".into())]));
    f.p.metadata.annotations = Some(BTreeMap::from([("note".into(), "x".into())]));
    f.job("fraud-r1-train", JobState::Active, None);
    let d = f.step();
    assert!(d.notes.is_empty(), "{:?}", d.notes);
    assert_eq!(f.status(), &before);
}

#[test]
fn stages_advance_in_order_and_a_passing_run_waits_for_approval() {
    let mut f = Fixture::new();
    f.step();
    f.succeed("fraud-r1-train", Some(&train_result()));
    let d = f.step();
    assert_eq!(reasons(&d), vec!["StageSucceeded", "StageStarted"]);
    assert_eq!(d.stage_durations, vec![("train", "succeeded", 0.0)]);
    let r = f.run("r1");
    assert_eq!(stage(r, "train").phase, StagePhase::Succeeded);
    assert_eq!(stage(r, "train").metrics["loss"], 0.12);
    assert_eq!(stage(r, "evaluate").phase, StagePhase::Running);

    f.later(30);
    f.succeed("fraud-r1-evaluate", Some(&result(r#"{"f1":0.9}"#)));
    let d = f.step();
    assert_eq!(
        reasons(&d),
        vec!["StageSucceeded", "GatesPassed", "AwaitingApproval"]
    );
    assert_eq!(d.gate_verdicts, vec![Verdict::Pass]);
    assert!(d.finished.is_empty());
    let s = f.status();
    assert_eq!(s.phase, Some(PipelinePhase::WaitingApproval));
    assert_eq!(s.verdict, Some(Verdict::Pass));
    assert_eq!(
        condition(s, "WaitingApproval"),
        ("True", "CandidateWaiting")
    );
    assert_eq!(condition(s, "Running"), ("False", "Idle"));
    let c = s.latest_candidate.as_ref().unwrap();
    assert_eq!(c.version, "fraud-v1.0.0-2026-11-26-f4c9a2");
    assert_eq!(c.approved_at, None);
    assert!(
        s.latest_approved.is_none(),
        "nothing is published before approval"
    );
    assert_eq!(s.last_successful.as_ref(), Some(&f.run("r1").inputs));
    let msg = f.run("r1").message.clone().unwrap();
    assert!(
        msg.contains(
            "kubectl annotate --overwrite modelpipeline fraud modelship.io/approve-run=r1"
        ),
        "{msg}"
    );
}

#[test]
fn the_candidate_carries_a_reproducibility_record() {
    let mut f = Fixture::new();
    f.through_evaluate(0.9);
    let c = f.status().latest_candidate.clone().unwrap();
    assert_eq!(c.semver, "1.0.0");
    assert_eq!(c.run, "r1");
    assert_eq!(c.created_at, Some(ts(T0)));
    let r = c.reproducibility.unwrap();
    assert_eq!(r.source_repository, "https://git.example/fraud.git");
    assert_eq!(r.source_revision, "f4c9a2e1");
    assert_eq!(r.data_uri, "s3://data/fraud");
    assert_eq!(r.data_version, "2026-11-26");
    assert_eq!(r.data_digest.as_deref(), Some("sha256:data"));
    assert_eq!(r.artifact_sha256.as_deref(), Some(SHA));
    assert_eq!(r.seed, 42);
    assert_eq!(r.template_hash, triggers::template_hash(&f.p.spec));
    assert_eq!(r.metrics, BTreeMap::from([("f1".to_string(), 0.9)]));
    assert_eq!(
        r.images.keys().collect::<Vec<_>>(),
        vec!["evaluate/main", "train/main"]
    );
}

#[test]
fn approval_publishes_the_candidate_and_only_for_the_named_run() {
    let mut f = Fixture::new();
    f.through_evaluate(0.9);
    f.annotations.approve_run = Some("r7".into());
    let d = f.step();
    assert_eq!(
        reasons(&d),
        vec!["ApprovalRefused"],
        "an annotation naming another run approves nothing, and says so"
    );
    let refused = f.status().approval.clone().unwrap();
    assert_eq!(
        (refused.value.as_str(), refused.result),
        ("r7", ApprovalResult::Refused)
    );
    let why = refused.message.unwrap();
    assert!(
        why.contains("there is no run r7") && why.contains("waiting: r1"),
        "{why}"
    );
    assert!(f.status().latest_approved.is_none());
    assert!(
        f.step().notes.is_empty(),
        "refused once, not at every round"
    );
    f.later(60);
    f.annotations.approve_run = Some("r1".into());
    let d = f.step();
    assert_eq!(reasons(&d), vec!["CandidateApproved"]);
    // Status records the value acted on, when, and the candidate it approved.
    let acted = f.status().approval.clone().unwrap();
    assert_eq!(
        (
            acted.value.as_str(),
            acted.result,
            acted.run.as_deref(),
            acted.acted_at
        ),
        (
            "r1",
            ApprovalResult::Approved,
            Some("r1"),
            Some(ts("2026-11-26T10:01:00Z"))
        )
    );
    assert_eq!(
        acted.version.as_deref(),
        Some("fraud-v1.0.0-2026-11-26-f4c9a2")
    );
    assert_eq!(acted.sha256.as_deref(), Some(SHA));
    assert_eq!(
        acted.artifact.as_deref(),
        Some("s3://models/fraud/fraud-v1.0.0-2026-11-26-f4c9a2/")
    );
    assert_eq!(d.finished, vec!["succeeded"]);
    let s = f.status();
    assert_eq!(s.phase, Some(PipelinePhase::Succeeded));
    let a = s.latest_approved.as_ref().unwrap();
    assert_eq!(a.version, "fraud-v1.0.0-2026-11-26-f4c9a2");
    assert_eq!(a.approved_at, Some(ts("2026-11-26T10:01:00Z")));
    assert_eq!(
        s.latest_candidate.as_ref().unwrap().approved_at,
        a.approved_at
    );
    assert_eq!(f.run("r1").reason.as_deref(), Some("Approved"));
    assert_eq!(condition(s, "Succeeded"), ("True", "Approved"));
    // Once approved, the annotation acts no more.
    assert!(f.step().notes.is_empty());
}

#[test]
fn rejection_publishes_nothing_and_wins_over_approval() {
    let mut f = Fixture::new();
    f.through_evaluate(0.9);
    f.annotations.approve_run = Some("r1".into());
    f.annotations.reject_run = Some("r1".into());
    let d = f.step();
    assert_eq!(reasons(&d), vec!["CandidateRejected", "ApprovalRefused"]);
    assert_eq!(d.finished, vec!["rejected"]);
    let s = f.status();
    assert_eq!(s.phase, Some(PipelinePhase::Failed));
    assert!(s.latest_approved.is_none());
    assert_eq!(f.run("r1").phase, RunPhase::Rejected);
    assert_eq!(condition(f.status(), "Succeeded"), ("False", "Rejected"));
}

#[test]
fn an_approval_given_before_its_run_waits_never_approves_it() {
    let mut f = Fixture::new();
    f.step();
    // Approved in advance, while r1 still trains: its candidate is not known yet.
    f.annotations.approve_run = Some("r1".into());
    let d = f.step();
    assert_eq!(reasons(&d), vec!["ApprovalRefused"]);
    let why = f
        .status()
        .approval
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(why.contains("run r1 is Running"), "{why}");
    f.succeed("fraud-r1-train", Some(&train_result()));
    f.step();
    f.succeed("fraud-r1-evaluate", Some(&result(r#"{"f1":0.9}"#)));
    f.step();
    f.step();
    let r = f.run("r1");
    assert_eq!(
        r.phase,
        RunPhase::WaitingApproval,
        "the early value does not act later"
    );
    assert!(
        r.message.as_ref().unwrap().contains("approve-run=r1/2"),
        "the command given uses a value not handled yet: {:?}",
        r.message
    );
    assert!(f.status().latest_approved.is_none());
    // A new value for the same run approves it now that its candidate is known.
    f.annotations.approve_run = Some("r1/2".into());
    let d = f.step();
    assert_eq!(reasons(&d), vec!["CandidateApproved"]);
    let acted = f.status().approval.clone().unwrap();
    assert_eq!(
        (acted.value.as_str(), acted.result),
        ("r1/2", ApprovalResult::Approved)
    );
    assert_eq!(acted.sha256.as_deref(), Some(SHA));
}

#[test]
fn automatic_approval_publishes_at_once() {
    let mut f = Fixture::new();
    f.p.spec.approval = Approval::Automatic;
    let d = f.through_evaluate(0.9);
    assert_eq!(
        reasons(&d),
        vec!["StageSucceeded", "GatesPassed", "CandidateApproved"]
    );
    let s = f.status();
    assert_eq!(s.phase, Some(PipelinePhase::Succeeded));
    assert_eq!(s.latest_approved.as_ref().unwrap().run, "r1");
}

#[test]
fn failing_gates_fail_the_run_with_per_metric_reasons() {
    let mut f = Fixture::new();
    f.production = Some(ProductionModel {
        version: "fraud-v0.9.0-2026-10-01-aaaaaa".into(),
        artifact: "s3://models/fraud/old/".into(),
        metrics: BTreeMap::from([("f1".into(), 0.95)]),
        ..Default::default()
    });
    let d = f.through_evaluate(0.9);
    assert_eq!(reasons(&d), vec!["StageSucceeded", "GatesFailed"]);
    assert_eq!(d.gate_verdicts, vec![Verdict::Fail]);
    assert_eq!(d.finished, vec!["failed"]);
    let s = f.status();
    assert_eq!(s.phase, Some(PipelinePhase::Failed));
    assert_eq!(s.verdict, Some(Verdict::Fail));
    assert!(
        s.latest_candidate.is_none() && s.latest_approved.is_none() && s.last_successful.is_none()
    );
    let r = f.run("r1");
    assert_eq!(r.reason.as_deref(), Some("GatesFailed"));
    assert_eq!(r.stage, Some(Stage::Evaluate));
    let g = &r.gates[0];
    assert_eq!(
        (g.metric.as_str(), g.value, g.baseline, g.verdict),
        ("f1", Some(0.9), Some(0.95), Verdict::Fail)
    );
    assert_eq!(g.baseline_from.as_deref(), Some("production"));
    assert_eq!(
        g.reason,
        "f1 0.9 is below 0.94 (baseline 0.95 with at most 0.01 regression)"
    );
    assert!(
        r.message
            .as_ref()
            .unwrap()
            .contains("f1: f1 0.9 is below 0.94"),
        "{:?}",
        r.message
    );
    assert_eq!(
        r.baseline.as_ref().unwrap().version,
        "fraud-v0.9.0-2026-10-01-aaaaaa"
    );
}

#[test]
fn a_baseline_measured_in_the_run_wins_over_production() {
    let mut f = Fixture::new();
    f.production = Some(ProductionModel {
        version: "old".into(),
        metrics: BTreeMap::from([("f1".into(), 0.99)]),
        ..Default::default()
    });
    f.step();
    f.succeed("fraud-r1-train", Some(&train_result()));
    f.step();
    f.succeed(
        "fraud-r1-evaluate",
        Some(&format!(
            r#"{{"schemaVersion":1,"metrics":{{"f1":0.9}},"baselineMetrics":{{"f1":0.88}},"artifact":{{"sha256":"{SHA}"}}}}"#
        )),
    );
    f.step();
    let r = f.run("r1");
    assert_eq!(r.phase, RunPhase::WaitingApproval);
    assert_eq!(
        (r.gates[0].baseline, r.gates[0].baseline_from.as_deref()),
        (Some(0.88), Some("run"))
    );
    assert_eq!(stage(r, "evaluate").baseline_metrics["f1"], 0.88);
}

#[test]
fn without_any_baseline_the_relative_bound_is_skipped_and_said() {
    let mut f = Fixture::new();
    let d = f.through_evaluate(0.85);
    let r = f.run("r1");
    assert_eq!(r.phase, RunPhase::WaitingApproval);
    assert!(
        r.gates[0]
            .bound
            .contains("relative bound skipped: no baseline")
    );
    let passed = d.notes.iter().find(|n| n.reason == "GatesPassed").unwrap();
    assert!(
        passed.message.contains("no baseline was available"),
        "{}",
        passed.message
    );
}

#[test]
fn a_missing_gated_metric_fails() {
    let mut f = Fixture::new();
    f.step();
    f.succeed("fraud-r1-train", Some(&train_result()));
    f.step();
    f.succeed("fraud-r1-evaluate", Some(&result(r#"{"precision":0.9}"#)));
    f.step();
    let r = f.run("r1");
    assert_eq!(r.reason.as_deref(), Some("GatesFailed"));
    assert_eq!(
        r.gates[0].reason,
        "f1 was not reported by the evaluate stage"
    );
}

fn with_checks_and_validate() -> Fixture {
    let mut p = sample();
    p.spec.stages.checks = Some(p.spec.stages.train.clone());
    p.spec.stages.validate = Some(p.spec.stages.train.clone());
    Fixture::with(p)
}

#[test]
fn a_failed_validation_stops_the_run_before_training() {
    let mut f = with_checks_and_validate();
    f.step();
    assert_eq!(stage(f.run("r1"), "checks").phase, StagePhase::Running);
    f.succeed("fraud-r1-checks", None);
    f.step();
    assert_eq!(stage(f.run("r1"), "validate").phase, StagePhase::Running);
    f.fail(
        "fraud-r1-validate",
        3,
        r#"{"schemaVersion":1,"metrics":{"drift_share":0.4}}"#,
        "PodFailurePolicy",
    );
    let d = f.step();
    assert_eq!(reasons(&d), vec!["CheckFailed"]);
    assert_eq!(d.stage_durations, vec![("validate", "failed", 0.0)]);
    let r = f.run("r1");
    assert_eq!(r.phase, RunPhase::Failed);
    assert_eq!(r.reason.as_deref(), Some("CheckFailed"));
    assert_eq!(r.stage, Some(Stage::Validate));
    let v = stage(r, "validate");
    assert_eq!((v.phase, v.exit_code), (StagePhase::Failed, Some(3)));
    assert_eq!(
        v.metrics["drift_share"], 0.4,
        "what a failed stage measured is kept"
    );
    assert!(
        v.message
            .as_ref()
            .unwrap()
            .starts_with("stage validate failed its check (exit code 3, not retried)")
    );
    assert_eq!(
        stage(r, "train").phase,
        StagePhase::Pending,
        "training never started"
    );
    assert_eq!(condition(f.status(), "Succeeded"), ("False", "CheckFailed"));
}

#[test]
fn a_crash_names_the_job_reason_exit_code_and_message() {
    let mut f = Fixture::new();
    f.step();
    f.fail(
        "fraud-r1-train",
        137,
        "OOMKilled while loading data",
        "BackoffLimitExceeded",
    );
    let d = f.step();
    assert_eq!(reasons(&d), vec!["StageFailed"]);
    let r = f.run("r1");
    assert_eq!(
        r.message.as_deref(),
        Some(
            "r1: stage train failed: BackoffLimitExceeded (Job has failed); exit code 137: OOMKilled while loading data"
        )
    );
}

#[test]
fn an_invalid_result_fails_the_run_with_what_was_wrong() {
    let mut f = Fixture::new();
    f.step();
    f.succeed(
        "fraud-r1-train",
        Some(r#"{"schemaVersion":2,"metrics":{}}"#),
    );
    let d = f.step();
    assert_eq!(reasons(&d), vec!["InvalidResult"]);
    let r = f.run("r1");
    assert_eq!(r.reason.as_deref(), Some("InvalidResult"));
    assert_eq!(
        r.message.as_deref(),
        Some(
            "r1: stage train reported an invalid result: the termination message has schemaVersion 2, but this operator reads only schemaVersion 1"
        )
    );
    assert_eq!(stage(r, "evaluate").phase, StagePhase::Pending);
}

#[test]
fn a_required_result_that_is_missing_fails() {
    let mut f = Fixture::new();
    f.step();
    f.succeed("fraud-r1-train", None);
    f.step();
    assert!(
        f.run("r1")
            .message
            .as_ref()
            .unwrap()
            .contains("left no termination message")
    );
}

#[test]
fn a_finished_job_waits_briefly_for_its_pod_then_gives_up() {
    let mut f = Fixture::new();
    f.step();
    f.job(
        "fraud-r1-train",
        JobState::Succeeded {
            completed_at: Some(f.now),
        },
        None,
    );
    let d = f.step();
    assert_eq!(d.wake, Some(Duration::from_secs(1)));
    assert_eq!(f.run("r1").phase, RunPhase::Running);
    f.later(61);
    f.step();
    let r = f.run("r1");
    assert_eq!(r.reason.as_deref(), Some("InvalidResult"));
    assert!(r.message.as_ref().unwrap().contains("its pod is gone"));
}

#[test]
fn a_failed_job_waits_briefly_for_its_pod_unless_its_deadline_removed_it() {
    let mut f = Fixture::new();
    f.step();
    let failed = |reason: &str, at| JobState::Failed {
        reason: reason.into(),
        message: "m".into(),
        failed_at: Some(at),
    };
    f.job(
        "fraud-r1-train",
        failed("BackoffLimitExceeded", f.now),
        None,
    );
    assert_eq!(f.step().wake, Some(Duration::from_secs(1)));
    assert_eq!(f.run("r1").phase, RunPhase::Running);
    f.job("fraud-r1-train", failed("DeadlineExceeded", f.now), None);
    f.step();
    let r = f.run("r1");
    assert_eq!(r.phase, RunPhase::Failed);
    assert_eq!(
        r.message.as_deref(),
        Some("r1: stage train failed: DeadlineExceeded (m)")
    );
}

#[test]
fn a_job_of_an_earlier_pipeline_of_the_same_name_is_waited_for() {
    let mut f = Fixture::new();
    f.step();
    f.job("fraud-r1-train", JobState::Foreign, None);
    let d = f.step();
    assert_eq!(d.wake, Some(Duration::from_secs(5)));
    assert!(
        stage(f.run("r1"), "train")
            .message
            .as_ref()
            .unwrap()
            .contains("earlier pipeline of the same name")
    );
    assert_eq!(f.run("r1").phase, RunPhase::Running);
}

#[test]
fn a_trigger_during_a_run_is_queued_latest_wins_and_starts_after() {
    let mut f = Fixture::new();
    f.step();
    f.p.spec.source.revision = "b2".into();
    let d = f.step();
    assert_eq!(reasons(&d), vec!["RunQueued"]);
    assert_eq!(
        f.status().queued.as_ref().unwrap().detail,
        "source revision f4c9a2e1 -> b2"
    );
    f.p.spec.data.version = Some("2026-11-27".into());
    let d = f.step();
    assert!(
        d.notes[0]
            .message
            .contains("replaces the queued source trigger"),
        "{:?}",
        d.notes
    );
    assert_eq!(
        f.status().queued.as_ref().unwrap().reason,
        TriggerReason::Data
    );
    assert_eq!(f.status().run_count, 1, "one run at a time");

    f.fail("fraud-r1-train", 1, "boom", "BackoffLimitExceeded");
    let d = f.step();
    assert_eq!(
        reasons(&d),
        vec!["StageFailed", "RunStarted", "StageStarted"]
    );
    let s = f.status();
    assert!(s.queued.is_none());
    let r2 = f.run("r2");
    assert_eq!(r2.trigger.reason, TriggerReason::Data);
    assert_eq!(
        (
            r2.inputs.source_revision.as_str(),
            r2.inputs.data_version.as_str()
        ),
        ("b2", "2026-11-27")
    );
    assert_eq!(
        r2.version, "fraud-v1.0.0-2026-11-26-b2",
        "a failed run does not use up a version"
    );
    assert_eq!(
        s.runs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["r2", "r1"]
    );
}

#[test]
fn a_new_source_revision_starts_a_run_and_bumps_the_version() {
    let mut f = Fixture::new();
    f.p.spec.approval = Approval::Automatic;
    f.through_evaluate(0.9);
    f.later(3600);
    f.p.spec.source.revision = "0b1c2d3e".into();
    let d = f.step();
    assert_eq!(d.started, vec![TriggerReason::Source]);
    let r2 = f.run("r2");
    assert_eq!(r2.trigger.detail, "source revision f4c9a2e1 -> 0b1c2d3e");
    assert_eq!(r2.version, "fraud-v1.1.0-2026-11-26-0b1c2d");
    assert_eq!(r2.semver, "1.1.0");
}

#[test]
fn a_new_data_version_starts_a_data_run() {
    let mut f = Fixture::new();
    f.through_evaluate(0.9);
    f.p.spec.data.version = Some("2026-11-27".into());
    let d = f.step();
    assert_eq!(d.started, vec![TriggerReason::Data]);
    assert_eq!(
        f.run("r2").trigger.detail,
        "data version 2026-11-26 -> 2026-11-27"
    );
}

#[test]
fn unknown_data_version_starts_nothing_but_the_run_goes_on() {
    let mut f = Fixture::new();
    f.step();
    f.data_error = Some("waiting for ConfigMap data (spec.data.versionFrom) to exist".into());
    f.p.spec.source.revision = "other".into();
    f.succeed("fraud-r1-train", Some(&train_result()));
    let d = f.step();
    assert_eq!(reasons(&d), vec!["StageSucceeded", "StageStarted"]);
    assert_eq!(
        condition(f.status(), "Ready"),
        ("False", "InputsUnavailable")
    );
    assert!(f.status().queued.is_none());
    assert_eq!(
        f.status().observed.as_ref().unwrap().source_revision,
        "f4c9a2e1",
        "nothing was observed"
    );
}

#[test]
fn the_same_inputs_as_the_last_success_start_nothing_unless_forced() {
    let mut f = Fixture::new();
    f.p.spec.approval = Approval::Automatic;
    f.through_evaluate(0.9);
    // Back and forth: the inputs are those of r1 again.
    f.p.spec.source.revision = "b2".into();
    f.p.status
        .as_mut()
        .unwrap()
        .observed
        .as_mut()
        .unwrap()
        .source_revision = "b2".into();
    f.p.spec.source.revision = "f4c9a2e1".into();
    let d = f.step();
    assert_eq!(reasons(&d), vec!["RunSkipped"]);
    assert!(
        d.notes[0].message.contains("those of r1"),
        "{}",
        d.notes[0].message
    );
    assert_eq!(f.status().run_count, 1);
    // A request forces it.
    f.annotations.run = Some("again-1".into());
    let d = f.step();
    assert_eq!(d.started, vec![TriggerReason::Manual]);
    assert_eq!(
        f.run("r2").trigger.detail,
        "requested with modelship.io/run=again-1"
    );
    assert_eq!(f.status().handled_run_request.as_deref(), Some("again-1"));
}

#[test]
fn a_repeated_token_starts_one_run_only() {
    let mut f = Fixture::new();
    f.p.spec.approval = Approval::Automatic;
    f.through_evaluate(0.9);
    f.annotations.run = Some("t1".into());
    assert_eq!(f.step().started, vec![TriggerReason::Manual]);
    for _ in 0..3 {
        assert!(f.step().started.is_empty());
    }
    assert_eq!(f.status().run_count, 2);
    assert!(f.status().queued.is_none());
}

#[test]
fn a_token_during_a_run_is_queued_once() {
    let mut f = Fixture::new();
    f.step();
    f.annotations.run = Some("t1".into());
    assert_eq!(reasons(&f.step()), vec!["RunQueued"]);
    assert!(
        f.step().notes.is_empty(),
        "the same token queues nothing more"
    );
    assert_eq!(
        f.status().queued.as_ref().unwrap().reason,
        TriggerReason::Manual
    );
}

#[test]
fn the_schedule_fires_a_run() {
    let mut f = Fixture::new();
    f.p.spec.approval = Approval::Automatic;
    f.p.spec.triggers.schedule = Some("0 * * * *".into());
    f.schedule = Schedule::from_spec(&f.p.spec.triggers).unwrap();
    let d = f.through_evaluate(0.9);
    assert_eq!(
        f.status().next_schedule_time,
        Some(ts("2026-11-26T11:00:00Z"))
    );
    assert_eq!(f.status().observed_schedule.as_deref(), Some("0 * * * *"));
    assert_eq!(d.wake, Some(Duration::from_secs(3600)));
    f.later(1800);
    assert!(f.step().started.is_empty());
    f.later(1800);
    let d = f.step();
    assert_eq!(
        d.started,
        vec![TriggerReason::Schedule],
        "a schedule retrains even with the same inputs"
    );
    let s = f.status();
    assert_eq!(s.last_schedule_time, Some(ts("2026-11-26T11:00:00Z")));
    assert_eq!(s.next_schedule_time, Some(ts("2026-11-26T12:00:00Z")));
    assert_eq!(
        f.run("r2").trigger.detail,
        "schedule 0 * * * * fired at 2026-11-26T11:00:00Z"
    );
}

#[test]
fn an_older_waiting_candidate_is_superseded_by_a_newer_one() {
    let mut f = Fixture::new();
    f.through_evaluate(0.9);
    f.p.spec.source.revision = "b2b2b2".into();
    f.step();
    f.succeed("fraud-r2-train", Some(&train_result()));
    f.step();
    f.succeed("fraud-r2-evaluate", Some(&result(r#"{"f1":0.91}"#)));
    let d = f.step();
    assert!(reasons(&d).contains(&"CandidateSuperseded"));
    let r1 = f.run("r1");
    assert_eq!(
        (r1.phase, r1.reason.as_deref()),
        (RunPhase::Rejected, Some("Superseded"))
    );
    assert_eq!(f.run("r2").phase, RunPhase::WaitingApproval);
    assert_eq!(f.status().latest_candidate.as_ref().unwrap().run, "r2");
    assert_eq!(f.run("r2").semver, "1.1.0");
}

#[test]
fn history_is_trimmed_as_runs_finish() {
    let mut f = Fixture::new();
    f.p.spec.run_history_limit = 2;
    let mut dropped = Vec::new();
    for i in 1..=3 {
        f.annotations.run = Some(format!("t{i}"));
        dropped.extend(f.step().dropped);
        f.fail(
            &format!("fraud-r{}-train", f.status().run_count),
            1,
            "x",
            "BackoffLimitExceeded",
        );
    }
    dropped.extend(f.step().dropped);
    assert_eq!(dropped, vec!["r1"]);
    assert_eq!(
        f.status()
            .runs
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        vec!["r3", "r2"]
    );
}

fn with_integration() -> Fixture {
    let mut p = sample();
    p.spec.approval = Approval::Automatic;
    p.spec.stages.integration = Some(
        serde_json::from_value(serde_json::json!({
            "template": {"spec": {"containers": [{"name": "test", "image": "it:1"}]}},
            "readyTimeoutSeconds": 120
        }))
        .unwrap(),
    );
    p.spec.gates.push(serde_json::from_value(serde_json::json!({"metric": "p99_ms", "stage": "Integration", "direction": "LowerIsBetter", "max": 50.0})).unwrap());
    Fixture::with(p)
}

#[test]
fn integration_serves_the_candidate_then_tests_and_gates_it() {
    let mut f = with_integration();
    f.through_evaluate(0.9);
    let r = f.run("r1");
    let it = stage(r, "integration");
    assert_eq!(it.phase, StagePhase::Starting);
    assert_eq!(
        it.service_url.as_deref(),
        Some("http://fraud-r1-serve.models.svc:80")
    );
    assert!(
        it.message
            .as_ref()
            .unwrap()
            .contains("Deployment fraud-r1-serve")
    );

    f.serving.insert("fraud-r1-serve".into(), false);
    f.later(10);
    let d = f.step();
    assert!(d.notes.is_empty());
    assert_eq!(d.wake, Some(Duration::from_secs(110)));

    f.serving.insert("fraud-r1-serve".into(), true);
    let d = f.step();
    assert_eq!(reasons(&d), vec!["ServingReady"]);
    assert_eq!(stage(f.run("r1"), "integration").phase, StagePhase::Running);

    f.succeed("fraud-r1-integration", Some(&result(r#"{"p99_ms":42}"#)));
    let d = f.step();
    assert_eq!(
        reasons(&d),
        vec!["StageSucceeded", "GatesPassed", "CandidateApproved"]
    );
    let r = f.run("r1");
    assert_eq!(r.gates.len(), 2);
    assert_eq!(r.phase, RunPhase::Succeeded);
    let repro = r
        .candidate
        .as_ref()
        .unwrap()
        .reproducibility
        .as_ref()
        .unwrap();
    assert_eq!(repro.integration_metrics["p99_ms"], 42.0);
}

#[test]
fn integration_gates_can_fail_the_run() {
    let mut f = with_integration();
    f.through_evaluate(0.9);
    f.serving.insert("fraud-r1-serve".into(), true);
    f.step();
    f.succeed("fraud-r1-integration", Some(&result(r#"{"p99_ms":80}"#)));
    f.step();
    let r = f.run("r1");
    assert_eq!(r.reason.as_deref(), Some("GatesFailed"));
    assert_eq!(r.stage, Some(Stage::Integration));
    assert!(f.status().latest_candidate.is_none());
}

#[test]
fn integration_fails_when_the_candidate_never_becomes_available() {
    let mut f = with_integration();
    f.through_evaluate(0.9);
    f.later(121);
    let d = f.step();
    assert_eq!(reasons(&d), vec!["ServingUnavailable"]);
    assert!(
        f.run("r1")
            .message
            .as_ref()
            .unwrap()
            .contains("did not become available within 120s")
    );
}

#[test]
fn integration_without_a_serving_template_fails_with_the_reason() {
    let mut f = with_integration();
    f.integration = Err("no ModelDeployment follows this pipeline".into());
    f.through_evaluate(0.9);
    let r = f.run("r1");
    assert_eq!(r.reason.as_deref(), Some("NoServingTemplate"));
    assert!(
        r.message
            .as_ref()
            .unwrap()
            .contains("no ModelDeployment follows this pipeline")
    );
}

#[test]
fn train_may_say_where_the_artifact_is_under_an_allowed_base() {
    let mut f = Fixture::new();
    f.p.spec.model.allowed_artifact_bases = vec!["gs://elsewhere".into()];
    f.step();
    f.succeed(
        "fraud-r1-train",
        Some(r#"{"schemaVersion":1,"metrics":{},"artifact":{"uri":"gs://elsewhere/model/"}}"#),
    );
    f.step();
    assert_eq!(artifact_uri(f.run("r1")), "gs://elsewhere/model/");
    assert_eq!(
        stage(f.run("r1"), "train").artifact,
        Some(ArtifactRef {
            uri: Some("gs://elsewhere/model/".into()),
            sha256: None
        })
    );
}

#[test]
fn a_train_uri_outside_the_artifact_base_fails_the_run() {
    let mut f = Fixture::new();
    f.step();
    f.succeed(
        "fraud-r1-train",
        Some(&format!(
            r#"{{"schemaVersion":1,"metrics":{{}},"artifact":{{"uri":"s3://attacker/model/","sha256":"{SHA}"}}}}"#
        )),
    );
    let d = f.step();
    let r = f.run("r1");
    assert_eq!(r.phase, RunPhase::Failed);
    assert_eq!(r.reason.as_deref(), Some("ArtifactRefused"));
    assert!(
        r.message
            .as_ref()
            .unwrap()
            .contains("\"s3://attacker/model/\""),
        "{:?}",
        r.message
    );
    assert_eq!(r.trained_artifact, None);
    assert_eq!(stage(r, "evaluate").phase, StagePhase::Pending);
    assert!(reasons(&d).contains(&"ArtifactRefused"));
}

/// The stage's environment as its Job would have it.
fn job_env(f: &Fixture, run: &str, stage: Stage) -> BTreeMap<String, String> {
    let r = f.run(run);
    crate::pipeline::jobs::environment(&f.p, r, stage, None)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

#[test]
fn every_stage_after_train_and_the_candidate_use_the_artifact_train_reported() {
    let mut f = Fixture::new();
    f.p.spec.approval = Approval::Automatic;
    f.step();
    let reported = "s3://models/fraud/retrained/model-7/";
    f.succeed(
        "fraud-r1-train",
        Some(&format!(
            r#"{{"schemaVersion":1,"metrics":{{}},"artifact":{{"uri":"{reported}","sha256":"sha256:{}"}}}}"#,
            SHA.to_uppercase()
        )),
    );
    f.step();
    let fixed = ArtifactRef {
        uri: Some(reported.into()),
        sha256: Some(SHA.into()),
    };
    assert_eq!(f.run("r1").trained_artifact, Some(fixed));
    let train = job_env(&f, "r1", Stage::Train);
    assert_eq!(
        train["MODELSHIP_CANDIDATE_URI"],
        f.run("r1").artifact,
        "train writes where it is told"
    );
    assert!(!train.contains_key("MODELSHIP_ARTIFACT_SHA256"));
    let evaluate = job_env(&f, "r1", Stage::Evaluate);
    assert_eq!(evaluate["MODELSHIP_CANDIDATE_URI"], reported);
    assert_eq!(evaluate["MODELSHIP_ARTIFACT_URI"], reported);
    assert_eq!(evaluate["MODELSHIP_ARTIFACT_SHA256"], SHA);
    assert_eq!(
        job_env(&f, "r1", Stage::Integration)["MODELSHIP_ARTIFACT_SHA256"],
        SHA
    );

    f.succeed("fraud-r1-evaluate", Some(&result(r#"{"f1":0.9}"#)));
    f.step();
    let r = f.run("r1");
    assert_eq!(r.phase, RunPhase::Succeeded);
    let c = f.status().latest_approved.as_ref().unwrap();
    assert_eq!(c.artifact, reported);
    assert_eq!(
        c.reproducibility
            .as_ref()
            .unwrap()
            .artifact_sha256
            .as_deref(),
        Some(SHA)
    );
}

#[test]
fn evaluate_scoring_another_digest_or_none_fails_the_run() {
    const OTHER: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    for (scored, want) in [
        (
            format!(
                r#"{{"schemaVersion":1,"metrics":{{"f1":0.95}},"artifact":{{"sha256":"{OTHER}"}}}}"#
            ),
            format!("sha256 {OTHER}, but train reported sha256 {SHA}"),
        ),
        (
            r#"{"schemaVersion":1,"metrics":{"f1":0.95}}"#.to_string(),
            format!("reported no artifact.sha256, but train reported sha256 {SHA}"),
        ),
    ] {
        let mut f = Fixture::new();
        f.p.spec.approval = Approval::Automatic;
        f.step();
        f.succeed("fraud-r1-train", Some(&train_result()));
        f.step();
        f.succeed("fraud-r1-evaluate", Some(&scored));
        let d = f.step();
        let r = f.run("r1");
        assert_eq!(r.phase, RunPhase::Failed, "{scored}");
        assert_eq!(r.reason.as_deref(), Some("ArtifactMismatch"));
        assert!(
            r.message.as_ref().unwrap().contains(&want),
            "{:?}",
            r.message
        );
        assert!(r.candidate.is_none());
        assert!(f.status().latest_approved.is_none());
        assert!(reasons(&d).contains(&"ArtifactMismatch"));
    }
}

#[test]
fn production_changes_are_recorded_and_become_the_next_baseline() {
    let mut f = Fixture::new();
    f.p.spec.approval = Approval::Automatic;
    f.through_evaluate(0.9);
    let prod = ProductionModel {
        version: "fraud-v1.0.0-2026-11-26-f4c9a2".into(),
        metrics: BTreeMap::from([("f1".into(), 0.9)]),
        ..Default::default()
    };
    f.production = Some(prod.clone());
    let d = f.step();
    assert_eq!(reasons(&d), vec!["ProductionChanged"]);
    assert_eq!(f.status().production.as_ref(), Some(&prod));
    f.p.spec.source.revision = "c3".into();
    f.step();
    assert_eq!(f.run("r2").baseline.as_ref(), Some(&prod));
}

#[test]
fn a_version_that_cannot_be_a_label_fails_the_run_at_once() {
    let mut p = sample();
    p.spec.model.name = "a-model-name-that-is-thirty-ch".into();
    p.spec.model.initial_version = "1000000.2000000.3000000".into();
    let mut f = Fixture::with(p);
    let d = f.step();
    assert_eq!(reasons(&d), vec!["RunStarted", "InvalidVersion"]);
    assert_eq!(f.run("r1").phase, RunPhase::Failed);
    assert_eq!(d.finished, vec!["failed"]);
}

#[test]
fn a_rejected_job_fails_its_run() {
    let mut f = Fixture::new();
    f.step();
    let d = rejected(
        &f.p,
        f.status(),
        "r1",
        Stage::Train,
        "Job fraud-r1-train",
        "spec.template.spec.containers[0].image: Required value",
        f.now,
    );
    assert_eq!(reasons(&d), vec!["Rejected"]);
    let r = d.status.runs.iter().find(|r| r.name == "r1").unwrap();
    assert_eq!(r.phase, RunPhase::Failed);
    assert!(
        r.message
            .as_ref()
            .unwrap()
            .contains("the API server rejected Job fraud-r1-train: spec.template")
    );
    assert_eq!(d.status.condition("Ready"), f.status().condition("Ready"));
}

#[test]
fn run_numbers_order_runs() {
    assert!(run_number("r10") > run_number("r9"));
    assert_eq!(run_number("x"), 0);
}
