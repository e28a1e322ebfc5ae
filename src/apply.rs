//! Server-side apply under one field manager, skipped when nothing would change.
//!
//! The drift rule, one for every child kind: each applied object carries a hash of itself in
//! an annotation. An apply is sent when the object is missing, when the hash differs (the
//! desired object changed, so a field the operator no longer sets is removed by server-side
//! apply), or when a field the operator sets holds another value on the live object (a hand
//! edit). Values compare by meaning where the API server rewrites them: `cpu: 0.5` is
//! stored as `500m` and is not a change.
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
        (Value::String(d), Value::String(l)) => d == l || same_quantity(d, l),
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

/// Whether two strings are the same Kubernetes quantity written differently (`0.5` and
/// `500m`, `1024Mi` and `1Gi`). Strings that are not both quantities never are.
fn same_quantity(a: &str, b: &str) -> bool {
    match (quantity(a), quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()) * 4.0,
        _ => false,
    }
}

/// The value of a Kubernetes quantity (`<signed number><suffix>`, the suffix binary `Ki`..`Ei`,
/// decimal `n`..`E`, or an exponent `e3`), or `None` when `s` is not one.
fn quantity(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty()
        || !number
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-'))
    {
        return None;
    }
    let n: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * scale)
}

/// Annotation holding the hash of the object last applied.
pub const SPEC_HASH: &str = "modelship.io/spec-hash";

/// `desired` as JSON with the hash of its content in the [`SPEC_HASH`] annotation (other
/// annotations kept), so a later object without some field is seen as a change even though
/// what it still sets is all on the live one.
pub fn with_hash(mut desired: Value) -> Value {
    use sha2::{Digest, Sha256};
    if let Some(annotations) = desired
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(SPEC_HASH);
    }
    let digest = Sha256::digest(desired.to_string().as_bytes());
    let hash = Value::String(hex::encode(&digest[..8]));
    match desired.pointer_mut("/metadata/annotations") {
        Some(Value::Object(annotations)) => {
            annotations.insert(SPEC_HASH.into(), hash);
        }
        _ => desired["metadata"]["annotations"] = serde_json::json!({ SPEC_HASH: hash }),
    }
    desired
}

/// Whether `live` needs `stamped` (an object from [`with_hash`]) applied: missing, applied
/// from another desired object, or edited by someone else.
pub fn needs_apply(stamped: &Value, live: Option<&Value>) -> bool {
    live.is_none_or(|live| !is_subset(stamped, live))
}

/// Applies `desired` unless `live` (the live object as JSON) already matches it. Returns
/// whether a write was sent.
pub async fn apply_if_changed<K>(
    api: &Api<K>,
    desired: &K,
    live: Option<&Value>,
) -> Result<bool, kube::Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let stamped = with_hash(serde_json::to_value(desired).map_err(kube::Error::SerdeError)?);
    if !needs_apply(&stamped, live) {
        return Ok(false);
    }
    api.patch(
        &desired.name_any(),
        &apply_params(),
        &Patch::Apply(&stamped),
    )
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

    /// A Deployment as the API server returns it after `desired` was applied: defaults
    /// added, quantities in canonical form.
    fn stored(desired: &Value) -> Value {
        let mut live = desired.clone();
        live["spec"]["progressDeadlineSeconds"] = json!(600);
        if let Some(cpu) =
            live.pointer_mut("/spec/template/spec/containers/0/resources/requests/cpu")
        {
            *cpu = json!("500m");
        }
        live["status"] = json!({"readyReplicas": 1});
        live
    }

    fn deployment(extra_pod_spec: Value) -> Value {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "fraud-stable", "annotations": {"team": "risk"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "m", "image": "x",
                "resources": {"requests": {"cpu": "0.5"}}}]}}}});
        if let Value::Object(extra) = extra_pod_spec {
            for (k, v) in extra {
                d["spec"]["template"]["spec"][k] = v;
            }
        }
        d
    }

    #[test]
    fn a_field_removed_from_the_desired_object_is_applied() {
        let before = with_hash(deployment(json!({"nodeSelector": {"disk": "ssd"}})));
        let live = stored(&before);
        let after = with_hash(deployment(json!({})));
        // What the new object still sets is all there; only the hash says it changed, and the
        // apply without the field makes the API server remove it.
        assert!(is_subset(&after["spec"], &live["spec"]));
        assert!(needs_apply(&after, Some(&live)));
        assert_eq!(
            after["metadata"]["annotations"]["team"], "risk",
            "other annotations kept"
        );
    }

    #[test]
    fn a_quantity_the_server_rewrote_is_not_a_change() {
        let desired = with_hash(deployment(json!({})));
        let live = stored(&desired);
        assert_eq!(
            live.pointer("/spec/template/spec/containers/0/resources/requests/cpu"),
            Some(&json!("500m"))
        );
        assert!(!needs_apply(&desired, Some(&live)));
        assert!(needs_apply(&desired, None));
    }

    #[test]
    fn a_hand_edit_of_an_applied_field_is_reverted() {
        let desired = with_hash(deployment(json!({})));
        let mut live = stored(&desired);
        live["spec"]["replicas"] = json!(3);
        assert!(needs_apply(&desired, Some(&live)));
    }

    #[test]
    fn the_hash_is_stable_and_ignores_its_own_annotation() {
        let once = with_hash(deployment(json!({})));
        assert_eq!(with_hash(once.clone()), once);
        assert_eq!(with_hash(deployment(json!({}))), once);
    }

    #[test]
    fn quantities_compare_by_value() {
        for (a, b) in [
            ("0.5", "500m"),
            ("1Gi", "1024Mi"),
            ("1e3", "1k"),
            ("2", "2000m"),
            ("1.5Gi", "1536Mi"),
        ] {
            assert!(same_quantity(a, b), "{a} = {b}");
        }
        for (a, b) in [
            ("1", "2"),
            ("1Gi", "1G"),
            ("v1", "v1.0"),
            ("ssd", "ssd"),
            ("1x", "1"),
        ] {
            assert!(!same_quantity(a, b), "{a} != {b}");
        }
    }
}
