//! The annotation commands: which annotation to write with which value, or why the command
//! cannot apply to the object as it stands. Pure: the object read, in; the patch or the
//! refusal, out.
use crate::api::{DeploymentPhase, ModelDeployment, ModelPipeline, Promotion, RunPhase};
use crate::deployment::phase::{ANNOTATION_ABORT, ANNOTATION_APPROVE, ANNOTATION_RETRY};
use crate::deployment::status::PROGRESSING;
use crate::pipeline::triggers::{ANNOTATION_APPROVE_RUN, ANNOTATION_REJECT_RUN, ANNOTATION_RUN};
use kube::ResourceExt;

/// One annotation to set, on the version of the object it was decided on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationPatch {
    pub key: &'static str,
    pub value: String,
    /// The `resourceVersion` the decision was taken on: the API server refuses the patch
    /// (409) when the object changed in between, so a refusal check is never stale.
    pub resource_version: Option<String>,
    /// What the operator will do, for the person who asked.
    pub effect: String,
}

impl AnnotationPatch {
    /// The JSON merge patch: `metadata.annotations` and the precondition, nothing else.
    pub fn merge_patch(&self) -> serde_json::Value {
        let mut metadata = serde_json::json!({ "annotations": { self.key: self.value } });
        if let Some(rv) = &self.resource_version {
            metadata["resourceVersion"] = rv.clone().into();
        }
        serde_json::json!({ "metadata": metadata })
    }
}

/// Why a command does not apply, in a sentence that says what to do instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse<T>(msg: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(msg.into()))
}

fn annotation<'a>(obj: &'a impl ResourceExt, key: &str) -> Option<&'a str> {
    obj.annotations().get(key).map(String::as_str)
}

/// A value for an act-once annotation (`abort`, `retry`) that the operator has not acted on
/// yet: the bare version the first time, `<version>/<token>` after that.
fn fresh_value(version: &str, handled: Option<&str>, token: &str) -> String {
    if handled == Some(version) {
        format!("{version}/{token}")
    } else {
        version.to_string()
    }
}

/// The candidate of a ModelDeployment, checked against the version the person named.
fn candidate<'a>(md: &'a ModelDeployment, named: Option<&str>) -> Result<&'a str, Refusal> {
    let name = md.name_any();
    let status = md.status.clone().unwrap_or_default();
    let Some(candidate) = md.status.as_ref().and_then(|s| s.candidate.as_ref()) else {
        let stable = status.stable.map(|s| s.version).unwrap_or_default();
        return refuse(format!(
            "{name} has no candidate: it serves {stable} and tries nothing new"
        ));
    };
    match named {
        Some(v) if v != candidate.version => refuse(format!(
            "{v} is not the candidate of {name}: the candidate is {}",
            candidate.version
        )),
        _ => Ok(candidate.version.as_str()),
    }
}

fn phase(md: &ModelDeployment) -> Option<DeploymentPhase> {
    md.status.as_ref().and_then(|s| s.phase)
}

/// Whether the candidate passed its analysis and waits only for a person.
fn awaiting_approval(md: &ModelDeployment) -> bool {
    md.status
        .as_ref()
        .and_then(|s| s.condition(PROGRESSING))
        .is_some_and(|c| c.reason == "AwaitingApproval")
}

fn approval(md: &ModelDeployment, version: &str) -> Result<AnnotationPatch, Refusal> {
    let name = md.name_any();
    if md.spec.shadow.promotion == Promotion::Automatic {
        return refuse(format!(
            "{name} promotes automatically (spec.shadow.promotion: Automatic): {version} is promoted as soon as its analysis passes, no approval is read"
        ));
    }
    match phase(md) {
        Some(DeploymentPhase::Shadowing) => {}
        Some(DeploymentPhase::Promoting | DeploymentPhase::Baking) => {
            return refuse(format!("{version} is already promoted"));
        }
        Some(DeploymentPhase::Rejected | DeploymentPhase::RolledBack) => {
            return refuse(format!(
                "{version} ended {}; `retry {name}` tries it again",
                phase(md).map(|p| p.as_str()).unwrap_or_default()
            ));
        }
        _ => return refuse(format!("{name} is not shadowing a candidate")),
    }
    // Each value acts once: a version approved before (then retried), or whose approval went
    // stale, needs a new value.
    let used = md
        .status
        .as_ref()
        .and_then(|s| s.approval.as_ref())
        .map(|h| h.value.as_str());
    let value = crate::deployment::phase::fresh_approval_value(used, version);
    if annotation(md, ANNOTATION_APPROVE) == Some(value.as_str()) {
        return refuse(format!(
            "{version} is already approved ({ANNOTATION_APPROVE}={value})"
        ));
    }
    let effect = if awaiting_approval(md) {
        format!("{version} passed its analysis: it is promoted now")
    } else {
        format!("{version} is promoted as soon as its analysis passes")
    };
    Ok(AnnotationPatch {
        key: ANNOTATION_APPROVE,
        value,
        resource_version: md.resource_version(),
        effect,
    })
}

/// `approve NAME VERSION`.
pub fn approve(md: &ModelDeployment, version: &str) -> Result<AnnotationPatch, Refusal> {
    let version = candidate(md, Some(version))?;
    approval(md, version)
}

/// `promote NAME`: approves the candidate, but only one that already passed its analysis.
pub fn promote(md: &ModelDeployment) -> Result<AnnotationPatch, Refusal> {
    let name = md.name_any();
    let version = candidate(md, None)?;
    let patch = approval(md, version)?;
    if !awaiting_approval(md) {
        let why = md
            .status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_default();
        return refuse(format!(
            "{version} has not passed its analysis yet ({why}); `approve {name} {version}` approves it in advance"
        ));
    }
    Ok(patch)
}

/// `abort NAME [VERSION]`.
pub fn abort(
    md: &ModelDeployment,
    version: Option<&str>,
    token: &str,
) -> Result<AnnotationPatch, Refusal> {
    let name = md.name_any();
    let version = candidate(md, version)?;
    let effect = match phase(md) {
        Some(DeploymentPhase::Shadowing) => {
            format!("the shadow of {version} stops; production is not touched")
        }
        Some(DeploymentPhase::Promoting | DeploymentPhase::Baking) => {
            format!("{version} is rolled back to the previous version")
        }
        Some(p) => {
            return refuse(format!(
                "{version} already ended {p}; nothing runs to abort"
            ));
        }
        None => return refuse(format!("{name} has no phase yet")),
    };
    let handled = md.status.as_ref().and_then(|s| s.handled_abort.as_deref());
    let current = annotation(md, ANNOTATION_ABORT);
    if current.is_some_and(|c| c.split('/').next() == Some(version)) && current != handled {
        return refuse(format!(
            "an abort of {version} is already requested and the operator has not acted on it yet"
        ));
    }
    Ok(AnnotationPatch {
        key: ANNOTATION_ABORT,
        value: fresh_value(version, handled, token),
        resource_version: md.resource_version(),
        effect,
    })
}

/// `retry NAME [VERSION]`.
pub fn retry(
    md: &ModelDeployment,
    version: Option<&str>,
    token: &str,
) -> Result<AnnotationPatch, Refusal> {
    let version = candidate(md, version)?;
    match phase(md) {
        Some(DeploymentPhase::Rejected | DeploymentPhase::RolledBack) => {}
        p => {
            let p = p.map(|p| p.as_str()).unwrap_or("starting");
            return refuse(format!(
                "{version} is {p}, not rejected or rolled back: there is nothing to retry"
            ));
        }
    }
    let handled = md.status.as_ref().and_then(|s| s.handled_retry.as_deref());
    let current = annotation(md, ANNOTATION_RETRY);
    if current.is_some_and(|c| c.split('/').next() == Some(version)) && current != handled {
        return refuse(format!(
            "a retry of {version} is already requested and the operator has not acted on it yet"
        ));
    }
    Ok(AnnotationPatch {
        key: ANNOTATION_RETRY,
        value: fresh_value(version, handled, token),
        resource_version: md.resource_version(),
        effect: format!("{version} is shadowed again from the start"),
    })
}

/// `run NAME [--token T]`.
pub fn run(mp: &ModelPipeline, token: &str) -> Result<AnnotationPatch, Refusal> {
    let status = mp.status.clone().unwrap_or_default();
    if status.handled_run_request.as_deref() == Some(token) {
        return refuse(format!(
            "the run request {token} was already acted on; give a new --token"
        ));
    }
    if annotation(mp, ANNOTATION_RUN) == Some(token) {
        return refuse(format!(
            "the run request {token} is already set and the operator has not acted on it yet"
        ));
    }
    let running = status.runs.iter().find(|r| r.phase == RunPhase::Running);
    let effect = match running {
        Some(r) => format!(
            "run {} is still running: the request is queued and starts when it ends",
            r.name
        ),
        None => format!("run r{} starts", status.run_count + 1),
    };
    Ok(AnnotationPatch {
        key: ANNOTATION_RUN,
        value: token.to_string(),
        resource_version: mp.resource_version(),
        effect,
    })
}

/// The run an approve-run or reject-run names: the one given, or the only one waiting.
fn waiting_run(mp: &ModelPipeline, named: Option<&str>) -> Result<String, Refusal> {
    let name = mp.name_any();
    let runs = mp
        .status
        .as_ref()
        .map(|s| s.runs.as_slice())
        .unwrap_or_default();
    let waiting: Vec<&str> = runs
        .iter()
        .filter(|r| r.phase == RunPhase::WaitingApproval)
        .map(|r| r.name.as_str())
        .collect();
    match named {
        Some(run) => match runs.iter().find(|r| r.name == run) {
            None => refuse(format!("{name} has no run {run}")),
            Some(r) if r.phase != RunPhase::WaitingApproval => refuse(format!(
                "run {run} is {}, it waits for no approval",
                r.phase.as_str()
            )),
            Some(_) => Ok(run.to_string()),
        },
        None => match waiting.as_slice() {
            [] => refuse(format!("no run of {name} waits for approval")),
            [one] => Ok(one.to_string()),
            many => refuse(format!(
                "runs {} wait for approval; name the one you mean",
                many.join(", ")
            )),
        },
    }
}

fn version_of(mp: &ModelPipeline, run: &str) -> String {
    mp.status
        .as_ref()
        .and_then(|s| s.runs.iter().find(|r| r.name == run))
        .map(|r| r.version.clone())
        .unwrap_or_default()
}

/// `approve-run NAME [RUN]`.
pub fn approve_run(mp: &ModelPipeline, run: Option<&str>) -> Result<AnnotationPatch, Refusal> {
    let run = waiting_run(mp, run)?;
    if annotation(mp, ANNOTATION_REJECT_RUN) == Some(run.as_str()) {
        return refuse(format!(
            "{ANNOTATION_REJECT_RUN} already names {run}, and a rejection wins over an approval"
        ));
    }
    // Each value acts once: a value refused before (set before the run waited) needs a new one.
    let value = mp
        .status
        .as_ref()
        .map(|s| crate::pipeline::run::approval_value(s, &run))
        .unwrap_or_else(|| run.clone());
    if annotation(mp, ANNOTATION_APPROVE_RUN) == Some(value.as_str()) {
        return refuse(format!("run {run} is already approved"));
    }
    let version = version_of(mp, &run);
    Ok(AnnotationPatch {
        key: ANNOTATION_APPROVE_RUN,
        value,
        resource_version: mp.resource_version(),
        effect: format!("candidate {version} of run {run} is published as status.latestApproved"),
    })
}

/// `reject-run NAME [RUN]`.
pub fn reject_run(mp: &ModelPipeline, run: Option<&str>) -> Result<AnnotationPatch, Refusal> {
    let run = waiting_run(mp, run)?;
    if annotation(mp, ANNOTATION_REJECT_RUN) == Some(run.as_str()) {
        return refuse(format!("run {run} is already rejected"));
    }
    let version = version_of(mp, &run);
    Ok(AnnotationPatch {
        key: ANNOTATION_REJECT_RUN,
        value: run.clone(),
        resource_version: mp.resource_version(),
        effect: format!("candidate {version} of run {run} is rejected; nothing is published"),
    })
}

#[cfg(test)]
#[path = "annotate_tests.rs"]
mod tests;
