//! Types shared by both resources.
use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// API group of every modelship resource.
pub const GROUP: &str = "modelship.io";

/// Pattern of a model version: a label value, so it can be put on pods.
pub const VERSION_PATTERN: &str = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$";

/// Pattern of a duration in Go syntax, as `kubectl` users write it: `30s`, `5m`, `1h30m`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// Pattern of a URI with a scheme (`s3://`, `gs://`, `https://`, `file://`, ...).
pub const URI_PATTERN: &str = r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$";

/// A pod template, kept as the user wrote it.
///
/// The full `PodTemplateSpec` schema is several hundred kilobytes; embedding it once per stage
/// would push the CRDs past what `kubectl apply` accepts. The schema therefore checks the shape
/// that matters here (a `spec` with at least one named container) and the API server validates
/// the rest when the operator creates the Deployment or Job from it. A template the API server
/// rejects is reported in the owner's status, never retried in a loop.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(transparent)]
pub struct PodTemplate(pub serde_json::Value);

impl PodTemplate {
    /// The typed template, or a message saying which field does not fit.
    pub fn parse(&self) -> Result<PodTemplateSpec, String> {
        serde_json::from_value(self.0.clone()).map_err(|e| e.to_string())
    }

    /// Wraps a typed template (used by tests and samples).
    pub fn from_spec(spec: &PodTemplateSpec) -> Self {
        Self(serde_json::to_value(spec).unwrap_or_default())
    }
}

impl JsonSchema for PodTemplate {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PodTemplate".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A pod template (metadata and spec), as in a Deployment or Job. Checked in full by the API server when the operator creates objects from it.",
            "type": "object",
            "required": ["spec"],
            "properties": {
                "metadata": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true
                },
                "spec": {
                    "type": "object",
                    "required": ["containers"],
                    "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {
                        "containers": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "x-kubernetes-preserve-unknown-fields": true,
                                "properties": {
                                    "name": {"type": "string", "minLength": 1},
                                    "image": {"type": "string"}
                                }
                            }
                        }
                    }
                }
            }
        })
    }
}

/// A standard Kubernetes condition.
pub type Condition = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Which way a metric improves.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Direction {
    /// Larger values are better (f1, precision, recall, r2, ndcg, accuracy, agreement).
    #[default]
    HigherIsBetter,
    /// Smaller values are better (rmse, mae, loss, latency, error rate).
    LowerIsBetter,
}

/// Where a metric's verdict stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Verdict {
    /// Within every bound.
    Pass,
    /// Outside a bound.
    Fail,
    /// Not enough data to judge (too few samples, an empty result, NaN, no baseline where one
    /// is required, or the metrics source unreachable). Never counts as a pass.
    Inconclusive,
    /// The query itself failed (for example invalid PromQL).
    Error,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Verdict::Pass => "Pass",
            Verdict::Fail => "Fail",
            Verdict::Inconclusive => "Inconclusive",
            Verdict::Error => "Error",
        };
        f.write_str(s)
    }
}

/// An approval annotation's value as the operator handled it: each value acts at most once,
/// on the candidate it was bound to when the operator first saw it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HandledApproval {
    /// The annotation's value.
    pub value: String,
    /// What became of it.
    pub result: ApprovalResult,
    /// The run it names (`modelship.io/approve-run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The candidate it is bound to: version, artifact and, where known, the artifact's sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When the operator first saw the value.
    pub seen_at: Timestamp,
    /// When it approved its candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acted_at: Option<Timestamp>,
    /// Why it was refused or went stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What became of an approval annotation's value.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalResult {
    /// It names the candidate, which has not reached the approval yet.
    Bound,
    /// It approved its candidate.
    Approved,
    /// It named nothing waiting for approval; it never acts, even later.
    Refused,
    /// The candidate it was bound to changed (another artifact under the same version); it
    /// never acts again.
    Stale,
}
