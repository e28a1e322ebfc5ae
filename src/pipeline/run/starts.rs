//! Triggers that start a run, or queue behind the running one.
use super::*;

impl Step<'_> {
    /// New triggers start a run, or queue behind the running one.
    pub(super) fn triggers(&mut self, inputs: &RunInputs) {
        let now = self.w.now;
        let status = &self.d.status;
        let next = status.next_schedule_time;
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
        status.next_schedule_time = tick.next;
        if let Some(fired) = tick.fired {
            status.last_schedule_time = Some(fired);
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

    pub(super) fn start_or_skip(&mut self, t: Trigger, inputs: &RunInputs) {
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

    pub(super) fn start(&mut self, t: Trigger, inputs: &RunInputs) {
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
            trained_artifact: None,
            baseline: status.production.clone(),
            stages,
            verdict: None,
            gates: Vec::new(),
            candidate: None,
            started_at: now,
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
}
