//! What starts a run: a new source revision, a new data version, the schedule, or a request
//! annotation with a new token. Nothing else does: labels, annotations and fields that do not
//! change what is trained start nothing. Pure.
use crate::api::{DataSpec, ModelPipelineSpec, RunInputs, Trigger, TriggerReason};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Requests a run; the value is a token, and a token already handled starts nothing.
pub const ANNOTATION_RUN: &str = "modelship.io/run";
/// Approves the candidate of the run it names.
pub const ANNOTATION_APPROVE_RUN: &str = "modelship.io/approve-run";
/// Rejects the candidate of the run it names.
pub const ANNOTATION_REJECT_RUN: &str = "modelship.io/reject-run";

/// The operator's annotations on a ModelPipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotations {
    pub run: Option<String>,
    pub approve_run: Option<String>,
    pub reject_run: Option<String>,
}

impl Annotations {
    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| {
            map.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Self {
            run: get(ANNOTATION_RUN),
            approve_run: get(ANNOTATION_APPROVE_RUN),
            reject_run: get(ANNOTATION_REJECT_RUN),
        }
    }
}

/// A hash of everything in the spec that changes what a run does with the same code and
/// data: the stages (templates, limits), the gates and the seed. Stable across restarts.
pub fn template_hash(spec: &ModelPipelineSpec) -> String {
    let doc = serde_json::json!({"stages": spec.stages, "gates": spec.gates, "seed": spec.seed});
    let mut canonical = String::new();
    write_canonical(&doc, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    hex::encode(&digest[..8])
}

/// JSON with object keys sorted at every level, so that equal documents hash equally
/// whatever order their keys arrived in.
fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The longest data version, as `spec.data.version` allows.
pub const MAX_DATA_VERSION: usize = 253;

/// The data version: the spec's, or the value of the ConfigMap key it points at.
pub fn data_version(spec: &DataSpec, configmap: Option<&ConfigMap>) -> Result<String, String> {
    if let Some(v) = &spec.version {
        return Ok(v.clone());
    }
    let Some(from) = &spec.version_from else {
        return Err("spec.data has neither version nor versionFrom".into());
    };
    let r = &from.config_map_key_ref;
    let Some(cm) = configmap else {
        return Err(format!(
            "waiting for ConfigMap {} (spec.data.versionFrom) to exist",
            r.name
        ));
    };
    match cm
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|v| v.trim())
    {
        // The limit of spec.data.version: the version is copied into every run's status and
        // into the candidates' names, which must stay far below etcd's object limit.
        Some(v) if v.chars().count() > MAX_DATA_VERSION => Err(format!(
            "key {:?} of ConfigMap {} (spec.data.versionFrom) holds {} characters; a data version has at most {MAX_DATA_VERSION}",
            r.key,
            r.name,
            v.chars().count()
        )),
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        Some(_) => Err(format!(
            "key {:?} of ConfigMap {} (spec.data.versionFrom) is empty",
            r.key, r.name
        )),
        None => Err(format!(
            "ConfigMap {} has no key {:?} (spec.data.versionFrom)",
            r.name, r.key
        )),
    }
}

/// The inputs a run would train with now.
pub fn current_inputs(spec: &ModelPipelineSpec, data_version: String) -> RunInputs {
    RunInputs {
        source_revision: spec.source.revision.clone(),
        data_version,
        template_hash: template_hash(spec),
    }
}

/// What changed since the inputs were last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes<'a> {
    /// The inputs seen last; `None` for a new pipeline.
    pub observed: Option<&'a RunInputs>,
    pub current: &'a RunInputs,
    /// The `modelship.io/run` token, and the one already handled.
    pub token: Option<&'a str>,
    pub handled_token: Option<&'a str>,
    /// The scheduled time that just fired.
    pub schedule_fired: Option<Timestamp>,
    pub schedule_key: Option<&'a str>,
}

/// The one trigger that starts a run, if any. When several coincide, a request wins over
/// a new source revision, which wins over new data, which wins over the schedule; the
/// others are named in the detail and served by the same run.
pub fn detect(c: &Changes<'_>, now: Timestamp) -> Option<Trigger> {
    let mut found: Vec<(TriggerReason, String)> = Vec::new();
    if let Some(token) = c.token.filter(|t| Some(*t) != c.handled_token) {
        found.push((
            TriggerReason::Manual,
            format!("requested with {ANNOTATION_RUN}={token}"),
        ));
    }
    match c.observed {
        None => found.push((
            TriggerReason::Source,
            format!(
                "new pipeline: source revision {}, data version {}",
                c.current.source_revision, c.current.data_version
            ),
        )),
        Some(seen) => {
            if seen.source_revision != c.current.source_revision {
                found.push((
                    TriggerReason::Source,
                    format!(
                        "source revision {} -> {}",
                        seen.source_revision, c.current.source_revision
                    ),
                ));
            }
            if seen.data_version != c.current.data_version {
                found.push((
                    TriggerReason::Data,
                    format!(
                        "data version {} -> {}",
                        seen.data_version, c.current.data_version
                    ),
                ));
            }
        }
    }
    if let Some(at) = c.schedule_fired {
        found.push((
            TriggerReason::Schedule,
            format!(
                "schedule {} fired at {at}",
                c.schedule_key.unwrap_or_default()
            ),
        ));
    }
    let mut found = found.into_iter();
    let (reason, mut detail) = found.next()?;
    let also: Vec<String> = found.map(|(_, d)| d).collect();
    if !also.is_empty() {
        detail = format!("{detail} (also {})", also.join("; "));
    }
    Some(Trigger {
        reason,
        detail,
        time: now,
    })
}

/// Whether a trigger may start a run: one that does not force it starts nothing when the
/// inputs are those of the last successful run (the same code, data and templates would
/// train the same model).
pub fn worth_running(
    reason: TriggerReason,
    current: &RunInputs,
    last_successful: Option<&RunInputs>,
) -> bool {
    reason.forces() || last_successful != Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testing::sample;

    fn now() -> Timestamp {
        "2026-11-26T10:00:00Z".parse().unwrap()
    }

    fn inputs(rev: &str, data: &str) -> RunInputs {
        RunInputs {
            source_revision: rev.into(),
            data_version: data.into(),
            template_hash: "h".into(),
        }
    }

    fn changes<'a>(observed: Option<&'a RunInputs>, current: &'a RunInputs) -> Changes<'a> {
        Changes {
            observed,
            current,
            token: None,
            handled_token: None,
            schedule_fired: None,
            schedule_key: None,
        }
    }

    fn detect_with(observed: Option<&RunInputs>, current: &RunInputs) -> Option<Trigger> {
        detect(&changes(observed, current), now())
    }

    #[test]
    fn a_new_pipeline_runs_for_its_source() {
        let t = detect_with(None, &inputs("a", "1")).unwrap();
        assert_eq!(t.reason, TriggerReason::Source);
        assert_eq!(t.detail, "new pipeline: source revision a, data version 1");
        assert_eq!(t.time.to_string(), "2026-11-26T10:00:00Z");
    }

    #[test]
    fn nothing_changed_starts_nothing() {
        let seen = inputs("a", "1");
        assert_eq!(detect_with(Some(&seen), &seen), None);
    }

    #[test]
    fn a_template_change_alone_is_not_a_trigger() {
        let seen = inputs("a", "1");
        let mut now_ = seen.clone();
        now_.template_hash = "other".into();
        assert_eq!(detect_with(Some(&seen), &now_), None);
    }

    #[test]
    fn source_and_data_changes_name_what_changed() {
        let t = detect_with(Some(&inputs("a", "1")), &inputs("b", "1")).unwrap();
        assert_eq!(
            (t.reason, t.detail.as_str()),
            (TriggerReason::Source, "source revision a -> b")
        );
        let t = detect_with(Some(&inputs("a", "1")), &inputs("a", "2")).unwrap();
        assert_eq!(
            (t.reason, t.detail.as_str()),
            (TriggerReason::Data, "data version 1 -> 2")
        );
    }

    #[test]
    fn coinciding_triggers_start_one_run_for_the_strongest_reason() {
        let seen = inputs("a", "1");
        let current = inputs("b", "2");
        let c = Changes {
            observed: Some(&seen),
            current: &current,
            token: Some("t1"),
            handled_token: None,
            schedule_fired: Some("2026-11-26T09:00:00Z".parse().unwrap()),
            schedule_key: Some("0 * * * *"),
        };
        let t = detect(&c, now()).unwrap();
        assert_eq!(t.reason, TriggerReason::Manual);
        assert_eq!(
            t.detail,
            "requested with modelship.io/run=t1 (also source revision a -> b; data version 1 -> 2; schedule 0 * * * * fired at 2026-11-26T09:00:00Z)"
        );
        let c = Changes { token: None, ..c };
        assert_eq!(detect(&c, now()).unwrap().reason, TriggerReason::Source);
    }

    #[test]
    fn a_handled_token_starts_nothing_and_a_new_one_does() {
        let seen = inputs("a", "1");
        let c = Changes {
            token: Some("t1"),
            handled_token: Some("t1"),
            ..changes(Some(&seen), &seen)
        };
        assert_eq!(detect(&c, now()), None);
        let c = Changes {
            token: Some("t2"),
            ..c
        };
        assert_eq!(detect(&c, now()).unwrap().reason, TriggerReason::Manual);
    }

    #[test]
    fn the_schedule_fires_alone() {
        let seen = inputs("a", "1");
        let c = Changes {
            schedule_fired: Some("2026-11-26T09:00:00Z".parse().unwrap()),
            schedule_key: Some("0 * * * *"),
            ..changes(Some(&seen), &seen)
        };
        let t = detect(&c, now()).unwrap();
        assert_eq!(
            (t.reason, t.detail.as_str()),
            (
                TriggerReason::Schedule,
                "schedule 0 * * * * fired at 2026-11-26T09:00:00Z"
            )
        );
    }

    #[test]
    fn same_inputs_as_the_last_success_run_only_when_forced() {
        let last = inputs("a", "1");
        assert!(!worth_running(TriggerReason::Source, &last, Some(&last)));
        assert!(!worth_running(TriggerReason::Data, &last, Some(&last)));
        assert!(worth_running(TriggerReason::Manual, &last, Some(&last)));
        assert!(worth_running(TriggerReason::Schedule, &last, Some(&last)));
        assert!(worth_running(
            TriggerReason::Source,
            &inputs("b", "1"),
            Some(&last)
        ));
        assert!(worth_running(TriggerReason::Source, &last, None));
    }

    #[test]
    fn template_hash_ignores_labels_annotations_and_unrelated_fields() {
        let p = sample();
        let base = template_hash(&p.spec);
        assert_eq!(base.len(), 16);
        let mut q = p.clone();
        q.metadata.labels = Some(BTreeMap::from([("team".into(), "risk".into())]));
        q.spec.run_history_limit = 9;
        q.spec.approval = crate::api::Approval::Automatic;
        q.spec.source.revision = "zzz".into();
        assert_eq!(template_hash(&q.spec), base);
        q.spec.seed = 7;
        assert_ne!(template_hash(&q.spec), base);
        let mut r = p.clone();
        r.spec.stages.train.template.0["spec"]["containers"][0]["image"] = "trainer:2".into();
        assert_ne!(template_hash(&r.spec), base);
    }

    #[test]
    fn key_order_does_not_change_the_hash() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"q":2,"p":1}],"x":"s"}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":"s","y":[1,{"p":1,"q":2}]},"b":1}"#).unwrap();
        let (mut sa, mut sb) = (String::new(), String::new());
        write_canonical(&a, &mut sa);
        write_canonical(&b, &mut sb);
        assert_eq!(sa, sb);
        assert_eq!(sa, r#"{"a":{"x":"s","y":[1,{"p":1,"q":2}]},"b":1}"#);
    }

    #[test]
    fn data_version_from_spec_or_configmap() {
        let spec: DataSpec =
            serde_json::from_value(serde_json::json!({"uri": "s3://d", "version": "v1"})).unwrap();
        assert_eq!(data_version(&spec, None).unwrap(), "v1");
        let spec: DataSpec = serde_json::from_value(serde_json::json!({
            "uri": "s3://d", "versionFrom": {"configMapKeyRef": {"name": "data", "key": "version"}}
        }))
        .unwrap();
        assert!(
            data_version(&spec, None)
                .unwrap_err()
                .contains("waiting for ConfigMap data")
        );
        let cm = |data: serde_json::Value| -> ConfigMap {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "data"}, "data": data}))
                .unwrap()
        };
        assert_eq!(
            data_version(
                &spec,
                Some(&cm(serde_json::json!({"version": " 2026-11-26\n"})))
            )
            .unwrap(),
            "2026-11-26"
        );
        assert!(
            data_version(&spec, Some(&cm(serde_json::json!({"other": "x"}))))
                .unwrap_err()
                .contains("has no key \"version\"")
        );
        assert!(
            data_version(&spec, Some(&cm(serde_json::json!({"version": ""}))))
                .unwrap_err()
                .contains("is empty")
        );
        let long = "v".repeat(MAX_DATA_VERSION + 1);
        assert!(
            data_version(&spec, Some(&cm(serde_json::json!({"version": long}))))
                .unwrap_err()
                .contains("holds 254 characters; a data version has at most 253")
        );
        let longest = "v".repeat(MAX_DATA_VERSION);
        assert_eq!(
            data_version(
                &spec,
                Some(&cm(serde_json::json!({"version": longest.clone()})))
            ),
            Ok(longest)
        );
    }

    #[test]
    fn annotations_are_trimmed_and_empty_ones_ignored() {
        let map = BTreeMap::from([
            (ANNOTATION_RUN.to_string(), " t1 ".to_string()),
            (ANNOTATION_APPROVE_RUN.to_string(), "".to_string()),
            (ANNOTATION_REJECT_RUN.to_string(), "r2".to_string()),
        ]);
        let a = Annotations::from_map(&map);
        assert_eq!(
            a,
            Annotations {
                run: Some("t1".into()),
                approve_run: None,
                reject_run: Some("r2".into())
            }
        );
    }
}
