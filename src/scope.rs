//! Which namespaces the operator watches.
use kube::runtime::reflector::{self, Store};
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
