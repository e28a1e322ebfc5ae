//! Which namespaces the operator watches.
use futures::{Stream, StreamExt};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// A namespaced kind the operator watches into a cache.
pub trait Watched:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// All namespaces, or one.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub namespace: Option<String>,
}

impl Scope {
    /// An API over the watched namespaces.
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }

    /// Watches the kind in the watched namespaces through `config`, with kube's default
    /// backoff, into a cache: the cache, and the stream of touched objects a controller
    /// owns or watches through.
    pub fn reflect<K>(
        &self,
        client: &Client,
        config: watcher::Config,
    ) -> (
        Store<K>,
        impl Stream<Item = Result<K, watcher::Error>> + Send + use<K>,
    )
    where
        K: Watched,
    {
        let (store, writer) = reflector::store();
        let events = watcher(self.api::<K>(client), config)
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        (store, events)
    }

    /// Like [`Scope::reflect`], but only the objects' metadata: for a kind of which the
    /// operator reads few objects among many (ConfigMaps), so the cache does not hold every
    /// object's contents.
    pub fn reflect_metadata<K>(
        &self,
        client: &Client,
        config: watcher::Config,
    ) -> (
        Store<PartialObjectMeta<K>>,
        impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + use<K>,
    )
    where
        K: Watched,
    {
        let (store, writer) = reflector::store();
        // An Api of PartialObjectMeta asks the API server for metadata only.
        let events = watcher(self.api::<PartialObjectMeta<K>>(client), config)
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        (store, events)
    }

    /// Watches a controller's own kind into a cache, like [`Scope::reflect`], and calls
    /// `on_delete` with each object the watch reports deleted: without finalizers a deleted
    /// object is never reconciled again, so this is where what is kept about it goes.
    pub fn primary<K, F>(
        &self,
        client: &Client,
        config: watcher::Config,
        on_delete: F,
    ) -> (
        Store<K>,
        impl Stream<Item = Result<K, watcher::Error>> + Send + use<K, F>,
    )
    where
        F: Fn(&K) + Send + 'static,
        K: Watched,
    {
        let (store, writer) = reflector::store();
        let events = watcher(self.api::<K>(client), config)
            .default_backoff()
            .reflect(writer)
            .inspect(move |event| {
                if let Ok(watcher::Event::Delete(obj)) = event {
                    on_delete(obj);
                }
            })
            .applied_objects();
        (store, events)
    }
}

/// Whether the object `key` (namespace/name) is in `store`: what the sweeps of per-object
/// state keep.
pub fn in_store<K>(store: &Store<K>, key: &str) -> bool
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
    store
        .get(&reflector::ObjectRef::new(name).within(namespace))
        .is_some()
}

/// Every minute, drops the per-object state of objects that left `store` (and runs `also`
/// on it), and sets `entries` to what is left. Runs until the task is dropped.
pub async fn sweep<K: Watched>(
    state: crate::context::ObjectState,
    store: Store<K>,
    entries: prometheus::IntGauge,
    also: impl Fn(&Store<K>),
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        also(&store);
        state.retain(|key| in_store(&store, key));
        entries.set(i64::try_from(state.len()).unwrap_or(i64::MAX));
    }
}
