//! Cached objects held as their JSON text, compressed.
//!
//! A decoded Deployment takes about 12 KiB (k8s-openapi's structs hold every optional field
//! inline) against about 2.5 KiB of JSON, and the caches hold every child of every
//! ModelDeployment and ModelPipeline: at 5,000 ModelDeployments the decoded children alone
//! were over 150 MiB. A [`Compact`] keeps the metadata decoded (what the cache, its indexes
//! and the owner checks read) and the rest as compressed text, decoded again when a reconciliation
//! reads it, a few times per reconciliation. Kinds that are only read, never applied, drop
//! what no reader uses ([`Slim`]). modelship's own kinds are cached the same way, with the
//! error when one does not decode (`guarded`).
use crate::api::{ModelDeployment, ModelPipeline};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// What a kind keeps of itself in the cache.
pub trait Slim: Resource<DynamicType = ()> + DeserializeOwned {
    /// Whether a watch mapping or a pruning rule reads the cached objects' labels without
    /// decoding them: then the labels are kept decoded too.
    const LABELS_READ: bool = true;

    /// Removes from `object` (everything but its metadata) what no reader of the cache
    /// uses. Kinds the operator applies keep everything: the drift rule compares it.
    fn slim(_object: &mut Value) {}
}

impl Slim for ModelDeployment {}
impl Slim for ModelPipeline {}

impl Slim for Deployment {
    const LABELS_READ: bool = false;
}
impl Slim for Service {
    const LABELS_READ: bool = false;
}

/// Jobs are created once and never applied again: their status and labels are read.
impl Slim for Job {
    fn slim(object: &mut Value) {
        if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("template".into(), Value::Object(Default::default()));
        }
    }
}

/// Stage pods are read for their phase, containers' names and statuses (exit codes,
/// termination messages, image digests).
impl Slim for Pod {
    fn slim(object: &mut Value) {
        if let Some(spec) = object.get_mut("spec") {
            let names = |list: Option<&Value>| -> Value {
                list.and_then(Value::as_array)
                    .map(|cs| {
                        cs.iter()
                            .map(|c| serde_json::json!({ "name": c.get("name") }))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let mut kept = serde_json::json!({ "containers": names(spec.get("containers")) });
            if spec.get("initContainers").is_some() {
                kept["initContainers"] = names(spec.get("initContainers"));
            }
            *spec = kept;
        }
        if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
            status.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "phase" | "reason" | "message" | "containerStatuses" | "initContainerStatuses"
                )
            });
        }
    }
}

/// The metadata a cached object keeps decoded: what the cache, its indexes and the owner
/// checks read (and the labels, for kinds whose readers need them).
const DECODED: [&str; 7] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "deletionTimestamp",
    "ownerReferences",
];

/// JSON text, compressed: a Deployment's 2.5 KiB of JSON keeps in about 1.1 KiB, and
/// reading it back takes microseconds.
#[derive(Clone)]
struct Text(Arc<[u8]>);

impl Text {
    /// zstd's default level: the next levels gain little on objects this small.
    const LEVEL: i32 = 3;

    fn new(value: &Value) -> Self {
        let json = value.to_string();
        let packed = zstd::bulk::compress(json.as_bytes(), Self::LEVEL)
            .expect("compressing into a growing buffer does not fail");
        Self(packed.into())
    }

    fn json(&self) -> Vec<u8> {
        zstd::decode_all(&*self.0).expect("decompressing what was compressed here")
    }
}

/// One cached object: the metadata the cache reads decoded (managedFields dropped), the rest
/// as compressed JSON text.
pub struct Compact<K> {
    meta: ObjectMeta,
    /// The object without the decoded metadata, slimmed.
    rest: Text,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Self {
            meta: self.meta.clone(),
            rest: self.rest.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Compact<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compact")
            .field("meta", &self.meta)
            .field("rest_bytes", &self.rest.0.len())
            .finish()
    }
}

impl<K: Slim> Compact<K> {
    /// `object` (a whole object as JSON) split into the metadata kept decoded and the rest,
    /// slimmed and ready to be kept as text.
    pub(crate) fn split(mut object: Value) -> Result<(ObjectMeta, Value), serde_json::Error> {
        let mut rest = match object.get_mut("metadata").map(Value::take) {
            Some(Value::Object(meta)) => meta,
            _ => serde_json::Map::new(),
        };
        rest.remove("managedFields");
        let labels = K::LABELS_READ.then_some("labels");
        let decoded = DECODED
            .into_iter()
            .chain(labels)
            .filter_map(|key| Some((key.to_string(), rest.remove(key)?)))
            .collect();
        let meta: ObjectMeta = serde_json::from_value(Value::Object(decoded))?;
        K::slim(&mut object);
        object["metadata"] = Value::Object(rest);
        // A list's items come without them.
        object["apiVersion"] = Value::String(K::api_version(&()).into_owned());
        object["kind"] = Value::String(K::kind(&()).into_owned());
        Ok((meta, object))
    }

    /// The parts [`split`](Self::split) gave, unchecked: [`object`](Self::object) may only
    /// be called when `rest` decodes.
    pub(crate) fn from_parts(meta: ObjectMeta, rest: &Value) -> Self {
        Self {
            meta,
            rest: Text::new(rest),
            kind: PhantomData,
        }
    }

    /// `object` (a whole object as JSON) in compact form.
    pub fn from_value(object: Value) -> Result<Self, serde_json::Error> {
        let (meta, rest) = Self::split(object)?;
        // Checked once here, so that decoding it again cannot fail.
        let _: K = serde_json::from_value(rest.clone())?;
        Ok(Self::from_parts(meta, &rest))
    }

    /// `object` in compact form (for tests and for caches filled by hand).
    pub fn new(object: &K) -> Self
    where
        K: serde::Serialize,
    {
        Self::from_value(serde_json::to_value(object).expect("an object serializes"))
            .expect("an object the API types produced decodes")
    }

    /// The object, decoded.
    pub fn object(&self) -> K {
        self.try_object()
            .expect("checked when the object was cached")
    }

    /// The object, decoded, or why it does not decode.
    pub(crate) fn try_object(&self) -> Result<K, serde_json::Error> {
        let mut object: K = serde_json::from_slice(&self.rest.json())?;
        let (meta, kept) = (object.meta_mut(), &self.meta);
        meta.name.clone_from(&kept.name);
        meta.namespace.clone_from(&kept.namespace);
        meta.uid.clone_from(&kept.uid);
        meta.resource_version.clone_from(&kept.resource_version);
        meta.generation = kept.generation;
        meta.deletion_timestamp.clone_from(&kept.deletion_timestamp);
        meta.owner_references.clone_from(&kept.owner_references);
        if K::LABELS_READ {
            meta.labels.clone_from(&kept.labels);
        }
        Ok(object)
    }

    /// The object as JSON, metadata included.
    pub fn value(&self) -> Value {
        let mut object: Value =
            serde_json::from_slice(&self.rest.json()).expect("checked when the object was cached");
        if let (Some(meta), Value::Object(kept)) = (
            object["metadata"].as_object_mut(),
            serde_json::to_value(&self.meta).expect("metadata serializes"),
        ) {
            meta.extend(kept);
        }
        object
    }
}

impl<'de, K: Slim> Deserialize<'de> for Compact<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::from_value(Value::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Compact<K> {
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
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use serde_json::json;

    fn live_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "fraud-stable", "namespace": "models", "uid": "u1",
                "resourceVersion": "42", "generation": 3,
                "labels": {"app.kubernetes.io/managed-by": "modelship"},
                "annotations": {"modelship.io/spec-hash": "abc"},
                "ownerReferences": [{"apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment", "name": "fraud", "uid": "o1", "controller": true}],
                "managedFields": [{"manager": "modelship", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "fraud"}},
                "template": {
                    "metadata": {"labels": {"app": "fraud"}},
                    "spec": {"containers": [{"name": "model", "image": "registry/fraud:v2", "resources": {"requests": {"cpu": "500m"}}}]}
                }
            },
            "status": {"replicas": 2, "readyReplicas": 2, "observedGeneration": 3}
        })
    }

    #[test]
    fn a_compact_deployment_decodes_to_the_live_object_without_managed_fields() {
        let live = live_deployment();
        let compact: Compact<Deployment> = serde_json::from_value(live.clone()).unwrap();
        let mut expected = live;
        expected["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(compact.value(), expected);
        let decoded: Deployment = serde_json::from_value(expected).unwrap();
        assert_eq!(compact.object(), decoded);
        assert_eq!(compact.name_any(), "fraud-stable");
        assert_eq!(compact.owner_references()[0].uid, "o1");
        assert_eq!(compact.resource_version().as_deref(), Some("42"));
        assert!(compact.meta().managed_fields.is_none());
        // What no reader of the cache's metadata needs stays in the text.
        assert!(compact.meta().annotations.is_none() && compact.meta().labels.is_none());
    }

    #[test]
    fn an_item_of_a_list_gets_its_api_version_and_kind() {
        let mut item = live_deployment();
        let object = item.as_object_mut().unwrap();
        object.remove("apiVersion");
        object.remove("kind");
        let compact: Compact<Deployment> = serde_json::from_value(item).unwrap();
        let value = compact.value();
        assert_eq!(value["apiVersion"], "apps/v1");
        assert_eq!(value["kind"], "Deployment");
    }

    #[test]
    fn an_object_that_does_not_decode_is_refused_when_cached() {
        let mut live = live_deployment();
        live["spec"]["replicas"] = json!("two");
        let error = serde_json::from_value::<Compact<Deployment>>(live).unwrap_err();
        assert!(error.to_string().contains("invalid type"), "{error}");
    }

    #[test]
    fn a_pod_keeps_what_the_pipeline_reads() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "train-x", "namespace": "ml", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": "j1"}]},
            "spec": {
                "initContainers": [{"name": "fetch", "image": "busybox", "command": ["sh"]}],
                "containers": [{"name": "stage", "image": "trainer:v1", "env": [{"name": "A", "value": "b"}]}, {"name": "sidecar", "image": "s"}],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "restartPolicy": "Never"
            },
            "status": {
                "phase": "Succeeded",
                "podIPs": [{"ip": "10.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "stage", "image": "trainer:v1", "imageID": "trainer@sha256:ab", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "message": "{\"accuracy\":0.9}", "finishedAt": "2026-12-01T10:00:00Z"}}}]
            }
        });
        let compact: Compact<Pod> = serde_json::from_value(pod).unwrap();
        let pod = compact.object();
        let spec = pod.spec.as_ref().unwrap();
        let names: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["stage", "sidecar"]);
        assert_eq!(spec.init_containers.as_ref().unwrap()[0].name, "fetch");
        assert!(spec.containers[0].image.is_none() && spec.volumes.is_none());
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Succeeded"));
        assert!(status.pod_ips.is_none() && status.conditions.is_none());
        let main = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(main.image_id, "trainer@sha256:ab");
        let terminated = main.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(terminated.message.as_deref(), Some("{\"accuracy\":0.9}"));
        assert_eq!(pod.owner_references()[0].uid, "j1");
    }

    #[test]
    fn a_job_keeps_its_status_and_labels_but_not_its_pod_template() {
        let job = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "p-r1-train", "namespace": "ml", "labels": {"modelship.io/run": "r1"}},
            "spec": {"backoffLimit": 0, "template": {"spec": {"containers": [{"name": "stage", "image": "trainer:v1"}], "restartPolicy": "Never"}}},
            "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        });
        let compact: Compact<Job> = serde_json::from_value(job).unwrap();
        let job = compact.object();
        assert_eq!(job.labels()["modelship.io/run"], "r1");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert!(spec.template.spec.is_none());
        assert_eq!(job.status.unwrap().conditions.unwrap()[0].type_, "Complete");
    }
}
