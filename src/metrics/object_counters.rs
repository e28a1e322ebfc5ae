//! Series per object (`namespace`, `name`): counters per value of one more label, every one
//! created at 0 when the object is first seen so that `increase()` sees its first count, and
//! an object's current state (its phase) as one gauge at 1.
//!
//! The prometheus crate keeps a whole metric per series (its own copy of the description
//! with the help text, and the label pairs as protobuf messages): about 700 bytes. Counted
//! for every decision of every ModelDeployment and every trigger and result of every
//! pipeline, that was about 26 MiB at 5,000 ModelDeployments. Here an object's counters are
//! one array, its state one reference, and the series are built only when Prometheus
//! scrapes.
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

type Counts = BTreeMap<(String, String), Box<[u64]>>;

/// One counter family labelled `namespace`, `name` and `label`, whose values are `values`.
#[derive(Clone)]
pub struct ObjectCounters {
    desc: Desc,
    label: &'static str,
    values: Arc<[&'static str]>,
    counts: Arc<Mutex<Counts>>,
}

impl ObjectCounters {
    pub fn new(
        name: &str,
        help: &str,
        label: &'static str,
        values: impl IntoIterator<Item = &'static str>,
    ) -> Self {
        let labels = ["namespace", "name", label].map(String::from).to_vec();
        Self {
            desc: Desc::new(name.into(), help.into(), labels, HashMap::new())
                .expect("a valid metric"),
            label,
            values: values.into_iter().collect(),
            counts: Arc::default(),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the object's counters at 0 unless they exist.
    pub fn seen(&self, namespace: &str, name: &str) {
        self.counts()
            .entry((namespace.into(), name.into()))
            .or_insert_with(|| vec![0; self.values.len()].into());
    }

    /// Adds one to the object's counter for `value` (one of `values`; another is ignored).
    pub fn inc(&self, namespace: &str, name: &str, value: &str) {
        let Some(i) = self.values.iter().position(|v| *v == value) else {
            debug_assert!(false, "{value} is not a value of {}", self.label);
            return;
        };
        self.counts()
            .entry((namespace.into(), name.into()))
            .or_insert_with(|| vec![0; self.values.len()].into())[i] += 1;
    }

    /// Drops the counters of the objects for which `live(namespace, name)` is false.
    pub fn retain(&self, live: impl Fn(&str, &str) -> bool) {
        self.counts().retain(|(ns, name), _| live(ns, name));
    }
}

impl Collector for ObjectCounters {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let counts = self.counts();
        let mut metrics = Vec::with_capacity(counts.len() * self.values.len());
        for ((namespace, name), values) in counts.iter() {
            for (value, count) in self.values.iter().zip(values.iter()) {
                let mut counter = Counter::default();
                counter.set_value(*count as f64);
                let mut metric = Metric::from_label(labels(self.label, value, name, namespace));
                metric.set_counter(counter);
                metrics.push(metric);
            }
        }
        vec![family(&self.desc, MetricType::COUNTER, metrics)]
    }
}

/// One gauge family labelled `namespace`, `name` and `label`: one series per object, 1,
/// labelled with the object's current value of `label` (its phase).
#[derive(Clone)]
pub struct ObjectStates {
    desc: Desc,
    label: &'static str,
    states: Arc<Mutex<BTreeMap<(String, String), &'static str>>>,
}

impl ObjectStates {
    pub fn new(name: &str, help: &str, label: &'static str) -> Self {
        let labels = ["namespace", "name", label].map(String::from).to_vec();
        Self {
            desc: Desc::new(name.into(), help.into(), labels, HashMap::new())
                .expect("a valid metric"),
            label,
            states: Arc::default(),
        }
    }

    fn states(&self) -> MutexGuard<'_, BTreeMap<(String, String), &'static str>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the object's current value.
    pub fn set(&self, namespace: &str, name: &str, value: &'static str) {
        self.states().insert((namespace.into(), name.into()), value);
    }

    /// Drops the series of the objects for which `live(namespace, name)` is false.
    pub fn retain(&self, live: impl Fn(&str, &str) -> bool) {
        self.states().retain(|(ns, name), _| live(ns, name));
    }
}

impl Collector for ObjectStates {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let states = self.states();
        let metrics = states
            .iter()
            .map(|((namespace, name), value)| {
                let mut gauge = Gauge::default();
                gauge.set_value(1.0);
                let mut metric = Metric::from_label(labels(self.label, value, name, namespace));
                metric.set_gauge(gauge);
                metric
            })
            .collect();
        vec![family(&self.desc, MetricType::GAUGE, metrics)]
    }
}

/// The label pairs of one series, in the order of their names, as the crate's own vectors
/// give them.
fn labels(label: &str, value: &str, name: &str, namespace: &str) -> Vec<LabelPair> {
    let pair = |name: &str, value: &str| {
        let mut p = LabelPair::default();
        p.set_name(name.into());
        p.set_value(value.into());
        p
    };
    let mut labels = vec![
        pair(label, value),
        pair("name", name),
        pair("namespace", namespace),
    ];
    labels.sort_by(|a, b| a.name().cmp(b.name()));
    labels
}

fn family(desc: &Desc, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESULTS: [&str; 2] = ["succeeded", "failed"];

    fn text(c: &ObjectCounters) -> String {
        let registry = prometheus::Registry::new();
        registry.register(Box::new(c.clone())).unwrap();
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_object_has_one_state_series_which_changes_and_goes_with_it() {
        let s = ObjectStates::new("phase", "Phase.", "phase");
        s.set("ml", "fraud", "Shadow");
        s.set("ml", "fraud", "Stable");
        s.set("ml", "churn", "Baking");
        let registry = prometheus::Registry::new();
        registry.register(Box::new(s.clone())).unwrap();
        let mut out = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        prometheus::Encoder::encode(&encoder, &registry.gather(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# HELP phase Phase.\n# TYPE phase gauge\n\
             phase{name=\"churn\",namespace=\"ml\",phase=\"Baking\"} 1\n\
             phase{name=\"fraud\",namespace=\"ml\",phase=\"Stable\"} 1\n"
        );
        s.retain(|_, name| name == "fraud");
        assert_eq!(s.collect()[0].get_metric().len(), 1);
    }

    #[test]
    fn an_object_seen_has_every_counter_at_zero_and_counts_go_up() {
        let c = ObjectCounters::new("runs_total", "Runs.", "result", RESULTS);
        assert_eq!(text(&c), "", "no object, no series");
        c.seen("ml", "fraud");
        c.inc("ml", "fraud", "failed");
        c.inc("ml", "fraud", "failed");
        c.seen("ml", "fraud");
        c.inc("ml", "churn", "succeeded");
        assert_eq!(
            text(&c),
            "# HELP runs_total Runs.\n# TYPE runs_total counter\n\
             runs_total{name=\"churn\",namespace=\"ml\",result=\"failed\"} 0\n\
             runs_total{name=\"churn\",namespace=\"ml\",result=\"succeeded\"} 1\n\
             runs_total{name=\"fraud\",namespace=\"ml\",result=\"failed\"} 2\n\
             runs_total{name=\"fraud\",namespace=\"ml\",result=\"succeeded\"} 0\n"
        );
        c.retain(|_, name| name == "churn");
        assert!(!text(&c).contains("fraud"));
        assert!(text(&c).contains("churn"));
    }
}
