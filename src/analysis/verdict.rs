//! Judging one measurement, and the analysis as a whole. Pure.
use super::stats::{self, Histogram, Side};
use crate::api::{
    AnalysisMetric, AnalysisPhase, AnalysisStatus, MetricStatus, SignificanceTest, TestKind,
    Verdict,
};
use crate::deployment::phase::AnalysisSummary;

/// What a query returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// One number.
    Value(f64),
    /// A histogram's bucket counts, `(le, count)`, for a `Quantile` test.
    Buckets(Vec<(f64, f64)>),
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
    /// The live reference's value (stable's while shadowing, the previous version's while
    /// baking), or `None` when the bound has no live reference.
    pub reference: Option<Reading>,
    pub samples: Option<Reading>,
    /// The samples behind the live reference (`samplesQuery` on the reference's track).
    pub reference_samples: Option<Reading>,
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

fn fmt_p(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

/// Judges one measurement and folds it into the metric's running status.
pub fn judge(
    metric: &AnalysisMetric,
    previous: Option<&MetricStatus>,
    readings: &Readings,
    baseline: Option<f64>,
    now: jiff::Timestamp,
) -> MetricStatus {
    let mut st = MetricStatus {
        name: metric.name.clone(),
        dry_run: metric.dry_run,
        measured_at: Some(now),
        baseline,
        failures: previous.map_or(0, |p| p.failures),
        passes: previous.map_or(0, |p| p.passes),
        consecutive_errors: previous.map_or(0, |p| p.consecutive_errors),
        min_samples: metric.min_samples,
        max_p_value: metric.test.as_ref().map(|t| 1.0 - t.confidence),
        failure_limit: metric.failure_limit,
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

/// What a value stands on, for the significance test.
enum Evidence {
    /// A share of this many samples.
    Share(f64),
    /// A quantile of this histogram.
    Quantile(Histogram, f64),
    /// A number without a test.
    Plain,
}

/// Reads a value (and, for a histogram, its samples) from a reading.
fn read_value(
    reading: &Reading,
    test: Option<&SignificanceTest>,
    whose: &str,
) -> Result<(f64, Option<Histogram>), (Verdict, String)> {
    match reading {
        Reading::Value(v) if v.is_finite() => match test.map(|t| t.kind) {
            Some(TestKind::Quantile) => Err((
                Verdict::Error,
                format!(
                    "{whose}query returned one number; a Quantile test needs one series per `le` bucket, for example sum by (le) (increase(x_bucket[...]))"
                ),
            )),
            _ => Ok((*v, None)),
        },
        Reading::Value(v) => Err((
            Verdict::Inconclusive,
            format!("{whose}query returned {v} (no traffic to divide by?)"),
        )),
        Reading::Buckets(buckets) => {
            let Some(q) = test.and_then(|t| t.quantile) else {
                return Err((
                    Verdict::Error,
                    format!(
                        "{whose}query returned several series; aggregate it to one number (for example with sum)"
                    ),
                ));
            };
            let Some(h) = Histogram::new(buckets.clone()) else {
                return Err((
                    Verdict::Error,
                    format!(
                        "{whose}histogram has no le=\"+Inf\" bucket or a bucket bound that is not a number"
                    ),
                ));
            };
            match h.quantile(q) {
                Some(v) => Ok((v, Some(h))),
                None => Err((
                    Verdict::Inconclusive,
                    format!("{whose}histogram has no samples in the window"),
                )),
            }
        }
        Reading::Empty => Err((
            Verdict::Inconclusive,
            format!("{whose}query returned no data"),
        )),
        Reading::Unavailable(e) => {
            Err((Verdict::Inconclusive, format!("metrics unavailable: {e}")))
        }
        Reading::Invalid(e) => Err((Verdict::Error, format!("{whose}query failed: {e}"))),
    }
}

/// Reads a sample count: `Ok(None)` when there is no samples query.
fn read_samples(reading: Option<&Reading>, whose: &str) -> Result<Option<f64>, (Verdict, String)> {
    match reading {
        None => Ok(None),
        Some(Reading::Value(n)) if n.is_finite() => Ok(Some(*n)),
        Some(Reading::Value(_) | Reading::Empty) => Ok(Some(0.0)),
        Some(Reading::Buckets(_)) => Err((
            Verdict::Error,
            format!("{whose}samples query returned several series; aggregate it to one number"),
        )),
        Some(Reading::Unavailable(e)) => {
            Err((Verdict::Inconclusive, format!("metrics unavailable: {e}")))
        }
        Some(Reading::Invalid(e)) => {
            Err((Verdict::Error, format!("{whose}samples query failed: {e}")))
        }
    }
}

fn judge_readings(
    metric: &AnalysisMetric,
    r: &Readings,
    baseline: Option<f64>,
    st: &mut MetricStatus,
) -> (Verdict, String) {
    match judge_checked(metric, r, baseline, st) {
        Ok(v) | Err(v) => v,
    }
}

fn judge_checked(
    metric: &AnalysisMetric,
    r: &Readings,
    baseline: Option<f64>,
    st: &mut MetricStatus,
) -> Result<(Verdict, String), (Verdict, String)> {
    let test = metric.test.as_ref();
    let (value, histogram) = read_value(&r.value, test, "the ")?;
    st.value = Some(value);
    st.samples = match &histogram {
        Some(h) => Some(h.total()),
        None => read_samples(r.samples.as_ref(), "the ")?,
    };
    if let (Some(min_samples), Some(n)) = (metric.min_samples, st.samples)
        && n < min_samples as f64
    {
        return Err((
            Verdict::Inconclusive,
            format!("{n:.0} samples, fewer than the minimum {min_samples}"),
        ));
    }
    // The reference: measured live, or the value recorded for the previous version.
    let mut reference_histogram = None;
    let reference = match (&metric.relative_to_stable, &r.reference) {
        (None, _) => None,
        (Some(_), Some(reading)) => {
            let (v, h) = read_value(reading, test, "the reference's ")?;
            st.stable_value = Some(v);
            reference_histogram = h;
            st.reference_samples = match &reference_histogram {
                Some(h) => Some(h.total()),
                None => read_samples(r.reference_samples.as_ref(), "the reference's ")?,
            };
            Some(v)
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
    let beyond = match (min, max) {
        (Some(m), _) if value < m => Some((Side::Below, m, "below the minimum")),
        (_, Some(m)) if value > m => Some((Side::Above, m, "above the maximum")),
        _ => None,
    };
    let Some((side, bound, words)) = beyond else {
        let bound = match (min, max) {
            (Some(a), Some(b)) => format!("within [{}, {}]", fmt(a), fmt(b)),
            (Some(a), None) => format!("at least {}", fmt(a)),
            (None, Some(b)) => format!("at most {}", fmt(b)),
            (None, None) => {
                return Ok((
                    Verdict::Inconclusive,
                    format!("{}: no bound applies{relative_note}", fmt(value)),
                ));
            }
        };
        return Ok((
            Verdict::Pass,
            format!("{} {bound}{relative_note}", fmt(value)),
        ));
    };
    let what = format!("{} {words} {}{relative_note}", fmt(value), fmt(bound));
    let Some(test) = test else {
        return Ok((Verdict::Fail, what));
    };
    let evidence = match (test.kind, histogram) {
        (TestKind::Quantile, Some(h)) => Evidence::Quantile(h, test.quantile.unwrap_or(0.99)),
        (TestKind::Proportion, _) => Evidence::Share(st.samples.unwrap_or(0.0)),
        _ => Evidence::Plain,
    };
    let live = r.reference.is_some();
    let p = match evidence {
        Evidence::Plain => 0.0,
        Evidence::Share(n) => {
            let reference = (live && metric.relative_to_stable.is_some())
                .then(|| st.stable_value.zip(st.reference_samples))
                .flatten();
            // Shares are compared on the failing side: for a minimum, the complements.
            let flip = |v: f64| if side == Side::Below { 1.0 - v } else { v };
            match reference {
                Some((rv, rn)) => stats::two_proportions(flip(value) * n, n, flip(rv) * rn, rn),
                None => stats::proportion_above(flip(value), n, flip(bound)),
            }
        }
        Evidence::Quantile(h, q) => match (&reference_histogram, live) {
            (Some(rh), true) => stats::quantile_vs_reference(&h, rh, q, side),
            _ => stats::quantile_vs_bound(&h, q, bound, side),
        },
    };
    st.p_value = Some(p);
    let max_p = 1.0 - test.confidence;
    let against = if live && metric.relative_to_stable.is_some() {
        "the difference from the reference"
    } else {
        "the excess over the bound"
    };
    if p <= max_p {
        Ok((
            Verdict::Fail,
            format!(
                "{what}, and {against} is significant (p = {}, at most {} fails)",
                fmt_p(p),
                fmt_p(max_p)
            ),
        ))
    } else {
        Ok((
            Verdict::Inconclusive,
            format!(
                "{what}, but {against} could be noise (p = {}, more than {})",
                fmt_p(p),
                fmt_p(max_p)
            ),
        ))
    }
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
    // Every metric that failed is named, not only the first.
    let mut failed = Vec::new();
    let mut errored = Vec::new();
    for (m, st) in &judged {
        let Some(st) = st else { continue };
        if st.failures > m.failure_limit {
            failed.push(format!(
                "{} failed {} measurement(s), more than its limit of {}: {}",
                m.name,
                st.failures,
                m.failure_limit,
                st.message.as_deref().unwrap_or_default()
            ));
        }
        if st.consecutive_errors > m.consecutive_error_limit {
            errored.push(format!(
                "{}'s query failed {} times in a row, more than its limit of {}: {}",
                m.name,
                st.consecutive_errors,
                m.consecutive_error_limit,
                st.message.as_deref().unwrap_or_default()
            ));
        }
    }
    summary.failed = (!failed.is_empty()).then(|| failed.join("; "));
    summary.errored = (!errored.is_empty()).then(|| errored.join("; "));
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
            reference_samples: Some(Reading::Value(samples)),
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
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(ok.verdict, Some(Verdict::Pass), "{:?}", ok.message);
        assert_eq!(ok.stable_value, Some(0.01));
        assert!((ok.max.unwrap() - 0.021).abs() < 1e-9);
        // 5 errors in 100 against none in 100 is beyond the bound but could be noise.
        let unsure = judge(
            &m,
            Some(&ok),
            &readings(Reading::Value(0.05), Some(Reading::Value(0.0)), 100.0),
            None,
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(unsure.verdict, Some(Verdict::Inconclusive));
        assert_eq!((unsure.failures, unsure.passes), (0, 1));
        let msg = unsure.message.unwrap();
        assert!(
            msg.starts_with("0.05 above the maximum 0.01, but the difference from the reference could be noise (p = 0.012"),
            "{msg}"
        );
        assert_eq!(unsure.max_p_value, Some(1.0 - defaults::CONFIDENCE));
        // 50 in 1000 against none is not.
        let bad = judge(
            &m,
            Some(&ok),
            &readings(Reading::Value(0.05), Some(Reading::Value(0.0)), 1000.0),
            None,
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(bad.verdict, Some(Verdict::Fail));
        assert_eq!((bad.failures, bad.passes), (1, 1));
        assert!(bad.p_value.unwrap() < 1e-6);
        assert!(
            bad.message.as_deref().unwrap().starts_with(
                "0.05 above the maximum 0.01, and the difference from the reference is significant"
            ),
            "{:?}",
            bad.message
        );
        // Without a test, any value beyond the bound fails.
        let plain = AnalysisMetric {
            test: None,
            ..m.clone()
        };
        let bad = judge(
            &plain,
            None,
            &readings(Reading::Value(0.05), Some(Reading::Value(0.0)), 100.0),
            None,
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(bad.verdict, Some(Verdict::Fail));
        assert_eq!(bad.message.as_deref(), Some("0.05 above the maximum 0.01"));
    }

    #[test]
    fn a_share_below_a_fixed_minimum_needs_enough_samples_to_fail() {
        let m = defaults::agreement(0.9);
        let at = |value: f64, n: f64| {
            judge(
                &m,
                None,
                &Readings {
                    value: Reading::Value(value),
                    reference: None,
                    samples: Some(Reading::Value(n)),
                    reference_samples: None,
                },
                None,
                jiff::Timestamp::UNIX_EPOCH,
            )
        };
        assert_eq!(at(0.93, 500.0).verdict, Some(Verdict::Pass));
        assert_eq!(at(0.88, 500.0).verdict, Some(Verdict::Inconclusive));
        assert_eq!(at(0.85, 2000.0).verdict, Some(Verdict::Fail));
    }

    fn latency_buckets(n: f64, scale: f64) -> Reading {
        // n samples spread log-uniformly over 5–40 ms, all times `scale`.
        let bounds: Vec<f64> = (0..60).map(|k| 0.00025 * 1.2f64.powi(k)).collect();
        let (lo, hi) = (0.005 * scale, 0.040 * scale);
        let at = |x: f64| n * ((x.ln() - lo.ln()) / (hi.ln() - lo.ln())).clamp(0.0, 1.0);
        let mut b: Vec<(f64, f64)> = bounds.iter().map(|&le| (le, at(le))).collect();
        b.push((f64::INFINITY, n));
        Reading::Buckets(b)
    }

    #[test]
    fn latency_is_judged_on_the_histograms_of_both_tracks() {
        let m = defaults::latency_p99();
        let judge_scaled = |scale: f64, n: f64| {
            judge(
                &m,
                None,
                &Readings {
                    value: latency_buckets(n, scale),
                    reference: Some(latency_buckets(n, 1.0)),
                    samples: None,
                    reference_samples: None,
                },
                None,
                jiff::Timestamp::UNIX_EPOCH,
            )
        };
        let same = judge_scaled(1.0, 2000.0);
        assert_eq!(same.verdict, Some(Verdict::Pass), "{:?}", same.message);
        assert_eq!(same.samples, Some(2000.0));
        assert_eq!(same.reference_samples, Some(2000.0));
        let slower = judge_scaled(1.3, 2000.0);
        assert_eq!(slower.verdict, Some(Verdict::Fail), "{:?}", slower.message);
        assert!(slower.value.unwrap() > slower.max.unwrap());
        assert!(slower.p_value.unwrap() < 0.001);
        // Too few samples to judge a p99.
        let few = judge_scaled(1.3, 100.0);
        assert_eq!(few.verdict, Some(Verdict::Inconclusive));
        assert!(few.message.unwrap().contains("fewer than the minimum 200"));
        // A single number where buckets are expected is a broken query.
        let wrong = judge(
            &m,
            None,
            &Readings {
                value: Reading::Value(0.1),
                reference: None,
                samples: None,
                reference_samples: None,
            },
            None,
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(wrong.verdict, Some(Verdict::Error));
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
            let st = judge(&m, None, &r, None, jiff::Timestamp::UNIX_EPOCH);
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
            jiff::Timestamp::UNIX_EPOCH,
        );
        let e2 = judge(
            &m,
            Some(&e1),
            &readings(Reading::Invalid("bad_data".into()), None, 0.0),
            None,
            jiff::Timestamp::UNIX_EPOCH,
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
            jiff::Timestamp::UNIX_EPOCH,
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
            jiff::Timestamp::UNIX_EPOCH,
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
            jiff::Timestamp::UNIX_EPOCH,
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
            jiff::Timestamp::UNIX_EPOCH,
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
