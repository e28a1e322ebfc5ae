//! What every reconciliation shares: the client, events, metrics, backoff and settings.
use crate::backoff::Backoff;
use crate::events::EventLog;
use crate::metrics::Metrics;
use kube::runtime::events::Reporter;
use kube::{Client, Resource};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Settings that shape what the operator does.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image of the built-in router.
    pub router_image: String,
    /// Prometheus used when a ModelDeployment names none.
    pub prometheus_url: String,
    /// The Prometheus URLs a ModelDeployment may name; `prometheus_url` is always allowed.
    pub allowed_prometheus_urls: crate::analysis::prometheus::AllowedUrls,
    /// Resync period of objects that wait for nothing.
    pub resync: Duration,
    /// Reconciliations each controller runs at once.
    pub concurrency: u16,
    /// What a route may reach outside its ModelDeployment's namespace.
    pub reach: crate::deployment::reach::Reach,
    /// The ServiceAccount of an object's namespace whose identity writes its children when
    /// the object names none (`--default-service-account`); `None`: the operator's own.
    pub default_service_account: Option<String>,
}

/// State shared by the reconciliations of one controller.
pub struct Shared {
    pub client: Client,
    pub events: EventLog,
    pub metrics: Metrics,
    pub backoff: Arc<Backoff>,
    pub settings: Settings,
    /// The clients that write children as a tenant's ServiceAccount (see `tenancy`).
    pub impersonation: Arc<crate::tenancy::Impersonation>,
    /// Our own status writes that the cache has not shown yet (see `cache_is_stale`).
    written: Arc<OwnWrites>,
    /// Every cache the controller reads has its first full list.
    synced: Arc<std::sync::atomic::AtomicBool>,
}

/// The per-object state of one controller (backoff counts, writes in flight), shared with
/// the watch of its kind so that a deleted object's entries go with it.
#[derive(Clone)]
pub struct ObjectState {
    written: Arc<OwnWrites>,
    backoff: Arc<Backoff>,
}

impl ObjectState {
    /// Drops what is kept about `key` (namespace/name), on its delete event.
    pub fn forget(&self, key: &str) {
        self.written.forget(key);
        self.backoff.reset(key);
    }

    /// Keeps only the objects for which `live` is true: the sweep that catches deletions the
    /// watch did not report one by one (those that happened while it was re-listing).
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.written.retain(&live);
        self.backoff.retain(&live);
    }

    /// Entries held, over both maps.
    pub fn len(&self) -> usize {
        self.written.pending() + self.backoff.tracked()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per object, the resourceVersions our own status writes replaced and the one they made.
/// resourceVersions are opaque (API conventions): they are only ever compared for equality.
/// An object is forgotten once the cache shows our latest write, so the map holds only the
/// objects with a write in flight.
#[derive(Default)]
pub struct OwnWrites(Mutex<HashMap<String, Superseded>>);

impl OwnWrites {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Superseded>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Our status write replaced `read` with `written`.
    pub fn wrote(&self, key: &str, read: Option<&str>, written: Option<&str>) {
        let (Some(read), Some(written)) = (read, written) else {
            return;
        };
        if read == written {
            return;
        }
        let mut map = self.map();
        let entry = map.entry(key.to_string()).or_default();
        if entry.replaced.len() == SUPERSEDED_KEPT {
            entry.replaced.remove(0);
        }
        entry.replaced.push(read.to_string());
        entry.latest = written.to_string();
    }

    /// Whether `seen` is a version one of our writes replaced.
    pub fn is_stale(&self, key: &str, seen: Option<&str>) -> bool {
        let Some(seen) = seen else {
            return false;
        };
        let mut map = self.map();
        let Some(entry) = map.get(key) else {
            return false;
        };
        if entry.replaced.iter().any(|r| r == seen) {
            return true;
        }
        if entry.latest == seen {
            map.remove(key);
        }
        false
    }

    /// Keeps only the objects for which `live` is true.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.map().retain(|key, _| live(key));
    }

    pub fn forget(&self, key: &str) {
        self.map().remove(key);
    }

    /// Objects with a write the cache has not shown yet.
    pub fn pending(&self) -> usize {
        self.map().len()
    }
}

/// The resourceVersions our status writes to one object replaced, and the one they made.
#[derive(Default)]
struct Superseded {
    replaced: Vec<String>,
    latest: String,
}

/// Writes remembered per object before the cache catches up (a reconcile writes a few at most).
const SUPERSEDED_KEPT: usize = 8;

impl Shared {
    pub fn new(client: Client, reporter: Reporter, metrics: Metrics, settings: Settings) -> Self {
        Self {
            events: EventLog::new(client.clone(), reporter),
            client,
            metrics,
            backoff: Arc::new(Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(300),
            )),
            settings,
            impersonation: Arc::new(crate::tenancy::Impersonation::new(None)),
            written: Arc::default(),
            synced: Arc::default(),
        }
    }

    /// Writes children as ServiceAccounts through clients that `connect` builds.
    pub fn impersonating(mut self, connect: crate::tenancy::Connect) -> Self {
        self.impersonation = Arc::new(crate::tenancy::Impersonation::new(Some(connect)));
        self
    }

    /// The identity `owner`'s children are written with: the ServiceAccount it names (or
    /// `--default-service-account`) of its namespace, impersonated; else the operator's own.
    pub fn writer<O: crate::tenancy::Tenant>(
        &self,
        owner: &O,
    ) -> crate::Result<crate::tenancy::Writer> {
        use crate::tenancy::{Writer, account_of};
        match account_of(owner, self.settings.default_service_account.as_deref()) {
            None => Ok(Writer::own(self.client.clone())),
            Some(account) => Ok(Writer::impersonating(
                self.impersonation.client(&account)?,
                account,
            )),
        }
    }

    /// Whether every cache the controller reads has its first full list: before that an
    /// absent child may only be unlisted yet, and a decision on it would undo what is there.
    pub fn caches_synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A handle that says the caches are synced, for the task that waits for them.
    pub fn synced_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.synced.clone()
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
        let note = truncate(note, 1000);
        let regarding = obj.object_ref(&());
        if let Err(error) = self
            .events
            .publish(&regarding, warning, reason, action, note)
            .await
        {
            tracing::warn!(%error, reason, "could not publish an event");
        }
    }

    /// Applies a child object unless the live one already matches it (the drift rule of
    /// `apply`), counting the writes per kind. Returns whether a write was sent.
    pub async fn apply_child<K>(
        &self,
        api: &kube::Api<K>,
        desired: &K,
        live: Option<&serde_json::Value>,
    ) -> Result<bool, kube::Error>
    where
        K: Resource<DynamicType = ()>
            + serde::Serialize
            + serde::de::DeserializeOwned
            + Clone
            + std::fmt::Debug,
    {
        let written = crate::apply::apply_if_changed(api, desired, live).await?;
        if written {
            self.metrics
                .child_applies
                .with_label_values(&[&K::kind(&())])
                .inc();
        }
        Ok(written)
    }

    /// Remembers that our status write replaced `read` with `written`.
    pub fn wrote(&self, key: &str, read: Option<&str>, written: Option<&str>) {
        self.written.wrote(key, read, written);
    }

    /// Whether the cached object is one our own status write already replaced: then a
    /// decision taken on it could undo what we already decided, so the reconciliation waits
    /// for the cache.
    pub fn cache_is_stale(&self, key: &str, resource_version: Option<&str>) -> bool {
        self.written.is_stale(key, resource_version)
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
        self.object_state().forget(key);
    }

    /// A handle on the per-object state, for the watch's delete events and the sweep.
    pub fn object_state(&self) -> ObjectState {
        ObjectState {
            written: self.written.clone(),
            backoff: self.backoff.clone(),
        }
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

#[cfg(test)]
mod tests {
    use super::{ObjectState, OwnWrites};
    use crate::backoff::Backoff;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn create_delete_churn_leaves_no_per_object_state() {
        let state = ObjectState {
            written: Arc::default(),
            backoff: Arc::new(Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(60),
            )),
        };
        for round in 0..5 {
            // 100 objects that failed and had a status write in flight...
            for i in 0..100 {
                let key = format!("ns/churn-{round}-{i}");
                state.written.wrote(&key, Some("1"), Some("2"));
                state.backoff.next_delay(&key);
            }
            assert_eq!(state.len(), 200);
            // ...then deleted: half reported one by one by the watch, half found by the sweep.
            for i in 0..50 {
                state.forget(&format!("ns/churn-{round}-{i}"));
            }
            state.retain(|_| false);
            assert!(
                state.is_empty(),
                "round {round}: {} entries left",
                state.len()
            );
        }
        // The sweep keeps what still exists.
        state.written.wrote("ns/kept", Some("1"), Some("2"));
        state.backoff.next_delay("ns/gone");
        state.retain(|key| key == "ns/kept");
        assert_eq!(state.len(), 1);
    }

    #[test]
    fn own_writes_compare_resource_versions_for_equality_only() {
        let w = OwnWrites::default();
        // Opaque versions: no order between them is assumed.
        w.wrote("ns/a", Some("zz-9"), Some("aa-1"));
        assert!(w.is_stale("ns/a", Some("zz-9")), "the version we replaced");
        assert!(!w.is_stale("ns/b", Some("zz-9")), "another object");
        assert!(!w.is_stale("ns/a", None));
        // Two writes in one reconciliation: both replaced versions are stale.
        w.wrote("ns/a", Some("aa-1"), Some("m-5"));
        assert!(w.is_stale("ns/a", Some("zz-9")));
        assert!(w.is_stale("ns/a", Some("aa-1")));
        // Someone else's later write: fresh, and still waiting for ours to show.
        assert!(!w.is_stale("ns/a", Some("q-7")));
        assert_eq!(w.pending(), 1);
        // The cache shows our latest write: fresh, and forgotten.
        assert!(!w.is_stale("ns/a", Some("m-5")));
        assert_eq!(w.pending(), 0);
        assert!(!w.is_stale("ns/a", Some("zz-9")));
        // A write that changed nothing has nothing to wait for.
        w.wrote("ns/a", Some("m-5"), Some("m-5"));
        assert_eq!(w.pending(), 0);
    }
}
