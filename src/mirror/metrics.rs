//! The router's Prometheus metrics. The registry belongs to the router, and every label value
//! comes from a bounded set.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use super::compare::{MAX_DIFFS, Outcome, Prediction};

/// Which side of the router a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Stable = 0,
    Shadow = 1,
}

impl Track {
    pub fn label(self) -> &'static str {
        match self {
            Track::Stable => "stable",
            Track::Shadow => "shadow",
        }
    }
}

/// How an upstream request ended, as the `code` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The upstream's HTTP status.
    Status(u16),
    /// No response: the connection failed or broke.
    Error,
    /// No response within the timeout.
    Timeout,
}

/// Why a mirrored copy was not sent, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The request body is larger than `--max-body-bytes`.
    BodyTooLarge,
    /// `--max-in-flight` copies are already in flight.
    InFlightLimit,
    /// The shadow could not be reached lately and copies are paused (see `breaker`).
    ShadowUnavailable,
    /// The copies' memory budget (`--max-copy-bytes`) could not hold the request or the
    /// shadow's answer.
    MemoryLimit,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::BodyTooLarge,
        DropReason::InFlightLimit,
        DropReason::ShadowUnavailable,
        DropReason::MemoryLimit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::BodyTooLarge => "body_too_large",
            DropReason::InFlightLimit => "in_flight_limit",
            DropReason::ShadowUnavailable => "shadow_unavailable",
            DropReason::MemoryLimit => "memory_limit",
        }
    }
}

/// Label value counting every prediction label beyond the bound.
pub const OTHER_LABEL: &str = "__other__";
/// Longer labels are not model classes; they count as `__other__`.
const MAX_LABEL_LEN: usize = 64;

/// Status codes 100 to 999 get a counter each, resolved once and then lock-free.
const STATUS_MIN: u16 = 100;
const STATUS_SLOTS: usize = 900;

/// Handles resolved once, so a request updates metrics without hashing label values.
struct TrackMetrics {
    by_status: Box<[OnceLock<IntCounter>]>,
    error: IntCounter,
    timeout: IntCounter,
    duration: Histogram,
    prediction_value: Histogram,
    labels: LabelCounter,
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    tracks: [TrackMetrics; 2],
    comparisons: [IntCounter; 4],
    dropped: [IntCounter; 4],
    abs_diff: Histogram,
    in_flight: IntGauge,
}

/// Request durations span sub-millisecond proxying to multi-second model calls. Bounds 20 %
/// apart (0.25 ms to 8 s, 58 buckets) so the analysis can tell a p99 20–30 % slower from
/// the same one: with bounds 2.5× apart, as is common, both land in one bucket.
fn duration_buckets() -> Vec<f64> {
    (0..58)
        .map(|k| {
            // Rounded to 4 significant digits so the `le` labels stay short and stable.
            let b = 0.00025 * 1.2f64.powi(k);
            let scale = 10f64.powi(3 - b.log10().floor() as i32);
            (b * scale).round() / scale
        })
        .collect()
}
/// Differences from rounding noise up to a different answer.
const DIFF_BUCKETS: [f64; 14] = [
    0.0, 1e-9, 1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0, 100.0, 1000.0,
];

impl Metrics {
    pub fn new(
        prediction_buckets: &[f64],
        max_labels: usize,
    ) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "modelship_mirror_requests_total",
                "Upstream requests by track and HTTP status (or error, timeout).",
            ),
            &["track", "code"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "modelship_mirror_request_duration_seconds",
                "Time from the router sending a request to an upstream until its response head.",
            )
            .buckets(duration_buckets()),
            &["track"],
        )?;
        let comparisons = IntCounterVec::new(
            Opts::new(
                "modelship_mirror_comparisons_total",
                "Comparisons of stable's and the shadow's answers by result.",
            ),
            &["result"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "modelship_mirror_dropped_total",
                "Mirrored copies not sent, by reason.",
            ),
            &["reason"],
        )?;
        let abs_diff = Histogram::with_opts(
            HistogramOpts::new(
                "modelship_mirror_abs_diff",
                format!(
                    "Absolute differences between compared numeric predictions; at most {MAX_DIFFS} per answer, evenly spread over its pairs."
                ),
            )
            .buckets(DIFF_BUCKETS.to_vec()),
        )?;
        let prediction_values = HistogramVec::new(
            HistogramOpts::new(
                "modelship_mirror_prediction_value",
                "Numeric predictions at the compared pointers, by track.",
            )
            .buckets(prediction_buckets.to_vec()),
            &["track"],
        )?;
        let prediction_labels = IntCounterVec::new(
            Opts::new(
                "modelship_mirror_prediction_label_total",
                "Predicted labels (strings and booleans at the compared pointers) by track; labels beyond the bound count as __other__.",
            ),
            &["track", "label"],
        )?;
        let in_flight = IntGauge::new("modelship_mirror_in_flight", "Mirrored copies in flight.")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(durations.clone()))?;
        registry.register(Box::new(comparisons.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(abs_diff.clone()))?;
        registry.register(Box::new(prediction_values.clone()))?;
        registry.register(Box::new(prediction_labels.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;

        let track = |t: Track| TrackMetrics {
            by_status: (0..STATUS_SLOTS).map(|_| OnceLock::new()).collect(),
            error: requests.with_label_values(&[t.label(), "error"]),
            timeout: requests.with_label_values(&[t.label(), "timeout"]),
            duration: durations.with_label_values(&[t.label()]),
            prediction_value: prediction_values.with_label_values(&[t.label()]),
            labels: LabelCounter::new(prediction_labels.clone(), t.label(), max_labels),
        };
        // Every comparison result and drop reason exists from the start, so rates are defined at once.
        let comparisons = Outcome::ALL.map(|o| comparisons.with_label_values(&[o.label()]));
        let dropped = DropReason::ALL.map(|r| dropped.with_label_values(&[r.label()]));
        Ok(Metrics {
            tracks: [track(Track::Stable), track(Track::Shadow)],
            registry,
            requests,
            comparisons,
            dropped,
            abs_diff,
            in_flight,
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one upstream request and its duration.
    pub fn request(&self, track: Track, code: Code, seconds: f64) {
        let metrics = &self.tracks[track as usize];
        metrics.duration.observe(seconds);
        match code {
            Code::Status(status)
                if (STATUS_MIN..STATUS_MIN + STATUS_SLOTS as u16).contains(&status) =>
            {
                metrics.by_status[(status - STATUS_MIN) as usize]
                    .get_or_init(|| {
                        self.requests
                            .with_label_values(&[track.label(), &status.to_string()])
                    })
                    .inc()
            }
            Code::Status(_) | Code::Error => metrics.error.inc(),
            Code::Timeout => metrics.timeout.inc(),
        }
    }

    pub fn comparison(&self, outcome: Outcome) {
        self.comparisons[outcome as usize].inc();
    }

    pub fn abs_diff(&self, diff: f64) {
        self.abs_diff.observe(diff);
    }

    pub fn dropped(&self, reason: DropReason) {
        self.dropped[reason as usize].inc();
    }

    pub fn prediction(&self, track: Track, prediction: Prediction<'_>) {
        let metrics = &self.tracks[track as usize];
        match prediction {
            Prediction::Number(x) => metrics.prediction_value.observe(x),
            Prediction::Label(label) => metrics.labels.inc(label),
            Prediction::Bool(b) => metrics.labels.inc(if b { "true" } else { "false" }),
        }
    }

    pub fn in_flight(&self) -> &IntGauge {
        &self.in_flight
    }
}

/// A label with its own series.
type Known = (Box<str>, IntCounter);

/// Counts labels, keeping at most `max` distinct values; the rest go to `__other__`.
///
/// Every answer counts its labels here, from every worker thread at once, so a label seen
/// before is found without a lock: the known labels are published once each, in slots read
/// with one atomic load, and looked up by a scan (models have a handful of classes, and at
/// most `max`). Only a new label takes the lock.
struct LabelCounter {
    vec: IntCounterVec,
    track: &'static str,
    /// `max` slots; the first `published` are set.
    slots: Box<[OnceLock<Known>]>,
    published: AtomicUsize,
    adding: Mutex<()>,
    other: IntCounter,
}

impl LabelCounter {
    fn new(vec: IntCounterVec, track: &'static str, max: usize) -> Self {
        let other = vec.with_label_values(&[track, OTHER_LABEL]);
        LabelCounter {
            vec,
            track,
            slots: (0..max).map(|_| OnceLock::new()).collect(),
            published: AtomicUsize::new(0),
            adding: Mutex::new(()),
            other,
        }
    }

    fn find(&self, label: &str, known: usize) -> Option<&IntCounter> {
        self.slots[..known]
            .iter()
            .filter_map(OnceLock::get)
            .find(|(known, _)| **known == *label)
            .map(|(_, counter)| counter)
    }

    fn inc(&self, label: &str) {
        if let Some(counter) = self.find(label, self.published.load(Ordering::Acquire)) {
            return counter.inc();
        }
        // Counting is best effort: a poisoned lock still guards the slots.
        let _adding = self
            .adding
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Another thread may have added it meanwhile.
        let known = self.published.load(Ordering::Acquire);
        if let Some(counter) = self.find(label, known) {
            counter.inc();
        } else if admits(known, self.slots.len(), label) {
            let counter = self.vec.with_label_values(&[self.track, label]);
            counter.inc();
            let _ = self.slots[known].set((label.into(), counter));
            self.published.store(known + 1, Ordering::Release);
        } else {
            self.other.inc();
        }
    }
}

/// Whether a label not seen before gets its own series.
fn admits(known: usize, max: usize, label: &str) -> bool {
    known < max && label.len() <= MAX_LABEL_LEN && label != OTHER_LABEL
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    fn text(metrics: &Metrics) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&metrics.registry().gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn label_admission() {
        assert!(admits(0, 2, "cat"));
        assert!(!admits(2, 2, "cat"));
        assert!(!admits(0, 2, &"x".repeat(65)));
        assert!(!admits(0, 2, OTHER_LABEL));
    }

    #[test]
    fn labels_are_bounded_per_track() {
        let metrics = Metrics::new(&[0.5, 1.0], 2).unwrap();
        for label in ["a", "b", "c", "d", "a"] {
            metrics.prediction(Track::Stable, Prediction::Label(label));
        }
        metrics.prediction(Track::Shadow, Prediction::Label("z"));
        let text = text(&metrics);
        assert!(
            text.contains(r#"modelship_mirror_prediction_label_total{label="a",track="stable"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"modelship_mirror_prediction_label_total{label="b",track="stable"} 1"#)
        );
        assert!(text.contains(
            r#"modelship_mirror_prediction_label_total{label="__other__",track="stable"} 2"#
        ));
        assert!(
            text.contains(r#"modelship_mirror_prediction_label_total{label="z",track="shadow"} 1"#)
        );
        assert!(!text.contains(r#"label="c""#));
    }

    #[test]
    fn series_exist_before_anything_happens() {
        let text = text(&Metrics::new(&[1.0], 8).unwrap());
        for result in ["match", "mismatch", "shadow_error", "uncomparable"] {
            assert!(
                text.contains(&format!(
                    r#"modelship_mirror_comparisons_total{{result="{result}"}} 0"#
                )),
                "{text}"
            );
        }
        for reason in ["body_too_large", "in_flight_limit", "shadow_unavailable"] {
            assert!(text.contains(&format!(
                r#"modelship_mirror_dropped_total{{reason="{reason}"}} 0"#
            )));
        }
    }

    #[test]
    fn requests_by_code() {
        let metrics = Metrics::new(&[1.0], 8).unwrap();
        metrics.request(Track::Stable, Code::Status(200), 0.001);
        metrics.request(Track::Stable, Code::Status(200), 0.002);
        metrics.request(Track::Shadow, Code::Timeout, 1.0);
        metrics.request(Track::Shadow, Code::Error, 0.1);
        let text = text(&metrics);
        assert!(
            text.contains(r#"modelship_mirror_requests_total{code="200",track="stable"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"modelship_mirror_requests_total{code="timeout",track="shadow"} 1"#)
        );
        assert!(text.contains(r#"modelship_mirror_requests_total{code="error",track="shadow"} 1"#));
        assert!(
            text.contains(r#"modelship_mirror_request_duration_seconds_count{track="stable"} 2"#)
        );
    }
}
