//! `status`: whether a ModelDeployment has settled on the version its spec asks for. Pure.
use crate::api::{DeploymentPhase, ModelDeployment, Outcome};
use crate::deployment::status::READY;
use crate::plugin::cli::exit;

/// Where the desired version stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Stable on the desired version, every replica available.
    Stable { version: String },
    /// The desired version's try ended without it serving users.
    Failed { how: Failure, why: String },
    /// Still on its way; the reason, for the progress line.
    Pending(String),
}

/// How a try ended, each with its own exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Rejected,
    RolledBack,
}

impl Failure {
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Rejected => exit::REJECTED,
            Failure::RolledBack => exit::ROLLED_BACK,
        }
    }
}

/// The version the spec asks for: the fixed one, or the one the operator resolved from the
/// pipeline (`status.desired`).
fn desired_version(md: &ModelDeployment) -> Option<String> {
    match &md.spec.model {
        Some(m) => Some(m.version.clone()),
        None => md
            .status
            .as_ref()
            .and_then(|s| s.desired.as_ref())
            .map(|d| d.version.clone()),
    }
}

/// Decides whether `md` has settled.
pub fn settle(md: &ModelDeployment) -> Settlement {
    let Some(status) = md.status.as_ref() else {
        return Settlement::Pending("the operator has not reported a status yet".into());
    };
    // A status about an older spec says nothing about the version now asked for.
    if md.metadata.generation.is_some() && status.observed_generation < md.metadata.generation {
        return Settlement::Pending(format!(
            "the operator has not acted on generation {} yet",
            md.metadata.generation.unwrap_or_default()
        ));
    }
    let Some(desired) = desired_version(md) else {
        return Settlement::Pending("waiting for the pipeline to approve a candidate".into());
    };
    let message = status.message.clone().unwrap_or_default();
    let candidate = status.candidate.as_ref().map(|c| c.version.as_str());
    let aborted = status
        .history
        .first()
        .is_some_and(|h| h.version == desired && h.outcome == Outcome::Aborted);
    let fail = |how, what: &str| Settlement::Failed {
        how,
        why: format!(
            "{desired} {}: {message}",
            if aborted { "was aborted" } else { what }
        ),
    };
    match status.phase {
        Some(DeploymentPhase::Rejected) if candidate == Some(desired.as_str()) => {
            fail(Failure::Rejected, "was rejected")
        }
        Some(DeploymentPhase::RolledBack) if candidate == Some(desired.as_str()) => {
            fail(Failure::RolledBack, "was rolled back")
        }
        Some(DeploymentPhase::Stable)
            if status.stable.as_ref().map(|s| s.version.as_str()) == Some(desired.as_str()) =>
        {
            let ready = status.condition(READY);
            if ready.is_some_and(|c| c.status == "True") {
                Settlement::Stable { version: desired }
            } else {
                let why = ready.map(|c| c.message.clone()).unwrap_or_default();
                Settlement::Pending(format!("{desired} is stable but not ready: {why}"))
            }
        }
        Some(phase) => Settlement::Pending(format!("{phase}: {message}")),
        None => Settlement::Pending("the operator has not decided yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HistoryEntry, ModelDeploymentStatus, VersionRef};
    use crate::plugin::testdata::deployment;

    fn v(version: &str) -> Option<VersionRef> {
        Some(VersionRef {
            version: version.into(),
            artifact: format!("s3://models/{version}"),
            since: None,
        })
    }

    /// The fixture asks for fraud-v2; `edit` sets the status.
    fn md(edit: impl FnOnce(&mut ModelDeploymentStatus)) -> ModelDeployment {
        let mut md = deployment();
        let status = md.status.as_mut().unwrap();
        status.candidate = None;
        edit(status);
        md
    }

    fn ready(status: &mut ModelDeploymentStatus, ok: bool) {
        let c = status
            .conditions
            .iter_mut()
            .find(|c| c.type_ == READY)
            .unwrap();
        c.status = if ok { "True" } else { "False" }.into();
    }

    #[test]
    fn stable_and_ready_on_the_desired_version_settles() {
        let md = md(|s| {
            s.phase = Some(DeploymentPhase::Stable);
            s.stable = v("fraud-v2");
            ready(s, true);
        });
        assert_eq!(
            settle(&md),
            Settlement::Stable {
                version: "fraud-v2".into()
            }
        );
    }

    #[test]
    fn stable_but_not_ready_waits() {
        let md = md(|s| {
            s.phase = Some(DeploymentPhase::Stable);
            s.stable = v("fraud-v2");
            ready(s, false);
        });
        assert!(matches!(settle(&md), Settlement::Pending(m) if m.contains("not ready")));
    }

    #[test]
    fn stable_on_the_old_version_waits() {
        let md = md(|s| {
            s.phase = Some(DeploymentPhase::Stable);
            s.stable = v("fraud-v1");
            ready(s, true);
        });
        assert!(matches!(settle(&md), Settlement::Pending(_)));
    }

    #[test]
    fn a_status_of_an_older_generation_waits() {
        let mut md = md(|s| {
            s.phase = Some(DeploymentPhase::Stable);
            s.stable = v("fraud-v2");
            ready(s, true);
        });
        md.metadata.generation = Some(4);
        assert!(matches!(settle(&md), Settlement::Pending(m) if m.contains("generation 4")));
    }

    #[test]
    fn rejected_and_rolled_back_fail_with_their_own_codes() {
        for (phase, code) in [
            (DeploymentPhase::Rejected, exit::REJECTED),
            (DeploymentPhase::RolledBack, exit::ROLLED_BACK),
        ] {
            let md = md(|s| {
                s.phase = Some(phase);
                s.candidate = v("fraud-v2");
                s.message = Some("error-rate failed".into());
            });
            let Settlement::Failed { how, why } = settle(&md) else {
                panic!("{phase} must fail")
            };
            assert_eq!(how.exit_code(), code);
            assert!(
                why.contains("fraud-v2") && why.contains("error-rate failed"),
                "{why}"
            );
        }
    }

    #[test]
    fn an_abort_is_named() {
        let md = md(|s| {
            s.phase = Some(DeploymentPhase::Rejected);
            s.candidate = v("fraud-v2");
            s.history.insert(
                0,
                HistoryEntry {
                    version: "fraud-v2".into(),
                    artifact: "s3://models/fraud-v2".into(),
                    outcome: Outcome::Aborted,
                    reason: "Aborted".into(),
                    message: "stopped".into(),
                    time: "2026-11-26T10:00:00Z".parse().unwrap(),
                    metrics: vec![],
                },
            );
        });
        assert!(matches!(settle(&md), Settlement::Failed { why, .. } if why.contains("aborted")));
    }

    #[test]
    fn a_rejection_of_another_version_is_not_this_ones() {
        let md = md(|s| {
            s.phase = Some(DeploymentPhase::Rejected);
            s.candidate = v("fraud-v1b");
        });
        assert!(matches!(settle(&md), Settlement::Pending(_)));
    }

    #[test]
    fn shadowing_and_baking_wait() {
        for phase in [
            DeploymentPhase::Shadowing,
            DeploymentPhase::Promoting,
            DeploymentPhase::Baking,
        ] {
            let md = md(|s| {
                s.phase = Some(phase);
                s.candidate = v("fraud-v2");
            });
            assert!(matches!(settle(&md), Settlement::Pending(m) if m.starts_with(phase.as_str())));
        }
    }

    #[test]
    fn no_status_waits() {
        let mut md = deployment();
        md.status = None;
        assert!(matches!(settle(&md), Settlement::Pending(_)));
    }
}
