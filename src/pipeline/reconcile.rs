//! One reconciliation of a ModelPipeline: the I/O around the pure decisions.
//!
//! Order matters: the decision is written to status first (with the object's resourceVersion
//! as a precondition), then the Jobs and serving objects are made to match it. A conflicting
//! write stops the round before anything is created, and a restarted operator finds every
//! decision in status and every Job under its deterministic name.
use super::jobs::{self, LABEL_PIPELINE, LABEL_RUN, LABEL_STAGE, Stage};
use super::production;
use super::run::{self, Decision, JobState, JobView, PodOutcome, World};
use super::schedule::Schedule;
use super::serving::{self, serving_name};
use super::triggers::{self, Annotations};
use super::validate::validate;
use crate::api::{
    GateStage, ModelDeployment, ModelPipeline, ModelPipelineStatus, RunPhase, StagePhase,
};
use crate::caches::{Children, ModelDeployments};
use crate::conditions::{Status, set};
use crate::context::Shared;
use crate::reconciler::{self, Reconciled, invalid, key, owned_by, prune, write_status};
use crate::{Error, Result};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub const CONTROLLER: &str = "pipeline";

/// What the pipeline controller's reconciliations share: the client and the caches of
/// everything a decision reads.
pub struct Context {
    pub shared: Shared,
    pub jobs: Children<Job>,
    pub pods: Children<Pod>,
    pub deployments: Children<Deployment>,
    pub services: Children<Service>,
    /// ConfigMaps' metadata only; `data_source` reads the ones pipelines name.
    pub configmaps: Store<PartialObjectMeta<ConfigMap>>,
    pub data_source: super::data_source::DataSource,
    pub model_deployments: ModelDeployments,
}

impl AsRef<Shared> for Context {
    fn as_ref(&self) -> &Shared {
        &self.shared
    }
}

impl Reconciled for ModelPipeline {
    type Status = ModelPipelineStatus;
    type Context = Context;
    const CONTROLLER: &'static str = CONTROLLER;

    fn status(&self) -> Option<&ModelPipelineStatus> {
        self.status.as_ref()
    }

    fn phase(status: &ModelPipelineStatus) -> &'static str {
        status.phase.map(|p| p.as_str()).unwrap_or("New")
    }

    fn set_invalid(
        status: &mut ModelPipelineStatus,
        reason: &str,
        message: &str,
        generation: Option<i64>,
        now: Timestamp,
    ) {
        status.observed_generation = generation;
        set(
            &mut status.conditions,
            "Ready",
            Status::False,
            reason,
            message,
            generation,
            now,
        );
    }

    fn reconcile(
        p: Arc<ModelPipeline>,
        ctx: Arc<Context>,
        current: ModelPipelineStatus,
        now: Timestamp,
    ) -> impl Future<Output = Result<Action>> + Send {
        reconcile(p, ctx, current, now)
    }
}

/// Reconciles one ModelPipeline (the prelude ran in `reconciler::reconcile`).
async fn reconcile(
    p: Arc<ModelPipeline>,
    ctx: Arc<Context>,
    current: ModelPipelineStatus,
    now: Timestamp,
) -> Result<Action> {
    let key = key(p.as_ref());
    let schedule = match validate(&p).and_then(|()| Schedule::from_spec(&p.spec.triggers)) {
        Ok(s) => s,
        Err(message) => {
            let held = (&current, p.meta().resource_version.as_deref());
            return invalid(&ctx.shared, p.as_ref(), held, "InvalidSpec", &message, now).await;
        }
    };
    let ns = p.namespace().unwrap_or_default();
    // The ModelDeployments that follow the pipeline and the one its integration stage names,
    // those that deserialized (the others are reported by their own controller).
    let integration = p.spec.stages.integration.as_ref();
    let mds: Vec<ModelDeployment> = ctx
        .model_deployments
        .following(
            &ns,
            &p.name_any(),
            integration.and_then(|i| i.deployment.as_deref()),
        )
        .iter()
        .filter_map(|g| g.valid())
        .collect();
    let mds: Vec<&ModelDeployment> = mds.iter().collect();
    let annotations = Annotations::from_map(p.annotations());
    let configmap = match p.spec.data.version_from.as_ref() {
        Some(f) => {
            let name = &f.config_map_key_ref.name;
            let seen = ctx.configmaps.get(&ObjectRef::new(name).within(&ns));
            ctx.data_source.get(&ns, name, seen.as_deref()).await?
        }
        None => None,
    };
    let inputs = triggers::data_version(&p.spec.data, configmap.as_deref())
        .map(|v| triggers::current_inputs(&p.spec, v));
    let jobs = observe_jobs(&p, &ctx, &current, now);
    let serving = observe_serving(&p, &ctx, &current);
    let w = World {
        now,
        pipeline: &p,
        annotations: &annotations,
        inputs,
        schedule: schedule.as_ref(),
        jobs: &jobs,
        serving: &serving,
        integration: serving::target(&p, &mds).map(|t| t.service_port),
        production: production::observe(&p, &mds, &current, now),
    };
    let decision = run::decide(&w);
    let read = p.meta().resource_version.as_deref();
    let mut rv = write_status(&ctx.shared, p.as_ref(), read, &current, &decision.status).await?;
    let mut status = decision.status.clone();
    report(&p, &ctx, &decision).await;

    // Children follow the status that was just written.
    let refused = apply_children(&p, &ctx, &status, &mds).await?;
    for (run_name, stage, what, why) in refused {
        let d = run::rejected(&p, &status, &run_name, stage, &what, &why, Timestamp::now());
        rv = write_status(&ctx.shared, p.as_ref(), rv.as_deref(), &status, &d.status).await?;
        status = d.status.clone();
        report(&p, &ctx, &d).await;
    }
    cleanup(&p, &ctx, &status).await?;

    ctx.shared.backoff.reset(&key);
    let wake = decision
        .wake
        .unwrap_or(ctx.shared.settings.resync)
        .min(ctx.shared.settings.resync);
    Ok(Action::requeue(wake.max(Duration::from_millis(100))))
}

fn condition_true(job: &Job, type_: &str) -> Option<k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .cloned()
}

/// What each Job of a running stage is doing, and what its decisive pod left behind.
fn observe_jobs(
    p: &ModelPipeline,
    ctx: &Context,
    status: &ModelPipelineStatus,
    now: Timestamp,
) -> BTreeMap<String, JobView> {
    let ns = p.namespace().unwrap_or_default();
    let mut out = BTreeMap::new();
    for r in status.runs.iter().filter(|r| r.phase == RunPhase::Running) {
        for st in r.stages.iter().filter(|s| s.phase == StagePhase::Running) {
            let view = match ctx.jobs.get(&ns, &st.job) {
                None => JobView {
                    state: JobState::Missing,
                    pod: None,
                },
                Some(job) if !owned_by(job.as_ref(), p) => JobView {
                    state: JobState::Foreign,
                    pod: None,
                },
                Some(job) => job_view(ctx, &job, now),
            };
            out.insert(st.job.clone(), view);
        }
    }
    out
}

fn job_view(ctx: &Context, job: &Job, now: Timestamp) -> JobView {
    let uid = job.meta().uid.clone().unwrap_or_default();
    let ns = job.namespace().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .owned_by(&uid)
        .iter()
        .filter(|pod| pod.namespace().as_deref() == Some(ns.as_str()))
        .map(|pod| Arc::new(pod.object()))
        .collect();
    decisive(&pods, &uid, job_state(job, now))
}

/// The Job's state and the result that decides it. A stage Job completes once, so two
/// succeeded pods that both look controlled by it mean one was made to look so: neither is
/// trusted, and the stage fails with that reason instead of reading either.
fn decisive(pods: &[Arc<Pod>], job_uid: &str, state: JobState) -> JobView {
    if let JobState::Succeeded { completed_at } = &state {
        let succeeded = pods
            .iter()
            .filter(|p| controlled_by_job(p, job_uid))
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
            .count();
        if succeeded > 1 {
            return JobView {
                state: JobState::Failed {
                    reason: "AmbiguousResult".into(),
                    message: format!(
                        "{succeeded} succeeded pods claim to be the Job's, which completes once; no result is read"
                    ),
                    failed_at: *completed_at,
                },
                pod: Some(PodOutcome::default()),
            };
        }
    }
    let pod = result_pod(pods, job_uid, &state).map(|pod| outcome(&pod));
    JobView { state, pod }
}

/// The labels the Job controller puts on the pods it creates: the Job's uid (the older
/// name and the one since Kubernetes 1.27; a cluster may set either or both).
const CONTROLLER_UID_LABELS: [&str; 2] = ["batch.kubernetes.io/controller-uid", "controller-uid"];

/// Whether the Job `job_uid` controls `pod`: its controller owner reference is that Job, and
/// the Job controller's uid labels name it. Naming the Job as a mere owner is not enough:
/// anyone who may create pods in the namespace can add such an owner reference.
fn controlled_by_job(pod: &Pod, job_uid: &str) -> bool {
    if job_uid.is_empty() {
        return false;
    }
    let controller = pod
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    let owner = controller
        .is_some_and(|r| r.uid == job_uid && r.kind == "Job" && r.api_version == "batch/v1");
    let labels = pod.labels();
    let uids: Vec<&String> = CONTROLLER_UID_LABELS
        .iter()
        .filter_map(|k| labels.get(*k))
        .collect();
    owner && !uids.is_empty() && uids.iter().all(|u| u.as_str() == job_uid)
}

/// The pod whose result decides a finished Job: among the pods the Job controls, the one in
/// the Job's outcome phase whose stage container finished last.
fn result_pod(pods: &[Arc<Pod>], job_uid: &str, state: &JobState) -> Option<Arc<Pod>> {
    let phase = match state {
        JobState::Succeeded { .. } => "Succeeded",
        JobState::Failed { .. } => "Failed",
        _ => return None,
    };
    let controlled: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|pod| controlled_by_job(pod, job_uid))
        .cloned()
        .collect();
    latest(&controlled, phase)
}

/// What a Job's conditions say.
fn job_state(job: &Job, now: Timestamp) -> JobState {
    if let Some(done) = condition_true(job, "Complete") {
        let completed_at = job
            .status
            .as_ref()
            .and_then(|s| s.completion_time.as_ref())
            .map(|t| t.0)
            .or(done.last_transition_time.map(|t| t.0));
        return JobState::Succeeded {
            completed_at: completed_at.or(Some(now)),
        };
    }
    if let Some(failed) = condition_true(job, "Failed") {
        return JobState::Failed {
            reason: failed.reason.unwrap_or_else(|| "Failed".into()),
            message: failed.message.unwrap_or_default(),
            failed_at: failed.last_transition_time.map(|t| t.0),
        };
    }
    JobState::Active
}

/// The pod in `phase` whose stage container finished last.
fn latest(pods: &[Arc<Pod>], phase: &str) -> Option<Arc<Pod>> {
    pods.iter()
        .filter(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase))
        .max_by_key(|pod| {
            let terminated = main_status(pod).and_then(|c| c.state.as_ref()?.terminated.clone());
            terminated.and_then(|t| t.finished_at).map(|t| t.0)
        })
        .cloned()
}

fn main_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    let name = pod.spec.as_ref()?.containers.first()?.name.as_str();
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

/// The stage container's exit code and termination message, and the images every
/// container ran (the digest when the runtime reports one).
fn outcome(pod: &Pod) -> PodOutcome {
    let terminated = main_status(pod).and_then(|c| c.state.as_ref()?.terminated.clone());
    let statuses = pod.status.as_ref();
    let all = statuses
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            statuses
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten(),
        );
    let images = all
        .map(|c| {
            let image = if c.image_id.is_empty() {
                c.image.clone()
            } else {
                c.image_id.clone()
            };
            (c.name.clone(), image)
        })
        .collect();
    PodOutcome {
        exit_code: terminated.as_ref().map(|t| t.exit_code),
        message: terminated.and_then(|t| t.message),
        images,
    }
}

/// Whether each running run's temporary serving Deployment is available.
fn observe_serving(
    p: &ModelPipeline,
    ctx: &Context,
    status: &ModelPipelineStatus,
) -> BTreeMap<String, bool> {
    let ns = p.namespace().unwrap_or_default();
    status
        .runs
        .iter()
        .filter(|r| r.phase == RunPhase::Running)
        .map(|r| serving_name(&p.name_any(), &r.name))
        .filter_map(|name| {
            let d = ctx
                .deployments
                .get(&ns, &name)
                .filter(|d| owned_by(d.as_ref(), p))?;
            Some((name, serving::available(&d)))
        })
        .collect()
}

/// Creates the Jobs of running stages and the serving objects of a starting or running
/// integration stage. Returns what the API server refused: (run, stage, object, reason).
async fn apply_children(
    p: &ModelPipeline,
    ctx: &Context,
    status: &ModelPipelineStatus,
    mds: &[&ModelDeployment],
) -> Result<Vec<(String, Stage, String, String)>> {
    let ns = p.namespace().unwrap_or_default();
    // Looked up with the operator's own identity; created with the pipeline's (`tenancy`).
    let jobs_api: Api<Job> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let writer = ctx.shared.writer(p)?;
    let mut refused = Vec::new();
    for r in status.runs.iter().filter(|r| r.phase == RunPhase::Running) {
        for st in &r.stages {
            let stage = st.name;
            if stage == Stage::Integration
                && matches!(st.phase, StagePhase::Starting | StagePhase::Running)
                && let Err(why) = apply_serving(p, ctx, r, mds).await
            {
                match why {
                    // Refused by the API server or the namespace's RBAC, or a name someone
                    // else's object holds.
                    Error::Rejected(why) | Error::NotOwned(why) | Error::Forbidden(why) => refused
                        .push((
                            r.name.clone(),
                            stage,
                            format!(
                                "the serving objects {}",
                                serving_name(&p.name_any(), &r.name)
                            ),
                            why,
                        )),
                    other => return Err(other),
                }
                continue;
            }
            if st.phase != StagePhase::Running || ctx.jobs.get(&ns, &st.job).is_some() {
                continue;
            }
            let job = match jobs::desired_job(p, r, stage, st.service_url.as_deref()) {
                Ok(job) => job,
                Err(why) => {
                    refused.push((r.name.clone(), stage, format!("Job {}", st.job), why));
                    continue;
                }
            };
            // Create, never update: a Job's template is immutable, and an existing Job of
            // this name is the one a previous round (or operator) created.
            let params = PostParams {
                field_manager: Some(crate::apply::FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            match writer.api::<Job>(&ns).create(&params, &job).await {
                Ok(_) => tracing::info!(job = %st.job, run = %r.name, "created the stage's Job"),
                // The Job a previous round (or operator) created, unless someone else made
                // one of this name: then the stage's results would be theirs.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    if reconciler::taken(&jobs_api, p, &ctx.jobs, &ns, &st.job).await? {
                        let why = reconciler::taken_message::<ModelPipeline>("Job", &ns, &st.job);
                        refused.push((r.name.clone(), stage, format!("Job {}", st.job), why));
                    }
                }
                Err(e) => match writer.error(e) {
                    Error::Rejected(why) | Error::Forbidden(why) => {
                        refused.push((r.name.clone(), stage, format!("Job {}", st.job), why))
                    }
                    other => return Err(other),
                },
            }
        }
    }
    Ok(refused)
}

async fn apply_serving(
    p: &ModelPipeline,
    ctx: &Context,
    r: &crate::api::Run,
    mds: &[&ModelDeployment],
) -> Result<()> {
    let target = match serving::target(p, mds) {
        Ok(t) => t,
        // The ModelDeployment went away after the stage started: keep what exists; the
        // stage times out if nothing serves the candidate.
        Err(why) => {
            tracing::warn!(run = %r.name, %why, "cannot build the integration serving objects");
            return Ok(());
        }
    };
    let artifact = run::artifact_uri(r);
    let deployment = serving::desired_deployment(p, &r.name, &r.version, &artifact, &target);
    let service = serving::desired_service(p, &r.name, &target);
    reconciler::apply(&ctx.shared, p, &ctx.deployments, &[deployment]).await?;
    reconciler::apply(&ctx.shared, p, &ctx.services, &[service]).await?;
    Ok(())
}

/// Deletes what status no longer needs: the Jobs of runs that left the history, and the
/// serving objects of integration stages that ended.
async fn cleanup(p: &ModelPipeline, ctx: &Context, status: &ModelPipelineStatus) -> Result<()> {
    let uid = p.meta().uid.clone().unwrap_or_default();
    let runs_with_jobs: BTreeSet<String> = ctx
        .jobs
        .owned_by(&uid)
        .iter()
        .filter_map(|j| j.labels().get(LABEL_RUN).cloned())
        .collect();
    let unwanted =
        super::history::unwanted(runs_with_jobs.iter().map(String::as_str), &status.runs);
    prune(&ctx.shared, p, &ctx.jobs, |j| {
        j.labels()
            .get(LABEL_RUN)
            .is_none_or(|r| !unwanted.contains(r))
    })
    .await?;

    let name = p.name_any();
    let serving_wanted: BTreeSet<String> = status
        .runs
        .iter()
        .filter(|r| r.phase == RunPhase::Running)
        .filter(|r| {
            r.stages.iter().any(|s| {
                s.name == Stage::Integration
                    && matches!(s.phase, StagePhase::Starting | StagePhase::Running)
            })
        })
        .map(|r| serving_name(&name, &r.name))
        .collect();
    let serving = |k: &str| serving_wanted.contains(k);
    prune(&ctx.shared, p, &ctx.deployments, |d| serving(&d.name_any())).await?;
    prune(&ctx.shared, p, &ctx.services, |s| serving(&s.name_any())).await?;
    Ok(())
}

/// Events and metrics of a decision.
async fn report(p: &ModelPipeline, ctx: &Context, d: &Decision) {
    let m = &ctx.shared.metrics;
    let (ns, name) = (p.namespace().unwrap_or_default(), p.name_any());
    m.pipeline_seen(&ns, &name);
    for reason in &d.started {
        m.runs_started.inc(&ns, &name, reason.as_str());
    }
    for result in &d.finished {
        m.runs_finished.inc(&ns, &name, result);
    }
    // At most one run waits (a newer candidate supersedes an older one); its candidate
    // records when it passed its gates, which is when the wait began.
    let waiting = d
        .status
        .runs
        .iter()
        .find(|r| r.phase == RunPhase::WaitingApproval);
    m.awaiting_approval(
        crate::metrics::Kind::ModelPipeline,
        &ns,
        &name,
        waiting.is_some(),
        waiting.and_then(|r| r.candidate.as_ref()?.created_at),
        Timestamp::now(),
    );
    // The newest judged run's gates.
    if let Some(run) = d.status.runs.iter().find(|r| !r.gates.is_empty()) {
        let gates: Vec<_> = run
            .gates
            .iter()
            .map(|g| {
                let stage = match g.stage {
                    GateStage::Evaluate => "Evaluate",
                    GateStage::Integration => "Integration",
                };
                (stage, g.metric.as_str(), g.value, g.baseline)
            })
            .collect();
        m.gate_values(&ns, &name, &gates);
    }
    for (stage, result, secs) in &d.stage_durations {
        m.stage_duration
            .with_label_values(&[*stage, *result])
            .observe(*secs);
    }
    for verdict in &d.gate_verdicts {
        m.gate_verdicts
            .with_label_values(&[&verdict.to_string()])
            .inc();
    }
    for note in &d.notes {
        tracing::info!(reason = note.reason, message = %note.message, "decision");
        ctx.shared
            .event(
                p,
                note.warning,
                note.reason,
                "Reconcile",
                note.message.clone(),
            )
            .await;
    }
}

/// The label selector of the stage pods the controller reads results from.
pub fn stage_pod_selector() -> String {
    format!("{LABEL_PIPELINE},{LABEL_STAGE}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(phase: &str, finished: &str, exit_code: i32, message: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("p-{finished}")},
                "spec": {"containers": [{"name": "main", "image": "train:1"}, {"name": "side", "image": "side:1"}]},
                "status": {
                    "phase": phase,
                    "initContainerStatuses": [{"name": "fetch", "image": "fetch:1", "imageID": "", "ready": true, "restartCount": 0}],
                    "containerStatuses": [
                        {"name": "side", "image": "side:1", "imageID": "", "ready": false, "restartCount": 0,
                         "state": {"terminated": {"exitCode": 0, "finishedAt": finished}}},
                        {"name": "main", "image": "train:1", "imageID": "registry.example/train@sha256:abc", "ready": false, "restartCount": 0,
                         "state": {"terminated": {"exitCode": exit_code, "message": message, "finishedAt": finished}}}
                    ]
                }
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_first_containers_result_and_every_image_are_read() {
        let o = outcome(&pod("Succeeded", "2026-11-26T10:00:00Z", 0, Some("{}")));
        assert_eq!((o.exit_code, o.message.as_deref()), (Some(0), Some("{}")));
        assert_eq!(
            o.images["main"], "registry.example/train@sha256:abc",
            "the digest the runtime reports"
        );
        assert_eq!(
            o.images["side"], "side:1",
            "the image reference when no digest is reported"
        );
        assert_eq!(o.images["fetch"], "fetch:1");
    }

    #[test]
    fn the_pod_that_finished_last_in_the_phase_decides() {
        let pods = vec![
            pod("Failed", "2026-11-26T10:00:00Z", 1, Some("first")),
            pod("Failed", "2026-11-26T10:05:00Z", 1, Some("second")),
            pod("Succeeded", "2026-11-26T10:10:00Z", 0, Some("ok")),
        ];
        assert_eq!(
            latest(&pods, "Failed").map(|p| outcome(&p).message),
            Some(Some("second".into()))
        );
        assert_eq!(
            latest(&pods, "Succeeded").map(|p| outcome(&p).message),
            Some(Some("ok".into()))
        );
        assert!(latest(&pods, "Running").is_none());
    }

    const JOB_UID: &str = "6f1d2c3b-0000-4000-8000-00000000a11b";

    /// A pod as the Job controller creates it for Job `JOB_UID`, or as someone else might.
    fn stage_pod(
        finished: &str,
        message: &str,
        owner: serde_json::Value,
        labels: serde_json::Value,
    ) -> Arc<Pod> {
        let mut p = (*pod("Succeeded", finished, 0, Some(message))).clone();
        p.metadata.owner_references = serde_json::from_value(owner).unwrap();
        p.metadata.labels = serde_json::from_value(labels).unwrap();
        Arc::new(p)
    }

    fn job_owner(uid: &str, controller: bool) -> serde_json::Value {
        json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "fraud-r1-train", "uid": uid, "controller": controller}])
    }

    #[test]
    fn only_a_pod_the_job_controls_gives_the_result() {
        let both =
            json!({"batch.kubernetes.io/controller-uid": JOB_UID, "controller-uid": JOB_UID});
        let genuine = stage_pod(
            "2026-11-26T10:00:00Z",
            "genuine",
            job_owner(JOB_UID, true),
            both.clone(),
        );
        let impostors = [
            // Names the Job as owner, but not as controller.
            stage_pod(
                "2026-11-26T10:01:00Z",
                "not controller",
                job_owner(JOB_UID, false),
                both.clone(),
            ),
            // Controlled by the Job, without the Job controller's labels.
            stage_pod(
                "2026-11-26T10:02:00Z",
                "no labels",
                job_owner(JOB_UID, true),
                json!({}),
            ),
            // The labels name another Job.
            stage_pod(
                "2026-11-26T10:03:00Z",
                "other label",
                job_owner(JOB_UID, true),
                json!({"batch.kubernetes.io/controller-uid": JOB_UID, "controller-uid": "another"}),
            ),
            // Controlled by something else that names the Job only in its labels.
            stage_pod(
                "2026-11-26T10:04:00Z",
                "other controller",
                json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": JOB_UID, "controller": true}]),
                both.clone(),
            ),
        ];
        let done = JobState::Succeeded { completed_at: None };
        for impostor in &impostors {
            let pods = vec![genuine.clone(), impostor.clone()];
            let read = result_pod(&pods, JOB_UID, &done).map(|p| outcome(&p).message);
            assert_eq!(
                read,
                Some(Some("genuine".into())),
                "{:?}",
                outcome(impostor).message
            );
        }
        assert!(result_pod(&impostors, JOB_UID, &done).is_none());
        // Either label alone, as older and newer clusters set them, is enough.
        let old_label = stage_pod(
            "2026-11-26T10:00:00Z",
            "old",
            job_owner(JOB_UID, true),
            json!({"controller-uid": JOB_UID}),
        );
        assert!(result_pod(&[old_label], JOB_UID, &done).is_some());
        assert!(result_pod(std::slice::from_ref(&genuine), "", &done).is_none());
        assert!(result_pod(&[genuine], JOB_UID, &JobState::Active).is_none());
    }

    #[test]
    fn two_succeeded_pods_of_one_job_are_never_read() {
        let both =
            json!({"batch.kubernetes.io/controller-uid": JOB_UID, "controller-uid": JOB_UID});
        let genuine = stage_pod(
            "2026-11-26T10:00:00Z",
            "genuine",
            job_owner(JOB_UID, true),
            both.clone(),
        );
        let forged = stage_pod(
            "2026-11-26T10:01:00Z",
            "forged",
            job_owner(JOB_UID, true),
            both,
        );
        let done = JobState::Succeeded { completed_at: None };
        let view = decisive(&[genuine.clone(), forged], JOB_UID, done.clone());
        assert!(
            matches!(&view.state, JobState::Failed { reason, .. } if reason == "AmbiguousResult"),
            "{view:?}"
        );
        assert_eq!(view.pod, Some(PodOutcome::default()), "no message is read");
        let view = decisive(&[genuine], JOB_UID, done);
        assert_eq!(view.pod.and_then(|p| p.message).as_deref(), Some("genuine"));
    }

    fn job(conditions: serde_json::Value, completion: Option<&str>) -> Job {
        serde_json::from_value(json!({"metadata": {"name": "j"}, "status": {"conditions": conditions, "completionTime": completion}})).unwrap()
    }

    #[test]
    fn job_conditions_give_its_state() {
        let now: Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        assert_eq!(job_state(&job(json!([]), None), now), JobState::Active);
        let done = job(
            json!([{"type": "Complete", "status": "True"}]),
            Some("2026-11-26T11:00:00Z"),
        );
        assert_eq!(
            job_state(&done, now),
            JobState::Succeeded {
                completed_at: Some("2026-11-26T11:00:00Z".parse().unwrap())
            }
        );
        let failed = job(
            json!([{"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "Container main for pod x failed with exit code 3", "lastTransitionTime": "2026-11-26T11:30:00Z"}]),
            None,
        );
        assert_eq!(
            job_state(&failed, now),
            JobState::Failed {
                reason: "PodFailurePolicy".into(),
                message: "Container main for pod x failed with exit code 3".into(),
                failed_at: Some("2026-11-26T11:30:00Z".parse().unwrap()),
            }
        );
        let not_yet = job(json!([{"type": "Failed", "status": "False"}]), None);
        assert_eq!(job_state(&not_yet, now), JobState::Active);
    }
}
