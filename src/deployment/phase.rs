//! The life of a model version: which phase comes next, and why. Pure: every input is given,
//! every decision comes back as a new status and the events that explain it.
use crate::api::{
    AnalysisStatus, ApprovalResult, DeploymentPhase, HandledApproval, HistoryEntry, MetricStatus,
    ModelDeploymentStatus, Outcome, Promotion, VersionRef,
};
use jiff::Timestamp;
use std::time::Duration;

/// Annotation whose value names the candidate version to promote (manual promotion).
pub const ANNOTATION_APPROVE: &str = "modelship.io/approve";
/// Annotation whose value names a rejected or rolled-back version to try again
/// (`<version>` or `<version>/<token>` to retry it once more later).
pub const ANNOTATION_RETRY: &str = "modelship.io/retry";
/// Annotation whose value names the candidate version whose shadow or bake to stop.
pub const ANNOTATION_ABORT: &str = "modelship.io/abort";

/// The operator's annotations on a ModelDeployment.
#[derive(Clone, Debug, Default)]
pub struct Annotations {
    pub approve: Option<String>,
    pub retry: Option<String>,
    pub abort: Option<String>,
}

impl Annotations {
    pub fn from_map(map: &std::collections::BTreeMap<String, String>) -> Self {
        Self {
            approve: map.get(ANNOTATION_APPROVE).cloned(),
            retry: map.get(ANNOTATION_RETRY).cloned(),
            abort: map.get(ANNOTATION_ABORT).cloned(),
        }
    }
}

/// What a track's Deployment (`<name>-stable`, `<name>-shadow`) was seen doing.
#[derive(Clone, Debug, Default)]
pub struct TrackRollout {
    /// The version its pod template runs.
    pub version: Option<String>,
    /// Every replica runs the current template and is available.
    pub complete: bool,
    /// The rollout passed its progress deadline.
    pub failed: bool,
}

/// The analysis as far as a decision needs it.
#[derive(Clone, Debug, Default)]
pub struct AnalysisSummary {
    /// A judged metric failed more often than its limit allows.
    pub failed: Option<String>,
    /// A judged metric's query failed more often in a row than its limit allows.
    pub errored: Option<String>,
    /// Every judged metric's latest measurement passed.
    pub passing: bool,
    /// Every judged metric has passed at least once in the window.
    pub each_passed_once: bool,
    /// Requests the judged track answered in the window, where known.
    pub requests: Option<f64>,
    /// Why the analysis is not passing, for the status message.
    pub waiting: String,
}

/// Everything a decision depends on.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub now: Timestamp,
    pub desired: &'a VersionRef,
    pub status: &'a ModelDeploymentStatus,
    pub shadow_enabled: bool,
    pub promotion: Promotion,
    pub min_duration: Duration,
    pub min_requests: i64,
    pub bake_time: Duration,
    pub history_limit: usize,
    pub annotations: &'a Annotations,
    pub stable_track: &'a TrackRollout,
    pub shadow_track: &'a TrackRollout,
    /// How long after the shadow's pods are ready its analysis starts: Services reach new
    /// pods a moment after they turn ready (EndpointSlices, then kube-proxy or the mesh), and
    /// copies sent meanwhile fail to connect through no fault of the candidate.
    pub shadow_settle: Duration,
    pub analysis: &'a AnalysisSummary,
}

/// The settle time the operator uses (see [`Inputs::shadow_settle`]).
pub const SHADOW_SETTLE: Duration = Duration::from_secs(5);

impl TrackRollout {
    /// Every replica runs `version` and is available.
    fn serves(&self, version: &str) -> bool {
        self.complete && self.version.as_deref() == Some(version)
    }
}

/// One explained decision: an event, and what the metrics count.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub warning: bool,
    pub reason: Reason,
    pub message: String,
    /// `promoted`, `rejected`, `rolled_back`, `aborted`, `superseded`, for the decision counter.
    pub decision: Option<&'static str>,
    /// The phase left and the time spent in it.
    pub left: Option<(DeploymentPhase, Duration)>,
    /// The version the decision is about.
    pub version: String,
}

impl Transition {
    /// The event's action: a verb and the version it acts on.
    pub fn action(&self) -> String {
        let verb = self.reason.verb();
        format!("{verb} {}", self.version)
    }
}

/// Why a transition happened: the event's reason and the history entry's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Deployed,
    ShadowStarted,
    Superseded,
    Promoting,
    Promoted,
    Baked,
    AwaitingApproval,
    ApprovalStale,
    AnalysisFailed,
    ShadowFailed,
    Aborted,
    Retried,
    RolledBack,
    RolloutFailed,
}

impl Reason {
    /// CamelCase, as in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Deployed => "Deployed",
            Reason::ShadowStarted => "ShadowStarted",
            Reason::Superseded => "Superseded",
            Reason::Promoting => "Promoting",
            Reason::Promoted => "Promoted",
            Reason::Baked => "Baked",
            Reason::AwaitingApproval => "AwaitingApproval",
            Reason::ApprovalStale => "ApprovalStale",
            Reason::AnalysisFailed => "AnalysisFailed",
            Reason::ShadowFailed => "ShadowFailed",
            Reason::Aborted => "Aborted",
            Reason::Retried => "Retried",
            Reason::RolledBack => "RolledBack",
            Reason::RolloutFailed => "RolloutFailed",
        }
    }

    /// The verb of the event's action.
    fn verb(self) -> &'static str {
        match self {
            Reason::Deployed => "Deploy",
            Reason::ShadowStarted => "Shadow",
            Reason::Superseded => "Supersede",
            Reason::Promoting | Reason::Promoted => "Promote",
            Reason::Baked => "Bake",
            Reason::AwaitingApproval | Reason::ApprovalStale => "AwaitApproval",
            Reason::AnalysisFailed | Reason::ShadowFailed => "Reject",
            Reason::Aborted => "Abort",
            Reason::Retried => "Retry",
            Reason::RolledBack | Reason::RolloutFailed => "RollBack",
        }
    }
}

/// The new status and the transitions that led to it.
#[derive(Clone, Debug)]
pub struct Decision {
    pub status: ModelDeploymentStatus,
    pub transitions: Vec<Transition>,
    /// The candidate passed its analysis and waits for a person's approval.
    pub awaiting_approval: bool,
}

fn same(a: &VersionRef, b: &VersionRef) -> bool {
    a.version == b.version && a.artifact == b.artifact
}

fn at(v: &VersionRef, now: Timestamp) -> VersionRef {
    VersionRef {
        version: v.version.clone(),
        artifact: v.artifact.clone(),
        since: Some(now),
    }
}

fn elapsed_since(since: Option<Timestamp>, now: Timestamp) -> Duration {
    since
        .map(|t| now.duration_since(t))
        .and_then(|d| d.try_into().ok())
        .unwrap_or_default()
}

/// When the analysis window opens (or opened), once it is known.
pub fn analysis_start(analysis: &AnalysisStatus) -> Option<Timestamp> {
    analysis.started_at
}

/// Whether the analysis window has opened (its start is not in the future).
pub fn analysis_open(analysis: &AnalysisStatus, now: Timestamp) -> bool {
    analysis_start(analysis).is_some_and(|t| t <= now)
}

/// Whether `value` of a retry annotation names `version` (`<version>` or `<version>/<token>`).
/// The approval value that would act on `target` now: `target`, unless `used` (the value
/// handled last) is that already, then `<target>/<n>`, since each value acts once.
pub fn fresh_approval_value(used: Option<&str>, target: &str) -> String {
    let Some(used) = used else {
        return target.to_string();
    };
    if used == target {
        return format!("{target}/2");
    }
    match used.strip_prefix(target).and_then(|r| r.strip_prefix('/')) {
        Some(n) => format!("{target}/{}", n.parse::<u64>().map_or(2, |n| n + 1)),
        None => target.to_string(),
    }
}

fn names_version(value: &str, version: &str) -> bool {
    value == version
        || value
            .strip_prefix(version)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Builds the next status step by step.
struct Step<'a> {
    inp: &'a Inputs<'a>,
    status: ModelDeploymentStatus,
    transitions: Vec<Transition>,
    awaiting_approval: bool,
}

impl<'a> Step<'a> {
    fn phase(&self) -> Option<DeploymentPhase> {
        self.status.phase
    }

    fn enter(&mut self, phase: DeploymentPhase, message: String) {
        if self.status.phase != Some(phase) {
            self.status.phase_since = Some(self.inp.now);
        }
        self.status.phase = Some(phase);
        self.status.message = Some(message);
    }

    fn left_duration(&self) -> Option<(DeploymentPhase, Duration)> {
        let phase = self.status.phase?;
        matches!(
            phase,
            DeploymentPhase::Shadowing | DeploymentPhase::Promoting | DeploymentPhase::Baking
        )
        .then(|| (phase, elapsed_since(self.status.phase_since, self.inp.now)))
    }

    fn event(
        &mut self,
        warning: bool,
        reason: Reason,
        message: String,
        decision: Option<&'static str>,
    ) {
        let left = self.left_duration();
        let version = self
            .status
            .candidate
            .as_ref()
            .or(self.status.stable.as_ref())
            .map(|v| v.version.clone())
            .unwrap_or_default();
        self.transitions.push(Transition {
            warning,
            reason,
            message,
            decision,
            left,
            version,
        });
    }

    fn record(&mut self, version: &VersionRef, outcome: Outcome, reason: Reason, message: &str) {
        let metrics = self
            .status
            .analysis
            .as_ref()
            .map(|a| a.metrics.clone())
            .unwrap_or_default();
        self.status.history.insert(
            0,
            HistoryEntry {
                version: version.version.clone(),
                artifact: version.artifact.clone(),
                outcome,
                reason: reason.as_str().into(),
                message: message.into(),
                time: self.inp.now,
                metrics,
            },
        );
        self.status.history.truncate(self.inp.history_limit.max(1));
    }

    fn fresh_analysis(&self) -> AnalysisStatus {
        AnalysisStatus {
            started_at: Some(self.inp.now),
            ..AnalysisStatus::default()
        }
    }

    /// Starts shadowing `candidate` (or promotes it at once when shadowing is off).
    fn start_candidate(&mut self, candidate: &VersionRef) {
        let stable = self.status.stable.clone().unwrap_or_default();
        self.status.candidate = Some(at(candidate, self.inp.now));
        if self.inp.shadow_enabled {
            self.status.analysis = Some(AnalysisStatus::default());
            let msg = format!(
                "shadowing {} next to {} on mirrored traffic",
                candidate.version, stable.version
            );
            self.event(false, Reason::ShadowStarted, msg.clone(), None);
            self.enter(DeploymentPhase::Shadowing, msg);
            self.start_shadow_analysis(candidate);
        } else {
            self.promote(format!(
                "shadowing is off: promoting {} over {}",
                candidate.version, stable.version
            ));
        }
    }

    /// The shadow's analysis window opens once its pods all run the candidate and are ready
    /// (and [`Inputs::shadow_settle`] has passed): copies sent to pods that are still starting
    /// fail, and that is not the candidate's behaviour. Whether it is open now.
    fn start_shadow_analysis(&mut self, candidate: &VersionRef) -> bool {
        let now = self.inp.now;
        let analysis = self.status.analysis.get_or_insert_with(Default::default);
        if analysis.started_at.is_none() && self.inp.shadow_track.serves(&candidate.version) {
            analysis.started_at = Some(now + self.inp.shadow_settle);
        }
        analysis_open(analysis, now)
    }

    fn promote(&mut self, message: String) {
        let candidate = self.status.candidate.clone().unwrap_or_default();
        self.status.previous = self.status.stable.clone();
        self.status.stable = Some(at(&candidate, self.inp.now));
        self.event(false, Reason::Promoting, message.clone(), None);
        self.enter(DeploymentPhase::Promoting, message);
    }

    /// Production goes back to the previous version; the candidate is remembered as rolled back.
    fn roll_back(
        &mut self,
        outcome: Outcome,
        reason: Reason,
        message: String,
        decision: &'static str,
    ) {
        let candidate = self.status.candidate.clone().unwrap_or_default();
        self.record(&candidate, outcome, reason, &message);
        if let Some(previous) = self.status.previous.take() {
            self.status.stable = Some(at(&previous, self.inp.now));
        }
        self.event(true, reason, message.clone(), Some(decision));
        self.enter(DeploymentPhase::RolledBack, message);
    }

    fn reject(
        &mut self,
        outcome: Outcome,
        reason: Reason,
        message: String,
        decision: &'static str,
    ) {
        let candidate = self.status.candidate.clone().unwrap_or_default();
        self.record(&candidate, outcome, reason, &message);
        self.event(true, reason, message.clone(), Some(decision));
        self.enter(DeploymentPhase::Rejected, message);
    }

    /// A new desired version replaces a candidate whose try had not ended.
    fn supersede(&mut self, candidate: &VersionRef) {
        let desired = self.inp.desired;
        let message = format!(
            "{} replaced by the newer desired version {}",
            candidate.version, desired.version
        );
        self.record(candidate, Outcome::Superseded, Reason::Superseded, &message);
        self.event(false, Reason::Superseded, message, Some("superseded"));
    }

    fn settle_stable(&mut self) {
        let stable = self.status.stable.clone().unwrap_or_default();
        self.status.candidate = None;
        self.status.analysis = None;
        self.enter(
            DeploymentPhase::Stable,
            format!("serving {}", stable.version),
        );
    }

    /// Binds an approve value naming `candidate` to it (version and artifact) when first
    /// seen. A bound value whose version now has another artifact goes stale: it approved
    /// what it was given for, not whatever comes later under the same version.
    fn bind_approval(&mut self, candidate: &VersionRef) {
        let Some(value) = self.inp.annotations.approve.clone() else {
            return;
        };
        if !names_version(&value, &candidate.version) {
            return;
        }
        let now = self.inp.now;
        match self.status.approval.as_mut() {
            Some(h) if h.value == value => {
                let moved = h.version.as_deref() == Some(candidate.version.as_str())
                    && h.artifact.as_deref() != Some(candidate.artifact.as_str());
                if h.result == ApprovalResult::Bound && moved {
                    let again = fresh_approval_value(Some(&value), &candidate.version);
                    let msg = format!(
                        "{ANNOTATION_APPROVE}={value} approved {} at {}; it is now at {}, which nobody approved: kubectl annotate --overwrite modeldeployment <name> {ANNOTATION_APPROVE}={again}",
                        candidate.version,
                        h.artifact.as_deref().unwrap_or_default(),
                        candidate.artifact
                    );
                    h.result = ApprovalResult::Stale;
                    h.message = Some(msg.clone());
                    self.event(true, Reason::ApprovalStale, msg, None);
                }
            }
            _ => {
                self.status.approval = Some(HandledApproval {
                    value,
                    result: ApprovalResult::Bound,
                    run: None,
                    version: Some(candidate.version.clone()),
                    artifact: Some(candidate.artifact.clone()),
                    sha256: None,
                    seen_at: now,
                    acted_at: None,
                    message: None,
                });
            }
        }
    }

    /// Whether the approve annotation approves `candidate`: its value is bound to exactly
    /// this version and artifact and has not acted yet (a retried version needs a new value).
    fn approved(&self, candidate: &VersionRef) -> bool {
        let value = self.inp.annotations.approve.as_deref();
        self.status.approval.as_ref().is_some_and(|h| {
            Some(h.value.as_str()) == value
                && h.result == ApprovalResult::Bound
                && h.version.as_deref() == Some(candidate.version.as_str())
                && h.artifact.as_deref() == Some(candidate.artifact.as_str())
        })
    }

    fn abort_requested(&self, candidate: &VersionRef) -> Option<String> {
        let value = self.inp.annotations.abort.as_ref()?;
        (names_version(value, &candidate.version)
            && self.status.handled_abort.as_ref() != Some(value))
        .then(|| value.clone())
    }
}

/// Decides the next status of a ModelDeployment.
pub fn decide(inp: &Inputs<'_>) -> Decision {
    let mut s = Step {
        inp,
        status: inp.status.clone(),
        transitions: Vec::new(),
        awaiting_approval: false,
    };
    let desired = inp.desired;
    s.status.desired = Some(VersionRef {
        since: None,
        ..desired.clone()
    });

    // The first version has nothing to be compared with: it becomes stable directly.
    let Some(stable) = s.status.stable.clone() else {
        s.status.stable = Some(at(desired, inp.now));
        let msg = format!("deployed {} as the first stable version", desired.version);
        s.event(false, Reason::Deployed, msg, None);
        s.settle_stable();
        return Decision {
            status: s.status,
            transitions: s.transitions,
            awaiting_approval: false,
        };
    };

    match s.phase() {
        None | Some(DeploymentPhase::Stable) => {
            if same(desired, &stable) {
                s.settle_stable();
            } else {
                s.start_candidate(desired);
            }
        }
        Some(DeploymentPhase::Shadowing) => shadowing(&mut s, &stable),
        Some(DeploymentPhase::Promoting) => promoting(&mut s),
        Some(DeploymentPhase::Baking) => baking(&mut s),
        Some(DeploymentPhase::Rejected) | Some(DeploymentPhase::RolledBack) => {
            sticky(&mut s, &stable)
        }
    }
    Decision {
        status: s.status,
        transitions: s.transitions,
        awaiting_approval: s.awaiting_approval,
    }
}

fn shadowing(s: &mut Step<'_>, stable: &VersionRef) {
    let inp = s.inp;
    let Some(candidate) = s.status.candidate.clone() else {
        s.settle_stable();
        return;
    };
    if !same(inp.desired, &candidate) {
        s.supersede(&candidate);
        if same(inp.desired, stable) {
            s.settle_stable();
        } else {
            s.start_candidate(inp.desired);
        }
        return;
    }
    s.bind_approval(&candidate);
    if let Some(value) = s.abort_requested(&candidate) {
        s.status.handled_abort = Some(value);
        let msg = format!(
            "shadow of {} stopped by the {} annotation; production was never changed",
            candidate.version, ANNOTATION_ABORT
        );
        s.reject(Outcome::Aborted, Reason::Aborted, msg, "aborted");
        return;
    }
    if !s.start_shadow_analysis(&candidate) {
        let shadow = inp.shadow_track;
        if shadow.failed && shadow.version.as_deref() == Some(candidate.version.as_str()) {
            let msg = format!(
                "{} rejected: its shadow pods did not become ready within the Deployment's progress deadline; production was never changed",
                candidate.version
            );
            s.reject(Outcome::Rejected, Reason::ShadowFailed, msg, "rejected");
            return;
        }
        let msg = match s.status.analysis.as_ref().and_then(|a| a.started_at) {
            Some(opens) => format!(
                "shadowing {}: its pods are ready; the analysis starts at {opens}, once traffic reaches them",
                candidate.version
            ),
            None => format!(
                "shadowing {}: waiting for its pods to be ready before the analysis starts",
                candidate.version
            ),
        };
        s.enter(DeploymentPhase::Shadowing, msg);
        return;
    }
    if let Some(why) = inp
        .analysis
        .failed
        .clone()
        .or_else(|| inp.analysis.errored.clone())
    {
        let msg = format!(
            "{} rejected: {why}; production was never changed",
            candidate.version
        );
        s.reject(Outcome::Rejected, Reason::AnalysisFailed, msg, "rejected");
        return;
    }
    if !inp.shadow_enabled {
        s.promote(format!(
            "shadowing was turned off: promoting {} over {}",
            candidate.version, stable.version
        ));
        return;
    }
    let elapsed = elapsed_since(
        s.status.analysis.as_ref().and_then(|a| a.started_at),
        inp.now,
    );
    let mut waiting = Vec::new();
    if elapsed < inp.min_duration {
        waiting.push(format!(
            "shadowed for {}s of the minimum {}s",
            elapsed.as_secs(),
            inp.min_duration.as_secs()
        ));
    }
    let requests = inp.analysis.requests.unwrap_or(0.0);
    if inp.min_requests > 0 && requests < inp.min_requests as f64 {
        waiting.push(format!(
            "{requests:.0} of the minimum {} mirrored requests",
            inp.min_requests
        ));
    }
    if !inp.analysis.passing {
        waiting.push(inp.analysis.waiting.clone());
    }
    if !waiting.is_empty() {
        let msg = format!(
            "shadowing {}: waiting for {}",
            candidate.version,
            waiting.join("; ")
        );
        s.enter(DeploymentPhase::Shadowing, msg);
        return;
    }
    let by_annotation = inp.promotion == Promotion::Manual && s.approved(&candidate);
    if inp.promotion == Promotion::Manual && !by_annotation {
        let used = s.status.approval.as_ref().map(|h| h.value.as_str());
        let value = fresh_approval_value(used, &candidate.version);
        let msg = format!(
            "{} passed its analysis and waits for approval: kubectl annotate --overwrite modeldeployment <name> {}={}",
            candidate.version, ANNOTATION_APPROVE, value
        );
        if s.status.message.as_deref() != Some(msg.as_str()) {
            s.event(false, Reason::AwaitingApproval, msg.clone(), None);
        }
        s.awaiting_approval = true;
        s.enter(DeploymentPhase::Shadowing, msg);
        return;
    }
    if by_annotation && let Some(h) = s.status.approval.as_mut() {
        h.result = ApprovalResult::Approved;
        h.acted_at = Some(inp.now);
    }
    s.promote(format!(
        "{} passed its analysis in shadow; promoting it over {}",
        candidate.version, stable.version
    ));
}

fn promoting(s: &mut Step<'_>) {
    let inp = s.inp;
    let Some(candidate) = s.status.candidate.clone() else {
        s.settle_stable();
        return;
    };
    if let Some(value) = s.abort_requested(&candidate) {
        s.status.handled_abort = Some(value);
        let msg = format!(
            "promotion of {} stopped by the {} annotation; returning to the previous version",
            candidate.version, ANNOTATION_ABORT
        );
        s.roll_back(Outcome::Aborted, Reason::Aborted, msg, "aborted");
        return;
    }
    if inp.stable_track.failed
        && inp.stable_track.version.as_deref() == Some(candidate.version.as_str())
    {
        let msg = format!(
            "{} did not roll out within the Deployment's progress deadline; returning to the previous version",
            candidate.version
        );
        s.roll_back(
            Outcome::RolledBack,
            Reason::RolloutFailed,
            msg,
            "rolled_back",
        );
        return;
    }
    if inp.stable_track.complete
        && inp.stable_track.version.as_deref() == Some(candidate.version.as_str())
    {
        // The bake compares the new stable with what the previous version measured in shadow.
        let metrics = s
            .status
            .analysis
            .as_ref()
            .map(|a| {
                a.metrics
                    .iter()
                    .map(|m| MetricStatus {
                        name: m.name.clone(),
                        baseline: m.stable_value.or(m.baseline),
                        ..MetricStatus::default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        s.status.analysis = Some(AnalysisStatus {
            metrics,
            ..s.fresh_analysis()
        });
        let against = match (&s.status.previous, inp.shadow_enabled) {
            (Some(previous), true) => format!(
                "against {}, which answers mirrored copies meanwhile",
                previous.version
            ),
            _ => "against what the previous version measured".to_string(),
        };
        let msg = format!(
            "{} serves production; watching it for {}s {against}",
            candidate.version,
            inp.bake_time.as_secs()
        );
        s.event(false, Reason::Promoted, msg.clone(), None);
        s.enter(DeploymentPhase::Baking, msg);
        return;
    }
    s.enter(
        DeploymentPhase::Promoting,
        format!("rolling {} out to the stable track", candidate.version),
    );
}

fn baking(s: &mut Step<'_>) {
    let inp = s.inp;
    let Some(candidate) = s.status.candidate.clone() else {
        s.settle_stable();
        return;
    };
    if let Some(value) = s.abort_requested(&candidate) {
        s.status.handled_abort = Some(value);
        let msg = format!(
            "bake of {} stopped by the {} annotation; returning to the previous version",
            candidate.version, ANNOTATION_ABORT
        );
        s.roll_back(Outcome::Aborted, Reason::Aborted, msg, "aborted");
        return;
    }
    if let Some(why) = inp.analysis.failed.clone() {
        let previous = s
            .status
            .previous
            .as_ref()
            .map(|p| p.version.clone())
            .unwrap_or_default();
        let msg = format!(
            "{} degraded after promotion: {why}; rolled back to {previous}",
            candidate.version
        );
        s.roll_back(Outcome::RolledBack, Reason::RolledBack, msg, "rolled_back");
        return;
    }
    let elapsed = elapsed_since(
        s.status.analysis.as_ref().and_then(|a| a.started_at),
        inp.now,
    );
    let pending_desired = if same(inp.desired, &candidate) {
        String::new()
    } else {
        format!("; {} is next once the bake ends", inp.desired.version)
    };
    if let Some(why) = inp.analysis.errored.clone() {
        // A broken query is not a measured degradation: hold the bake rather than roll back.
        let msg = format!(
            "baking {} is held: {why}{pending_desired}",
            candidate.version
        );
        s.enter(DeploymentPhase::Baking, msg);
        return;
    }
    if elapsed < inp.bake_time || !inp.analysis.each_passed_once {
        let mut waiting = Vec::new();
        if elapsed < inp.bake_time {
            waiting.push(format!(
                "baked {}s of {}s",
                elapsed.as_secs(),
                inp.bake_time.as_secs()
            ));
        }
        if !inp.analysis.each_passed_once {
            waiting.push(format!(
                "a passing measurement of every metric ({})",
                inp.analysis.waiting
            ));
        }
        let msg = format!(
            "baking {}: waiting for {}{pending_desired}",
            candidate.version,
            waiting.join("; ")
        );
        s.enter(DeploymentPhase::Baking, msg);
        return;
    }
    let msg = format!(
        "{} baked for {}s without degradation and is now stable",
        candidate.version,
        elapsed.as_secs()
    );
    s.record(&candidate, Outcome::Promoted, Reason::Baked, &msg);
    s.event(false, Reason::Baked, msg, Some("promoted"));
    s.status.previous = None;
    s.settle_stable();
    // A version desired while this one baked starts right away.
    if let Some(stable) = s.status.stable.clone()
        && !same(inp.desired, &stable)
    {
        s.start_candidate(inp.desired);
    }
}

fn sticky(s: &mut Step<'_>, stable: &VersionRef) {
    let inp = s.inp;
    let phase = s.phase().unwrap_or(DeploymentPhase::Rejected);
    let Some(candidate) = s.status.candidate.clone() else {
        s.settle_stable();
        return;
    };
    if !same(inp.desired, &candidate) {
        s.status.candidate = None;
        s.status.analysis = None;
        s.status.previous = None;
        if same(inp.desired, stable) {
            s.settle_stable();
        } else {
            s.start_candidate(inp.desired);
        }
        return;
    }
    if let Some(value) = inp.annotations.retry.clone()
        && names_version(&value, &candidate.version)
        && s.status.handled_retry.as_ref() != Some(&value)
    {
        s.status.handled_retry = Some(value);
        s.status.previous = None;
        s.event(
            false,
            Reason::Retried,
            format!(
                "trying {} again, as {} asks",
                candidate.version, ANNOTATION_RETRY
            ),
            None,
        );
        s.start_candidate(&candidate);
        return;
    }
    let msg = s.status.message.clone().unwrap_or_default();
    s.enter(phase, msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str) -> VersionRef {
        VersionRef {
            version: name.into(),
            artifact: format!("s3://models/{name}"),
            since: None,
        }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    struct World {
        status: ModelDeploymentStatus,
        desired: VersionRef,
        annotations: Annotations,
        stable_track: TrackRollout,
        /// None: the shadow's pods run the desired version, ready.
        shadow_track: Option<TrackRollout>,
        shadow_settle: Duration,
        analysis: AnalysisSummary,
        promotion: Promotion,
        shadow_enabled: bool,
        events: Vec<Transition>,
        awaiting_approval: bool,
    }

    impl World {
        fn new(desired: &str) -> Self {
            Self {
                status: ModelDeploymentStatus::default(),
                desired: v(desired),
                annotations: Annotations::default(),
                stable_track: TrackRollout::default(),
                shadow_track: None,
                shadow_settle: Duration::ZERO,
                analysis: AnalysisSummary {
                    passing: true,
                    each_passed_once: true,
                    requests: Some(1000.0),
                    ..Default::default()
                },
                promotion: Promotion::Automatic,
                shadow_enabled: true,
                events: Vec::new(),
                awaiting_approval: false,
            }
        }

        fn step(&mut self, now: i64) -> Option<DeploymentPhase> {
            let shadow_track = self.shadow_track.clone().unwrap_or(TrackRollout {
                version: Some(self.desired.version.clone()),
                complete: true,
                failed: false,
            });
            let inp = Inputs {
                now: t(now),
                desired: &self.desired,
                status: &self.status,
                shadow_enabled: self.shadow_enabled,
                promotion: self.promotion,
                min_duration: Duration::from_secs(60),
                min_requests: 100,
                bake_time: Duration::from_secs(120),
                history_limit: 3,
                annotations: &self.annotations,
                stable_track: &self.stable_track,
                shadow_track: &shadow_track,
                shadow_settle: self.shadow_settle,
                analysis: &self.analysis,
            };
            let d = decide(&inp);
            self.awaiting_approval = d.awaiting_approval;
            self.status = d.status;
            self.events.extend(d.transitions);
            self.status.phase
        }

        fn reasons(&self) -> Vec<&str> {
            self.events.iter().map(|e| e.reason.as_str()).collect()
        }

        fn stable(&self) -> &str {
            &self.status.stable.as_ref().unwrap().version
        }

        /// Runs v1 to Stable, then asks for v2.
        fn shadowing_v2() -> Self {
            let mut w = World::new("v1");
            assert_eq!(w.step(0), Some(DeploymentPhase::Stable));
            w.desired = v("v2");
            assert_eq!(w.step(1), Some(DeploymentPhase::Shadowing));
            w
        }

        fn rolled_out(&mut self, version: &str) {
            self.stable_track = TrackRollout {
                version: Some(version.into()),
                complete: true,
                failed: false,
            };
        }
    }

    #[test]
    fn first_version_is_deployed_directly() {
        let mut w = World::new("v1");
        assert_eq!(w.step(0), Some(DeploymentPhase::Stable));
        assert_eq!(w.stable(), "v1");
        assert!(w.status.candidate.is_none());
        assert_eq!(w.reasons(), vec!["Deployed"]);
        // Nothing changes on the next look.
        let before = w.status.clone();
        w.step(10);
        assert_eq!(
            w.status, before,
            "an unchanged world gives an unchanged status"
        );
    }

    #[test]
    fn the_shadow_is_judged_only_once_its_pods_are_ready_and_traffic_reaches_them() {
        let mut w = World::new("v1");
        w.step(0);
        w.shadow_settle = Duration::from_secs(5);
        w.shadow_track = Some(TrackRollout {
            version: Some("v2".into()),
            complete: false,
            failed: false,
        });
        w.desired = v("v2");
        assert_eq!(w.step(1), Some(DeploymentPhase::Shadowing));
        let opened = |w: &World| w.status.analysis.as_ref().unwrap().started_at;
        assert_eq!(opened(&w), None, "no window while the pods start");
        // Copies that failed against starting pods do not reject the candidate.
        w.analysis.failed = Some("error-rate 0.18 above 0.01".into());
        assert_eq!(w.step(20), Some(DeploymentPhase::Shadowing));
        assert!(
            w.status
                .message
                .as_ref()
                .unwrap()
                .contains("waiting for its pods to be ready"),
            "{:?}",
            w.status.message
        );
        // Ready at 30: the window opens at 35, once Services reach the pods.
        w.shadow_track.as_mut().unwrap().complete = true;
        assert_eq!(w.step(30), Some(DeploymentPhase::Shadowing));
        assert_eq!(opened(&w), Some(t(35)));
        assert_eq!(w.step(33), Some(DeploymentPhase::Shadowing));
        assert!(w.status.message.as_ref().unwrap().contains("starts at"));
        assert!(!analysis_open(w.status.analysis.as_ref().unwrap(), t(34)));
        assert!(analysis_open(w.status.analysis.as_ref().unwrap(), t(35)));
        // From then on what is measured counts, and the minimum duration runs from 35.
        w.analysis.failed = None;
        assert_eq!(w.step(90), Some(DeploymentPhase::Shadowing));
        assert!(
            w.status
                .message
                .as_ref()
                .unwrap()
                .contains("55s of the minimum 60s")
        );
        assert_eq!(w.step(96), Some(DeploymentPhase::Promoting));
    }

    #[test]
    fn a_shadow_whose_pods_never_become_ready_is_rejected_at_its_progress_deadline() {
        let mut w = World::new("v1");
        w.step(0);
        w.shadow_track = Some(TrackRollout {
            version: Some("v2".into()),
            complete: false,
            failed: false,
        });
        w.desired = v("v2");
        assert_eq!(w.step(1), Some(DeploymentPhase::Shadowing));
        w.shadow_track.as_mut().unwrap().failed = true;
        assert_eq!(w.step(600), Some(DeploymentPhase::Rejected));
        assert_eq!(w.stable(), "v1", "production never changed");
        assert_eq!(w.status.history[0].outcome, Outcome::Rejected);
        assert_eq!(w.status.history[0].reason, "ShadowFailed");
        assert!(w.events.last().unwrap().warning);
    }

    #[test]
    fn a_good_candidate_is_promoted_after_the_window_and_baked() {
        let mut w = World::shadowing_v2();
        assert_eq!(w.status.candidate.as_ref().unwrap().version, "v2");
        assert_eq!(w.stable(), "v1");
        // Before the minimum duration nothing happens.
        assert_eq!(w.step(30), Some(DeploymentPhase::Shadowing));
        assert!(w.status.message.as_ref().unwrap().contains("minimum 60s"));
        assert_eq!(w.step(62), Some(DeploymentPhase::Promoting));
        assert_eq!(w.stable(), "v2", "the stable track rolls to the candidate");
        assert_eq!(w.status.previous.as_ref().unwrap().version, "v1");
        // Still rolling out: stays Promoting.
        w.stable_track = TrackRollout {
            version: Some("v2".into()),
            complete: false,
            failed: false,
        };
        assert_eq!(w.step(63), Some(DeploymentPhase::Promoting));
        w.rolled_out("v2");
        assert_eq!(w.step(64), Some(DeploymentPhase::Baking));
        assert_eq!(w.step(100), Some(DeploymentPhase::Baking));
        assert_eq!(w.step(200), Some(DeploymentPhase::Stable));
        assert_eq!(w.stable(), "v2");
        assert!(w.status.previous.is_none() && w.status.candidate.is_none());
        assert_eq!(
            w.reasons(),
            vec![
                "Deployed",
                "ShadowStarted",
                "Promoting",
                "Promoted",
                "Baked"
            ]
        );
        assert_eq!(w.status.history[0].outcome, Outcome::Promoted);
        let baked = w.events.iter().find(|e| e.reason == Reason::Baked).unwrap();
        assert_eq!(baked.decision, Some("promoted"));
        assert_eq!(
            baked.left,
            Some((DeploymentPhase::Baking, Duration::from_secs(136)))
        );
    }

    #[test]
    fn too_few_requests_or_an_inconclusive_analysis_never_promote() {
        let mut w = World::shadowing_v2();
        w.analysis.requests = Some(10.0);
        assert_eq!(w.step(500), Some(DeploymentPhase::Shadowing));
        assert!(
            w.status
                .message
                .as_ref()
                .unwrap()
                .contains("10 of the minimum 100")
        );
        w.analysis = AnalysisSummary {
            passing: false,
            requests: Some(1000.0),
            waiting: "prometheus unreachable".into(),
            ..Default::default()
        };
        assert_eq!(w.step(501), Some(DeploymentPhase::Shadowing));
        assert!(
            w.status
                .message
                .as_ref()
                .unwrap()
                .contains("prometheus unreachable")
        );
    }

    #[test]
    fn a_failed_shadow_is_rejected_and_sticks_until_retry_or_new_version() {
        let mut w = World::shadowing_v2();
        w.analysis.failed = Some("error-rate 0.05 above max 0.011".into());
        assert_eq!(w.step(20), Some(DeploymentPhase::Rejected));
        assert_eq!(w.stable(), "v1", "production untouched");
        assert_eq!(w.status.history[0].outcome, Outcome::Rejected);
        assert!(w.events.last().unwrap().warning);
        // Sticky, even once the analysis would pass.
        w.analysis.failed = None;
        assert_eq!(w.step(500), Some(DeploymentPhase::Rejected));
        // A retry for another version does nothing; the right one restarts the shadow once.
        w.annotations.retry = Some("v3".into());
        assert_eq!(w.step(501), Some(DeploymentPhase::Rejected));
        w.annotations.retry = Some("v2".into());
        assert_eq!(w.step(502), Some(DeploymentPhase::Shadowing));
        assert_eq!(w.status.analysis.as_ref().unwrap().started_at, Some(t(502)));
        w.analysis.failed = Some("again".into());
        assert_eq!(w.step(503), Some(DeploymentPhase::Rejected));
        assert_eq!(
            w.step(504),
            Some(DeploymentPhase::Rejected),
            "a handled retry does not retry again"
        );
        w.annotations.retry = Some("v2/2".into());
        assert_eq!(w.step(505), Some(DeploymentPhase::Shadowing));
        // A new desired version leaves the rejection behind.
        w.analysis.failed = None;
        w.desired = v("v3");
        assert_eq!(w.step(506), Some(DeploymentPhase::Shadowing));
        assert_eq!(w.status.candidate.as_ref().unwrap().version, "v3");
    }

    #[test]
    fn degradation_while_baking_rolls_back_to_the_previous_version() {
        let mut w = World::shadowing_v2();
        w.step(70);
        w.rolled_out("v2");
        assert_eq!(w.step(71), Some(DeploymentPhase::Baking));
        w.analysis.failed = Some("error-rate 0.3 above 0.011".into());
        assert_eq!(w.step(80), Some(DeploymentPhase::RolledBack));
        assert_eq!(w.stable(), "v1");
        assert_eq!(w.status.history[0].outcome, Outcome::RolledBack);
        assert_eq!(w.events.last().unwrap().decision, Some("rolled_back"));
        // Sticky: the spec still asks for v2 but nothing happens.
        w.analysis.failed = None;
        assert_eq!(w.step(90), Some(DeploymentPhase::RolledBack));
        assert_eq!(w.stable(), "v1");
    }

    #[test]
    fn query_errors_reject_a_shadow_but_only_hold_a_bake() {
        let mut w = World::shadowing_v2();
        w.analysis.errored = Some("query failed 5 times in a row".into());
        assert_eq!(w.step(10), Some(DeploymentPhase::Rejected));

        let mut w = World::shadowing_v2();
        w.step(70);
        w.rolled_out("v2");
        w.step(71);
        w.analysis.errored = Some("query failed 5 times in a row".into());
        assert_eq!(w.step(500), Some(DeploymentPhase::Baking));
        assert!(w.status.message.as_ref().unwrap().contains("held"));
        assert_eq!(w.stable(), "v2");
    }

    #[test]
    fn manual_promotion_waits_for_the_right_approval() {
        let mut w = World::shadowing_v2();
        w.promotion = Promotion::Manual;
        assert_eq!(w.step(100), Some(DeploymentPhase::Shadowing));
        assert!(w.awaiting_approval);
        assert!(
            w.status
                .message
                .as_ref()
                .unwrap()
                .contains("modelship.io/approve=v2")
        );
        assert_eq!(
            w.reasons()
                .iter()
                .filter(|r| **r == "AwaitingApproval")
                .count(),
            1
        );
        w.step(101);
        assert_eq!(
            w.reasons()
                .iter()
                .filter(|r| **r == "AwaitingApproval")
                .count(),
            1,
            "announced once"
        );
        w.annotations.approve = Some("v1".into());
        assert_eq!(w.step(102), Some(DeploymentPhase::Shadowing));
        assert!(
            w.awaiting_approval,
            "approving another version approves nothing"
        );
        w.annotations.approve = Some("v2".into());
        assert_eq!(w.step(103), Some(DeploymentPhase::Promoting));
        assert!(!w.awaiting_approval);
    }

    #[test]
    fn an_approval_binds_to_the_artifact_it_was_given_for() {
        let mut w = World::shadowing_v2();
        w.promotion = Promotion::Manual;
        // Approved early, while v2 at s3://models/v2 is shadowed: bound to that artifact.
        w.annotations.approve = Some("v2".into());
        w.analysis.passing = false;
        assert_eq!(w.step(10), Some(DeploymentPhase::Shadowing));
        let h = w.status.approval.clone().unwrap();
        assert_eq!(
            (
                h.value.as_str(),
                h.result,
                h.version.as_deref(),
                h.artifact.as_deref()
            ),
            (
                "v2",
                ApprovalResult::Bound,
                Some("v2"),
                Some("s3://models/v2")
            )
        );
        assert_eq!(h.seen_at, t(10));
        // The same version now names another artifact: the approval does not follow it.
        w.desired.artifact = "s3://elsewhere/v2".into();
        w.step(20);
        w.step(21);
        assert_eq!(
            w.status.approval.as_ref().unwrap().result,
            ApprovalResult::Stale
        );
        assert!(w.reasons().contains(&"ApprovalStale"));
        w.analysis.passing = true;
        assert_eq!(w.step(200), Some(DeploymentPhase::Shadowing));
        assert!(w.awaiting_approval, "the stale approval promotes nothing");
        assert!(
            w.status
                .message
                .as_ref()
                .unwrap()
                .contains("modelship.io/approve=v2/2"),
            "{:?}",
            w.status.message
        );
        w.annotations.approve = Some("v2/2".into());
        assert_eq!(w.step(201), Some(DeploymentPhase::Promoting));
        let h = w.status.approval.clone().unwrap();
        assert_eq!(
            (
                h.value.as_str(),
                h.result,
                h.artifact.as_deref(),
                h.acted_at
            ),
            (
                "v2/2",
                ApprovalResult::Approved,
                Some("s3://elsewhere/v2"),
                Some(t(201))
            )
        );
    }

    #[test]
    fn an_approval_that_acted_does_not_approve_the_version_again() {
        let mut w = World::shadowing_v2();
        w.promotion = Promotion::Manual;
        // v2 was approved with this value before (then rolled back and retried).
        w.status.approval = Some(HandledApproval {
            value: "v2".into(),
            result: ApprovalResult::Approved,
            run: None,
            version: Some("v2".into()),
            artifact: Some("s3://models/v2".into()),
            sha256: None,
            seen_at: t(0),
            acted_at: Some(t(0)),
            message: None,
        });
        w.annotations.approve = Some("v2".into());
        assert_eq!(w.step(200), Some(DeploymentPhase::Shadowing));
        assert!(w.awaiting_approval, "the old approval acts once");
        w.annotations.approve = Some("v2/2".into());
        assert_eq!(w.step(201), Some(DeploymentPhase::Promoting));
    }

    #[test]
    fn fresh_approval_values_never_repeat_the_handled_one() {
        assert_eq!(fresh_approval_value(None, "v2"), "v2");
        assert_eq!(fresh_approval_value(Some("v1"), "v2"), "v2");
        assert_eq!(fresh_approval_value(Some("v2"), "v2"), "v2/2");
        assert_eq!(fresh_approval_value(Some("v2/2"), "v2"), "v2/3");
        assert_eq!(fresh_approval_value(Some("v2/ok"), "v2"), "v2/2");
    }

    #[test]
    fn a_newer_version_during_shadowing_restarts_the_window() {
        let mut w = World::shadowing_v2();
        w.step(50);
        w.desired = v("v3");
        assert_eq!(w.step(55), Some(DeploymentPhase::Shadowing));
        assert_eq!(w.status.candidate.as_ref().unwrap().version, "v3");
        assert_eq!(w.status.analysis.as_ref().unwrap().started_at, Some(t(55)));
        assert_eq!(w.status.history[0].outcome, Outcome::Superseded);
        assert_eq!(
            w.step(100),
            Some(DeploymentPhase::Shadowing),
            "the window restarted at 55"
        );
        // Going back to the stable version ends the shadow.
        w.desired = v("v1");
        assert_eq!(w.step(101), Some(DeploymentPhase::Stable));
        assert!(w.status.candidate.is_none());
    }

    #[test]
    fn abort_stops_a_shadow_or_a_bake_once() {
        let mut w = World::shadowing_v2();
        w.annotations.abort = Some("v2".into());
        assert_eq!(w.step(5), Some(DeploymentPhase::Rejected));
        assert_eq!(w.status.history[0].outcome, Outcome::Aborted);
        w.annotations.retry = Some("v2".into());
        assert_eq!(
            w.step(6),
            Some(DeploymentPhase::Shadowing),
            "the handled abort does not stop the retry"
        );

        let mut w = World::shadowing_v2();
        w.step(70);
        w.rolled_out("v2");
        w.step(71);
        w.annotations.abort = Some("v2".into());
        assert_eq!(w.step(72), Some(DeploymentPhase::RolledBack));
        assert_eq!(w.stable(), "v1");
    }

    #[test]
    fn a_bake_without_a_single_passing_measurement_does_not_finish() {
        let mut w = World::shadowing_v2();
        w.step(70);
        w.rolled_out("v2");
        w.step(71);
        w.analysis = AnalysisSummary {
            passing: false,
            each_passed_once: false,
            waiting: "no data".into(),
            ..Default::default()
        };
        assert_eq!(w.step(1000), Some(DeploymentPhase::Baking));
        w.analysis = AnalysisSummary {
            passing: true,
            each_passed_once: true,
            ..Default::default()
        };
        assert_eq!(w.step(1001), Some(DeploymentPhase::Stable));
    }

    #[test]
    fn a_version_desired_during_the_bake_is_shadowed_after_it() {
        let mut w = World::shadowing_v2();
        w.step(70);
        w.rolled_out("v2");
        w.step(71);
        w.desired = v("v3");
        assert_eq!(w.step(100), Some(DeploymentPhase::Baking));
        assert!(w.status.message.as_ref().unwrap().contains("v3 is next"));
        assert_eq!(w.step(300), Some(DeploymentPhase::Shadowing));
        assert_eq!(w.stable(), "v2");
        assert_eq!(w.status.candidate.as_ref().unwrap().version, "v3");
    }

    #[test]
    fn without_shadowing_a_new_version_is_promoted_and_baked() {
        let mut w = World::new("v1");
        w.shadow_enabled = false;
        w.step(0);
        w.desired = v("v2");
        assert_eq!(w.step(1), Some(DeploymentPhase::Promoting));
        w.rolled_out("v2");
        assert_eq!(w.step(2), Some(DeploymentPhase::Baking));
    }

    #[test]
    fn a_failed_rollout_returns_to_the_previous_version() {
        let mut w = World::shadowing_v2();
        w.step(70);
        w.stable_track = TrackRollout {
            version: Some("v2".into()),
            complete: false,
            failed: true,
        };
        assert_eq!(w.step(71), Some(DeploymentPhase::RolledBack));
        assert_eq!(w.stable(), "v1");
        assert_eq!(w.events.last().unwrap().reason, Reason::RolloutFailed);
    }

    #[test]
    fn history_is_bounded_newest_first() {
        let mut w = World::shadowing_v2();
        for (i, name) in ["v3", "v4", "v5", "v6"].iter().enumerate() {
            w.desired = v(name);
            w.step(10 + i as i64);
        }
        assert_eq!(w.status.history.len(), 3);
        assert_eq!(w.status.history[0].version, "v5");
    }
}
