//! The operator's own Prometheus metrics. The registry belongs to the application state.
mod object_counters;

use crate::api::DeploymentPhase;
use object_counters::{ObjectCounters, ObjectStates};
use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::HashMap;
use std::time::Instant;

/// The kinds whose objects name series (`namespace`, `name`), swept when they are deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ModelDeployment,
    ModelPipeline,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ModelDeployment => "ModelDeployment",
            Kind::ModelPipeline => "ModelPipeline",
        }
    }
}

/// The decisions about a ModelDeployment's versions, and how pipeline runs end, as counted.
pub const DECISIONS: [&str; 5] = [
    "promoted",
    "rejected",
    "rolled_back",
    "aborted",
    "superseded",
];
pub const RUN_RESULTS: [&str; 3] = ["succeeded", "failed", "rejected"];

/// Why an analysis query got no result: a bounded label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// No connection to Prometheus.
    Unreachable,
    /// No answer within the timeout, or Prometheus gave up on the query.
    Timeout,
    /// Prometheus refused the query (bad_data): the query's fault, not the server's.
    Rejected,
    /// Prometheus answered with another error (execution, internal, unavailable).
    ServerError,
    /// An answer that is not the Prometheus API's, e.g. a proxy's error page.
    BadResponse,
    /// An answer larger than `--prometheus-max-response-bytes`: usually a query that is not
    /// aggregated.
    TooLarge,
}

impl QueryError {
    pub fn as_str(self) -> &'static str {
        match self {
            QueryError::Unreachable => "unreachable",
            QueryError::Timeout => "timeout",
            QueryError::Rejected => "rejected",
            QueryError::ServerError => "server_error",
            QueryError::BadResponse => "bad_response",
            QueryError::TooLarge => "too_large",
        }
    }

    /// Whether Prometheus itself answered.
    fn answered(self) -> bool {
        matches!(
            self,
            QueryError::Rejected | QueryError::ServerError | QueryError::TooLarge
        )
    }
}

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
    /// Deployment side. Series labelled `namespace` and `name` (`deployment` for
    /// `analysis_value`) go when their object leaves the cache (`sweep`).
    pub transitions: ObjectCounters,
    pub phase: ObjectStates,
    pub phase_duration: HistogramVec,
    pub analysis_value: GaugeVec,
    pub analysis_verdicts: IntCounterVec,
    /// Both sides: unix seconds since when an object waits for a person's approval.
    pub awaiting_approval_since: GaugeVec,
    /// Analysis queries that got no result, per reason; and whether the last one got an
    /// answer (absent before the first query).
    pub prometheus_query_errors: IntCounterVec,
    pub prometheus_reachable: IntGaugeVec,
    /// Pipeline side.
    pub runs_started: ObjectCounters,
    pub runs_finished: ObjectCounters,
    pub stage_duration: HistogramVec,
    pub gate_verdicts: IntCounterVec,
    pub gate_value: GaugeVec,
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

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(
        registry,
        GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

/// Removes the series of `vec` whose labels `keep` refuses.
fn retain<T: MetricVecBuilder>(vec: &MetricVec<T>, keep: impl Fn(&HashMap<&str, &str>) -> bool) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if !keep(&labels) {
                let _ = vec.remove(&labels);
            }
        }
    }
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
        let transitions = register(
            &registry,
            ObjectCounters::new(
                "modelship_deployment_transitions_total",
                "Decisions about model versions, per ModelDeployment: promoted, rejected, rolled_back, aborted, superseded.",
                "decision",
                DECISIONS,
            ),
        );
        let phase = register(
            &registry,
            ObjectStates::new(
                "modelship_deployment_phase",
                "The ModelDeployment's current phase (one series, 1, labelled with the phase).",
                "phase",
            ),
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
        let awaiting_approval_since = gauge(
            &registry,
            "modelship_awaiting_approval_since_seconds",
            "Unix time since when a ModelDeployment's candidate (since this operator process first saw it wait) or a ModelPipeline's run (since its candidate passed its gates) waits for approval; absent when nothing waits.",
            &["namespace", "name", "kind"],
        );
        let prometheus_query_errors = counter(
            &registry,
            "modelship_prometheus_query_errors_total",
            "Analysis queries that got no result, per reason: unreachable, timeout, rejected (the query is invalid), server_error, bad_response, too_large (the answer exceeded --prometheus-max-response-bytes).",
            &["reason"],
        );
        let prometheus_reachable = int_gauge(
            &registry,
            "modelship_prometheus_reachable",
            "1 when the last analysis query got an answer from Prometheus in time (a result or an API error), 0 when it did not; absent before the first query.",
            &[],
        );
        let analysis_verdicts = counter(
            &registry,
            "modelship_analysis_measurements_total",
            "Analysis measurements, per verdict (Pass, Fail, Inconclusive, Error).",
            &["verdict"],
        );
        let runs_started = register(
            &registry,
            ObjectCounters::new(
                "modelship_pipeline_runs_started_total",
                "Pipeline runs started, per ModelPipeline and trigger.",
                "trigger",
                crate::api::TriggerReason::ALL.map(|t| t.as_str()),
            ),
        );
        let runs_finished = register(
            &registry,
            ObjectCounters::new(
                "modelship_pipeline_runs_finished_total",
                "Pipeline runs finished, per ModelPipeline and result (succeeded, failed, rejected).",
                "result",
                RUN_RESULTS,
            ),
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
        let gate_value = gauge(
            &registry,
            "modelship_pipeline_gate_value",
            "Values of the gates of a ModelPipeline's newest judged run, per stage and gate metric: the candidate's and the baseline's.",
            &["namespace", "name", "stage", "gate", "series"],
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
            phase,
            phase_duration,
            analysis_value,
            analysis_verdicts,
            awaiting_approval_since,
            prometheus_query_errors,
            prometheus_reachable,
            runs_started,
            runs_finished,
            stage_duration,
            gate_verdicts,
            gate_value,
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

    /// Creates the ModelDeployment's decision counters at 0, so that `increase()` sees its
    /// first decision after the operator starts (a counter that appears at 1 shows none).
    pub fn deployment_seen(&self, namespace: &str, name: &str) {
        self.transitions.seen(namespace, name);
    }

    /// Likewise for the pipeline's run counters.
    pub fn pipeline_seen(&self, namespace: &str, name: &str) {
        self.runs_finished.seen(namespace, name);
        self.runs_started.seen(namespace, name);
    }

    /// Sets the ModelDeployment's phase: one series, 1, labelled with the current phase
    /// (not one per phase: at thousands of objects every series per object costs memory
    /// here and in Prometheus).
    pub fn deployment_phase(&self, namespace: &str, name: &str, phase: DeploymentPhase) {
        self.phase.set(namespace, name, phase.as_str());
    }

    /// Whether the object waits for approval, and since when. `None` for `since` keeps the
    /// time already recorded, or takes `now` (when the status does not say).
    pub fn awaiting_approval(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        waiting: bool,
        since: Option<jiff::Timestamp>,
        now: jiff::Timestamp,
    ) {
        let labels = [namespace, name, kind.as_str()];
        if !waiting {
            let _ = self.awaiting_approval_since.remove_label_values(&labels);
            return;
        }
        let value = match since {
            Some(t) => t,
            None if self.is_recorded(&labels) => return,
            None => now,
        };
        self.awaiting_approval_since
            .with_label_values(&labels)
            .set(value.as_millisecond() as f64 / 1000.0);
    }

    /// Whether `awaiting_approval_since` holds a series with `labels` (namespace, name, kind).
    fn is_recorded(&self, labels: &[&str; 3]) -> bool {
        self.awaiting_approval_since.collect().iter().any(|f| {
            f.get_metric().iter().any(|m| {
                let got: HashMap<&str, &str> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                got.get("namespace") == Some(&labels[0])
                    && got.get("name") == Some(&labels[1])
                    && got.get("kind") == Some(&labels[2])
            })
        })
    }

    /// Replaces the pipeline's gate values: (stage, gate, candidate, baseline) each.
    pub fn gate_values(
        &self,
        namespace: &str,
        name: &str,
        gates: &[(&str, &str, Option<f64>, Option<f64>)],
    ) {
        let set: Vec<(&str, &str, &str, f64)> = gates
            .iter()
            .flat_map(|(stage, gate, candidate, baseline)| {
                [("candidate", candidate), ("baseline", baseline)]
                    .into_iter()
                    .filter_map(move |(series, v)| Some((*stage, *gate, series, (*v)?)))
            })
            .collect();
        // Only the series the new values do not hold go, so a scrape never misses a gate.
        retain(&self.gate_value, |l| {
            let label = |n: &str| l.get(n).copied().unwrap_or_default();
            label("namespace") != namespace
                || label("name") != name
                || set.iter().any(|(stage, gate, series, _)| {
                    label("stage") == *stage && label("gate") == *gate && label("series") == *series
                })
        });
        for (stage, gate, series, value) in set {
            self.gate_value
                .with_label_values(&[namespace, name, stage, gate, series])
                .set(value);
        }
    }

    /// Records how an analysis query ended: `None` when it got a result.
    pub fn prometheus_queried(&self, error: Option<QueryError>) {
        if let Some(e) = error {
            self.prometheus_query_errors
                .with_label_values(&[e.as_str()])
                .inc();
        }
        let answered = error.is_none_or(QueryError::answered);
        self.prometheus_reachable
            .with_label_values::<&str>(&[])
            .set(i64::from(answered));
    }

    /// Removes the series of `kind`'s objects for which `live(namespace, name)` is false.
    pub fn sweep(&self, kind: Kind, live: impl Fn(&str, &str) -> bool) {
        let live = &live;
        let of = |object: &'static str| {
            move |l: &HashMap<&str, &str>| {
                let label = |n: &str| l.get(n).copied().unwrap_or_default();
                live(label("namespace"), label(object))
            }
        };
        retain(&self.awaiting_approval_since, |l| {
            l.get("kind") != Some(&kind.as_str()) || of("name")(l)
        });
        match kind {
            Kind::ModelDeployment => {
                self.transitions.retain(live);
                self.phase.retain(live);
                retain(&self.analysis_value, of("deployment"));
            }
            Kind::ModelPipeline => {
                self.runs_started.retain(live);
                self.runs_finished.retain(live);
                retain(&self.gate_value, of("name"));
            }
        }
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

    /// The series of the family `name` in the registry: labels and value.
    fn series(m: &Metrics, name: &str) -> Vec<(HashMap<String, String>, f64)> {
        let mut out = Vec::new();
        for f in m.registry.gather().iter().filter(|f| f.name() == name) {
            let counter = f.get_field_type() == prometheus::proto::MetricType::COUNTER;
            for s in f.get_metric() {
                let labels = s
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect();
                let value = if counter {
                    s.get_counter().get_value()
                } else {
                    s.get_gauge().get_value()
                };
                out.push((labels, value));
            }
        }
        out
    }

    /// The values of the series of `name` whose labels include `want`.
    fn values(m: &Metrics, name: &str, want: &[(&str, &str)]) -> Vec<f64> {
        series(m, name)
            .into_iter()
            .filter(|(l, _)| {
                want.iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
            .collect()
    }

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap()
    }

    const FRAUD: [(&str, &str); 2] = [("namespace", "models"), ("name", "fraud")];

    #[test]
    fn deployment_series_name_their_object_and_go_with_it() {
        let m = Metrics::new();
        for name in ["fraud", "churn"] {
            m.transitions.inc("models", name, "rolled_back");
            m.deployment_phase("models", name, DeploymentPhase::Baking);
            m.analysis_value
                .with_label_values(&["models", name, "error-rate", "judged"])
                .set(0.1);
            m.awaiting_approval(Kind::ModelDeployment, "models", name, true, None, at(100));
        }
        let rolled_back = [FRAUD[0], FRAUD[1], ("decision", "rolled_back")];
        assert_eq!(
            values(&m, "modelship_deployment_transitions_total", &rolled_back),
            [1.0]
        );
        // The exposition the e2e tests read: labels sorted by name.
        assert!(m.render().contains(
            r#"modelship_deployment_transitions_total{decision="rolled_back",name="fraud",namespace="models"} 1"#
        ));
        // One series, labelled with the current phase.
        let baking = [FRAUD[0], FRAUD[1], ("phase", "Baking")];
        assert_eq!(values(&m, "modelship_deployment_phase", &FRAUD), [1.0]);
        assert_eq!(values(&m, "modelship_deployment_phase", &baking), [1.0]);
        m.deployment_phase("models", "fraud", DeploymentPhase::Stable);
        assert!(values(&m, "modelship_deployment_phase", &baking).is_empty());
        let stable = [FRAUD[0], FRAUD[1], ("phase", "Stable")];
        assert_eq!(values(&m, "modelship_deployment_phase", &stable), [1.0]);

        m.sweep(Kind::ModelDeployment, |ns, name| {
            ns == "models" && name == "churn"
        });
        for family in [
            "modelship_deployment_transitions_total",
            "modelship_deployment_phase",
            "modelship_awaiting_approval_since_seconds",
        ] {
            assert!(values(&m, family, &FRAUD).is_empty(), "{family}");
            let churn = [("namespace", "models"), ("name", "churn")];
            assert!(!values(&m, family, &churn).is_empty(), "{family}");
        }
        let analysis = values(&m, "modelship_analysis_value", &[]);
        assert_eq!(analysis.len(), 1, "only churn's measurement is left");
    }

    #[test]
    fn series_of_model_deployments_that_left_the_cache_are_swept() {
        use kube::runtime::watcher;
        let m = Metrics::new();
        let live = crate::deployment::testing::sample();
        let (ns, name) = (
            live.metadata.namespace.clone().unwrap(),
            live.metadata.name.clone().unwrap(),
        );
        for n in [name.as_str(), "gone"] {
            m.deployment_phase(&ns, n, DeploymentPhase::Stable);
        }
        let (store, mut writer) = kube::runtime::reflector::store();
        writer.apply_watcher_event(&watcher::Event::Apply(crate::guarded::Guarded::new(&live)));
        m.sweep(Kind::ModelDeployment, |ns, name| {
            crate::scope::in_store(&store, &format!("{ns}/{name}"))
        });
        let left = series(&m, "modelship_deployment_phase");
        assert_eq!(left.len(), 1);
        assert!(left.iter().all(|(l, _)| l["name"] == name));
    }

    #[test]
    fn pipeline_series_name_their_object_and_go_with_it() {
        let m = Metrics::new();
        m.runs_started.inc("models", "fraud", "source");
        m.runs_finished.inc("models", "fraud", "failed");
        m.awaiting_approval(
            Kind::ModelPipeline,
            "models",
            "fraud",
            true,
            Some(at(50)),
            at(100),
        );
        // A deployment of the same name is another object.
        m.awaiting_approval(
            Kind::ModelDeployment,
            "models",
            "fraud",
            true,
            None,
            at(100),
        );
        m.gate_values(
            "models",
            "fraud",
            &[
                ("Evaluate", "f1", Some(0.91), Some(0.9)),
                ("Evaluate", "auc", Some(0.8), None),
            ],
        );
        let f1 = [FRAUD[0], FRAUD[1], ("gate", "f1")];
        assert_eq!(values(&m, "modelship_pipeline_gate_value", &f1).len(), 2);
        let auc_baseline = [FRAUD[0], FRAUD[1], ("gate", "auc"), ("series", "baseline")];
        assert!(values(&m, "modelship_pipeline_gate_value", &auc_baseline).is_empty());
        // A newer run's gates replace the older run's.
        m.gate_values(
            "models",
            "fraud",
            &[("Integration", "p99", Some(12.0), None)],
        );
        assert!(values(&m, "modelship_pipeline_gate_value", &f1).is_empty());
        assert_eq!(values(&m, "modelship_pipeline_gate_value", &FRAUD), [12.0]);
        for (family, want) in [
            (
                "modelship_pipeline_runs_started_total",
                ("trigger", "source"),
            ),
            (
                "modelship_pipeline_runs_finished_total",
                ("result", "failed"),
            ),
        ] {
            assert_eq!(values(&m, family, &[FRAUD[0], FRAUD[1], want]), [1.0]);
        }

        m.sweep(Kind::ModelPipeline, |_, _| false);
        for family in [
            "modelship_pipeline_runs_started_total",
            "modelship_pipeline_runs_finished_total",
            "modelship_pipeline_gate_value",
        ] {
            assert!(series(&m, family).is_empty(), "{family}");
        }
        let waiting = series(&m, "modelship_awaiting_approval_since_seconds");
        assert_eq!(
            waiting.len(),
            1,
            "the deployment's series is not the pipeline's"
        );
        assert_eq!(waiting[0].0["kind"], "ModelDeployment");
    }

    #[test]
    fn counters_of_a_seen_object_start_at_zero() {
        let m = Metrics::new();
        m.deployment_seen("models", "fraud");
        m.pipeline_seen("models", "fraud");
        let rolled_back = [FRAUD[0], FRAUD[1], ("decision", "rolled_back")];
        let transitions = "modelship_deployment_transitions_total";
        assert_eq!(values(&m, transitions, &rolled_back), [0.0]);
        assert_eq!(values(&m, transitions, &FRAUD).len(), DECISIONS.len());
        let failed = [FRAUD[0], FRAUD[1], ("result", "failed")];
        assert_eq!(
            values(&m, "modelship_pipeline_runs_finished_total", &failed),
            [0.0]
        );
        let started = values(&m, "modelship_pipeline_runs_started_total", &FRAUD);
        assert_eq!(started, [0.0; 4]);
        // Seen again, nothing is reset.
        m.transitions.inc("models", "fraud", "rolled_back");
        m.deployment_seen("models", "fraud");
        assert_eq!(values(&m, transitions, &rolled_back), [1.0]);
    }

    #[test]
    fn waiting_for_approval_keeps_its_start_until_it_ends() {
        let m = Metrics::new();
        let name = "modelship_awaiting_approval_since_seconds";
        let waits = |waiting, since: Option<i64>, now| {
            let since = since.map(at);
            m.awaiting_approval(
                Kind::ModelDeployment,
                "models",
                "fraud",
                waiting,
                since,
                at(now),
            )
        };
        assert!(series(&m, name).is_empty(), "absent while nothing waits");
        waits(true, None, 100);
        waits(true, None, 160);
        assert_eq!(
            values(&m, name, &FRAUD),
            [100.0],
            "the first time it was seen"
        );
        waits(false, None, 200);
        assert!(series(&m, name).is_empty());
        waits(true, None, 300);
        assert_eq!(values(&m, name, &FRAUD), [300.0]);
        // A time the status records wins.
        waits(true, Some(250), 400);
        assert_eq!(values(&m, name, &FRAUD), [250.0]);
    }

    #[test]
    fn query_errors_are_counted_by_reason_and_say_whether_prometheus_answered() {
        let m = Metrics::new();
        assert!(series(&m, "modelship_prometheus_reachable").is_empty());
        m.prometheus_queried(Some(QueryError::Unreachable));
        m.prometheus_queried(Some(QueryError::Unreachable));
        assert_eq!(values(&m, "modelship_prometheus_reachable", &[]), [0.0]);
        m.prometheus_queried(Some(QueryError::Rejected));
        assert_eq!(values(&m, "modelship_prometheus_reachable", &[]), [1.0]);
        m.prometheus_queried(Some(QueryError::Timeout));
        assert_eq!(values(&m, "modelship_prometheus_reachable", &[]), [0.0]);
        m.prometheus_queried(None);
        assert_eq!(values(&m, "modelship_prometheus_reachable", &[]), [1.0]);
        let errors = "modelship_prometheus_query_errors_total";
        assert_eq!(values(&m, errors, &[("reason", "unreachable")]), [2.0]);
        assert_eq!(values(&m, errors, &[("reason", "rejected")]), [1.0]);
        assert_eq!(series(&m, errors).len(), 3);
    }

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
