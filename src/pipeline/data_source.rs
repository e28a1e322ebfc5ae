//! The ConfigMaps that pipelines read their data version from (`spec.data.versionFrom`). The
//! operator watches only ConfigMaps' metadata, so its memory does not grow with the cluster's
//! ConfigMaps; the one ConfigMap a pipeline names is read when its `resourceVersion` changes,
//! and only its contents are kept.
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::PartialObjectMeta;
use kube::{Api, Client, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// namespace, name
type Key = (String, String);
/// Each ConfigMap read: the `resourceVersion` it was read at, and the object.
type Read = HashMap<Key, (String, Arc<ConfigMap>)>;

/// The contents of the ConfigMaps that pipelines read, by the `resourceVersion` they were
/// read at.
#[derive(Clone)]
pub struct DataSource {
    client: Client,
    read: Arc<Mutex<Read>>,
}

impl DataSource {
    pub fn new(client: Client) -> DataSource {
        DataSource {
            client,
            read: Arc::default(),
        }
    }

    /// The ConfigMap `namespace/name` whose metadata the watch holds (`seen`; `None` when it
    /// does not exist): the copy read before if the `resourceVersion` is the same, otherwise
    /// read now (one GET).
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
        seen: Option<&PartialObjectMeta<ConfigMap>>,
    ) -> Result<Option<Arc<ConfigMap>>, kube::Error> {
        let key = (namespace.to_string(), name.to_string());
        let Some(seen) = seen else {
            self.lock().remove(&key);
            return Ok(None);
        };
        let version = seen.resource_version();
        if let Some((read_at, cm)) = self.lock().get(&key)
            && version.as_deref() == Some(read_at.as_str())
        {
            return Ok(Some(cm.clone()));
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await? {
            Some(cm) => {
                let cm = Arc::new(cm);
                let read_at = cm.resource_version().unwrap_or_default();
                self.lock().insert(key, (read_at, cm.clone()));
                Ok(Some(cm))
            }
            None => {
                self.lock().remove(&key);
                Ok(None)
            }
        }
    }

    /// Keeps only the ConfigMaps for which `keep(namespace, name)` holds: the sweep drops
    /// those no pipeline reads any more.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.lock().retain(|(ns, name), _| keep(ns, name));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Read> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.read.lock().unwrap_or_else(|e| e.into_inner())
    }
}
