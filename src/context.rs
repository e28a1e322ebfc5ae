//! What every reconciliation shares: the client, events, metrics, backoff and settings.
use crate::backoff::Backoff;
use crate::metrics::Metrics;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Settings that shape what the operator does.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image of the built-in router.
    pub router_image: String,
    /// Prometheus used when a ModelDeployment names none.
    pub prometheus_url: String,
    /// Resync period of objects that wait for nothing.
    pub resync: Duration,
}

/// State shared by the reconciliations of one controller.
pub struct Shared {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub backoff: Backoff,
    pub settings: Settings,
    /// The resourceVersion of each object's last status write, to notice a cache that has
    /// not caught up with our own write yet (see `cache_is_stale`).
    written: Mutex<HashMap<String, u64>>,
}

impl Shared {
    pub fn new(client: Client, reporter: Reporter, metrics: Metrics, settings: Settings) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            settings,
            written: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes an event about `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(%error, reason, "could not publish an event");
        }
    }

    /// Remembers the resourceVersion our status write produced.
    pub fn wrote(&self, key: &str, resource_version: Option<&str>) {
        if let Some(rv) = resource_version.and_then(|v| v.parse::<u64>().ok()) {
            self.written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.to_string(), rv);
        }
    }

    /// Whether the cached object is older than our own last write to it: then a decision taken
    /// on it could undo what we already decided, so the reconciliation waits for the cache.
    pub fn cache_is_stale(&self, key: &str, resource_version: Option<&str>) -> bool {
        let Some(seen) = resource_version.and_then(|v| v.parse::<u64>().ok()) else {
            return false;
        };
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|w| seen < *w)
    }

    /// How a failed reconciliation is retried: never for what only a spec change can fix, at
    /// once for a conflict, with exponential backoff per object otherwise.
    pub fn retry(
        &self,
        controller: &'static str,
        key: &str,
        error: &crate::Error,
    ) -> kube::runtime::controller::Action {
        use kube::runtime::controller::Action;
        self.metrics.reconcile_failed(controller, error);
        if error.is_permanent() {
            return Action::await_change();
        }
        if error.is_conflict() {
            return Action::requeue(Duration::from_millis(100));
        }
        let delay = self.backoff.next_delay(key);
        tracing::warn!(%error, controller, object = key, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    }

    pub fn forget(&self, key: &str) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        self.backoff.reset(key);
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}
