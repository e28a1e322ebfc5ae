//! Which namespaces the operator watches.
use kube::{Api, Client, Resource};

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
