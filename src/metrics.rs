//! The operator's own Prometheus metrics. The registry belongs to the application state.
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::time::Instant;

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub leader: IntGauge,
    /// Entries of per-object state (backoff counts, writes in flight), per controller.
    pub object_state: prometheus::IntGaugeVec,
    /// Writes of child objects (server-side applies that were not skipped as unchanged).
    pub child_applies: IntCounterVec,
    /// Deployment side.
    pub transitions: IntCounterVec,
    pub phase_duration: HistogramVec,
    pub analysis_value: GaugeVec,
    pub analysis_verdicts: IntCounterVec,
    /// Pipeline side.
    pub runs_started: IntCounterVec,
    pub runs_finished: IntCounterVec,
    pub stage_duration: HistogramVec,
    pub gate_verdicts: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` and hands it back.
fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: C) -> C {
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .expect("valid metric"),
    )
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = counter(
            &registry,
            "modelship_reconciles_total",
            "Reconciliations run, per controller.",
            &["controller"],
        );
        let reconcile_errors = counter(
            &registry,
            "modelship_reconcile_errors_total",
            "Reconciliations that failed, per controller and error kind.",
            &["controller", "error"],
        );
        let reconcile_duration = histogram(
            &registry,
            "modelship_reconcile_duration_seconds",
            "Time a reconciliation took, per controller.",
            &["controller"],
            vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        );
        let leader = register(
            &registry,
            IntGauge::new(
                "modelship_leader",
                "1 while this replica holds the leader lease.",
            )
            .expect("valid metric"),
        );
        let object_state = register(
            &registry,
            prometheus::IntGaugeVec::new(
                Opts::new(
                    "modelship_object_state_entries",
                    "Entries the operator keeps per object (retry backoff, status writes in flight), per controller, as of the last sweep; returns to its level when objects are deleted.",
                ),
                &["controller"],
            )
            .expect("valid metric"),
        );
        let child_applies = counter(
            &registry,
            "modelship_child_applies_total",
            "Child objects written by server-side apply, per kind; flat while everything is converged.",
            &["kind"],
        );
        let transitions = counter(
            &registry,
            "modelship_deployment_transitions_total",
            "Decisions about model versions: promoted, rejected, rolled_back, aborted, superseded.",
            &["decision"],
        );
        let phase_duration = histogram(
            &registry,
            "modelship_deployment_phase_duration_seconds",
            "Time a model version spent in a phase (Shadowing, Promoting, Baking) before leaving it.",
            &["phase"],
            vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
                86400.0,
            ],
        );
        let analysis_value = register(
            &registry,
            GaugeVec::new(
                Opts::new("modelship_analysis_value", "Latest measured value of an analysis metric, per ModelDeployment and track (judged or reference)."),
                &["namespace", "deployment", "metric", "series"],
            )
            .expect("valid metric"),
        );
        let analysis_verdicts = counter(
            &registry,
            "modelship_analysis_measurements_total",
            "Analysis measurements, per verdict (Pass, Fail, Inconclusive, Error).",
            &["verdict"],
        );
        let runs_started = counter(
            &registry,
            "modelship_pipeline_runs_started_total",
            "Pipeline runs started, per trigger.",
            &["trigger"],
        );
        let runs_finished = counter(
            &registry,
            "modelship_pipeline_runs_finished_total",
            "Pipeline runs finished, per result (succeeded, failed, rejected).",
            &["result"],
        );
        let stage_duration = histogram(
            &registry,
            "modelship_pipeline_stage_duration_seconds",
            "Duration of pipeline stages, per stage and result.",
            &["stage", "result"],
            vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
            ],
        );
        let gate_verdicts = counter(
            &registry,
            "modelship_pipeline_gate_verdicts_total",
            "Gate verdicts, per verdict.",
            &["verdict"],
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            leader,
            object_state,
            child_applies,
            transitions,
            phase_duration,
            analysis_value,
            analysis_verdicts,
            runs_started,
            runs_finished,
            stage_duration,
            gate_verdicts,
        }
    }

    /// Starts timing one reconciliation; the returned guard records it when dropped.
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciles.with_label_values(&[controller]).inc();
        ReconcileTimer {
            histogram: self.reconcile_duration.clone(),
            controller,
            start: Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, controller: &'static str, error: &crate::Error) {
        self.reconcile_errors
            .with_label_values(&[controller, error.metric_label()])
            .inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Records a reconciliation's duration on drop, so early returns are measured too.
pub struct ReconcileTimer {
    histogram: HistogramVec,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram
            .with_label_values(&[self.controller])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_reconcile_metrics_with_bounded_labels() {
        let m = Metrics::new();
        drop(m.reconcile_started("deployment"));
        m.reconcile_failed("deployment", &crate::Error::Config("x".into()));
        let text = m.render();
        assert!(text.contains("modelship_reconciles_total{controller=\"deployment\"} 1"));
        assert!(text.contains(
            "modelship_reconcile_errors_total{controller=\"deployment\",error=\"config\"} 1"
        ));
        assert!(
            text.contains(
                "modelship_reconcile_duration_seconds_count{controller=\"deployment\"} 1"
            )
        );
    }
}
