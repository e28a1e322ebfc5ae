//! A stage's result: the JSON document its container leaves as termination message. Pure.
//!
//! ```json
//! {"schemaVersion": 1,
//!  "metrics": {"f1": 0.91},
//!  "baselineMetrics": {"f1": 0.90},
//!  "artifact": {"uri": "s3://models/fraud/fraud-v1.3.0-2026-11-26-f4c9a2/", "sha256": "…"},
//!  "datasetDigest": "sha256:…"}
//! ```
//! Parsing is strict: a typo in a field name or a metric that is not a number fails the run
//! with a message that says so, instead of silently gating on nothing.
use crate::api::ArtifactRef;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// The only schema version this operator reads.
pub const SCHEMA_VERSION: i64 = 1;
/// The kubelet keeps at most this many bytes of a termination message.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Most metrics one stage may report (status stays small).
pub const MAX_METRICS: usize = 64;
const MAX_METRIC_NAME: usize = 63;
const MAX_DIGEST: usize = 256;

/// What a stage reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageResult {
    pub metrics: BTreeMap<String, f64>,
    pub baseline_metrics: BTreeMap<String, f64>,
    pub artifact: Option<ArtifactRef>,
    pub dataset_digest: Option<String>,
}

/// Parses a termination message. `required` says whether the stage must report one
/// (train, evaluate and integration must; checks and validate may). The error says exactly
/// what is wrong, for the run's status.
pub fn parse(message: Option<&str>, required: bool) -> Result<Option<StageResult>, String> {
    let text = message.map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return if required {
            Err("the container left no termination message; it must write a result document (schemaVersion 1) to its terminationMessagePath (default /dev/termination-log)".into())
        } else {
            Ok(None)
        };
    }
    let doc = serde_json::from_str::<Strict>(text).map(|s| s.0).map_err(|e| {
        // A key given twice deserializes fine but is ambiguous: say so, not "invalid JSON".
        if e.classify() == serde_json::error::Category::Data {
            return format!("the termination message is refused: {e} (each key may appear once: a reader could take either value)");
        }
        let hint = if text.len() >= MAX_MESSAGE_BYTES { format!(" (the message is {} bytes: the kubelet keeps at most {MAX_MESSAGE_BYTES}, so it was probably cut off)", text.len()) } else { String::new() };
        format!("the termination message is not valid JSON: {e}{hint}")
    })?;
    let Value::Object(doc) = doc else {
        return Err("the termination message must be a JSON object".into());
    };
    for key in doc.keys() {
        if !matches!(
            key.as_str(),
            "schemaVersion" | "metrics" | "baselineMetrics" | "artifact" | "datasetDigest"
        ) {
            return Err(format!(
                "the termination message has an unknown field {key:?} (known: schemaVersion, metrics, baselineMetrics, artifact, datasetDigest)"
            ));
        }
    }
    match doc.get("schemaVersion") {
        None => return Err("the termination message has no schemaVersion (expected 1)".into()),
        Some(v) if v.as_i64() == Some(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "the termination message has schemaVersion {v}, but this operator reads only schemaVersion {SCHEMA_VERSION}"
            ));
        }
    }
    let metrics = metrics(&doc, "metrics")?;
    let baseline_metrics = metrics_opt(&doc, "baselineMetrics")?;
    let artifact = match doc.get("artifact") {
        None | Some(Value::Null) => None,
        Some(Value::Object(a)) => Some(artifact(a)?),
        Some(other) => {
            return Err(format!(
                "artifact must be an object with uri and sha256, not {other}"
            ));
        }
    };
    let dataset_digest = match doc.get("datasetDigest") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_DIGEST => Some(s.clone()),
        Some(other) => {
            return Err(format!(
                "datasetDigest must be a non-empty string of at most {MAX_DIGEST} characters, not {other}"
            ));
        }
    };
    Ok(Some(StageResult {
        metrics,
        baseline_metrics,
        artifact,
        dataset_digest,
    }))
}

fn metrics(doc: &Map<String, Value>, field: &str) -> Result<BTreeMap<String, f64>, String> {
    match doc.get(field) {
        None => Err(format!(
            "the termination message has no {field:?} object (use {{}} when the stage measures nothing)"
        )),
        Some(_) => metrics_opt(doc, field),
    }
}

fn metrics_opt(doc: &Map<String, Value>, field: &str) -> Result<BTreeMap<String, f64>, String> {
    let map = match doc.get(field) {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(format!(
                "{field} must be an object of metric name to number, not {other}"
            ));
        }
    };
    if map.len() > MAX_METRICS {
        return Err(format!(
            "{field} has {} metrics; at most {MAX_METRICS} are kept",
            map.len()
        ));
    }
    let mut out = BTreeMap::new();
    for (name, value) in map {
        if !valid_metric_name(name) {
            return Err(format!(
                "{field}: {name:?} is not a metric name (a letter or '_' first, then letters, digits, '_', '.', ':' or '-', at most {MAX_METRIC_NAME} characters)"
            ));
        }
        let number = value
            .as_f64()
            .filter(|n| n.is_finite())
            .ok_or_else(|| format!("{field}.{name} is {value}, not a number"))?;
        out.insert(name.clone(), number);
    }
    Ok(out)
}

/// Same rule as a gate's metric name.
fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && name.len() <= MAX_METRIC_NAME
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

fn artifact(a: &Map<String, Value>) -> Result<ArtifactRef, String> {
    for key in a.keys() {
        if !matches!(key.as_str(), "uri" | "sha256") {
            return Err(format!(
                "artifact has an unknown field {key:?} (known: uri, sha256)"
            ));
        }
    }
    let uri = match a.get("uri") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_uri(s) => Some(s.clone()),
        Some(other) => {
            return Err(format!(
                "artifact.uri must be a URI with a scheme (for example s3://bucket/path), not {other}"
            ));
        }
    };
    let sha256 = match a.get("sha256") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let hex = s.strip_prefix("sha256:").unwrap_or(s);
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "artifact.sha256 must be 64 hexadecimal digits (optionally prefixed with sha256:), not {s:?}"
                ));
            }
            Some(hex.to_ascii_lowercase())
        }
        Some(other) => return Err(format!("artifact.sha256 must be a string, not {other}")),
    };
    Ok(ArtifactRef { uri, sha256 })
}

/// A JSON value whose objects never repeat a key. serde_json's `Map` keeps the last of two
/// equal keys silently, so `{"f1":0.1,"f1":0.99}` would gate on one value while another
/// reader of the same message (a log, a dashboard) sees the other.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
        && !rest.is_empty()
        && !rest.chars().any(char::is_whitespace)
        && s.len() <= 2048
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

    #[test]
    fn a_full_document_parses() {
        let msg = format!(
            r#"{{"schemaVersion":1,"metrics":{{"f1":0.91,"rmse":2}},"baselineMetrics":{{"f1":0.9}},"artifact":{{"uri":"s3://m/v1/","sha256":"sha256:{}"}},"datasetDigest":"sha256:beef"}}"#,
            SHA.to_uppercase()
        );
        let r = parse(Some(&msg), true).unwrap().unwrap();
        assert_eq!(
            r.metrics,
            BTreeMap::from([("f1".into(), 0.91), ("rmse".into(), 2.0)])
        );
        assert_eq!(r.baseline_metrics["f1"], 0.9);
        assert_eq!(
            r.artifact.unwrap(),
            ArtifactRef {
                uri: Some("s3://m/v1/".into()),
                sha256: Some(SHA.into())
            }
        );
        assert_eq!(r.dataset_digest.as_deref(), Some("sha256:beef"));
    }

    #[test]
    fn a_minimal_document_parses() {
        let r = parse(Some(r#" {"schemaVersion": 1, "metrics": {}} "#), true)
            .unwrap()
            .unwrap();
        assert_eq!(r, StageResult::default());
    }

    #[test]
    fn missing_message_fails_only_where_required() {
        assert!(
            parse(None, true)
                .unwrap_err()
                .contains("no termination message")
        );
        assert!(
            parse(Some("  "), true)
                .unwrap_err()
                .contains("no termination message")
        );
        assert_eq!(parse(None, false).unwrap(), None);
        assert_eq!(parse(Some(""), false).unwrap(), None);
    }

    #[test]
    fn optional_message_must_still_be_valid_when_present() {
        assert!(
            parse(Some("all tests passed"), false)
                .unwrap_err()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn each_mistake_is_named() {
        let cases = [
            ("{", "not valid JSON"),
            ("[1]", "must be a JSON object"),
            (r#"{"metrics":{}}"#, "no schemaVersion"),
            (
                r#"{"schemaVersion":2,"metrics":{}}"#,
                "schemaVersion 2, but this operator reads only schemaVersion 1",
            ),
            (
                r#"{"schemaVersion":"1","metrics":{}}"#,
                "schemaVersion \"1\"",
            ),
            (r#"{"schemaVersion":1}"#, "no \"metrics\" object"),
            (
                r#"{"schemaVersion":1,"metric":{}}"#,
                "unknown field \"metric\"",
            ),
            (
                r#"{"schemaVersion":1,"metrics":{"f1":"0.9"}}"#,
                "metrics.f1 is \"0.9\", not a number",
            ),
            (
                r#"{"schemaVersion":1,"metrics":{"f1":null}}"#,
                "metrics.f1 is null, not a number",
            ),
            (
                r#"{"schemaVersion":1,"metrics":[0.9]}"#,
                "metrics must be an object",
            ),
            (
                r#"{"schemaVersion":1,"metrics":{"9lives":1}}"#,
                "\"9lives\" is not a metric name",
            ),
            (
                r#"{"schemaVersion":1,"metrics":{},"baselineMetrics":{"f1":true}}"#,
                "baselineMetrics.f1 is true",
            ),
            (
                r#"{"schemaVersion":1,"metrics":{},"artifact":"s3://x"}"#,
                "artifact must be an object",
            ),
            (
                r#"{"schemaVersion":1,"metrics":{},"artifact":{"uri":"not a uri"}}"#,
                "artifact.uri must be a URI",
            ),
            (
                r#"{"schemaVersion":1,"metrics":{},"artifact":{"sha256":"abc"}}"#,
                "artifact.sha256 must be 64 hexadecimal",
            ),
            (
                r#"{"schemaVersion":1,"metrics":{},"artifact":{"url":"s3://x/y"}}"#,
                "artifact has an unknown field \"url\"",
            ),
            (
                r#"{"schemaVersion":1,"metrics":{},"datasetDigest":""}"#,
                "datasetDigest must be a non-empty string",
            ),
        ];
        for (msg, want) in cases {
            let err = parse(Some(msg), true).unwrap_err();
            assert!(err.contains(want), "{msg}: {err}");
        }
    }

    #[test]
    fn a_truncated_message_says_so() {
        let long = format!(
            r#"{{"schemaVersion":1,"metrics":{{"a":"{}"#,
            "x".repeat(5000)
        );
        let err = parse(Some(&long[..MAX_MESSAGE_BYTES]), true).unwrap_err();
        assert!(err.contains("cut off"), "{err}");
    }

    #[test]
    fn a_key_given_twice_is_refused_at_any_depth() {
        let dup_uri = format!(
            r#"{{"schemaVersion":1,"metrics":{{}},"artifact":{{"uri":"s3://m/a/","uri":"s3://evil/b/","sha256":"{SHA}"}}}}"#
        );
        let cases = [
            (
                r#"{"schemaVersion":1,"metrics":{},"metrics":{"f1":0.99}}"#,
                "\"metrics\"",
            ),
            (
                r#"{"schemaVersion":1,"metrics":{"f1":0.1,"f1":0.99}}"#,
                "\"f1\"",
            ),
            (dup_uri.as_str(), "\"uri\""),
        ];
        for (msg, key) in cases {
            let err = parse(Some(msg), true).unwrap_err();
            assert!(
                err.contains(&format!("duplicate key {key}"))
                    && err.contains("each key may appear once"),
                "{msg}: {err}"
            );
        }
        // Equal keys in different objects are not duplicates.
        let ok = r#"{"schemaVersion":1,"metrics":{"f1":0.9},"baselineMetrics":{"f1":0.8}}"#;
        assert!(parse(Some(ok), true).is_ok());
    }

    #[test]
    fn too_many_metrics_are_refused() {
        let metrics: Map<String, Value> = (0..=MAX_METRICS)
            .map(|i| (format!("m{i}"), Value::from(i)))
            .collect();
        let msg = serde_json::json!({"schemaVersion": 1, "metrics": metrics}).to_string();
        assert!(parse(Some(&msg), true).unwrap_err().contains("at most 64"));
    }
}
