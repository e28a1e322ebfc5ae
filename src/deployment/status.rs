//! The conditions of a ModelDeployment, from its phase and what its children are doing. Pure.
use crate::api::{DeploymentPhase, ModelDeploymentStatus};
use crate::conditions::{Status, set};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
pub const TRAFFIC_CONFIGURED: &str = "TrafficConfigured";

/// What the children were seen doing.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The stable Deployment runs the stable version on every replica, all available.
    pub stable_available: bool,
    /// The built-in router is available; `None` with another provider.
    pub router_available: Option<bool>,
    /// `Err(reason, message)` when the traffic provider's objects could not be set up.
    pub traffic: Result<String, (String, String)>,
    /// Whether Prometheus could be read in this round (`None`: no measurement this round).
    pub metrics: Option<Result<(), String>>,
    /// The candidate passed its analysis and waits for a person's approval.
    pub awaiting_approval: bool,
}

/// Sets `Ready`, `Progressing`, `Degraded`, `TrafficConfigured` and `MetricsAvailable`.
pub fn set_conditions(
    status: &mut ModelDeploymentStatus,
    obs: &Observed,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let phase = status.phase;
    let message = status.message.clone().unwrap_or_default();
    let c = &mut status.conditions;

    let (ready, reason, why) = if !obs.stable_available {
        (
            false,
            "StableNotAvailable",
            "the stable Deployment is not yet available on every replica".to_string(),
        )
    } else if obs.router_available == Some(false) {
        (
            false,
            "RouterNotAvailable",
            "the router Deployment is not yet available".to_string(),
        )
    } else if let Err((reason, msg)) = &obs.traffic {
        (false, reason.as_str(), msg.clone())
    } else {
        let version = status
            .stable
            .as_ref()
            .map(|s| s.version.as_str())
            .unwrap_or_default();
        (true, "Available", format!("serving {version}"))
    };
    // `reason` borrows from obs or is static; copy before mutating.
    let reason = reason.to_string();
    set(
        c,
        READY,
        Status::from_bool(ready),
        &reason,
        why,
        generation,
        now,
    );

    let (progressing, reason) = match phase {
        Some(DeploymentPhase::Shadowing) if obs.awaiting_approval => (true, "AwaitingApproval"),
        Some(DeploymentPhase::Shadowing) => (true, "Shadowing"),
        Some(DeploymentPhase::Promoting) => (true, "Promoting"),
        Some(DeploymentPhase::Baking) => (true, "Baking"),
        _ if !obs.stable_available => (true, "RollingOut"),
        Some(DeploymentPhase::Rejected) => (false, "Rejected"),
        Some(DeploymentPhase::RolledBack) => (false, "RolledBack"),
        _ => (false, "Stable"),
    };
    set(
        c,
        PROGRESSING,
        Status::from_bool(progressing),
        reason,
        message.clone(),
        generation,
        now,
    );

    let (degraded, reason, why) = match phase {
        Some(DeploymentPhase::Rejected) => (true, "CandidateRejected", message.clone()),
        Some(DeploymentPhase::RolledBack) => (true, "RolledBack", message.clone()),
        _ => match &obs.traffic {
            Err((reason, msg)) => (true, reason.as_str(), msg.clone()),
            Ok(_) => (false, "AsExpected", "no degradation".to_string()),
        },
    };
    let reason = reason.to_string();
    set(
        c,
        DEGRADED,
        Status::from_bool(degraded),
        &reason,
        why,
        generation,
        now,
    );

    match &obs.traffic {
        Ok(msg) => set(
            c,
            TRAFFIC_CONFIGURED,
            Status::True,
            "Configured",
            msg.clone(),
            generation,
            now,
        ),
        Err((reason, msg)) => set(
            c,
            TRAFFIC_CONFIGURED,
            Status::False,
            reason,
            msg.clone(),
            generation,
            now,
        ),
    }

    set_metrics_available(c, phase, obs.metrics.as_ref(), generation, now);
}

/// `MetricsAvailable` follows one rule, so that it changes only when what it says changes:
/// while a version is under analysis (shadowing, promoting, baking) it is `True` when
/// Prometheus answered the latest measurement's queries and `False` when it did not, and it
/// keeps that answer between measurements and across those phases; before the first
/// measurement of a version it is `Unknown` (`NotMeasuredYet`), and when nothing is being
/// analysed it is `Unknown` (`NotAnalysing`).
fn set_metrics_available(
    c: &mut Vec<crate::api::Condition>,
    phase: Option<DeploymentPhase>,
    measured: Option<&Result<(), String>>,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let analysing = matches!(
        phase,
        Some(DeploymentPhase::Shadowing | DeploymentPhase::Promoting | DeploymentPhase::Baking)
    );
    if !analysing {
        set(
            c,
            METRICS_AVAILABLE,
            Status::Unknown,
            "NotAnalysing",
            "no version is being analysed",
            generation,
            now,
        );
        return;
    }
    match measured {
        Some(Ok(())) => set(
            c,
            METRICS_AVAILABLE,
            Status::True,
            "QueriesAnswered",
            "Prometheus answered the analysis queries",
            generation,
            now,
        ),
        Some(Err(e)) => set(
            c,
            METRICS_AVAILABLE,
            Status::False,
            "PrometheusUnreachable",
            format!(
                "the analysis is inconclusive until Prometheus answers (no promotion, no rollback): {e}"
            ),
            generation,
            now,
        ),
        None => {
            // Between measurements the last answer stands, for the current generation.
            let answered = c
                .iter_mut()
                .find(|x| x.type_ == METRICS_AVAILABLE && x.status != "Unknown");
            if let Some(last) = answered {
                last.observed_generation = generation;
            } else {
                set(
                    c,
                    METRICS_AVAILABLE,
                    Status::Unknown,
                    "NotMeasuredYet",
                    "the version has not been measured yet",
                    generation,
                    now,
                );
            }
        }
    }
}

/// The condition set when the spec is invalid: nothing else can be said.
pub fn set_invalid(
    status: &mut ModelDeploymentStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let c = &mut status.conditions;
    set(c, READY, Status::False, reason, message, generation, now);
    set(c, DEGRADED, Status::True, reason, message, generation, now);
    set(
        c,
        PROGRESSING,
        Status::False,
        reason,
        message,
        generation,
        now,
    );
}

/// The condition set while waiting for a version to serve.
pub fn set_waiting(
    status: &mut ModelDeploymentStatus,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let c = &mut status.conditions;
    set(
        c,
        READY,
        Status::False,
        "WaitingForModel",
        message,
        generation,
        now,
    );
    set(
        c,
        PROGRESSING,
        Status::True,
        "WaitingForModel",
        message,
        generation,
        now,
    );
    set(
        c,
        DEGRADED,
        Status::False,
        "AsExpected",
        "no degradation",
        generation,
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VersionRef;
    use crate::conditions::is_true;

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::UNIX_EPOCH
    }

    #[test]
    fn ready_needs_stable_and_router_available() {
        let mut st = ModelDeploymentStatus {
            phase: Some(DeploymentPhase::Stable),
            stable: Some(VersionRef {
                version: "v1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut obs = Observed {
            stable_available: true,
            router_available: Some(false),
            traffic: Ok("builtin".into()),
            metrics: None,
            awaiting_approval: false,
        };
        set_conditions(&mut st, &obs, Some(1), now());
        assert!(!is_true(&st.conditions, READY));
        obs.router_available = Some(true);
        set_conditions(&mut st, &obs, Some(1), now());
        assert!(is_true(&st.conditions, READY));
        assert!(!is_true(&st.conditions, PROGRESSING));
        assert!(!is_true(&st.conditions, DEGRADED));
        assert_eq!(st.condition(READY).unwrap().message, "serving v1");
    }

    #[test]
    fn rejection_and_rollback_are_degraded_but_still_ready() {
        let mut st = ModelDeploymentStatus {
            phase: Some(DeploymentPhase::RolledBack),
            message: Some("v2 degraded".into()),
            ..Default::default()
        };
        let obs = Observed {
            stable_available: true,
            router_available: None,
            traffic: Ok("istio".into()),
            metrics: None,
            awaiting_approval: false,
        };
        set_conditions(&mut st, &obs, Some(1), now());
        assert!(is_true(&st.conditions, READY));
        assert!(is_true(&st.conditions, DEGRADED));
        assert_eq!(st.condition(DEGRADED).unwrap().reason, "RolledBack");
    }

    #[test]
    fn unreachable_prometheus_is_a_false_metrics_condition() {
        let mut st = ModelDeploymentStatus {
            phase: Some(DeploymentPhase::Shadowing),
            ..Default::default()
        };
        let obs = Observed {
            stable_available: true,
            router_available: Some(true),
            traffic: Ok(String::new()),
            metrics: Some(Err("connection refused".into())),
            awaiting_approval: false,
        };
        set_conditions(&mut st, &obs, Some(1), now());
        let c = st.condition(METRICS_AVAILABLE).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "PrometheusUnreachable")
        );
        assert!(c.message.contains("connection refused"));
    }

    #[test]
    fn metrics_available_follows_the_last_answer_across_every_phase() {
        use DeploymentPhase::*;
        let obs = |metrics| Observed {
            stable_available: true,
            router_available: Some(true),
            traffic: Ok(String::new()),
            metrics,
            awaiting_approval: false,
        };
        let ok = || Some(Ok(()));
        let down = || Some(Err("connection refused".to_string()));
        // (phase after the round, what was measured in it, the condition's status and reason)
        type Step = (
            DeploymentPhase,
            Option<Result<(), String>>,
            &'static str,
            &'static str,
        );
        let steps: Vec<Step> = vec![
            (Stable, None, "Unknown", "NotAnalysing"),
            (Shadowing, None, "Unknown", "NotMeasuredYet"),
            (Shadowing, ok(), "True", "QueriesAnswered"),
            (Shadowing, None, "True", "QueriesAnswered"),
            (Shadowing, down(), "False", "PrometheusUnreachable"),
            (Shadowing, None, "False", "PrometheusUnreachable"),
            (Shadowing, ok(), "True", "QueriesAnswered"),
            // Promotion and the start of the bake measure nothing: the last answer stands.
            (Promoting, None, "True", "QueriesAnswered"),
            (Baking, None, "True", "QueriesAnswered"),
            (Baking, down(), "False", "PrometheusUnreachable"),
            (Baking, ok(), "True", "QueriesAnswered"),
            (Stable, ok(), "Unknown", "NotAnalysing"),
            (Shadowing, None, "Unknown", "NotMeasuredYet"),
            (Shadowing, down(), "False", "PrometheusUnreachable"),
            (Rejected, None, "Unknown", "NotAnalysing"),
            (Shadowing, ok(), "True", "QueriesAnswered"),
            (Promoting, None, "True", "QueriesAnswered"),
            (Baking, ok(), "True", "QueriesAnswered"),
            (RolledBack, ok(), "Unknown", "NotAnalysing"),
        ];
        let mut st = ModelDeploymentStatus::default();
        for (i, (phase, metrics, status, reason)) in steps.into_iter().enumerate() {
            st.phase = Some(phase);
            set_conditions(&mut st, &obs(metrics), Some(1), now());
            let c = st.condition(METRICS_AVAILABLE).unwrap();
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                (status, reason),
                "step {i}: {phase:?}"
            );
        }
    }

    #[test]
    fn missing_provider_crds_are_reported() {
        let mut st = ModelDeploymentStatus {
            phase: Some(DeploymentPhase::Stable),
            ..Default::default()
        };
        let obs = Observed {
            stable_available: true,
            router_available: None,
            traffic: Err((
                "ProviderNotInstalled".into(),
                "VirtualService (networking.istio.io) is not served".into(),
            )),
            metrics: None,
            awaiting_approval: false,
        };
        set_conditions(&mut st, &obs, Some(1), now());
        assert!(!is_true(&st.conditions, TRAFFIC_CONFIGURED));
        assert!(!is_true(&st.conditions, READY));
        assert_eq!(st.condition(READY).unwrap().reason, "ProviderNotInstalled");
    }

    #[test]
    fn a_candidate_awaiting_approval_is_told_by_the_decision_not_by_the_message() {
        let mut st = ModelDeploymentStatus {
            phase: Some(DeploymentPhase::Shadowing),
            // The words alone decide nothing.
            message: Some("v2 waits for approval".into()),
            ..Default::default()
        };
        let mut obs = Observed {
            stable_available: true,
            router_available: Some(true),
            traffic: Ok(String::new()),
            metrics: None,
            awaiting_approval: false,
        };
        set_conditions(&mut st, &obs, Some(1), now());
        assert_eq!(st.condition(PROGRESSING).unwrap().reason, "Shadowing");
        obs.awaiting_approval = true;
        set_conditions(&mut st, &obs, Some(1), now());
        assert_eq!(
            st.condition(PROGRESSING).unwrap().reason,
            "AwaitingApproval"
        );
    }
}
