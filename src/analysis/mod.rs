//! Analysis: PromQL measurements of a track, judged against bounds and against production.
pub mod defaults;
pub mod prometheus;
pub mod stats;
pub mod template;
pub mod verdict;

use crate::api::{AnalysisMetric, AnalysisPhase, AnalysisStatus, MetricStatus, Verdict};
use futures::future::join_all;
use prometheus::MetricsSource;
use template::{Vars, render};
use verdict::{Reading, Readings, applies, judge};

/// Which series a measurement reads.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub window: &'a str,
    pub phase: AnalysisPhase,
    /// The judged track and version.
    pub track: &'a str,
    pub version: &'a str,
    /// The live reference's track and version: stable while shadowing, the previous version
    /// answering copies on the shadow track while baking; `None` when there is no live
    /// reference (a bake without a shadow), where the value recorded for the previous version
    /// is the reference.
    pub reference: Option<(&'a str, &'a str)>,
    /// PromQL for the requests the judged track answered in the window, if known.
    pub requests_query: Option<String>,
}

/// The result of one measurement round.
#[derive(Clone, Debug)]
pub struct Measured {
    pub status: AnalysisStatus,
    /// `Some(why)` when Prometheus could not be read at all this round.
    pub unavailable: Option<String>,
}

/// Measures every metric that applies in the phase, concurrently, and folds the results into
/// the previous analysis status.
pub async fn measure<S: MetricsSource>(
    source: &S,
    metrics: &[AnalysisMetric],
    target: &Target<'_>,
    previous: &AnalysisStatus,
    now: jiff::Timestamp,
) -> Measured {
    let judged = Vars {
        name: target.name,
        namespace: target.namespace,
        track: target.track,
        version: target.version,
        window: target.window,
    };
    let reference = target.reference.map(|(track, version)| Vars {
        track,
        version,
        ..judged.clone()
    });
    let active: Vec<&AnalysisMetric> = metrics
        .iter()
        .filter(|m| applies(m, target.phase))
        .collect();

    let rounds = active.iter().map(|m| {
        let histogram = m
            .test
            .as_ref()
            .is_some_and(|t| t.kind == crate::api::TestKind::Quantile);
        let value_q = render(&m.query, &judged);
        let live = match (&m.relative_to_stable, &reference) {
            (Some(_), Some(r)) => Some(r),
            _ => None,
        };
        let ref_q = live.map(|r| render(&m.query, r));
        let samples_q = m.samples_query.as_ref().map(|q| render(q, &judged));
        let ref_samples_q = live.and_then(|r| m.samples_query.as_ref().map(|q| render(q, r)));
        let read = move |q: String| async move {
            if histogram {
                source.histogram(q).await
            } else {
                source.query(q).await
            }
        };
        let optional = move |q: Option<String>| async move {
            match q {
                Some(q) => Some(source.query(q).await),
                None => None,
            }
        };
        async move {
            let (value, reference, samples, reference_samples) = futures::join!(
                read(value_q),
                async {
                    match ref_q {
                        Some(q) => Some(read(q).await),
                        None => None,
                    }
                },
                optional(samples_q),
                optional(ref_samples_q),
            );
            Readings {
                value,
                reference,
                samples,
                reference_samples,
            }
        }
    });
    let requests = async {
        match &target.requests_query {
            Some(q) => Some(source.query(q.clone()).await),
            None => None,
        }
    };
    let (readings, requests) = futures::join!(join_all(rounds), requests);

    let mut unavailable = None;
    let mut out = AnalysisStatus {
        started_at: previous.started_at,
        last_measured_at: Some(now),
        requests: previous.requests,
        verdict: None,
        metrics: Vec::with_capacity(active.len()),
    };
    for (m, r) in active.iter().zip(&readings) {
        if let Reading::Unavailable(e) = &r.value {
            unavailable.get_or_insert_with(|| e.clone());
        }
        let prev = previous.metrics.iter().find(|s| s.name == m.name);
        let baseline = prev.and_then(|p| p.baseline);
        out.metrics.push(judge(m, prev, r, baseline, now));
    }
    // Metrics that do not apply in this phase keep their last status, so it stays visible.
    for prev in &previous.metrics {
        if !out.metrics.iter().any(|m| m.name == prev.name) {
            out.metrics.push(prev.clone());
        }
    }
    match requests {
        Some(Reading::Value(v)) if v.is_finite() => out.requests = Some(v),
        Some(Reading::Empty) => out.requests = Some(0.0),
        _ => {}
    }
    out.verdict = Some(overall(metrics, &out.metrics, target.phase));
    Measured {
        status: out,
        unavailable,
    }
}

/// One word for the whole analysis: Fail if any judged metric failed its latest measurement,
/// Pass if all passed, Inconclusive otherwise.
fn overall(metrics: &[AnalysisMetric], statuses: &[MetricStatus], phase: AnalysisPhase) -> Verdict {
    let judged: Vec<Option<Verdict>> = metrics
        .iter()
        .filter(|m| !m.dry_run && applies(m, phase))
        .map(|m| {
            statuses
                .iter()
                .find(|s| s.name == m.name)
                .and_then(|s| s.verdict)
        })
        .collect();
    if judged.contains(&Some(Verdict::Fail)) {
        Verdict::Fail
    } else if judged.contains(&Some(Verdict::Error)) {
        Verdict::Error
    } else if !judged.is_empty() && judged.iter().all(|v| *v == Some(Verdict::Pass)) {
        Verdict::Pass
    } else {
        Verdict::Inconclusive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Answers queries from a table, recording what was asked.
    struct Fake {
        answers: HashMap<&'static str, Reading>,
        asked: Mutex<Vec<String>>,
    }

    impl MetricsSource for Fake {
        async fn query(&self, promql: String) -> Reading {
            self.asked.lock().unwrap().push(promql.clone());
            self.answers
                .iter()
                .find(|(k, _)| promql.contains(**k))
                .map(|(_, v)| v.clone())
                .unwrap_or(Reading::Empty)
        }

        async fn histogram(&self, promql: String) -> Reading {
            self.query(promql).await
        }
    }

    fn metric(name: &str, query: &str) -> AnalysisMetric {
        AnalysisMetric {
            name: name.into(),
            query: query.into(),
            samples_query: None,
            min_samples: None,
            min: None,
            max: Some(0.02),
            relative_to_stable: Some(crate::api::RelativeBound {
                max_increase_percent: Some(10.0),
                max_decrease_percent: None,
                slack: 0.01,
            }),
            failure_limit: 0,
            consecutive_error_limit: 2,
            dry_run: false,
            phases: vec![],
            test: None,
        }
    }

    fn target(
        reference: Option<(&'static str, &'static str)>,
        phase: AnalysisPhase,
    ) -> Target<'static> {
        Target {
            name: "fraud",
            namespace: "models",
            window: "1m",
            phase,
            track: "shadow",
            version: "v2",
            reference,
            requests_query: Some("requests".into()),
        }
    }

    #[tokio::test]
    async fn shadow_is_compared_with_stable_measured_in_the_same_round() {
        let fake = Fake {
            answers: HashMap::from([
                (r#"t="shadow""#, Reading::Value(0.015)),
                (r#"t="stable""#, Reading::Value(0.01)),
                ("requests", Reading::Value(500.0)),
            ]),
            asked: Mutex::default(),
        };
        let m = metric("err", r#"x{t="{{track}}",v="{{version}}"}"#);
        let out = measure(
            &fake,
            &[m],
            &target(Some(("stable", "v1")), AnalysisPhase::Shadowing),
            &AnalysisStatus::default(),
            jiff::Timestamp::UNIX_EPOCH,
        )
        .await;
        let asked = fake.asked.lock().unwrap().clone();
        assert!(asked.contains(&r#"x{t="shadow",v="v2"}"#.to_string()));
        assert!(asked.contains(&r#"x{t="stable",v="v1"}"#.to_string()));
        let st = &out.status.metrics[0];
        assert_eq!(
            (st.value, st.stable_value, st.verdict),
            (Some(0.015), Some(0.01), Some(Verdict::Pass))
        );
        assert_eq!(out.status.requests, Some(500.0));
        assert_eq!(out.status.verdict, Some(Verdict::Pass));
        assert!(out.unavailable.is_none());
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_is_inconclusive_and_reported() {
        let down = Reading::Unavailable("connection refused".into());
        let fake = Fake {
            answers: HashMap::from([("x", down.clone()), ("requests", down)]),
            asked: Mutex::default(),
        };
        let prev = AnalysisStatus {
            requests: Some(42.0),
            ..Default::default()
        };
        let out = measure(
            &fake,
            &[metric("err", "x")],
            &target(Some(("stable", "v1")), AnalysisPhase::Shadowing),
            &prev,
            jiff::Timestamp::UNIX_EPOCH,
        )
        .await;
        assert_eq!(out.unavailable.as_deref(), Some("connection refused"));
        assert_eq!(out.status.metrics[0].verdict, Some(Verdict::Inconclusive));
        assert_eq!(out.status.verdict, Some(Verdict::Inconclusive));
        assert_eq!(
            out.status.requests,
            Some(42.0),
            "the last known request count stays"
        );
    }

    #[tokio::test]
    async fn baking_compares_with_the_recorded_baseline_and_skips_shadow_only_metrics() {
        let fake = Fake {
            answers: HashMap::from([("x", Reading::Value(0.3))]),
            asked: Mutex::default(),
        };
        let mut agreement = metric("agree", "y");
        agreement.phases = vec![AnalysisPhase::Shadowing];
        let prev = AnalysisStatus {
            metrics: vec![
                MetricStatus {
                    name: "err".into(),
                    baseline: Some(0.0),
                    ..Default::default()
                },
                MetricStatus {
                    name: "agree".into(),
                    value: Some(0.97),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let out = measure(
            &fake,
            &[metric("err", "x"), agreement],
            &target(None, AnalysisPhase::Baking),
            &prev,
            jiff::Timestamp::UNIX_EPOCH,
        )
        .await;
        assert!(
            !fake.asked.lock().unwrap().iter().any(|q| q == "y"),
            "agreement is not measured while baking"
        );
        let err = out.status.metrics.iter().find(|m| m.name == "err").unwrap();
        assert_eq!(
            (err.verdict, err.stable_value, err.baseline),
            (Some(Verdict::Fail), Some(0.0), Some(0.0))
        );
        assert_eq!(
            out.status
                .metrics
                .iter()
                .find(|m| m.name == "agree")
                .unwrap()
                .value,
            Some(0.97)
        );
        assert_eq!(out.status.verdict, Some(Verdict::Fail));
    }
}
