//! Objects of modelship's kinds, cached compactly, and those that do not deserialize. The
//! watches keep each object as a [`Guarded`]: its metadata decoded and the rest as text
//! (`compact`), decoded when it is reconciled, and the error when it does not decode, in the
//! manner of kube's error boundary (`DeserializeGuard`). So one such object (a field the
//! schema lets through but whose type is wrong, an object stored by another version) breaks
//! neither the list nor the reconciliation of the others. It is reported where a user
//! looks: a `Ready=False` condition with reason `InvalidObject` (written once per error), a
//! Warning event, a log line and a metric.
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::compact::{Compact, Slim};
use crate::context::Shared;

/// An object as the watches cache it: compact, with the reason it does not deserialize if
/// it does not. A ModelDeployment decoded takes about 7 KiB and a ModelPipeline about
/// 21 KiB, three to five times their text.
pub struct Guarded<K> {
    compact: Compact<K>,
    invalid: Option<Arc<str>>,
}

impl<K> Clone for Guarded<K> {
    fn clone(&self) -> Self {
        Self {
            compact: self.compact.clone(),
            invalid: self.invalid.clone(),
        }
    }
}

impl<K> fmt::Debug for Guarded<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("compact", &self.compact)
            .field("invalid", &self.invalid)
            .finish()
    }
}

impl<K: Slim> Guarded<K> {
    /// `object` (a whole object as JSON) as the cache keeps it. Fails only when its
    /// metadata cannot be read.
    pub fn from_value(object: Value) -> Result<Self, serde_json::Error> {
        let (meta, rest) = Compact::<K>::split(object)?;
        let invalid = serde_json::from_value::<K>(rest.clone())
            .err()
            .map(|e| e.to_string().into());
        Ok(Self {
            compact: Compact::from_parts(meta, &rest),
            invalid,
        })
    }

    /// `object` as the cache keeps it (for tests and for caches filled by hand).
    pub fn new(object: &K) -> Self
    where
        K: Serialize,
    {
        Self::from_value(serde_json::to_value(object).expect("an object serializes"))
            .expect("an object the API types produced has metadata")
    }

    /// The object, decoded, or why it does not decode.
    pub fn decode(&self) -> Result<K, String> {
        match &self.invalid {
            Some(error) => Err(error.to_string()),
            None => self.compact.try_object().map_err(|e| e.to_string()),
        }
    }

    /// The object, if it decodes.
    pub fn valid(&self) -> Option<K> {
        self.decode().ok()
    }
}

impl<'de, K: Slim> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::from_value(Value::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Guarded<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        self.compact.meta()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.compact.meta_mut()
    }
}

/// The reason of the condition.
pub const REASON: &str = "InvalidObject";

/// The message of the condition and the event.
pub fn message(kind: &str, error: &str) -> String {
    format!(
        "this {kind} cannot be read: {error}; fix the field it names (the operator acts on it again once it changes)"
    )
}

/// Whether `status` already holds the condition [`report`] writes for `message`.
fn reported(status: Option<&Value>, message: &str) -> bool {
    status
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c["type"] == "Ready"
                    && c["status"] == "False"
                    && c["reason"] == REASON
                    && c["message"] == message
            })
        })
}

/// Reports an object that did not deserialize and waits for it to change. The condition is
/// written only when it is not there yet, so the write's own watch event costs nothing.
pub async fn report<K>(
    shared: &Shared,
    controller: &'static str,
    object: &Arc<Guarded<K>>,
    error: &str,
) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let kind = K::kind(&());
    let message = message(&kind, error);
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    shared
        .metrics
        .reconcile_failed(controller, &crate::Error::InvalidObject(error.to_string()));
    let api: Api<DynamicObject> = Api::namespaced_with(
        shared.client.clone(),
        &namespace,
        &ApiResource::erase::<K>(&()),
    );
    let current = match api.get_status(&name).await {
        Ok(current) => current,
        Err(error) => {
            tracing::warn!(%error, namespace, name, "could not read an object that does not deserialize");
            return Action::await_change();
        }
    };
    if reported(current.data.get("status"), &message) {
        return Action::await_change();
    }
    tracing::warn!(
        namespace,
        name,
        error,
        "{kind} does not deserialize; the others go on"
    );
    // The whole conditions list: the others were computed from fields that cannot be read.
    let patch = json!({"status": {"conditions": [{
        "type": "Ready",
        "status": "False",
        "reason": REASON,
        "message": message,
        "lastTransitionTime": Timestamp::now().to_string(),
        "observedGeneration": object.meta().generation,
    }]}});
    if let Err(error) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(%error, namespace, name, "could not report an object that does not deserialize");
    }
    shared
        .event(object.as_ref(), true, REASON, "Read", message)
        .await;
    Action::await_change()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ModelDeployment;

    fn broken() -> Guarded<ModelDeployment> {
        serde_json::from_value(json!({
            "apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "fraud", "namespace": "risk", "generation": 3},
            "spec": {
                "model": {"version": "v1", "artifact": "s3://m/v1"},
                "template": {"spec": {"containers": [{"name": "server"}]}},
            },
            // As another version of the operator might have written it.
            "status": {"phase": "Exploding"},
        }))
        .expect("the guard reads any object with metadata")
    }

    #[test]
    fn an_object_that_does_not_deserialize_keeps_its_metadata_and_error() {
        let g = broken();
        assert_eq!(g.name_any(), "fraud");
        assert_eq!(g.namespace().as_deref(), Some("risk"));
        let invalid = g.decode().unwrap_err();
        let msg = message("ModelDeployment", &invalid);
        assert!(
            msg.starts_with("this ModelDeployment cannot be read: ") && msg.contains("Exploding"),
            "{msg}"
        );
    }

    #[test]
    fn a_cached_object_decodes_to_itself_with_its_labels_annotations_and_status() {
        let mut md = crate::deployment::testing::sample();
        md.metadata.labels = Some([("team".to_string(), "risk".to_string())].into());
        md.metadata.annotations =
            Some([("modelship.io/approve".to_string(), "v2".to_string())].into());
        md.metadata.uid = Some("u1".into());
        md.metadata.resource_version = Some("7".into());
        md.status = Some(crate::api::ModelDeploymentStatus {
            observed_generation: Some(3),
            ..Default::default()
        });
        let g = Guarded::new(&md);
        let json = |md: &ModelDeployment| serde_json::to_value(md).unwrap();
        assert_eq!(json(&g.decode().unwrap()), json(&md));
        assert_eq!(g.name_any(), md.name_any());
        assert_eq!(g.meta().uid.as_deref(), Some("u1"));
        // What the cache reads without decoding stays decoded; the rest is text.
        assert!(g.meta().annotations.is_none());
    }

    #[test]
    fn the_condition_is_written_once_per_error() {
        let g = broken();
        let msg = message("ModelDeployment", &g.decode().unwrap_err());
        let written = json!({"conditions": [
            {"type": "Ready", "status": "False", "reason": REASON, "message": msg},
        ]});
        assert!(reported(Some(&written), &msg));
        assert!(!reported(Some(&written), "another error"));
        assert!(!reported(None, &msg));
        let other =
            json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Available"}]});
        assert!(!reported(Some(&other), &msg));
    }
}
