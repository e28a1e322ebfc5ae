//! Stage by stage: start a stage's Job, follow it, and read what it reported.
use super::*;

impl Step<'_> {
    /// Advances the running run, stage by stage, as far as what was observed allows.
    pub(super) fn advance(&mut self) {
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
            let stage = run.stages[si].name;
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

    pub(super) fn start_stage(&mut self, idx: usize, si: usize, stage: Stage) {
        // A run whose train ended under an operator that did not fix the artifact: fix it
        // now from what train reported, with the same checks.
        let run = &self.d.status.runs[idx];
        if stage > Stage::Train && run.trained_artifact.is_none() {
            let reported = run
                .stages
                .iter()
                .find(|s| s.name == Stage::Train)
                .and_then(|s| s.artifact.as_ref());
            match artifact::fix(&run.artifact, reported, &self.w.pipeline.spec.model) {
                Ok(fixed) => self.d.status.runs[idx].trained_artifact = Some(fixed),
                Err(why) => {
                    self.fail_stage(idx, si, "ArtifactRefused", why, None);
                    return;
                }
            }
        }
        let now = self.w.now;
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
        run.stage = Some(stage);
        run.message = Some(format!("{}: stage {}: {message}", run.name, stage.as_str()));
        let st = &mut run.stages[si];
        st.started_at = Some(now);
        st.message = Some(message.clone());
        let text = format!("{run_name}: stage {}: {message}", stage.as_str());
        self.note(false, "StageStarted", text);
    }

    pub(super) fn integration_timeout(&self) -> Duration {
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
    pub(super) fn starting(&mut self, idx: usize, si: usize) {
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
        let waited = seconds_between(self.d.status.runs[idx].stages[si].started_at, now);
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
    pub(super) fn running(&mut self, idx: usize, si: usize, stage: Stage) -> bool {
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

    pub(super) fn stage_failed(
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

    pub(super) fn stage_succeeded(
        &mut self,
        idx: usize,
        si: usize,
        stage: Stage,
        pod: &PodOutcome,
    ) -> bool {
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
        match stage {
            Stage::Train => {
                let run = &self.d.status.runs[idx];
                match artifact::fix(
                    &run.artifact,
                    result.artifact.as_ref(),
                    &self.w.pipeline.spec.model,
                ) {
                    Ok(fixed) => self.d.status.runs[idx].trained_artifact = Some(fixed),
                    Err(why) => {
                        self.d.status.runs[idx].stages[si].artifact = result.artifact;
                        self.fail_stage(idx, si, "ArtifactRefused", why, pod.exit_code);
                        return false;
                    }
                }
            }
            Stage::Evaluate => {
                let fixed = effective_artifact(&self.d.status.runs[idx]);
                if let Err(why) = artifact::check_scored(&fixed, result.artifact.as_ref()) {
                    let st = &mut self.d.status.runs[idx].stages[si];
                    st.artifact = result.artifact;
                    st.metrics = result.metrics;
                    self.fail_stage(idx, si, "ArtifactMismatch", why, pod.exit_code);
                    return false;
                }
            }
            _ => {}
        }
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
        st.finished_at = Some(now);
        st.exit_code = pod.exit_code;
        st.message = Some("succeeded".into());
        let took = seconds_between(st.started_at, now);
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
}
