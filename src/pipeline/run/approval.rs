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

    /// The approve and reject annotations, for runs waiting for them.
    pub(super) fn approvals(&mut self) {
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
}
