//! The statistics behind the significance tests: one-sided binomial z-tests on shares, and
//! quantiles and tail shares of Prometheus histograms. Pure.
use statrs::distribution::{ContinuousCDF, Normal};

/// Whether a count is positive; false for NaN, so that a missing count is never judged.
fn positive(n: f64) -> bool {
    n.partial_cmp(&0.0) == Some(std::cmp::Ordering::Greater)
}

/// The chance of a standard normal variable above `z`.
fn upper_tail(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    // `Normal::new(0, 1)` cannot fail; fall back to "not significant" if it ever did.
    Normal::new(0.0, 1.0).map_or(1.0, |n| n.sf(z))
}

/// One-sided p-value that a share of `x1` in `n1` is above a share of `x2` in `n2`, by the
/// pooled two-proportion z-test. 1 when either count is empty.
pub fn two_proportions(x1: f64, n1: f64, x2: f64, n2: f64) -> f64 {
    if !(positive(n1) && positive(n2)) {
        return 1.0;
    }
    let (p1, p2) = (x1 / n1, x2 / n2);
    let pooled = ((x1 + x2) / (n1 + n2)).clamp(0.0, 1.0);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 {
        return if p1 > p2 { 0.0 } else { 1.0 };
    }
    upper_tail((p1 - p2) / se)
}

/// One-sided p-value that the true share behind `share` measured on `n` samples is above
/// `bound`, by the one-sample z-test. A bound of 0 (or 1) is exceeded for certain by any
/// share above it.
pub fn proportion_above(share: f64, n: f64, bound: f64) -> f64 {
    if !positive(n) {
        return 1.0;
    }
    let bound = bound.clamp(0.0, 1.0);
    let se = (bound * (1.0 - bound) / n).sqrt();
    if se == 0.0 {
        return if share > bound { 0.0 } else { 1.0 };
    }
    upper_tail((share - bound) / se)
}

/// A histogram's cumulative bucket counts, sorted by upper bound; the last bound is `+Inf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// `(le, cumulative count)`, ascending in `le`.
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// Builds a histogram from `(le, count)` pairs in any order. `None` when there is no
    /// `+Inf` bucket (then the total is unknown) or a bound is not a number.
    pub fn new(mut buckets: Vec<(f64, f64)>) -> Option<Histogram> {
        if buckets.iter().any(|(le, _)| le.is_nan()) {
            return None;
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.last().is_none_or(|(le, _)| *le != f64::INFINITY) {
            return None;
        }
        // Rates over a window can make the counts slightly non-monotonic, as Prometheus's
        // own histogram_quantile notes: take the running maximum.
        let mut max = 0.0f64;
        for (_, c) in &mut buckets {
            max = max.max(if c.is_finite() { *c } else { 0.0 });
            *c = max;
        }
        Some(Histogram { buckets })
    }

    /// Every sample.
    pub fn total(&self) -> f64 {
        self.buckets.last().map_or(0.0, |b| b.1)
    }

    /// Samples at or below `le`, for a bound of the histogram (0 for one below the first).
    fn at_or_below(&self, le: f64) -> f64 {
        self.buckets
            .iter()
            .take_while(|(b, _)| *b <= le)
            .last()
            .map_or(0.0, |b| b.1)
    }

    /// The `q`-quantile, interpolated linearly within its bucket as Prometheus's
    /// `histogram_quantile` does. `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if !positive(total) {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let i = self.buckets.iter().position(|(_, c)| *c >= rank)?;
        let (le, count) = self.buckets[i];
        if le == f64::INFINITY {
            // Above the largest finite bound: that bound is the best estimate.
            return Some(if i > 0 { self.buckets[i - 1].0 } else { 0.0 });
        }
        let (lower, below) = if i > 0 {
            self.buckets[i - 1]
        } else {
            (0.0f64.min(le), 0.0)
        };
        let in_bucket = count - below;
        if in_bucket <= 0.0 {
            return Some(le);
        }
        Some(lower + (le - lower) * (rank - below) / in_bucket)
    }

    /// The smallest bucket bound at or below which at least a share `q` of the samples lie.
    fn bound_of(&self, q: f64) -> Option<f64> {
        let rank = q * self.total();
        self.buckets
            .iter()
            .find(|(_, c)| *c >= rank && *c > 0.0)
            .map(|b| b.0)
    }

    /// The largest bucket bound above which at least a share `1 - q` of the samples lie
    /// (0 when even the first bucket holds more than `q`).
    fn bound_below(&self, q: f64) -> f64 {
        let rank = q * self.total();
        self.buckets
            .iter()
            .take_while(|(_, c)| *c < rank)
            .last()
            .map_or(0.0, |b| b.0)
    }

    fn plus(&self, other: &Histogram) -> Histogram {
        let mut bounds: Vec<f64> = self
            .buckets
            .iter()
            .chain(&other.buckets)
            .map(|b| b.0)
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        Histogram {
            buckets: bounds
                .into_iter()
                .map(|le| (le, self.at_or_below(le) + other.at_or_below(le)))
                .collect(),
        }
    }
}

/// Which side of a bound a value fell on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Above the maximum: larger is worse.
    Above,
    /// Below the minimum: smaller is worse.
    Below,
}

/// One-sided p-value that the judged histogram's `q`-quantile is beyond the reference's on
/// `side`: the share of each track's samples beyond the quantile of both tracks pooled is
/// compared with the two-proportion test. The pooled cut makes the test symmetric, so two
/// identical distributions are as likely to go either way.
pub fn quantile_vs_reference(judged: &Histogram, reference: &Histogram, q: f64, side: Side) -> f64 {
    let pooled = judged.plus(reference);
    let (n1, n2) = (judged.total(), reference.total());
    match side {
        Side::Above => {
            // The bucket bound just below the pooled quantile, so that at least 1 - q of the
            // samples lie beyond it whatever the buckets' widths.
            let cut = pooled.bound_below(q);
            let beyond = |h: &Histogram| h.total() - h.at_or_below(cut);
            two_proportions(beyond(judged), n1, beyond(reference), n2)
        }
        Side::Below => {
            // The cut below which a share 1 - q lies: the judged track has too many there.
            let Some(cut) = pooled.bound_of(1.0 - q) else {
                return 1.0;
            };
            two_proportions(judged.at_or_below(cut), n1, reference.at_or_below(cut), n2)
        }
    }
}

/// One-sided p-value that the judged histogram's `q`-quantile is beyond a fixed `bound` on
/// `side`, from the share of samples beyond the nearest bucket bound on the safe side.
pub fn quantile_vs_bound(judged: &Histogram, q: f64, bound: f64, side: Side) -> f64 {
    let n = judged.total();
    match side {
        Side::Above => {
            // Samples above the first bucket bound at or above `bound` are surely above it.
            let Some(cut) = judged
                .buckets
                .iter()
                .map(|b| b.0)
                .find(|le| *le >= bound && le.is_finite())
            else {
                return 1.0;
            };
            let share = (n - judged.at_or_below(cut)) / n;
            proportion_above(share, n, 1.0 - q)
        }
        Side::Below => {
            // Samples at or below the last bucket bound at or below `bound` are surely below.
            let Some(cut) = judged.buckets.iter().map(|b| b.0).rfind(|le| *le <= bound) else {
                return 1.0;
            };
            let share = judged.at_or_below(cut) / n;
            proportion_above(share, n, q)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() <= eps
    }

    #[test]
    fn two_proportions_matches_the_textbook_z_test() {
        // 30/1000 against 10/1000: pooled 0.02, se 0.00626, z 3.19, p 0.00071.
        let p = two_proportions(30.0, 1000.0, 10.0, 1000.0);
        assert!(close(p, 0.00071, 0.00005), "{p}");
        // The same shares are no evidence either way; the other direction is no evidence.
        assert!(close(
            two_proportions(10.0, 1000.0, 10.0, 1000.0),
            0.5,
            1e-9
        ));
        assert!(two_proportions(10.0, 1000.0, 30.0, 1000.0) > 0.99);
        // Empty counts and all-zero shares say nothing.
        assert_eq!(two_proportions(0.0, 0.0, 1.0, 10.0), 1.0);
        assert_eq!(two_proportions(0.0, 100.0, 0.0, 100.0), 1.0);
    }

    #[test]
    fn proportion_above_a_bound() {
        // 0.85 of 2000 against a minimum of 0.9, seen from the failing side (0.15 > 0.1).
        let p = proportion_above(0.15, 2000.0, 0.1);
        assert!(p < 1e-12, "{p}");
        // 0.88 of 500 is not enough evidence against 0.9.
        let p = proportion_above(0.12, 500.0, 0.1);
        assert!(p > 0.05, "{p}");
        assert_eq!(proportion_above(0.01, 100.0, 0.0), 0.0);
        assert_eq!(proportion_above(0.0, 100.0, 0.0), 1.0);
    }

    fn hist(pairs: &[(f64, f64)]) -> Histogram {
        Histogram::new(pairs.to_vec()).unwrap()
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let h = hist(&[
            (0.01, 50.0),
            (0.02, 90.0),
            (0.04, 100.0),
            (f64::INFINITY, 100.0),
        ]);
        assert_eq!(h.total(), 100.0);
        assert!(close(h.quantile(0.5).unwrap(), 0.01, 1e-12));
        assert!(close(h.quantile(0.7).unwrap(), 0.015, 1e-12));
        assert!(close(h.quantile(0.95).unwrap(), 0.03, 1e-12));
        // Beyond the last finite bound: that bound.
        let h = hist(&[(0.01, 50.0), (f64::INFINITY, 100.0)]);
        assert_eq!(h.quantile(0.99), Some(0.01));
        assert_eq!(hist(&[(f64::INFINITY, 0.0)]).quantile(0.5), None);
        assert!(Histogram::new(vec![(0.1, 3.0)]).is_none(), "no +Inf bucket");
    }

    #[test]
    fn counts_are_made_monotonic() {
        let h = hist(&[(f64::INFINITY, 10.0), (0.1, 10.5), (0.05, 4.0)]);
        assert_eq!(
            h.buckets,
            vec![(0.05, 4.0), (0.1, 10.5), (f64::INFINITY, 10.5)]
        );
    }

    /// A histogram of `n` samples spread log-uniformly from `lo` to `hi`, on buckets 20 % apart.
    fn spread(n: f64, lo: f64, hi: f64) -> Histogram {
        let bounds: Vec<f64> = (0..60).map(|k| 0.001 * 1.2f64.powi(k)).collect();
        let cdf = |x: f64| ((x.ln() - lo.ln()) / (hi.ln() - lo.ln())).clamp(0.0, 1.0);
        let mut pairs: Vec<(f64, f64)> = bounds.iter().map(|&b| (b, n * cdf(b))).collect();
        pairs.push((f64::INFINITY, n));
        hist(&pairs)
    }

    #[test]
    fn a_slower_tail_is_significant_and_an_identical_one_is_not() {
        let stable = spread(2000.0, 0.010, 0.040);
        let same = spread(2000.0, 0.010, 0.040);
        let slower = spread(2000.0, 0.013, 0.052);
        let p_same = quantile_vs_reference(&same, &stable, 0.99, Side::Above);
        assert!(p_same > 0.2, "{p_same}");
        let p_slow = quantile_vs_reference(&slower, &stable, 0.99, Side::Above);
        assert!(p_slow < 1e-4, "{p_slow}");
        // Faster is not evidence of being slower.
        assert!(quantile_vs_reference(&stable, &slower, 0.99, Side::Above) > 0.5);
        // And a too-fast track is found from below.
        assert!(quantile_vs_reference(&stable, &slower, 0.99, Side::Below) < 1e-4);
    }

    #[test]
    fn a_quantile_against_a_fixed_bound() {
        let h = spread(2000.0, 0.010, 0.040);
        // p99 ≈ 0.039: well above a bound of 0.02, not above 0.05.
        assert!(quantile_vs_bound(&h, 0.99, 0.02, Side::Above) < 1e-6);
        assert!(quantile_vs_bound(&h, 0.99, 0.05, Side::Above) > 0.5);
        assert!(quantile_vs_bound(&h, 0.5, 0.05, Side::Below) < 1e-6);
    }
}
