//! Judging one measurement, and the analysis as a whole. Pure.
use crate::api::{AnalysisMetric, AnalysisPhase, AnalysisStatus, MetricStatus, Verdict};
use crate::deployment::phase::AnalysisSummary;

/// What a query returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// One number.
    Value(f64),
    /// No series: nothing to judge.
    Empty,
    /// Prometheus could not be reached or could not answer; says nothing about the model.
    Unavailable(String),
    /// The query itself is wrong (Prometheus rejected it, or it returned several series).
    Invalid(String),
}

/// The readings of one metric in one measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Readings {
    pub value: Reading,
    /// Stable's value (shadowing) or `None` when the bound has no live reference.
    pub reference: Option<Reading>,
    pub samples: Option<Reading>,
}

/// The bounds that apply given a reference value.
pub fn effective_bounds(
    metric: &AnalysisMetric,
    reference: Option<f64>,
) -> (Option<f64>, Option<f64>) {
    let mut min = metric.min;
    let mut max = metric.max;
    if let (Some(rel), Some(r)) = (&metric.relative_to_stable, reference) {
        if let Some(inc) = rel.max_increase_percent {
            let upper = r * (1.0 + inc / 100.0) + rel.slack;
            max = Some(max.map_or(upper, |m| m.min(upper)));
        }
        if let Some(dec) = rel.max_decrease_percent {
            let lower = r * (1.0 - dec / 100.0) - rel.slack;
            min = Some(min.map_or(lower, |m| m.max(lower)));
        }
    }
    (min, max)
}

fn fmt(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 0.001 && v.abs() < 1e6) {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:e}")
    }
}

/// Judges one measurement and folds it into the metric's running status.
pub fn judge(
    metric: &AnalysisMetric,
    previous: Option<&MetricStatus>,
    readings: &Readings,
    baseline: Option<f64>,
    now: &str,
) -> MetricStatus {
    let mut st = MetricStatus {
        name: metric.name.clone(),
        dry_run: metric.dry_run,
        measured_at: Some(now.to_string()),
        baseline,
        failures: previous.map_or(0, |p| p.failures),
        passes: previous.map_or(0, |p| p.passes),
        consecutive_errors: previous.map_or(0, |p| p.consecutive_errors),
        ..MetricStatus::default()
    };
    let (verdict, message) = judge_readings(metric, readings, baseline, &mut st);
    match verdict {
        Verdict::Pass => st.passes += 1,
        Verdict::Fail => st.failures += 1,
        _ => {}
    }
    if verdict == Verdict::Error {
        st.consecutive_errors += 1;
    } else if !matches!(readings.value, Reading::Unavailable(_)) {
        st.consecutive_errors = 0;
    }
    st.verdict = Some(verdict);
    st.message = Some(message);
    st
}

fn judge_readings(
    metric: &AnalysisMetric,
    r: &Readings,
    baseline: Option<f64>,
    st: &mut MetricStatus,
) -> (Verdict, String) {
    let value = match &r.value {
        Reading::Value(v) => *v,
        Reading::Empty => return (Verdict::Inconclusive, "the query returned no data".into()),
        Reading::Unavailable(e) => {
            return (Verdict::Inconclusive, format!("metrics unavailable: {e}"));
        }
        Reading::Invalid(e) => return (Verdict::Error, format!("query failed: {e}")),
    };
    if !value.is_finite() {
        return (
            Verdict::Inconclusive,
            format!("the query returned {value} (no traffic to divide by?)"),
        );
    }
    st.value = Some(value);
    if let Some(samples) = &r.samples {
        match samples {
            Reading::Value(n) if n.is_finite() => st.samples = Some(*n),
            Reading::Value(_) | Reading::Empty => st.samples = Some(0.0),
            Reading::Unavailable(e) => {
                return (Verdict::Inconclusive, format!("metrics unavailable: {e}"));
            }
            Reading::Invalid(e) => return (Verdict::Error, format!("samples query failed: {e}")),
        }
    }
    if let (Some(min_samples), Some(n)) = (metric.min_samples, st.samples)
        && n < min_samples as f64
    {
        return (
            Verdict::Inconclusive,
            format!("{n:.0} samples, fewer than the minimum {min_samples}"),
        );
    }
    let reference = match (&metric.relative_to_stable, &r.reference) {
        (None, _) => None,
        (Some(_), Some(Reading::Value(v))) if v.is_finite() => {
            st.stable_value = Some(*v);
            Some(*v)
        }
        (Some(_), Some(Reading::Invalid(e))) => {
            return (Verdict::Error, format!("stable's query failed: {e}"));
        }
        (Some(_), Some(Reading::Unavailable(e))) => {
            return (Verdict::Inconclusive, format!("metrics unavailable: {e}"));
        }
        (Some(_), Some(_)) => {
            return (
                Verdict::Inconclusive,
                "stable's query returned no data to compare with".into(),
            );
        }
        (Some(_), None) => {
            st.stable_value = baseline;
            baseline
        }
    };
    let (min, max) = effective_bounds(metric, reference);
    st.min = min;
    st.max = max;
    let relative_note = match (&metric.relative_to_stable, reference) {
        (Some(_), None) => {
            " (no value recorded for the previous version, so only absolute bounds apply)"
        }
        _ => "",
    };
    if let Some(m) = min
        && value < m
    {
        return (
            Verdict::Fail,
            format!("{} below the minimum {}{relative_note}", fmt(value), fmt(m)),
        );
    }
    if let Some(m) = max
        && value > m
    {
        return (
            Verdict::Fail,
            format!("{} above the maximum {}{relative_note}", fmt(value), fmt(m)),
        );
    }
    let bound = match (min, max) {
        (Some(a), Some(b)) => format!("within [{}, {}]", fmt(a), fmt(b)),
        (Some(a), None) => format!("at least {}", fmt(a)),
        (None, Some(b)) => format!("at most {}", fmt(b)),
        (None, None) => "no bound applies".into(),
    };
    if min.is_none() && max.is_none() {
        return (
            Verdict::Inconclusive,
            format!("{}: {bound}{relative_note}", fmt(value)),
        );
    }
    (
        Verdict::Pass,
        format!("{} {bound}{relative_note}", fmt(value)),
    )
}

/// Whether a metric is judged in a phase.
pub fn applies(metric: &AnalysisMetric, phase: AnalysisPhase) -> bool {
    metric.phases.is_empty() || metric.phases.contains(&phase)
}

/// Sums the analysis up for the phase machine. Dry-run metrics are shown but never count.
pub fn summarize(
    metrics: &[AnalysisMetric],
    status: &AnalysisStatus,
    phase: AnalysisPhase,
) -> AnalysisSummary {
    let judged: Vec<(&AnalysisMetric, Option<&MetricStatus>)> = metrics
        .iter()
        .filter(|m| !m.dry_run && applies(m, phase))
        .map(|m| (m, status.metrics.iter().find(|s| s.name == m.name)))
        .collect();
    let mut summary = AnalysisSummary {
        requests: status.requests,
        ..AnalysisSummary::default()
    };
    for (m, st) in &judged {
        let Some(st) = st else { continue };
        if st.failures > m.failure_limit && summary.failed.is_none() {
            summary.failed = Some(format!(
                "{} failed {} measurement(s), more than its limit of {}: {}",
                m.name,
                st.failures,
                m.failure_limit,
                st.message.as_deref().unwrap_or_default()
            ));
        }
        if st.consecutive_errors > m.consecutive_error_limit && summary.errored.is_none() {
            summary.errored = Some(format!(
                "{}'s query failed {} times in a row, more than its limit of {}: {}",
                m.name,
                st.consecutive_errors,
                m.consecutive_error_limit,
                st.message.as_deref().unwrap_or_default()
            ));
        }
    }
    let not_passing: Vec<String> = judged
        .iter()
        .filter(|(_, st)| st.and_then(|s| s.verdict) != Some(Verdict::Pass))
        .map(|(m, st)| match st.and_then(|s| s.message.as_deref()) {
            Some(msg) => format!("{}: {msg}", m.name),
            None => format!("{}: not measured yet", m.name),
        })
        .collect();
    summary.passing = !judged.is_empty() && not_passing.is_empty();
    // A metric with no bound to apply (a relative bound with nothing recorded to compare
    // with) cannot hold a bake open forever; it is shown, not waited for.
    let unjudgeable =
        |st: &MetricStatus| st.value.is_some() && st.min.is_none() && st.max.is_none();
    summary.each_passed_once = !judged.is_empty()
        && judged.iter().all(|(_, st)| {
            st.is_some_and(|s| s.passes > 0 || (phase == AnalysisPhase::Baking && unjudgeable(s)))
        });
    summary.waiting = if judged.is_empty() {
        "no metric to judge".into()
    } else if not_passing.is_empty() {
        String::new()
    } else {
        format!("passing analysis ({})", not_passing.join("; "))
    };
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::defaults;
    use crate::api::RelativeBound;

    fn metric() -> AnalysisMetric {
        defaults::error_rate()
    }

    fn readings(value: Reading, reference: Option<Reading>, samples: f64) -> Readings {
        Readings {
            value,
            reference,
            samples: Some(Reading::Value(samples)),
        }
    }

    #[test]
    fn relative_bound_passes_near_stable_and_fails_well_above() {
        let m = metric();
        let ok = judge(
            &m,
            None,
            &readings(Reading::Value(0.015), Some(Reading::Value(0.01)), 100.0),
            None,
            "t",
        );
        assert_eq!(ok.verdict, Some(Verdict::Pass), "{:?}", ok.message);
        assert_eq!(ok.stable_value, Some(0.01));
        assert!((ok.max.unwrap() - 0.021).abs() < 1e-9);
        let bad = judge(
            &m,
            Some(&ok),
            &readings(Reading::Value(0.05), Some(Reading::Value(0.0)), 100.0),
            None,
            "t",
        );
        assert_eq!(bad.verdict, Some(Verdict::Fail));
        assert_eq!((bad.failures, bad.passes), (1, 1));
        assert_eq!(bad.message.as_deref(), Some("0.05 above the maximum 0.01"));
    }

    #[test]
    fn missing_data_nan_and_few_samples_are_inconclusive_never_a_pass() {
        let m = metric();
        for r in [
            readings(Reading::Empty, Some(Reading::Value(0.0)), 100.0),
            readings(Reading::Value(f64::NAN), Some(Reading::Value(0.0)), 100.0),
            readings(Reading::Value(0.0), Some(Reading::Value(0.0)), 3.0),
            readings(Reading::Value(0.0), Some(Reading::Empty), 100.0),
            readings(
                Reading::Unavailable("connection refused".into()),
                None,
                100.0,
            ),
        ] {
            let st = judge(&m, None, &r, None, "t");
            assert_eq!(
                st.verdict,
                Some(Verdict::Inconclusive),
                "{r:?} -> {:?}",
                st.message
            );
            assert_eq!((st.failures, st.passes), (0, 0));
        }
    }

    #[test]
    fn query_errors_count_in_a_row_and_reset_on_an_answer() {
        let m = metric();
        let e1 = judge(
            &m,
            None,
            &readings(Reading::Invalid("bad_data".into()), None, 0.0),
            None,
            "t",
        );
        let e2 = judge(
            &m,
            Some(&e1),
            &readings(Reading::Invalid("bad_data".into()), None, 0.0),
            None,
            "t",
        );
        assert_eq!(
            (e2.verdict, e2.consecutive_errors),
            (Some(Verdict::Error), 2)
        );
        let down = judge(
            &m,
            Some(&e2),
            &readings(Reading::Unavailable("down".into()), None, 0.0),
            None,
            "t",
        );
        assert_eq!(
            down.consecutive_errors, 2,
            "an outage neither adds to nor clears the streak"
        );
        let ok = judge(
            &m,
            Some(&down),
            &readings(Reading::Value(0.0), Some(Reading::Value(0.0)), 100.0),
            None,
            "t",
        );
        assert_eq!(ok.consecutive_errors, 0);
    }

    #[test]
    fn baking_uses_the_recorded_baseline_or_only_absolute_bounds() {
        let mut m = metric();
        let st = judge(
            &m,
            None,
            &readings(Reading::Value(0.3), None, 100.0),
            Some(0.0),
            "t",
        );
        assert_eq!(
            (st.verdict, st.stable_value),
            (Some(Verdict::Fail), Some(0.0))
        );
        m.max = Some(0.5);
        let st = judge(
            &m,
            None,
            &readings(Reading::Value(0.3), None, 100.0),
            None,
            "t",
        );
        assert_eq!(st.verdict, Some(Verdict::Pass));
        assert!(st.message.unwrap().contains("only absolute bounds"));
    }

    #[test]
    fn decrease_bounds_and_absolute_bounds_combine_to_the_tighter() {
        let mut m = metric();
        m.relative_to_stable = Some(RelativeBound {
            max_increase_percent: Some(10.0),
            max_decrease_percent: Some(10.0),
            slack: 0.0,
        });
        m.max = Some(1.05);
        assert_eq!(effective_bounds(&m, Some(1.0)), (Some(0.9), Some(1.05)));
    }

    #[test]
    fn summary_fails_above_the_limit_and_ignores_dry_run() {
        let mut a = metric();
        a.failure_limit = 1;
        let mut b = defaults::agreement(0.9);
        b.dry_run = true;
        let metrics = vec![a.clone(), b.clone()];
        let fail = |name: &str, failures| MetricStatus {
            name: name.into(),
            failures,
            verdict: Some(Verdict::Fail),
            message: Some("x".into()),
            ..Default::default()
        };
        let status = AnalysisStatus {
            metrics: vec![fail("error-rate", 1), fail("agreement", 9)],
            ..Default::default()
        };
        let s = summarize(&metrics, &status, AnalysisPhase::Shadowing);
        assert!(
            s.failed.is_none(),
            "one failure is within the limit; dry-run never counts"
        );
        assert!(!s.passing);
        let status = AnalysisStatus {
            metrics: vec![fail("error-rate", 2)],
            ..Default::default()
        };
        let s = summarize(&metrics, &status, AnalysisPhase::Shadowing);
        assert!(
            s.failed
                .unwrap()
                .starts_with("error-rate failed 2 measurement(s)")
        );
    }

    #[test]
    fn summary_passes_only_when_every_judged_metric_passes() {
        let metrics = vec![metric(), defaults::agreement(0.9)];
        let pass = |name: &str| MetricStatus {
            name: name.into(),
            passes: 1,
            verdict: Some(Verdict::Pass),
            ..Default::default()
        };
        let status = AnalysisStatus {
            metrics: vec![pass("error-rate")],
            ..Default::default()
        };
        let s = summarize(&metrics, &status, AnalysisPhase::Shadowing);
        assert!(!s.passing);
        assert!(s.waiting.contains("agreement: not measured yet"));
        // Agreement is not judged while baking.
        let s = summarize(&metrics, &status, AnalysisPhase::Baking);
        assert!(s.passing && s.each_passed_once);
        assert!(
            !summarize(&[], &status, AnalysisPhase::Baking).passing,
            "nothing to judge is not a pass"
        );
    }
}
