//! What production trusts, as the ModelDeployment that follows the pipeline reports it:
//! the baseline of the next run. Read only: the pipeline never writes a ModelDeployment.
//! Pure.
use crate::api::{
    Candidate, DeploymentPhase, ModelDeployment, ModelPipeline, ModelPipelineStatus,
    ProductionModel, VersionRef,
};
use crate::pipeline::serving::followers;
use jiff::Timestamp;
use kube::ResourceExt;

/// The version a ModelDeployment trusts: its stable version, except while a new one is
/// being promoted or baked, when the previous one is still what passed.
pub fn trusted_version(md: &ModelDeployment) -> Option<&VersionRef> {
    let status = md.status.as_ref()?;
    match status.phase {
        Some(DeploymentPhase::Promoting) | Some(DeploymentPhase::Baking) => {
            status.previous.as_ref()
        }
        _ => status.stable.as_ref(),
    }
}

/// A candidate of this pipeline with `version`, wherever status still remembers it.
fn known_candidate<'a>(status: &'a ModelPipelineStatus, version: &str) -> Option<&'a Candidate> {
    status
        .latest_approved
        .iter()
        .chain(status.latest_candidate.iter())
        .chain(status.runs.iter().filter_map(|r| r.candidate.as_ref()))
        .find(|c| c.version == version)
}

/// The production model now. Without a follower, or while the follower trusts nothing yet,
/// the last known production model stays: the baseline does not vanish with a deleted
/// ModelDeployment.
pub fn observe(
    p: &ModelPipeline,
    deployments: &[&ModelDeployment],
    status: &ModelPipelineStatus,
    now: Timestamp,
) -> Option<ProductionModel> {
    let current = status.production.clone();
    let all = followers(p, deployments);
    let named = p
        .spec
        .stages
        .integration
        .as_ref()
        .and_then(|i| i.deployment.as_deref());
    let Some(md) = all
        .iter()
        .find(|md| Some(md.name_any().as_str()) == named)
        .or(all.first())
    else {
        return current;
    };
    let Some(trusted) = trusted_version(md) else {
        return current;
    };
    if current
        .as_ref()
        .is_some_and(|c| c.version == trusted.version && c.artifact == trusted.artifact)
    {
        return current;
    }
    let known = known_candidate(status, &trusted.version);
    let repro = known.and_then(|c| c.reproducibility.as_ref());
    Some(ProductionModel {
        version: trusted.version.clone(),
        artifact: trusted.artifact.clone(),
        deployment: Some(md.name_any()),
        run: known.map(|c| c.run.clone()),
        since: Some(now),
        metrics: repro.map(|r| r.metrics.clone()).unwrap_or_default(),
        integration_metrics: repro
            .map(|r| r.integration_metrics.clone())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ModelFrom, Reproducibility};
    use crate::deployment::testing::sample as sample_md;
    use crate::pipeline::testing::sample;
    use std::collections::BTreeMap;

    fn now() -> Timestamp {
        "2026-11-27T08:00:00Z".parse().unwrap()
    }

    fn vr(v: &str) -> VersionRef {
        VersionRef {
            version: v.into(),
            artifact: format!("s3://m/{v}/"),
            since: None,
        }
    }

    fn follower(phase: DeploymentPhase, stable: &str, previous: Option<&str>) -> ModelDeployment {
        let mut md = sample_md();
        md.spec.model = None;
        md.spec.model_from = Some(ModelFrom {
            pipeline: "fraud".into(),
        });
        let mut s = crate::api::ModelDeploymentStatus {
            phase: Some(phase),
            stable: Some(vr(stable)),
            ..Default::default()
        };
        s.previous = previous.map(vr);
        md.status = Some(s);
        md
    }

    fn candidate(version: &str, run: &str, f1: f64) -> Candidate {
        Candidate {
            version: version.into(),
            artifact: format!("s3://m/{version}/"),
            run: run.into(),
            reproducibility: Some(Reproducibility {
                metrics: BTreeMap::from([("f1".into(), f1)]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn stable_is_trusted_except_while_promoting_or_baking() {
        assert_eq!(
            trusted_version(&follower(DeploymentPhase::Stable, "v2", None))
                .unwrap()
                .version,
            "v2"
        );
        assert_eq!(
            trusted_version(&follower(DeploymentPhase::Shadowing, "v2", None))
                .unwrap()
                .version,
            "v2"
        );
        assert_eq!(
            trusted_version(&follower(DeploymentPhase::RolledBack, "v1", None))
                .unwrap()
                .version,
            "v1"
        );
        assert_eq!(
            trusted_version(&follower(DeploymentPhase::Baking, "v3", Some("v2")))
                .unwrap()
                .version,
            "v2"
        );
        assert_eq!(
            trusted_version(&follower(DeploymentPhase::Promoting, "v3", Some("v2")))
                .unwrap()
                .version,
            "v2"
        );
        assert!(trusted_version(&follower(DeploymentPhase::Baking, "v3", None)).is_none());
    }

    #[test]
    fn a_promoted_candidate_becomes_production_with_the_metrics_it_passed_with() {
        let p = sample();
        let status = ModelPipelineStatus {
            latest_approved: Some(candidate("v2", "r2", 0.93)),
            ..Default::default()
        };
        let prod = observe(
            &p,
            &[&follower(DeploymentPhase::Stable, "v2", None)],
            &status,
            now(),
        )
        .unwrap();
        assert_eq!(prod.version, "v2");
        assert_eq!(prod.run.as_deref(), Some("r2"));
        assert_eq!(prod.deployment.as_deref(), Some("fraud"));
        assert_eq!(prod.metrics["f1"], 0.93);
        assert_eq!(prod.since, Some("2026-11-27T08:00:00Z".parse().unwrap()));
    }

    #[test]
    fn an_older_run_in_history_still_gives_its_metrics() {
        let p = sample();
        let mut run = crate::pipeline::testing::run(&p, "r1");
        run.candidate = Some(candidate("v1", "r1", 0.9));
        let status = ModelPipelineStatus {
            runs: vec![run],
            latest_approved: Some(candidate("v2", "r2", 0.93)),
            ..Default::default()
        };
        let prod = observe(
            &p,
            &[&follower(DeploymentPhase::Baking, "v2", Some("v1"))],
            &status,
            now(),
        )
        .unwrap();
        assert_eq!((prod.version.as_str(), prod.metrics["f1"]), ("v1", 0.9));
    }

    #[test]
    fn an_unchanged_production_keeps_its_record() {
        let p = sample();
        let before = ProductionModel {
            version: "v1".into(),
            artifact: "s3://m/v1/".into(),
            since: Some(jiff::Timestamp::UNIX_EPOCH),
            ..Default::default()
        };
        let status = ModelPipelineStatus {
            production: Some(before.clone()),
            ..Default::default()
        };
        assert_eq!(
            observe(
                &p,
                &[&follower(DeploymentPhase::Shadowing, "v1", None)],
                &status,
                now()
            ),
            Some(before.clone())
        );
        // No follower at all: the last known production stays.
        assert_eq!(observe(&p, &[], &status, now()), Some(before));
    }

    #[test]
    fn a_version_the_pipeline_did_not_build_has_no_metrics() {
        let p = sample();
        let prod = observe(
            &p,
            &[&follower(DeploymentPhase::Stable, "hand-made", None)],
            &ModelPipelineStatus::default(),
            now(),
        )
        .unwrap();
        assert_eq!(prod.version, "hand-made");
        assert!(prod.metrics.is_empty() && prod.run.is_none());
    }
}
