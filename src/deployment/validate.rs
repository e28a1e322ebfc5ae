//! What the schema cannot check about a ModelDeployment, turned into a parsed configuration
//! or a message for the user. Pure.
use super::desired::model_container_index;
use crate::analysis::prometheus::AllowedUrls;
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
    pub shadow_timeout: Duration,
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

/// Refuses a `spec.analysis.prometheusUrl` outside the operator's `--allowed-prometheus-urls`;
/// the operator's own `--prometheus-url` (`default_url`) is always allowed.
pub fn check_prometheus_url(
    md: &ModelDeployment,
    allowed: &AllowedUrls,
    default_url: &str,
) -> Result<(), String> {
    let Some(url) = md.spec.analysis.prometheus_url.as_deref() else {
        return Ok(());
    };
    if url == default_url || allowed.allows(url) {
        return Ok(());
    }
    Err(format!(
        "spec.analysis.prometheusUrl: {url:?} is not under any of the operator's --allowed-prometheus-urls ({allowed}); name a URL under one of them, or leave prometheusUrl unset to use {default_url}"
    ))
}

/// Checks what the schema cannot and parses the durations.
pub fn validate(md: &ModelDeployment) -> Result<Validated, String> {
    let spec = &md.spec;
    let template = spec
        .template
        .parse()
        .map_err(|e| format!("spec.template is not a pod template: {e}"))?;
    let container = model_container_index(&template, spec.container.as_deref())?;
    reserved_labels(&template)?;
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
    let shadow_timeout = parse_duration(
        "spec.traffic.router.shadowTimeout",
        &spec.traffic.router.shadow_timeout,
    )?;
    if shadow_timeout.is_zero() {
        return Err("spec.traffic.router.shadowTimeout must be greater than zero: the router would give up on every copy at once".into());
    }
    // The router's own checks, so that a router built from an accepted spec always starts.
    for p in &spec.shadow.compare.pointers {
        if !(p.is_empty() || p.starts_with('/')) {
            return Err(format!(
                "spec.shadow.compare.pointers: {p:?} is not a JSON pointer (it must be empty or start with '/')"
            ));
        }
        if p.contains(',') {
            return Err(format!(
                "spec.shadow.compare.pointers: {p:?} contains ',', which the router cannot take in a pointer"
            ));
        }
        if let Some(bad) = crate::mirror::invalid_escape(p) {
            return Err(format!(
                "spec.shadow.compare.pointers: {p:?} has the escape {bad:?}; a JSON pointer escapes only ~0 (~) and ~1 (/)"
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
        shadow_timeout,
    })
}

/// The operator's own pod labels (`modelship.io/...`) are not the template's to set: they
/// select the tracks and mark the router's pods, whose series alone are the analysis's
/// evidence. A model pod labelled `modelship.io/component: router` would pass its own.
fn reserved_labels(template: &PodTemplateSpec) -> Result<(), String> {
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    match labels
        .into_iter()
        .flatten()
        .find(|(k, _)| k.starts_with("modelship.io/"))
    {
        Some((k, _)) => Err(format!(
            "spec.template.metadata.labels: {k:?} is reserved for the operator (it sets the modelship.io/ labels of every pod it runs); remove it"
        )),
        None => Ok(()),
    }
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
    fn the_operators_labels_cannot_come_from_the_template() {
        let mut md = sample();
        let mut template: PodTemplateSpec = md.spec.template.parse().unwrap();
        template.metadata.get_or_insert_default().labels =
            Some([("modelship.io/component".to_string(), "router".to_string())].into());
        md.spec.template =
            serde_json::from_value(serde_json::to_value(&template).unwrap()).unwrap();
        let err = validate(&md).unwrap_err();
        assert!(
            err.contains("\"modelship.io/component\" is reserved for the operator"),
            "{err}"
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

/// A spec that validates gives the router arguments it starts with: otherwise the router
/// crash-loops and the shadow never gets traffic.
#[cfg(test)]
mod router_accepts_what_validates {
    use super::validate;
    use crate::deployment::desired::router_args;
    use crate::deployment::testing::sample;
    use crate::mirror::MirrorArgs;
    use clap::Parser;
    use proptest::prelude::*;

    #[derive(Parser)]
    struct Router {
        #[command(flatten)]
        args: MirrorArgs,
    }

    fn router_starts(md: &crate::api::ModelDeployment) -> Result<(), String> {
        // `modelship mirror ...`: the subcommand stands where clap expects the program's name.
        let args = router_args(md, true);
        assert_eq!(args[0], "mirror");
        let router = Router::try_parse_from(args).map_err(|e| e.to_string())?;
        router
            .args
            .validate()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    proptest! {
        #[test]
        fn a_valid_spec_gives_arguments_the_router_takes(
            timeout in "([0-9]{1,3}([.][0-9]{1,2})?(ms|s|m|h)){1,2}",
            pointers in prop::collection::vec("(/([a-z,~]|~[0-9]){0,4}){0,3}", 1..4),
            tolerance in 0.0f64..10.0,
            percent in 0.0f64..=100.0,
        ) {
            let mut md = sample();
            md.spec.traffic.router.shadow_timeout = timeout;
            md.spec.shadow.compare.pointers = pointers;
            md.spec.shadow.compare.tolerance = tolerance;
            md.spec.shadow.mirror_percent = percent;
            if validate(&md).is_ok() {
                prop_assert_eq!(router_starts(&md), Ok(()), "{:?}", md.spec);
            }
        }
    }

    #[test]
    fn what_the_router_once_refused_is_now_taken_or_refused_by_validation() {
        let mut md = sample();
        // Fractional and compound durations, and escaped pointers, are valid and start.
        md.spec.traffic.router.shadow_timeout = "1.5s".into();
        md.spec.shadow.compare.pointers = vec!["/a~1b".into(), "/scores/0".into(), "".into()];
        assert!(validate(&md).is_ok());
        assert_eq!(router_starts(&md), Ok(()));
        md.spec.traffic.router.shadow_timeout = "1m30s".into();
        assert_eq!(router_starts(&md), Ok(()));
        // What the router cannot take is refused with the field's name.
        for (timeout, pointer, words) in [
            ("0s", "/p", "shadowTimeout must be greater than zero"),
            ("1s", "/a,b", "contains ','"),
            ("1s", "/a~2", "the escape \"~2\""),
        ] {
            md.spec.traffic.router.shadow_timeout = timeout.into();
            md.spec.shadow.compare.pointers = vec![pointer.into()];
            let e = validate(&md).expect_err(pointer);
            assert!(e.contains(words), "{e}");
        }
    }
}
