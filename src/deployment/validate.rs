//! What the schema cannot check about a ModelDeployment, turned into a parsed configuration
//! or a message for the user. Pure.
use super::desired::model_container_index;
use crate::api::{ModelDeployment, TrafficProvider};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use std::time::Duration;

/// A ModelDeployment's spec, checked and parsed.
#[derive(Clone, Debug)]
pub struct Validated {
    pub template: PodTemplateSpec,
    pub container: usize,
    pub min_duration: Duration,
    pub interval: Duration,
    pub window: Duration,
    pub bake_time: Duration,
}

/// Parses a Go-style duration (`30s`, `5m`, `1h30m`), naming the field on error.
pub fn parse_duration(field: &str, value: &str) -> Result<Duration, String> {
    let d: kube::core::Duration = value
        .parse()
        .map_err(|e| format!("{field}: {value:?} is not a duration ({e})"))?;
    if d.is_negative() {
        return Err(format!("{field}: {value:?} must not be negative"));
    }
    Ok(d.into())
}

/// Checks what the schema cannot and parses the durations.
pub fn validate(md: &ModelDeployment) -> Result<Validated, String> {
    let spec = &md.spec;
    let template = spec
        .template
        .parse()
        .map_err(|e| format!("spec.template is not a pod template: {e}"))?;
    let container = model_container_index(&template, spec.container.as_deref())?;
    let interval = parse_duration("spec.analysis.interval", &spec.analysis.interval)?;
    if interval < Duration::from_secs(1) {
        return Err("spec.analysis.interval must be at least 1s".into());
    }
    let window = parse_duration("spec.analysis.window", &spec.analysis.window)?;
    if window < Duration::from_secs(1) {
        return Err("spec.analysis.window must be at least 1s".into());
    }
    let min_duration = parse_duration("spec.shadow.minDuration", &spec.shadow.min_duration)?;
    let bake_time = parse_duration("spec.analysis.bakeTime", &spec.analysis.bake_time)?;
    parse_duration(
        "spec.traffic.router.shadowTimeout",
        &spec.traffic.router.shadow_timeout,
    )?;
    for p in &spec.shadow.compare.pointers {
        if !(p.is_empty() || p.starts_with('/')) {
            return Err(format!(
                "spec.shadow.compare.pointers: {p:?} is not a JSON pointer (it must be empty or start with '/')"
            ));
        }
    }
    if spec.traffic.provider != TrafficProvider::Builtin
        && spec.shadow.enabled
        && spec.analysis.metrics.iter().all(|m| m.dry_run)
    {
        return Err(format!(
            "spec.analysis.metrics: provider {:?} has no default metrics (they come from the built-in router), so list at least one metric that is not dry-run; a candidate is promoted only on measured evidence",
            spec.traffic.provider
        ));
    }
    Ok(Validated {
        template,
        container,
        min_duration,
        interval,
        window,
        bake_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::testing::sample;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(
            parse_duration("f", "1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_duration("f", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert!(
            parse_duration("f", "ten")
                .unwrap_err()
                .starts_with("f: \"ten\"")
        );
    }

    #[test]
    fn sample_is_valid() {
        let v = validate(&sample()).unwrap();
        assert_eq!(v.interval, Duration::from_secs(30));
        assert_eq!(v.container, 0);
    }

    #[test]
    fn a_template_the_types_reject_is_reported() {
        let mut md = sample();
        md.spec.template.0["spec"]["containers"][0]["ports"] = serde_json::json!("8080");
        let err = validate(&md).unwrap_err();
        assert!(
            err.starts_with("spec.template is not a pod template"),
            "{err}"
        );
    }

    #[test]
    fn another_provider_needs_its_own_metrics() {
        let mut md = sample();
        md.spec.traffic.provider = TrafficProvider::Istio;
        let err = validate(&md).unwrap_err();
        assert!(err.contains("no default metrics"), "{err}");
    }
}
