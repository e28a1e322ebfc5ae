//! Server-side apply under one field manager, skipped when nothing would change.
use kube::api::{Api, DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt::Debug;

/// The one field manager the operator writes with.
pub const FIELD_MANAGER: &str = "modelship";

/// Parameters of every apply: the operator owns the fields it sets, and takes them back from
/// anyone who edited them by hand.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Whether `live` already holds every field that `desired` sets, with the same value.
///
/// Fields the API server or other controllers add (defaults, status, annotations) do not count,
/// so an unchanged object needs no write. Lists must match element by element.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => is_subset(dv, lv),
            None => is_empty(dv),
        }),
        (Value::Object(d), Value::Null) => d.values().all(is_empty),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (Value::Array(d), Value::Null) => d.is_empty(),
        (Value::Null, _) => true,
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, l) => d == l,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Whether applying `desired` over `live` would change anything.
pub fn needs_apply<K: Serialize>(desired: &K, live: Option<&K>) -> bool {
    let Some(live) = live else { return true };
    match (serde_json::to_value(desired), serde_json::to_value(live)) {
        (Ok(d), Ok(l)) => !is_subset(&d, &l),
        _ => true,
    }
}

/// Applies `desired` unless `live` already matches it. Returns whether a write was sent.
pub async fn apply_if_changed<K>(
    api: &Api<K>,
    desired: &K,
    live: Option<&K>,
) -> Result<bool, kube::Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    if !needs_apply(desired, live) {
        return Ok(false);
    }
    api.patch(&desired.name_any(), &apply_params(), &Patch::Apply(desired))
        .await?;
    Ok(true)
}

/// Writes `status` by server-side apply, on condition that the object is still at
/// `resource_version`: a decision taken on a stale copy is refused with 409 and retried on
/// fresh data.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    resource_version: Option<&str>,
    status: &S,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name, "resourceVersion": resource_version},
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(&patch))
        .await
}

/// Deletes an object in the background; a missing object is not an error.
pub async fn delete_if_exists<K>(api: &Api<K>, name: &str) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_added_fields_are_not_a_change() {
        let desired = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "m", "image": "x"}]}}}});
        let live = json!({"spec": {"replicas": 2, "progressDeadlineSeconds": 600,
            "template": {"spec": {"containers": [{"name": "m", "image": "x", "imagePullPolicy": "Always"}]}}},
            "status": {"readyReplicas": 2}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn a_hand_edit_is_a_change() {
        let desired = json!({"spec": {"replicas": 2}});
        let live = json!({"spec": {"replicas": 5}});
        assert!(!is_subset(&desired, &live));
    }

    #[test]
    fn list_length_matters_and_empty_matches_absent() {
        assert!(!is_subset(&json!({"a": [1, 2]}), &json!({"a": [1]})));
        assert!(is_subset(&json!({"a": [], "b": {}}), &json!({})));
        assert!(!is_subset(&json!({"a": {"b": 1}}), &json!({})));
        assert!(is_subset(&json!({"n": 1}), &json!({"n": 1.0})));
    }
}
