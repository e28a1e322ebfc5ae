//! Objects of modelship's kinds that do not deserialize. The watches read them through kube's
//! error boundary (`DeserializeGuard`), so one such object (a field the schema lets through
//! but whose type is wrong, an object stored by another version) breaks neither the list nor
//! the reconciliation of the others. It is reported where a user looks: a `Ready=False`
//! condition with reason `InvalidObject` (written once per error), a Warning event, a log
//! line and a metric.
use std::sync::Arc;

use jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::context::Shared;

/// An object as the watches read it: the object, or its metadata and why it did not
/// deserialize.
pub type Guarded<K> = DeserializeGuard<K>;

/// The condition reason.
pub const REASON: &str = "InvalidObject";

/// The objects of `store` that deserialized.
pub fn valid<K: Resource<DynamicType = ()> + Clone>(store: &Store<Guarded<K>>) -> Vec<K> {
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok().cloned())
        .collect()
}

/// The object of `store` named `name` in `namespace`, if it deserialized.
pub fn get<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<Guarded<K>>,
    name: &str,
    namespace: &str,
) -> Option<K> {
    store
        .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
        .and_then(|g| g.0.as_ref().ok().cloned())
}

/// The message of the condition and the event.
pub fn message(kind: &str, invalid: &InvalidObject) -> String {
    format!(
        "this {kind} cannot be read: {}; fix the field it names (the operator acts on it again once it changes)",
        invalid.error
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
    invalid: &InvalidObject,
) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let kind = K::kind(&());
    let message = message(&kind, invalid);
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    shared.metrics.reconcile_failed(
        controller,
        &crate::Error::InvalidObject(invalid.error.clone()),
    );
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
    tracing::warn!(namespace, name, error = %invalid.error, "{kind} does not deserialize; the others go on");
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
        let invalid = g.0.as_ref().unwrap_err();
        let msg = message("ModelDeployment", invalid);
        assert!(
            msg.starts_with("this ModelDeployment cannot be read: ") && msg.contains("Exploding"),
            "{msg}"
        );
    }

    #[test]
    fn the_condition_is_written_once_per_error() {
        let g = broken();
        let msg = message("ModelDeployment", g.0.as_ref().unwrap_err());
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
