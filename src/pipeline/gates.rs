//! Metric gates: the candidate's reported metrics against absolute bounds and against the
//! production baseline. Pure.
use crate::api::{Direction, Gate, GateResult, GateStage, Verdict};
use std::collections::BTreeMap;

/// Where a gate's baseline value came from.
pub const BASELINE_FROM_RUN: &str = "run";
pub const BASELINE_FROM_PRODUCTION: &str = "production";

/// The metrics one stage reported, and the baselines available to judge them.
#[derive(Clone, Copy, Debug)]
pub struct Measured<'a> {
    /// The candidate's metrics.
    pub metrics: &'a BTreeMap<String, f64>,
    /// The production model's metrics measured by the stage in this run.
    pub run_baseline: &'a BTreeMap<String, f64>,
    /// The metrics production's version passed its own gates with.
    pub production: &'a BTreeMap<String, f64>,
}

/// Judges every gate of `stage`.
pub fn judge_stage(gates: &[Gate], stage: GateStage, measured: Measured<'_>) -> Vec<GateResult> {
    gates
        .iter()
        .filter(|g| g.stage == stage)
        .map(|g| judge(g, measured))
        .collect()
}

/// Whether every result passed.
pub fn all_pass(results: &[GateResult]) -> bool {
    results.iter().all(|r| r.verdict == Verdict::Pass)
}

/// A short summary of the failed gates, for events and the run's message.
pub fn failures(results: &[GateResult]) -> String {
    results
        .iter()
        .filter(|r| r.verdict != Verdict::Pass)
        .map(|r| format!("{}: {}", r.metric, r.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The relative bound a gate asks for, if any.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Relative {
    MaxRegression(f64),
    MaxRegressionPercent(f64),
    MinImprovement(f64),
    MinImprovementPercent(f64),
}

fn relative(g: &Gate) -> Option<Relative> {
    g.max_regression
        .map(Relative::MaxRegression)
        .or(g.max_regression_percent.map(Relative::MaxRegressionPercent))
        .or(g.min_improvement.map(Relative::MinImprovement))
        .or(g
            .min_improvement_percent
            .map(Relative::MinImprovementPercent))
}

/// Numbers as people write them: no trailing zeros, no float noise.
fn fmt(x: f64) -> String {
    let s = format!("{:.9}", x);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// `a >= b` up to rounding noise, so that `0.902 - 0.01` accepts `0.892`.
fn at_least(a: f64, b: f64) -> bool {
    a >= b - 1e-9 * b.abs().max(1.0)
}

fn at_most(a: f64, b: f64) -> bool {
    a <= b + 1e-9 * b.abs().max(1.0)
}

/// One bound: the limit, which side is acceptable, and how it was derived.
struct Bound {
    limit: f64,
    lower: bool,
    how: String,
}

impl Bound {
    fn holds(&self, value: f64) -> bool {
        if self.lower {
            at_least(value, self.limit)
        } else {
            at_most(value, self.limit)
        }
    }
    fn describe(&self) -> String {
        let op = if self.lower { ">=" } else { "<=" };
        format!("{op} {} ({})", fmt(self.limit), self.how)
    }
    fn violation(&self, metric: &str, value: f64) -> String {
        let side = if self.lower { "below" } else { "above" };
        format!(
            "{metric} {} is {side} {} ({})",
            fmt(value),
            fmt(self.limit),
            self.how
        )
    }
}

fn relative_bound(rel: Relative, direction: Direction, baseline: f64) -> Bound {
    let higher = direction == Direction::HigherIsBetter;
    let b = fmt(baseline);
    let (delta, what) = match rel {
        Relative::MaxRegression(d) => (
            -d,
            format!("baseline {b} with at most {} regression", fmt(d)),
        ),
        Relative::MaxRegressionPercent(p) => (
            -baseline.abs() * p / 100.0,
            format!("baseline {b} with at most {}% regression", fmt(p)),
        ),
        Relative::MinImprovement(d) => (d, format!("baseline {b} improved by at least {}", fmt(d))),
        Relative::MinImprovementPercent(p) => (
            baseline.abs() * p / 100.0,
            format!("baseline {b} improved by at least {}%", fmt(p)),
        ),
    };
    // `delta` is the allowed change in the better direction (negative: a tolerated worsening).
    if higher {
        Bound {
            limit: baseline + delta,
            lower: true,
            how: what,
        }
    } else {
        Bound {
            limit: baseline - delta,
            lower: false,
            how: what,
        }
    }
}

/// Judges one gate.
pub fn judge(g: &Gate, measured: Measured<'_>) -> GateResult {
    let stage_name = match g.stage {
        GateStage::Evaluate => "evaluate",
        GateStage::Integration => "integration",
    };
    let (baseline, baseline_from) = match (
        measured.run_baseline.get(&g.metric),
        measured.production.get(&g.metric),
    ) {
        (Some(b), _) => (Some(*b), Some(BASELINE_FROM_RUN)),
        (None, Some(b)) => (Some(*b), Some(BASELINE_FROM_PRODUCTION)),
        (None, None) => (None, None),
    };
    let mut bounds = Vec::new();
    if let Some(min) = g.min {
        bounds.push(Bound {
            limit: min,
            lower: true,
            how: "min".into(),
        });
    }
    if let Some(max) = g.max {
        bounds.push(Bound {
            limit: max,
            lower: false,
            how: "max".into(),
        });
    }
    let rel = relative(g);
    let mut skipped = false;
    match (rel, baseline) {
        (Some(rel), Some(b)) => bounds.push(relative_bound(rel, g.direction, b)),
        (Some(_), None) => skipped = true,
        (None, _) => {}
    }
    let mut bound = bounds
        .iter()
        .map(Bound::describe)
        .collect::<Vec<_>>()
        .join("; ");
    if skipped {
        if !bound.is_empty() {
            bound.push_str("; ");
        }
        bound.push_str("relative bound skipped: no baseline");
    }
    if bound.is_empty() {
        bound = "none (reported only)".into();
    }
    let result = |value, verdict, reason: String| GateResult {
        metric: g.metric.clone(),
        stage: g.stage,
        value,
        baseline,
        baseline_from: baseline_from.map(str::to_string),
        bound: bound.clone(),
        relative_skipped: skipped,
        verdict,
        reason,
    };
    let Some(value) = measured.metrics.get(&g.metric).copied() else {
        return result(
            None,
            Verdict::Fail,
            format!("{} was not reported by the {stage_name} stage", g.metric),
        );
    };
    let violations: Vec<String> = bounds
        .iter()
        .filter(|b| !b.holds(value))
        .map(|b| b.violation(&g.metric, value))
        .collect();
    if !violations.is_empty() {
        return result(Some(value), Verdict::Fail, violations.join("; "));
    }
    let mut reason = format!("{} {} is within bounds", g.metric, fmt(value));
    if skipped {
        reason.push_str("; no baseline was available (none measured in this run, none recorded for production), so the relative bound was skipped");
    }
    result(Some(value), Verdict::Pass, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(v: serde_json::Value) -> Gate {
        serde_json::from_value(v).unwrap()
    }

    fn m(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn run(
        g: &Gate,
        value: &[(&str, f64)],
        run_baseline: &[(&str, f64)],
        production: &[(&str, f64)],
    ) -> GateResult {
        let (a, b, c) = (m(value), m(run_baseline), m(production));
        judge(
            g,
            Measured {
                metrics: &a,
                run_baseline: &b,
                production: &c,
            },
        )
    }

    #[test]
    fn absolute_bounds() {
        let g = gate(serde_json::json!({"metric": "f1", "min": 0.8, "max": 0.99}));
        assert_eq!(run(&g, &[("f1", 0.85)], &[], &[]).verdict, Verdict::Pass);
        let low = run(&g, &[("f1", 0.7)], &[], &[]);
        assert_eq!(low.verdict, Verdict::Fail);
        assert_eq!(low.reason, "f1 0.7 is below 0.8 (min)");
        assert_eq!(low.bound, ">= 0.8 (min); <= 0.99 (max)");
        assert_eq!(
            run(&g, &[("f1", 0.995)], &[], &[]).reason,
            "f1 0.995 is above 0.99 (max)"
        );
        assert_eq!(
            run(&g, &[("f1", 0.8)], &[], &[]).verdict,
            Verdict::Pass,
            "bounds are inclusive"
        );
    }

    #[test]
    fn missing_metric_fails() {
        let g = gate(serde_json::json!({"metric": "f1"}));
        let r = run(&g, &[("precision", 0.9)], &[], &[]);
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.reason, "f1 was not reported by the evaluate stage");
        assert_eq!(r.value, None);
        let g = gate(serde_json::json!({"metric": "p99_ms", "stage": "Integration"}));
        assert!(run(&g, &[], &[], &[]).reason.contains("integration stage"));
    }

    #[test]
    fn a_gate_without_bounds_only_requires_the_metric() {
        let g = gate(serde_json::json!({"metric": "f1"}));
        let r = run(&g, &[("f1", 0.1)], &[], &[]);
        assert_eq!(
            (r.verdict, r.bound.as_str()),
            (Verdict::Pass, "none (reported only)")
        );
    }

    #[test]
    fn max_regression_higher_is_better() {
        let g = gate(serde_json::json!({"metric": "f1", "maxRegression": 0.01}));
        let ok = run(&g, &[("f1", 0.892)], &[], &[("f1", 0.902)]);
        assert_eq!(ok.verdict, Verdict::Pass, "{ok:?}");
        assert_eq!(ok.baseline, Some(0.902));
        assert_eq!(ok.baseline_from.as_deref(), Some("production"));
        assert_eq!(
            ok.bound,
            ">= 0.892 (baseline 0.902 with at most 0.01 regression)"
        );
        let bad = run(&g, &[("f1", 0.89)], &[], &[("f1", 0.902)]);
        assert_eq!(bad.verdict, Verdict::Fail);
        assert_eq!(
            bad.reason,
            "f1 0.89 is below 0.892 (baseline 0.902 with at most 0.01 regression)"
        );
    }

    #[test]
    fn max_regression_lower_is_better() {
        let g = gate(
            serde_json::json!({"metric": "rmse", "direction": "LowerIsBetter", "maxRegressionPercent": 10.0}),
        );
        assert_eq!(
            run(&g, &[("rmse", 2.2)], &[], &[("rmse", 2.0)]).verdict,
            Verdict::Pass
        );
        let bad = run(&g, &[("rmse", 2.3)], &[], &[("rmse", 2.0)]);
        assert_eq!(bad.verdict, Verdict::Fail);
        assert_eq!(
            bad.reason,
            "rmse 2.3 is above 2.2 (baseline 2 with at most 10% regression)"
        );
    }

    #[test]
    fn min_improvement_both_directions() {
        let g = gate(serde_json::json!({"metric": "f1", "minImprovement": 0.01}));
        assert_eq!(
            run(&g, &[("f1", 0.91)], &[], &[("f1", 0.9)]).verdict,
            Verdict::Pass
        );
        assert_eq!(
            run(&g, &[("f1", 0.905)], &[], &[("f1", 0.9)]).verdict,
            Verdict::Fail
        );
        let g = gate(
            serde_json::json!({"metric": "mae", "direction": "LowerIsBetter", "minImprovementPercent": 5.0}),
        );
        assert_eq!(
            run(&g, &[("mae", 0.95)], &[], &[("mae", 1.0)]).verdict,
            Verdict::Pass
        );
        let bad = run(&g, &[("mae", 0.97)], &[], &[("mae", 1.0)]);
        assert_eq!(
            bad.reason,
            "mae 0.97 is above 0.95 (baseline 1 improved by at least 5%)"
        );
    }

    #[test]
    fn percentages_of_a_negative_baseline_use_its_magnitude() {
        // r2 can be negative; 10% regression of -0.5 tolerates down to -0.55.
        let g = gate(serde_json::json!({"metric": "r2", "maxRegressionPercent": 10.0}));
        assert_eq!(
            run(&g, &[("r2", -0.55)], &[], &[("r2", -0.5)]).verdict,
            Verdict::Pass
        );
        assert_eq!(
            run(&g, &[("r2", -0.56)], &[], &[("r2", -0.5)]).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn the_runs_own_baseline_wins_over_production() {
        let g = gate(serde_json::json!({"metric": "f1", "maxRegression": 0.0}));
        let r = run(&g, &[("f1", 0.85)], &[("f1", 0.84)], &[("f1", 0.95)]);
        assert_eq!(
            (r.verdict, r.baseline, r.baseline_from.as_deref()),
            (Verdict::Pass, Some(0.84), Some("run"))
        );
    }

    #[test]
    fn no_baseline_skips_the_relative_bound_and_says_so() {
        let g = gate(serde_json::json!({"metric": "f1", "min": 0.8, "maxRegression": 0.01}));
        let r = run(&g, &[("f1", 0.85)], &[], &[]);
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.bound, ">= 0.8 (min); relative bound skipped: no baseline");
        assert!(r.relative_skipped);
        assert!(
            r.reason.contains("relative bound was skipped"),
            "{}",
            r.reason
        );
        // The absolute part still applies.
        assert_eq!(run(&g, &[("f1", 0.7)], &[], &[]).verdict, Verdict::Fail);
    }

    #[test]
    fn every_violation_is_listed() {
        let g = gate(serde_json::json!({"metric": "f1", "min": 0.8, "minImprovement": 0.05}));
        let r = run(&g, &[("f1", 0.7)], &[], &[("f1", 0.9)]);
        assert_eq!(
            r.reason,
            "f1 0.7 is below 0.8 (min); f1 0.7 is below 0.95 (baseline 0.9 improved by at least 0.05)"
        );
    }

    #[test]
    fn stage_filter_and_summaries() {
        let gates = vec![
            gate(serde_json::json!({"metric": "f1", "min": 0.8})),
            gate(
                serde_json::json!({"metric": "p99_ms", "stage": "Integration", "direction": "LowerIsBetter", "max": 50.0}),
            ),
        ];
        let metrics = m(&[("f1", 0.5)]);
        let empty = BTreeMap::new();
        let results = judge_stage(
            &gates,
            GateStage::Evaluate,
            Measured {
                metrics: &metrics,
                run_baseline: &empty,
                production: &empty,
            },
        );
        assert_eq!(results.len(), 1);
        assert!(!all_pass(&results));
        assert_eq!(failures(&results), "f1: f1 0.5 is below 0.8 (min)");
        assert!(all_pass(&[]));
    }

    #[test]
    fn numbers_print_without_noise() {
        assert_eq!(fmt(0.902 - 0.01), "0.892");
        assert_eq!(fmt(2.0), "2");
        assert_eq!(fmt(-0.0), "0");
        assert_eq!(fmt(1234.5), "1234.5");
        assert_eq!(fmt(0.0000125), "0.0000125");
    }
}
