//! Gates, approval and the candidate a run publishes.
use super::*;

impl Step<'_> {
    /// Judges the gates of one stage; a failure ends the run. Returns whether they passed.
    pub(super) fn judge(&mut self, idx: usize, si: usize, gate_stage: GateStage) -> bool {
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
            run.stage = Some(run.stages[si].name);
            let name = run.name.clone();
            let message = format!("{name}: gates failed, no candidate published: {summary}");
            self.note(true, "GatesFailed", message.clone());
            self.finish(idx, RunPhase::Failed, "GatesFailed", message);
        }
        passed
    }

    /// Every stage succeeded and every gate passed: the run has a candidate.
    pub(super) fn passed(&mut self, idx: usize) {
        let now = self.w.now;
        let spec = &self.w.pipeline.spec;
        let run = &self.d.status.runs[idx];
        let stage = |s: Stage| run.stages.iter().find(|st| st.name == s);
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
            artifact: artifact_uri(run),
            run: run.name.clone(),
            created_at: Some(now),
            approved_at: None,
            reproducibility: Some(Reproducibility {
                source_repository: spec.source.repository.clone(),
                source_revision: run.inputs.source_revision.clone(),
                data_uri: spec.data.uri.clone(),
                data_version: run.inputs.data_version.clone(),
                data_digest: digest,
                artifact_sha256: effective_artifact(run).sha256,
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
        let skipped = run.gates.iter().any(|g| g.relative_skipped);

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
                let value = approval_value(&self.d.status, &name);
                let message = format!(
                    "{name}: candidate {} passed its gates and waits for approval: kubectl annotate --overwrite modelpipeline {p} {ANNOTATION_APPROVE_RUN}={value} (or {ANNOTATION_REJECT_RUN}={name})",
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

    pub(super) fn approve(&mut self, idx: usize, how: &str) {
        let now = self.w.now;
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

    /// The reject annotation, for the run waiting that it names.
    pub(super) fn rejections(&mut self) {
        let a = self.w.annotations;
        for idx in 0..self.d.status.runs.len() {
            let run = &self.d.status.runs[idx];
            if run.phase == RunPhase::WaitingApproval
                && a.reject_run.as_deref() == Some(run.name.as_str())
            {
                let message = format!(
                    "{}: candidate {} rejected with {ANNOTATION_REJECT_RUN}; nothing is published",
                    run.name, run.version
                );
                self.note(true, "CandidateRejected", message.clone());
                self.finish(idx, RunPhase::Rejected, "Rejected", message);
            }
        }
    }

    /// The approve annotation. Each value acts once, when first seen, and only on a run that
    /// waits for approval then: a value set before its run's candidate exists (or one that
    /// approved a candidate already) never approves what comes later under the same name.
    /// Runs after `rejections`, so a rejection naming the same run wins.
    pub(super) fn approvals(&mut self) {
        let now = self.w.now;
        let Some(value) = self.w.annotations.approve_run.clone() else {
            return;
        };
        if self
            .d
            .status
            .approval
            .as_ref()
            .is_some_and(|h| h.value == value)
        {
            return;
        }
        let run_name = approval_target(&value).to_string();
        let named = self.d.status.runs.iter().position(|r| r.name == run_name);
        let mut record = HandledApproval {
            value: value.clone(),
            result: ApprovalResult::Refused,
            run: named.map(|_| run_name.clone()),
            version: None,
            artifact: None,
            sha256: None,
            seen_at: now,
            acted_at: None,
            message: None,
        };
        match named.map(|i| (i, &self.d.status.runs[i])) {
            Some((idx, run)) if run.phase == RunPhase::WaitingApproval => {
                let artifact = effective_artifact(run);
                record.result = ApprovalResult::Approved;
                record.version = Some(run.version.clone());
                record.artifact = artifact.uri;
                record.sha256 = artifact.sha256;
                record.acted_at = Some(now);
                self.d.status.approval = Some(record);
                self.approve(
                    idx,
                    &format!("approved with {ANNOTATION_APPROVE_RUN}={value}"),
                );
            }
            // Approved before this operator recorded approvals: nothing to say.
            Some((_, run)) if run.reason.as_deref() == Some("Approved") => {
                record.result = ApprovalResult::Approved;
                record.version = Some(run.version.clone());
                record.acted_at = run.candidate.as_ref().and_then(|c| c.approved_at);
                self.d.status.approval = Some(record);
            }
            other => {
                let state = match other {
                    Some((_, run)) => format!("run {} is {}", run.name, run.phase.as_str()),
                    None => format!("there is no run {run_name}"),
                };
                let waiting = self.d.status.waiting_for_approval().join(", ");
                let waiting = if waiting.is_empty() {
                    "no run waits for approval".to_string()
                } else {
                    format!("waiting: {waiting}")
                };
                let message = format!(
                    "{ANNOTATION_APPROVE_RUN}={value} is refused: {state}, and only a run waiting for approval when the value is first seen can be approved ({waiting}); it will not approve anything later: once the run waits, approve it with a new value (<run>, or <run>/<token> to name it again)"
                );
                record.message = Some(message.clone());
                self.d.status.approval = Some(record);
                self.note(true, "ApprovalRefused", message);
            }
        }
    }
}

/// The approve-run value that would approve `run` now (each value acts once).
pub fn approval_value(status: &ModelPipelineStatus, run: &str) -> String {
    let used = status.approval.as_ref().map(|h| h.value.as_str());
    crate::deployment::phase::fresh_approval_value(used, run)
}

/// The run an approve-run value names: `<run>`, or `<run>/<token>` to give a run a new value.
pub fn approval_target(value: &str) -> &str {
    value.split_once('/').map_or(value, |(run, _)| run)
}
