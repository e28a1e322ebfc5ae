//! One reconciliation of a ModelPipeline.
use super::validate::validate;
use crate::api::{ModelPipeline, ModelPipelineStatus, PipelinePhase};
use crate::conditions::{Status, set};
use crate::context::Shared;
use crate::{Error, Result};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub const CONTROLLER: &str = "pipeline";

/// What the pipeline controller's reconciliations share.
pub struct Context {
    pub shared: Shared,
}

pub fn key(p: &ModelPipeline) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

/// Reconciles one ModelPipeline.
#[tracing::instrument(skip_all, fields(controller = CONTROLLER, namespace = %p.namespace().unwrap_or_default(), name = %p.name_any()))]
pub async fn reconcile(p: Arc<ModelPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.shared.metrics.reconcile_started(CONTROLLER);
    if p.meta().deletion_timestamp.is_some() {
        ctx.shared.forget(&key(&p));
        return Ok(Action::await_change());
    }
    let now = jiff::Timestamp::now();
    let current = p.status.clone().unwrap_or_default();
    let mut next = current.clone();
    next.observed_generation = p.meta().generation;
    let generation = p.meta().generation;
    let verdict = validate(&p);
    match &verdict {
        Ok(()) => {
            next.phase.get_or_insert(PipelinePhase::Idle);
            set(&mut next.conditions, "Ready", Status::True, "Accepted", "the pipeline is valid", generation, now);
        }
        Err(message) => {
            set(&mut next.conditions, "Ready", Status::False, "InvalidSpec", message.clone(), generation, now);
        }
    }
    if next != current {
        write_status(&p, &ctx, &next).await?;
        if let Err(message) = &verdict {
            ctx.shared.event(p.as_ref(), true, "InvalidSpec", "Validate", message.clone()).await;
        }
    }
    ctx.shared.backoff.reset(&key(&p));
    Ok(match verdict {
        Ok(()) => Action::requeue(ctx.shared.settings.resync),
        Err(_) => Action::await_change(),
    })
}

async fn write_status(p: &ModelPipeline, ctx: &Context, next: &ModelPipelineStatus) -> Result<()> {
    let api: Api<ModelPipeline> = Api::namespaced(ctx.shared.client.clone(), &p.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelPipeline",
        "metadata": {"name": p.name_any(), "resourceVersion": p.meta().resource_version},
        "status": next,
    });
    let written = api.patch_status(&p.name_any(), &PatchParams::apply(crate::apply::FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    ctx.shared.wrote(&key(p), written.meta().resource_version.as_deref());
    Ok(())
}

/// Decides how a failed reconciliation is retried.
pub fn error_policy(p: Arc<ModelPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.shared.metrics.reconcile_failed(CONTROLLER, error);
    if error.is_permanent() {
        return Action::await_change();
    }
    if error.is_conflict() {
        return Action::requeue(Duration::from_millis(100));
    }
    let delay = ctx.shared.backoff.next_delay(&key(&p));
    tracing::warn!(%error, namespace = %p.namespace().unwrap_or_default(), name = %p.name_any(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}
