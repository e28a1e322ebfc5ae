//! One reconciliation of a ModelDeployment: the I/O around the pure decisions.
//!
//! Order matters: the decision is written to status first (with the object's resourceVersion
//! as a precondition), then the children are made to match the status. A status write that
//! conflicts stops the round before any child changes, and a restart finds every decision
//! in status.
use super::desired::{
    self, ChildConfig, Track, children, deployment_version, rollout_complete, rollout_failed,
    track_name,
};
use super::phase::{self, AnalysisSummary, Annotations, Decision, Inputs, TrackRollout};
use super::status::{Observed, set_conditions, set_invalid, set_waiting};
use super::traffic;
use super::validate::{Validated, check_prometheus_url, validate};
use crate::analysis::{self, defaults, template::promql_range, verdict::summarize};
use crate::api::{
    AnalysisMetric, AnalysisPhase, AnalysisStatus, DeploymentPhase, MetricStatus, ModelDeployment,
    ModelDeploymentStatus, ModelPipeline, VersionRef,
};
use crate::caches::Children;
use crate::context::Shared;
use crate::guarded::Guarded;
use crate::reconciler::{self, Reconciled, invalid, key, names, owned_by, prune, write_status};
use crate::{Error, Result};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub const CONTROLLER: &str = "deployment";

/// What the deployment controller's reconciliations share.
pub struct Context {
    pub shared: Shared,
    pub deployments: Children<Deployment>,
    pub services: Children<Service>,
    pub pipelines: Store<Guarded<ModelPipeline>>,
    pub prometheus: analysis::prometheus::Clients,
}

impl AsRef<Shared> for Context {
    fn as_ref(&self) -> &Shared {
        &self.shared
    }
}

impl Reconciled for ModelDeployment {
    type Status = ModelDeploymentStatus;
    type Context = Context;
    const CONTROLLER: &'static str = CONTROLLER;

    fn status(&self) -> Option<&ModelDeploymentStatus> {
        self.status.as_ref()
    }

    fn phase(status: &ModelDeploymentStatus) -> &'static str {
        status.phase.map(|p| p.as_str()).unwrap_or("New")
    }

    fn set_invalid(
        status: &mut ModelDeploymentStatus,
        reason: &str,
        message: &str,
        generation: Option<i64>,
        now: Timestamp,
    ) {
        status.observed_generation = generation;
        set_invalid(status, reason, message, generation, now);
    }

    fn reconcile(
        md: Arc<ModelDeployment>,
        ctx: Arc<Context>,
        current: ModelDeploymentStatus,
        now: Timestamp,
    ) -> impl Future<Output = Result<Action>> + Send {
        reconcile(md, ctx, current, now)
    }
}

/// Reconciles one ModelDeployment (the prelude ran in `reconciler::reconcile`): a spec that
/// cannot be acted on is reported once; a valid one whose version is known is stepped.
async fn reconcile(
    md: Arc<ModelDeployment>,
    ctx: Arc<Context>,
    current: ModelDeploymentStatus,
    now: Timestamp,
) -> Result<Action> {
    let settings = &ctx.shared.settings;
    let checked = validate(&md).and_then(|v| {
        check_prometheus_url(
            &md,
            &settings.allowed_prometheus_urls,
            &settings.prometheus_url,
        )?;
        super::reach::check(&md, &settings.reach)?;
        Ok(v)
    });
    let v = match checked {
        Ok(v) => v,
        Err(message) => {
            let held = (&current, md.meta().resource_version.as_deref());
            return invalid(&ctx.shared, md.as_ref(), held, "InvalidSpec", &message, now).await;
        }
    };
    if refused_at_this_generation(&md, &current) {
        // The API server refused a child built from this spec: one attempt, one condition,
        // one event; nothing more until the spec changes, whatever the reason it gave.
        return Ok(Action::await_change());
    }
    if still_taken(&md, &ctx, &v, &current).await? {
        return Ok(Action::requeue(NAME_TAKEN_RECHECK));
    }
    if let Some(action) = still_forbidden(&md, &ctx, &v, &current, now).await? {
        return Ok(action);
    }
    let desired = match resolve_desired(&md, &ctx.pipelines, &current) {
        Ok(d) => d,
        Err(message) => return waiting(&md, &ctx, &current, &message, now).await,
    };
    match step(&md, &ctx, &v, &desired, &current, now).await {
        Err(Error::Rejected(message)) => {
            let held = (&current, md.meta().resource_version.as_deref());
            invalid(&ctx.shared, md.as_ref(), held, REFUSED, &message, now).await
        }
        other => other,
    }
}

/// Whether the last attempt on this generation of the spec was refused by the API server.
fn refused_at_this_generation(md: &ModelDeployment, status: &ModelDeploymentStatus) -> bool {
    status.condition(super::status::READY).is_some_and(|c| {
        c.reason == REFUSED
            && c.observed_generation.is_some()
            && c.observed_generation == md.meta().generation
    })
}

/// The reason of a `Ready=False` condition for a spec whose children the API server refused.
const REFUSED: &str = "RejectedByAPIServer";

/// The reason of a `Ready=False` condition while a child's name is held by an object that
/// this ModelDeployment did not create.
const NAME_TAKEN: &str = "NameTaken";

/// How often a taken name is looked at again (the other object is not watched).
const NAME_TAKEN_RECHECK: Duration = Duration::from_secs(15);

/// The reason of a `Ready=False` condition while the ServiceAccount that writes this
/// ModelDeployment's children (see `tenancy`) may not write them.
const FORBIDDEN: &str = "Forbidden";

/// How often writes the namespace's RBAC refused are tried again (RBAC is not watched).
const FORBIDDEN_RECHECK: Duration = Duration::from_secs(15);

/// When the last pass on this generation was refused by RBAC: tries the children's writes
/// again, on the status the API server holds, before anything else. Still refused for the
/// same reason: nothing is written to status and no event is sent, so a waiting
/// ModelDeployment costs a few refused writes per recheck; refused for another reason: that
/// is reported. `None` when the writes went through (or were not refused): the pass goes on.
async fn still_forbidden(
    md: &ModelDeployment,
    ctx: &Context,
    v: &Validated,
    status: &ModelDeploymentStatus,
    now: Timestamp,
) -> Result<Option<Action>> {
    let was_forbidden = status
        .condition(super::status::READY)
        .is_some_and(|c| c.reason == FORBIDDEN && c.observed_generation == md.meta().generation);
    if !was_forbidden {
        return Ok(None);
    }
    let route = traffic::observe(&ctx.shared.client, md).await?;
    if traffic::taken(md, &route).is_some() {
        return Ok(None);
    }
    let shadowing = desired::shadow_version(md, status).is_some();
    let retried = match apply_children(md, ctx, v, status).await {
        Ok(()) => {
            let writer = ctx.shared.writer(md)?;
            traffic::converge(md, &writer, &route, shadowing, now)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    };
    match retried {
        // The same refusal sets the same condition: `invalid` writes nothing then.
        Err(Error::Forbidden(message)) => {
            let held = (status, md.meta().resource_version.as_deref());
            Ok(Some(forbidden(md, ctx, held, &message, now).await?))
        }
        _ => Ok(None),
    }
}

/// Reports that the namespace's RBAC refused a write of a child (a condition and a Warning
/// event when it starts or its message changes), and looks again later.
async fn forbidden(
    md: &ModelDeployment,
    ctx: &Context,
    held: (&ModelDeploymentStatus, Option<&str>),
    message: &str,
    now: Timestamp,
) -> Result<Action> {
    invalid(&ctx.shared, md, held, FORBIDDEN, message, now).await?;
    Ok(Action::requeue(FORBIDDEN_RECHECK))
}

/// Whether the last pass on this generation found a child's name taken and it still is:
/// the names of the children `status` asks for, and the provider's route, looked up again.
/// Read-only, so a waiting ModelDeployment costs a few reads per recheck and no write.
async fn still_taken(
    md: &ModelDeployment,
    ctx: &Context,
    v: &Validated,
    status: &ModelDeploymentStatus,
) -> Result<bool> {
    let was_taken = status
        .condition(super::status::READY)
        .is_some_and(|c| c.reason == NAME_TAKEN && c.observed_generation == md.meta().generation);
    if !was_taken {
        return Ok(false);
    }
    if traffic::taken(md, &traffic::observe(&ctx.shared.client, md).await?).is_some() {
        return Ok(true);
    }
    let cfg = ChildConfig {
        router_image: ctx.shared.settings.router_image.clone(),
    };
    let want = children(md, &v.template, v.container, status, &cfg);
    let ns = md.namespace().unwrap_or_default();
    let client = ctx.shared.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for d in &want.deployments {
        if reconciler::taken(&deployments, md, &ctx.deployments, &ns, &d.name_any()).await? {
            return Ok(true);
        }
    }
    let services: Api<Service> = Api::namespaced(client, &ns);
    for s in &want.services {
        if reconciler::taken(&services, md, &ctx.services, &ns, &s.name_any()).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Observe → decide → commit → converge → report, for a valid spec whose version is known.
async fn step(
    md: &ModelDeployment,
    ctx: &Context,
    v: &Validated,
    desired: &VersionRef,
    current: &ModelDeploymentStatus,
    now: Timestamp,
) -> Result<Action> {
    let seen = observe(md, ctx, v, current, now).await?;
    let Decision {
        status: mut next,
        transitions,
        awaiting_approval,
    } = phase::decide(&seen.inputs(md, v, desired, now));
    capture_outgoing_baseline(md, ctx, v, &seen, current, &mut next, now).await;

    // Conditions from what the children were last seen doing. The provider's route is only
    // read here; like every child it changes after the status is written.
    let shadowing = desired::shadow_version(md, &next).is_some();
    let route = traffic::observe(&ctx.shared.client, md).await?;
    let mut observed = seen.observed(md, &next, traffic::state(md, &route, shadowing));
    observed.awaiting_approval = awaiting_approval;
    next.observed_generation = md.meta().generation;
    set_conditions(&mut next, &observed, md.meta().generation, now);
    let written = commit(md, ctx, current, &next, &observed).await?;

    // Children follow the status that was just written; none is applied while one of their
    // names (the provider's route included) belongs to an object someone else made.
    let applied = match traffic::taken(md, &route) {
        Some(taken) => Err(taken),
        None => apply_children(md, ctx, v, &next).await,
    };
    match applied {
        Err(Error::Rejected(message)) => {
            // Reported on top of the status just written, which is what the API server holds.
            let written = written.as_deref();
            return invalid(&ctx.shared, md, (&next, written), REFUSED, &message, now).await;
        }
        Err(Error::NotOwned(message)) => {
            let written = written.as_deref();
            invalid(&ctx.shared, md, (&next, written), NAME_TAKEN, &message, now).await?;
            // Their object is not watched: look again later for it to be renamed or deleted.
            return Ok(Action::requeue(NAME_TAKEN_RECHECK));
        }
        Err(Error::Forbidden(message)) => {
            return forbidden(md, ctx, (&next, written.as_deref()), &message, now).await;
        }
        other => other?,
    }
    let writer = ctx.shared.writer(md)?;
    // A refusal found (or cleared) by this apply is reported by the next pass, at once.
    let traffic_changed = match traffic::converge(md, &writer, &route, shadowing, now).await {
        Err(Error::Forbidden(message)) => {
            return forbidden(md, ctx, (&next, written.as_deref()), &message, now).await;
        }
        other => other?,
    };
    // The provider only changes with the spec: look for another provider's leftovers then.
    if current.observed_generation != md.meta().generation {
        match traffic::remove_others(&ctx.shared.client, &writer, md).await {
            Err(Error::Forbidden(message)) => {
                return forbidden(md, ctx, (&next, written.as_deref()), &message, now).await;
            }
            other => other?,
        }
    }

    report(md, ctx, &next, awaiting_approval, &transitions, now).await;
    ctx.shared.backoff.reset(&key(md));
    let mut wakeup = next_wakeup(&next, v, ctx.shared.settings.resync, now);
    // A provider whose CRDs are missing may be installed any moment: look again soon.
    if observed.traffic.is_err() {
        wakeup = wakeup.min(traffic::RECHECK);
    }
    if traffic_changed {
        wakeup = Duration::ZERO;
    }
    Ok(Action::requeue(wakeup))
}

/// What one pass read: the stable track's Deployment, the router's, the analysis (with a
/// measurement when one was due) and the annotations people act through.
struct Seen {
    stable_track: TrackRollout,
    shadow_track: TrackRollout,
    stable_dep: Option<Arc<Deployment>>,
    router_dep: Option<Arc<Deployment>>,
    status: ModelDeploymentStatus,
    metrics: Vec<AnalysisMetric>,
    prometheus_url: String,
    metrics_read: Option<std::result::Result<(), String>>,
    summary: AnalysisSummary,
    annotations: Annotations,
}

impl Seen {
    fn inputs<'a>(
        &'a self,
        md: &ModelDeployment,
        v: &Validated,
        desired: &'a VersionRef,
        now: Timestamp,
    ) -> Inputs<'a> {
        Inputs {
            now,
            desired,
            status: &self.status,
            shadow_enabled: md.spec.shadow.enabled,
            promotion: md.spec.shadow.promotion,
            min_duration: v.min_duration,
            min_requests: md.spec.shadow.min_requests,
            bake_time: v.bake_time,
            history_limit: usize::try_from(md.spec.revision_history_limit).unwrap_or(10),
            annotations: &self.annotations,
            stable_track: &self.stable_track,
            shadow_track: &self.shadow_track,
            shadow_settle: phase::SHADOW_SETTLE,
            analysis: &self.summary,
        }
    }

    /// What the conditions are set from, once `next` is decided.
    fn observed(
        &self,
        md: &ModelDeployment,
        next: &ModelDeploymentStatus,
        traffic: std::result::Result<String, traffic::TrafficError>,
    ) -> Observed {
        let stable_version = next.stable.as_ref().map(|s| s.version.clone());
        let builtin = md.spec.traffic.provider == crate::api::TrafficProvider::Builtin;
        Observed {
            stable_available: self.stable_dep.as_deref().is_some_and(rollout_complete)
                && self.stable_track.version == stable_version,
            router_available: builtin.then(|| {
                self.router_dep.as_deref().is_some_and(|d| {
                    d.status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0)
                        > 0
                })
            }),
            traffic,
            metrics: self.metrics_read.clone(),
            awaiting_approval: false,
        }
    }
}

/// Reads the children from the caches and measures when a measurement is due. Writes nothing.
async fn observe(
    md: &ModelDeployment,
    ctx: &Context,
    v: &Validated,
    current: &ModelDeploymentStatus,
    now: Timestamp,
) -> Result<Seen> {
    let ns = md.namespace().unwrap_or_default();
    let get_dep = |name: String| {
        ctx.deployments
            .get(&ns, &name)
            .filter(|d| owned_by(d.as_ref(), md))
    };
    let rollout = |dep: Option<&Deployment>| TrackRollout {
        version: dep.and_then(deployment_version),
        complete: dep.is_some_and(rollout_complete),
        failed: dep.is_some_and(rollout_failed),
    };
    let stable_dep = get_dep(track_name(md, Track::Stable));
    let stable_track = rollout(stable_dep.as_deref());
    let shadow_track = rollout(get_dep(track_name(md, Track::Shadow)).as_deref());
    let metrics = defaults::effective_metrics(md);
    let own_url = md.spec.analysis.prometheus_url.clone();
    // A URL from the spec that cannot be used is the spec's fault; the operator's own
    // `--prometheus-url` is checked at start-up, and anything it still refuses is the
    // operator's configuration: retried and logged, never blamed on the spec.
    let spec_names_url = own_url.is_some();
    let prometheus_url = own_url.unwrap_or_else(|| ctx.shared.settings.prometheus_url.clone());

    let mut status = current.clone();
    let mut metrics_read = None;
    // Not before the window opens: a shadow's starts once its pods are ready.
    let analysing = matches!(
        status.phase,
        Some(DeploymentPhase::Shadowing) | Some(DeploymentPhase::Baking)
    ) && status
        .analysis
        .as_ref()
        .is_some_and(|a| phase::analysis_open(a, now));
    if analysing && measurement_due(status.analysis.as_ref(), v.interval, now) {
        let source = ctx
            .prometheus
            .get(&prometheus_url)
            .map_err(|e| match spec_names_url {
                true => Error::InvalidSpec(format!("spec.analysis.prometheusUrl: {e}")),
                false => Error::Config(format!("the operator's --prometheus-url: {e}")),
            })?;
        let previous = status.analysis.clone().unwrap_or_default();
        let measured = measure(md, v, &source, &metrics, &status, &previous, now).await;
        metrics_read = Some(match &measured.unavailable {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        });
        export(ctx, md, &measured.status);
        status.analysis = Some(measured.status);
    }
    let analysis_phase = if status.phase == Some(DeploymentPhase::Baking) {
        AnalysisPhase::Baking
    } else {
        AnalysisPhase::Shadowing
    };
    let summary = summarize(
        &metrics,
        status
            .analysis
            .as_ref()
            .unwrap_or(&AnalysisStatus::default()),
        analysis_phase,
    );
    Ok(Seen {
        stable_track,
        shadow_track,
        router_dep: get_dep(desired::router_name(md)),
        stable_dep,
        status,
        metrics,
        prometheus_url,
        metrics_read,
        summary,
        annotations: Annotations::from_map(md.annotations()),
    })
}

/// Without a shadow there is no recorded production value to bake against: measure the
/// outgoing stable version once, while it still serves.
async fn capture_outgoing_baseline(
    md: &ModelDeployment,
    ctx: &Context,
    v: &Validated,
    seen: &Seen,
    current: &ModelDeploymentStatus,
    next: &mut ModelDeploymentStatus,
    now: Timestamp,
) {
    let entering_promotion = next.phase == Some(DeploymentPhase::Promoting)
        && current.phase != Some(DeploymentPhase::Promoting);
    if entering_promotion
        && next
            .analysis
            .as_ref()
            .is_none_or(|a| a.metrics.iter().all(|m| m.stable_value.is_none()))
        && let (Ok(source), Some(previous)) = (
            ctx.prometheus.get(&seen.prometheus_url),
            next.previous.clone(),
        )
    {
        next.analysis = Some(capture_baseline(md, v, &source, &seen.metrics, &previous, now).await);
    }
}

/// Writes the decided status (conditional on what was read), and announces traffic that
/// cannot be set up when it starts or when its reason changes.
async fn commit(
    md: &ModelDeployment,
    ctx: &Context,
    current: &ModelDeploymentStatus,
    next: &ModelDeploymentStatus,
    observed: &Observed,
) -> Result<Option<String>> {
    let read = md.meta().resource_version.as_deref();
    let written = write_status(&ctx.shared, md, read, current, next).await?;
    if let Err((reason, message)) = &observed.traffic {
        let before = current.condition(super::status::TRAFFIC_CONFIGURED);
        if before.is_none_or(|c| c.status != "False" || c.reason != *reason) {
            ctx.shared
                .event(md, true, reason, "ConfigureTraffic", message.clone())
                .await;
        }
    }
    Ok(written)
}

/// Each transition as a metric, a log line and an event; the phase and a wait for approval
/// as metrics.
async fn report(
    md: &ModelDeployment,
    ctx: &Context,
    status: &ModelDeploymentStatus,
    awaiting_approval: bool,
    transitions: &[phase::Transition],
    now: Timestamp,
) {
    let (ns, name) = (md.namespace().unwrap_or_default(), md.name_any());
    let metrics = &ctx.shared.metrics;
    metrics.deployment_seen(&ns, &name);
    if let Some(phase) = status.phase {
        metrics.deployment_phase(&ns, &name, phase);
    }
    // The status does not record when the wait began: the first reconciliation that sees it.
    metrics.awaiting_approval(
        crate::metrics::Kind::ModelDeployment,
        &ns,
        &name,
        awaiting_approval,
        None,
        now,
    );
    for t in transitions {
        if let Some(decision) = t.decision {
            metrics.transitions.inc(&ns, &name, decision);
        }
        if let Some((phase, took)) = t.left {
            ctx.shared
                .metrics
                .phase_duration
                .with_label_values(&[phase.as_str()])
                .observe(took.as_secs_f64());
        }
        tracing::info!(reason = t.reason.as_str(), message = %t.message, "decision");
        ctx.shared
            .event(
                md,
                t.warning,
                t.reason.as_str(),
                &t.action(),
                t.message.clone(),
            )
            .await;
    }
}

/// The version the spec asks for: fixed, or the pipeline's latest approved candidate.
fn resolve_desired(
    md: &ModelDeployment,
    pipelines: &Store<Guarded<ModelPipeline>>,
    current: &ModelDeploymentStatus,
) -> Result<VersionRef, String> {
    if let Some(model) = &md.spec.model {
        return Ok(VersionRef {
            version: model.version.clone(),
            artifact: model.artifact.clone(),
            since: None,
        });
    }
    let Some(from) = &md.spec.model_from else {
        return Err("spec has neither model nor modelFrom".into());
    };
    let ns = md.namespace().unwrap_or_default();
    let approved = pipelines
        .get(&ObjectRef::new(&from.pipeline).within(&ns))
        .and_then(|p| p.valid()?.status?.latest_approved);
    match approved {
        Some(c) => Ok(VersionRef {
            version: c.version,
            artifact: c.artifact,
            since: None,
        }),
        // Keep serving what was last resolved rather than tear production down.
        None if current.desired.is_some() => Ok(current.desired.clone().unwrap_or_default()),
        None if pipelines
            .get(&ObjectRef::new(&from.pipeline).within(&ns))
            .is_none() =>
        {
            Err(format!(
                "waiting for ModelPipeline {ns}/{} to exist",
                from.pipeline
            ))
        }
        None => Err(format!(
            "waiting for ModelPipeline {ns}/{} to approve a candidate",
            from.pipeline
        )),
    }
}

fn measurement_due(analysis: Option<&AnalysisStatus>, interval: Duration, now: Timestamp) -> bool {
    let last = analysis.and_then(|a| a.last_measured_at);
    match last {
        None => true,
        Some(t) => now.duration_since(t).as_secs_f64() >= interval.as_secs_f64() * 0.95,
    }
}

async fn measure<S: analysis::prometheus::MetricsSource>(
    md: &ModelDeployment,
    v: &Validated,
    source: &S,
    metrics: &[crate::api::AnalysisMetric],
    status: &ModelDeploymentStatus,
    previous: &AnalysisStatus,
    now: Timestamp,
) -> analysis::Measured {
    let name = md.name_any();
    let namespace = md.namespace().unwrap_or_default();
    let candidate = status.candidate.clone().unwrap_or_default();
    let stable = status.stable.clone().unwrap_or_default();
    let baking = status.phase == Some(DeploymentPhase::Baking);
    // While baking, the previous version answers mirrored copies on the shadow track (see
    // `desired::shadow_version`): the live reference. Without a shadow, the value recorded
    // for it is.
    let live_reference = if baking {
        desired::shadow_version(md, status).map(|previous| ("shadow", previous.version.clone()))
    } else {
        Some(("stable", stable.version.clone()))
    };
    let since_start = phase::analysis_start(previous)
        .and_then(|t| Duration::try_from(now.duration_since(t)).ok());
    let elapsed = since_start.unwrap_or_default();
    let window = promql_range(judged_window(v.window, since_start));
    let builtin = md.spec.traffic.provider == crate::api::TrafficProvider::Builtin;
    let requests_query = (builtin && !baking).then(|| {
        crate::analysis::template::render(
            &defaults::shadow_requests_query(&promql_range(elapsed)),
            &crate::analysis::template::Vars {
                name: &name,
                namespace: &namespace,
                track: "shadow",
                version: "",
                window: &window,
            },
        )
    });
    let target = analysis::Target {
        name: &name,
        namespace: &namespace,
        window: &window,
        phase: if baking {
            AnalysisPhase::Baking
        } else {
            AnalysisPhase::Shadowing
        },
        // While baking the candidate is what the stable track serves.
        track: if baking { "stable" } else { "shadow" },
        version: &candidate.version,
        reference: live_reference.as_ref().map(|(t, v)| (*t, v.as_str())),
        requests_query,
    };
    let mut measured = analysis::measure(source, metrics, &target, previous, now).await;
    if !builtin {
        // Without the router's request count, the fewest samples any metric stood on.
        measured.status.requests = measured
            .status
            .metrics
            .iter()
            .filter_map(|m| m.samples)
            .reduce(f64::min);
    }
    measured
}

/// The range the queries look back over: the analysis window, but never back before the
/// phase started, when the tracks served other versions (the version a bake just replaced,
/// the previous occupant of the shadow track in its last seconds). At least 1 s: Prometheus
/// refuses an empty range, and a range shorter than two scrapes is simply no data yet.
fn judged_window(window: Duration, since_start: Option<Duration>) -> Duration {
    match since_start {
        Some(elapsed) => window.min(elapsed.max(Duration::from_secs(1))),
        None => window,
    }
}

/// Measures the outgoing stable version once, so a bake without a shadow has a reference.
async fn capture_baseline<S: analysis::prometheus::MetricsSource>(
    md: &ModelDeployment,
    v: &Validated,
    source: &S,
    metrics: &[crate::api::AnalysisMetric],
    previous: &VersionRef,
    now: Timestamp,
) -> AnalysisStatus {
    let name = md.name_any();
    let namespace = md.namespace().unwrap_or_default();
    let window = promql_range(v.window);
    let target = analysis::Target {
        name: &name,
        namespace: &namespace,
        window: &window,
        phase: AnalysisPhase::Baking,
        track: "stable",
        version: &previous.version,
        reference: None,
        requests_query: None,
    };
    let measured =
        analysis::measure(source, metrics, &target, &AnalysisStatus::default(), now).await;
    AnalysisStatus {
        metrics: measured
            .status
            .metrics
            .into_iter()
            .map(|m| MetricStatus {
                name: m.name,
                stable_value: m.value,
                ..MetricStatus::default()
            })
            .collect(),
        ..AnalysisStatus::default()
    }
}

/// Exports the latest measured values.
fn export(ctx: &Context, md: &ModelDeployment, analysis: &AnalysisStatus) {
    let ns = md.namespace().unwrap_or_default();
    let name = md.name_any();
    for m in &analysis.metrics {
        if m.measured_at != analysis.last_measured_at {
            continue;
        }
        if let Some(verdict) = m.verdict {
            ctx.shared
                .metrics
                .analysis_verdicts
                .with_label_values(&[&verdict.to_string()])
                .inc();
        }
        for (series, value) in [("judged", m.value), ("reference", m.stable_value)] {
            let gauge = ctx
                .shared
                .metrics
                .analysis_value
                .with_label_values(&[&ns, &name, &m.name, series]);
            gauge.set(value.unwrap_or(f64::NAN));
        }
    }
}

/// When to look again: at the next measurement while analysing, soon while promoting, and
/// at the resync period otherwise (watches wake it up earlier).
fn next_wakeup(
    status: &ModelDeploymentStatus,
    v: &Validated,
    resync: Duration,
    now: Timestamp,
) -> Duration {
    match status.phase {
        Some(DeploymentPhase::Shadowing) | Some(DeploymentPhase::Baking)
            if status
                .analysis
                .as_ref()
                .is_some_and(|a| !phase::analysis_open(a, now)) =>
        {
            // The shadow's pods wake the controller when they turn ready; then the window
            // opens at its start.
            let opens = status
                .analysis
                .as_ref()
                .and_then(phase::analysis_start)
                .and_then(|t| Duration::try_from(t.duration_since(now)).ok());
            opens.map_or(resync, |d| d.max(Duration::from_millis(100)))
        }
        Some(DeploymentPhase::Shadowing) | Some(DeploymentPhase::Baking) => {
            let last = status.analysis.as_ref().and_then(|a| a.last_measured_at);
            let wait = match last {
                Some(t) => v
                    .interval
                    .saturating_sub(Duration::try_from(now.duration_since(t)).unwrap_or_default()),
                None => Duration::ZERO,
            };
            wait.max(Duration::from_millis(500))
        }
        Some(DeploymentPhase::Promoting) => Duration::from_secs(5),
        _ => resync,
    }
}

async fn apply_children(
    md: &ModelDeployment,
    ctx: &Context,
    v: &Validated,
    status: &ModelDeploymentStatus,
) -> Result<()> {
    let cfg = ChildConfig {
        router_image: ctx.shared.settings.router_image.clone(),
    };
    let want = children(md, &v.template, v.container, status, &cfg);
    reconciler::apply(&ctx.shared, md, &ctx.deployments, &want.deployments).await?;
    reconciler::apply(&ctx.shared, md, &ctx.services, &want.services).await?;
    // The children computed are all this ModelDeployment has: any other it owns goes.
    let (deployments, services) = (names(&want.deployments), names(&want.services));
    prune(&ctx.shared, md, &ctx.deployments, |d| {
        deployments.contains(&d.name_any())
    })
    .await?;
    prune(&ctx.shared, md, &ctx.services, |s| {
        services.contains(&s.name_any())
    })
    .await?;
    Ok(())
}

async fn waiting(
    md: &ModelDeployment,
    ctx: &Context,
    current: &ModelDeploymentStatus,
    message: &str,
    now: Timestamp,
) -> Result<Action> {
    let mut next = current.clone();
    next.observed_generation = md.meta().generation;
    set_waiting(&mut next, message, md.meta().generation, now);
    let changed = &next != current;
    let read = md.meta().resource_version.as_deref();
    write_status(&ctx.shared, md, read, current, &next).await?;
    if changed {
        ctx.shared
            .event(md, false, "WaitingForModel", "Resolve", message.to_string())
            .await;
    }
    // The pipeline watch wakes this object when the pipeline changes.
    Ok(Action::requeue(ctx.shared.settings.resync))
}

#[cfg(test)]
mod tests {
    use super::judged_window;
    use std::time::Duration;

    #[test]
    fn the_window_never_reaches_back_before_the_phase_started() {
        let s = Duration::from_secs;
        let window = s(90);
        // Early in a phase: only what this phase's versions served.
        assert_eq!(judged_window(window, Some(s(20))), s(20));
        // Later: the whole window.
        assert_eq!(judged_window(window, Some(s(600))), window);
        // Right at the start: a range Prometheus accepts, with no data in it yet.
        assert_eq!(judged_window(window, Some(Duration::ZERO)), s(1));
        // Without a recorded start, the window as configured.
        assert_eq!(judged_window(window, None), window);
    }
}
