//! Degradation knobs: a share of errors, added latency (fixed or spread), a share of altered
//! predictions, and a shift of every score.
//! Read on every request without a lock; changed at runtime through `PUT /admin/knobs`.
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The knobs as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// Share of `/predict` requests answered with a 500, from 0 to 1 (random).
    pub error_rate: f64,
    /// Milliseconds added to every `/predict` request.
    pub latency_ms: f64,
    /// Share of requests whose predictions are altered, from 0 to 1. Deterministic: decided by
    /// the `x-request-id` header, or the body when there is none.
    pub alter_share: f64,
    /// Spread of the added latency: each request waits `latency_ms` times a log-normal factor
    /// with this σ (and mean 1), like a real model's service time. 0: exactly `latency_ms`.
    #[serde(default)]
    pub latency_spread: f64,
    /// Added to every score (a shift of the prediction distribution); labels follow the
    /// shifted score.
    #[serde(default)]
    pub score_shift: f64,
}

/// A partial update: absent fields keep their value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnobsPatch {
    pub error_rate: Option<f64>,
    pub latency_ms: Option<f64>,
    pub alter_share: Option<f64>,
    pub latency_spread: Option<f64>,
    pub score_shift: Option<f64>,
}

impl Knobs {
    pub fn validate(self) -> Result<Knobs, String> {
        for (name, value) in [
            ("error_rate", self.error_rate),
            ("alter_share", self.alter_share),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{name} must be within 0 and 1, got {value}"));
            }
        }
        if !self.latency_ms.is_finite() || self.latency_ms < 0.0 || self.latency_ms > 600_000.0 {
            return Err(format!(
                "latency_ms must be within 0 and 600000, got {}",
                self.latency_ms
            ));
        }
        if !(0.0..=2.0).contains(&self.latency_spread) {
            return Err(format!(
                "latency_spread must be within 0 and 2, got {}",
                self.latency_spread
            ));
        }
        if !self.score_shift.is_finite() || self.score_shift.abs() > 1000.0 {
            return Err(format!(
                "score_shift must be within -1000 and 1000, got {}",
                self.score_shift
            ));
        }
        Ok(self)
    }

    pub fn apply(self, patch: KnobsPatch) -> Result<Knobs, String> {
        Knobs {
            error_rate: patch.error_rate.unwrap_or(self.error_rate),
            latency_ms: patch.latency_ms.unwrap_or(self.latency_ms),
            alter_share: patch.alter_share.unwrap_or(self.alter_share),
            latency_spread: patch.latency_spread.unwrap_or(self.latency_spread),
            score_shift: patch.score_shift.unwrap_or(self.score_shift),
        }
        .validate()
    }
}

/// Seeds that keep the server's choices independent of the router's sampling hash
/// (xxh3 with seed 0), so a mirrored sample holds the same share of altered requests.
const ALTER_SEED: u64 = 0x6d6f_6465_6c73_6869;
const ERROR_SEED: u64 = 0x6572_726f_7273_6565;

/// Whether a hash falls in the first `share` of the 64-bit range.
fn below(hash: u64, share: f64) -> bool {
    share >= 1.0 || (hash as f64) < share * 18_446_744_073_709_551_616.0
}

/// Whether the request with this key (request id, or body) gets altered predictions.
pub fn altered(key: &[u8], share: f64) -> bool {
    share > 0.0 && below(xxh3_64_with_seed(key, ALTER_SEED), share)
}

/// Whether the request numbered `n` (a per-process counter) fails.
pub fn fails(n: u64, rate: f64) -> bool {
    rate > 0.0 && below(xxh3_64_with_seed(&n.to_le_bytes(), ERROR_SEED), rate)
}

/// The latency factor of request `n`: log-normal with σ `spread` and mean 1, drawn from a
/// hash of the request number (Box–Muller), so runs are repeatable.
pub fn latency_factor(n: u64, spread: f64) -> f64 {
    if spread <= 0.0 {
        return 1.0;
    }
    let unit = |seed: u64| {
        // In (0, 1]: never 0, whose logarithm is infinite.
        (xxh3_64_with_seed(&n.to_le_bytes(), seed) >> 11) as f64 / (1u64 << 53) as f64
            + f64::EPSILON
    };
    let (u1, u2) = (unit(LATENCY_SEED), unit(LATENCY_SEED + 1));
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (spread * z - spread * spread / 2.0).exp()
}

const LATENCY_SEED: u64 = 0x6c61_7465_6e63_7900;

/// The knobs in atomics (`f64` bits), read on every request without a lock.
pub struct LiveKnobs {
    values: [AtomicU64; 5],
}

impl LiveKnobs {
    pub fn new(knobs: Knobs) -> Self {
        let live = LiveKnobs {
            values: Default::default(),
        };
        live.set(knobs);
        live
    }

    pub fn get(&self) -> Knobs {
        let v = |i: usize| f64::from_bits(self.values[i].load(Ordering::Relaxed));
        Knobs {
            error_rate: v(0),
            latency_ms: v(1),
            alter_share: v(2),
            latency_spread: v(3),
            score_shift: v(4),
        }
    }

    pub fn set(&self, knobs: Knobs) {
        let values = [
            knobs.error_rate,
            knobs.latency_ms,
            knobs.alter_share,
            knobs.latency_spread,
            knobs.score_shift,
        ];
        for (slot, value) in self.values.iter().zip(values) {
            slot.store(value.to_bits(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alteration_is_deterministic_and_has_the_share() {
        let n = 100_000;
        let count = (0..n)
            .filter(|i| altered(format!("req-{i}").as_bytes(), 0.2))
            .count();
        assert!((count as f64 / n as f64 - 0.2).abs() < 0.005, "{count}");
        for i in 0..1000 {
            let key = format!("req-{i}");
            assert_eq!(altered(key.as_bytes(), 0.2), altered(key.as_bytes(), 0.2));
        }
        assert!(!altered(b"x", 0.0));
        assert!(altered(b"x", 1.0));
    }

    #[test]
    fn alteration_is_independent_of_the_routers_sampling() {
        // Among requests the router would mirror at 50 % (xxh3, seed 0), ~20 % are altered.
        let keys: Vec<String> = (0..100_000).map(|i| format!("id-{i}")).collect();
        let sampled: Vec<&String> = keys
            .iter()
            .filter(|k| xxhash_rust::xxh3::xxh3_64(k.as_bytes()) < u64::MAX / 2)
            .collect();
        let altered_share = sampled
            .iter()
            .filter(|k| altered(k.as_bytes(), 0.2))
            .count() as f64
            / sampled.len() as f64;
        assert!((altered_share - 0.2).abs() < 0.01, "{altered_share}");
    }

    #[test]
    fn latency_factors_are_log_normal_with_mean_one() {
        let n = 100_000u64;
        let mut factors: Vec<f64> = (0..n).map(|i| latency_factor(i, 0.3)).collect();
        let mean = factors.iter().sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.01, "{mean}");
        factors.sort_by(f64::total_cmp);
        // The 99th percentile of exp(0.3 z - 0.045) is exp(0.3 * 2.326 - 0.045) = 1.92.
        let p99 = factors[(n as usize) * 99 / 100];
        assert!((p99 - 1.92).abs() < 0.05, "{p99}");
        assert_eq!(latency_factor(7, 0.0), 1.0);
        assert_eq!(latency_factor(7, 0.3), latency_factor(7, 0.3));
    }

    #[test]
    fn error_share() {
        let count = (0..100_000u64).filter(|n| fails(*n, 0.1)).count();
        assert!((count as f64 / 100_000.0 - 0.1).abs() < 0.005, "{count}");
        assert!(!(0..1000).any(|n| fails(n, 0.0)));
    }

    #[test]
    fn patches_and_validation() {
        let knobs = Knobs {
            error_rate: 0.0,
            latency_ms: 0.0,
            alter_share: 0.0,
            latency_spread: 0.0,
            score_shift: 0.0,
        };
        let patched = knobs
            .apply(KnobsPatch {
                alter_share: Some(0.2),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            patched,
            Knobs {
                alter_share: 0.2,
                ..knobs
            }
        );
        assert!(
            knobs
                .apply(KnobsPatch {
                    error_rate: Some(1.5),
                    ..Default::default()
                })
                .is_err()
        );
        assert!(
            knobs
                .apply(KnobsPatch {
                    latency_ms: Some(-1.0),
                    ..Default::default()
                })
                .is_err()
        );
        assert!(
            serde_json::from_str::<KnobsPatch>(r#"{"eror_rate":1}"#).is_err(),
            "typos are rejected"
        );
        let live = LiveKnobs::new(knobs);
        live.set(patched);
        assert_eq!(live.get(), patched);
    }
}
