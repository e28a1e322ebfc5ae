//! The metrics judged when a ModelDeployment with the built-in router lists none: they read
//! the router's own metrics, which Prometheus scrapes with the target labels `namespace` and
//! `deployment` (the ModelDeployment's name) and `component` (see the chart's PodMonitor).
//!
//! Only the router's series are evidence: the PodMonitor scrapes the model pods too, and a
//! candidate could export series named like the router's. `component="router"` is a target
//! label only the router's pods get (the operator sets their pod label, and refuses it in a
//! user's template); every other pod gets `component="model"`, which overrides a `component`
//! label the pod exports itself.
use crate::api::{
    AnalysisMetric, AnalysisPhase, ModelDeployment, RelativeBound, SignificanceTest, TestKind,
    TrafficProvider,
};

const SELECTOR: &str = r#"namespace="{{namespace}}",deployment="{{name}}",component="router""#;

fn requests(track_filter: &str, extra: &str) -> String {
    format!(
        "sum(increase(modelship_mirror_requests_total{{{SELECTOR},{track_filter}{extra}}}[{{{{window}}}}]))"
    )
}

/// How sure the defaults must be that a value beyond its bound is not noise before it counts
/// as a failure: a one-sided p-value of at most 0.001 (see docs/analysis.md for what the
/// judge's benchmark measured with it).
pub const CONFIDENCE: f64 = 0.999;

fn proportion_test() -> Option<SignificanceTest> {
    Some(SignificanceTest {
        kind: TestKind::Proportion,
        quantile: None,
        confidence: CONFIDENCE,
    })
}

/// Error rate of a track: answers that are not 1xx–4xx (5xx, transport errors, timeouts).
pub fn error_rate() -> AnalysisMetric {
    let track = r#"track="{{track}}""#;
    AnalysisMetric {
        name: "error-rate".into(),
        query: format!(
            "(sum(rate(modelship_mirror_requests_total{{{SELECTOR},{track},code!~\"[1-4]..\"}}[{{{{window}}}}])) or vector(0)) / sum(rate(modelship_mirror_requests_total{{{SELECTOR},{track}}}[{{{{window}}}}]))"
        ),
        samples_query: Some(requests(track, "")),
        min_samples: Some(20),
        min: None,
        max: None,
        // At most 10 % above the reference's rate, plus one percentage point so that a
        // reference at 0 % does not demand a perfect candidate; and significantly above it.
        relative_to_stable: Some(RelativeBound {
            max_increase_percent: Some(10.0),
            max_decrease_percent: None,
            slack: 0.01,
        }),
        failure_limit: 0,
        consecutive_error_limit: 4,
        dry_run: false,
        phases: Vec::new(),
        test: proportion_test(),
    }
}

/// 99th percentile latency of a track, as the router measured it, judged on the histogram's
/// buckets: the p99 must not be more than 15 % (plus 2 ms) above the reference's, with a tail
/// significantly heavier than the reference's before it fails.
pub fn latency_p99() -> AnalysisMetric {
    let track = r#"track="{{track}}""#;
    AnalysisMetric {
        name: "latency-p99".into(),
        query: format!(
            "sum by (le) (increase(modelship_mirror_request_duration_seconds_bucket{{{SELECTOR},{track}}}[{{{{window}}}}]))"
        ),
        samples_query: None,
        // A p99 of fewer samples is a handful of requests.
        min_samples: Some(200),
        min: None,
        max: None,
        relative_to_stable: Some(RelativeBound {
            max_increase_percent: Some(15.0),
            max_decrease_percent: None,
            slack: 0.002,
        }),
        failure_limit: 0,
        consecutive_error_limit: 4,
        dry_run: false,
        phases: Vec::new(),
        test: Some(SignificanceTest {
            kind: TestKind::Quantile,
            quantile: Some(0.99),
            confidence: CONFIDENCE,
        }),
    }
}

/// Share of compared requests on which the judged track agreed with its reference.
pub fn agreement(min_agreement: f64) -> AnalysisMetric {
    let compared =
        format!("modelship_mirror_comparisons_total{{{SELECTOR},result=~\"match|mismatch\"}}");
    AnalysisMetric {
        name: "agreement".into(),
        query: format!(
            "(sum(rate(modelship_mirror_comparisons_total{{{SELECTOR},result=\"match\"}}[{{{{window}}}}])) or vector(0)) / sum(rate({compared}[{{{{window}}}}]))"
        ),
        samples_query: Some(format!("sum(increase({compared}[{{{{window}}}}]))")),
        min_samples: Some(20),
        min: Some(min_agreement),
        max: None,
        relative_to_stable: None,
        failure_limit: 0,
        consecutive_error_limit: 4,
        dry_run: false,
        phases: vec![AnalysisPhase::Shadowing],
        test: proportion_test(),
    }
}

/// The metrics a ModelDeployment is judged on: its own, or the defaults of the built-in router.
pub fn effective_metrics(md: &ModelDeployment) -> Vec<AnalysisMetric> {
    if !md.spec.analysis.metrics.is_empty() || md.spec.traffic.provider != TrafficProvider::Builtin
    {
        return md.spec.analysis.metrics.clone();
    }
    let mut agreement = agreement(md.spec.shadow.compare.min_agreement);
    if md.spec.shadow.enabled {
        // The previous version answers mirrored copies during the bake, so the answers are
        // still compared, now the other way round.
        agreement.phases.clear();
    }
    vec![error_rate(), latency_p99(), agreement]
}

/// How many requests the shadow answered since the window started (built-in router only).
pub fn shadow_requests_query(range: &str) -> String {
    format!(
        "sum(increase(modelship_mirror_requests_total{{{SELECTOR},track=\"shadow\"}}[{range}]))"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::template::{Vars, check, render};

    #[test]
    fn default_queries_are_valid_templates_and_select_the_deployment_and_track() {
        for m in [error_rate(), latency_p99(), agreement(0.9)] {
            check(&m.query).unwrap();
            if let Some(q) = m.samples_query.as_deref() {
                check(q).unwrap();
            }
            let q = render(
                &m.query,
                &Vars {
                    name: "fraud",
                    namespace: "models",
                    track: "shadow",
                    version: "v2",
                    window: "1m",
                },
            );
            assert!(
                q.contains(r#"namespace="models",deployment="fraud",component="router""#),
                "only the router's series are evidence: {q}"
            );
            assert!(q.contains("[1m]"), "{q}");
            assert!(!q.contains("{{"), "{q}");
        }
        let q = render(
            &error_rate().query,
            &Vars {
                name: "f",
                namespace: "n",
                track: "stable",
                version: "v1",
                window: "30s",
            },
        );
        assert!(q.contains(r#"track="stable",code!~"[1-4]..""#), "{q}");
    }

    #[test]
    fn defaults_apply_only_to_the_builtin_router_without_metrics() {
        let mut md = crate::deployment::testing::sample();
        let names: Vec<String> = effective_metrics(&md).into_iter().map(|m| m.name).collect();
        assert_eq!(names, vec!["error-rate", "latency-p99", "agreement"]);
        md.spec.analysis.metrics = vec![error_rate()];
        assert_eq!(effective_metrics(&md).len(), 1);
        md.spec.analysis.metrics.clear();
        md.spec.traffic.provider = TrafficProvider::Istio;
        assert!(effective_metrics(&md).is_empty());
    }
}
