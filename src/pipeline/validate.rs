//! What the schema cannot check about a ModelPipeline. Pure.
use crate::api::ModelPipeline;

/// Checks the parts of a pipeline the schema cannot; the message says what to fix.
pub fn validate(p: &ModelPipeline) -> Result<(), String> {
    let spec = &p.spec;
    let stages = [
        ("checks", spec.stages.checks.as_ref().map(|s| &s.template)),
        (
            "validate",
            spec.stages.validate.as_ref().map(|s| &s.template),
        ),
        ("train", Some(&spec.stages.train.template)),
        ("evaluate", Some(&spec.stages.evaluate.template)),
        (
            "integration",
            spec.stages.integration.as_ref().map(|s| &s.stage.template),
        ),
    ];
    for (name, template) in stages {
        if let Some(t) = template {
            t.parse()
                .map_err(|e| format!("spec.stages.{name}.template is not a pod template: {e}"))?;
        }
    }
    for base in &spec.model.allowed_artifact_bases {
        // A base with a `.` or `..` segment would let a reported URI escape it.
        if !super::artifact::under_base(&format!("{}/x", base.trim_end_matches('/')), base) {
            return Err(format!(
                "spec.model.allowedArtifactBases: {base:?} must be a URI without '.' or '..' segments"
            ));
        }
    }
    super::schedule::Schedule::from_spec(&spec.triggers)?;
    semver::Version::parse(&spec.model.initial_version).map_err(|e| {
        format!(
            "spec.model.initialVersion {:?}: {e}",
            spec.model.initial_version
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testing::sample;

    #[test]
    fn sample_is_valid() {
        validate(&sample()).unwrap();
    }

    #[test]
    fn bad_schedule_and_time_zone_are_named() {
        let mut p = sample();
        p.spec.triggers.schedule = Some("every monday".into());
        assert!(
            validate(&p)
                .unwrap_err()
                .starts_with("spec.triggers.schedule \"every monday\"")
        );
        p.spec.triggers.schedule = Some("0 3 * * 1".into());
        p.spec.triggers.time_zone = Some("Mars/Olympus".into());
        assert!(validate(&p).unwrap_err().contains("Mars/Olympus"));
    }

    #[test]
    fn an_allowed_artifact_base_that_could_be_escaped_is_refused() {
        let mut p = sample();
        p.spec.model.allowed_artifact_bases = vec!["gs://archive/models/".into()];
        validate(&p).unwrap();
        p.spec.model.allowed_artifact_bases = vec!["gs://archive/../models".into()];
        assert!(validate(&p).unwrap_err().contains("allowedArtifactBases"));
    }

    #[test]
    fn a_template_that_is_not_a_pod_template_is_named() {
        let mut p = sample();
        p.spec.stages.evaluate.template.0["spec"]["containers"] = serde_json::json!("main");
        assert!(
            validate(&p)
                .unwrap_err()
                .starts_with("spec.stages.evaluate.template is not a pod template")
        );
    }
}
