//! The skeleton both controllers share: the entry that splits objects that deserialized from
//! those that did not, the reconcile prelude, ownership, the conditional status write, the
//! one-time report of a spec that cannot be acted on, the retry policy and the run loop.
//!
//! A controller supplies what differs (its kind, its status type, how a spec that cannot be
//! acted on shows in its conditions, and its own observe → decide steps) through
//! [`Reconciled`]; everything written here exists once.
use crate::caches::Children;
use crate::compact::{Compact, Slim};
use crate::context::Shared;
use crate::guarded::{self, Guarded};
use crate::scope::Watched;
use crate::{Error, Result};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// A kind one controller reconciles.
pub trait Reconciled: Watched + Serialize + crate::compact::Slim {
    /// What the controller writes to the object's status.
    type Status: Clone + PartialEq + Default + Serialize + Send + Sync;
    /// What the controller's reconciliations share; holds the [`Shared`] part.
    type Context: AsRef<Shared> + Send + Sync + 'static;
    /// The controller's name in metrics, logs and spans.
    const CONTROLLER: &'static str;

    fn status(&self) -> Option<&Self::Status>;

    /// The phase a status is in, for the reconcile span.
    fn phase(status: &Self::Status) -> &'static str;

    /// Sets `status` to say that the spec cannot be acted on (`Ready=False` with `reason`)
    /// as observed at `generation`.
    fn set_invalid(
        status: &mut Self::Status,
        reason: &str,
        message: &str,
        generation: Option<i64>,
        now: Timestamp,
    );

    /// One reconciliation of an object that deserialized and is not being deleted, whose
    /// cached copy is current: observe → decide → commit → converge → report.
    fn reconcile(
        object: Arc<Self>,
        ctx: Arc<Self::Context>,
        current: Self::Status,
        now: Timestamp,
    ) -> impl Future<Output = Result<Action>> + Send;
}

/// `namespace/name`: what per-object state is kept under.
pub fn key<K: Resource>(object: &K) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// Whether `child` names `owner` in its owner references: only such children are read as
/// ours, deleted, or counted.
pub fn owned_by<C: Resource, O: Resource>(child: &C, owner: &O) -> bool {
    let uid = owner.meta().uid.as_deref();
    child
        .meta()
        .owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| Some(r.uid.as_str()) == uid))
}

/// The controller's entry: an object that did not deserialize is reported (see `guarded`);
/// one being deleted is forgotten (owner references garbage-collect its children); one
/// whose cached copy our own status write already replaced waits for the cache; the others
/// are reconciled, in a span that carries the controller, the object and its phase.
pub async fn reconcile<K: Reconciled>(
    object: Arc<Guarded<K>>,
    ctx: Arc<K::Context>,
) -> Result<Action> {
    let shared: &Shared = (*ctx).as_ref();
    let object = match object.decode() {
        Ok(object) => Arc::new(object),
        Err(invalid) => return Ok(guarded::report(shared, K::CONTROLLER, &object, &invalid).await),
    };
    let _timer = shared.metrics.reconcile_started(K::CONTROLLER);
    let key = key(object.as_ref());
    if object.meta().deletion_timestamp.is_some() {
        shared.forget(&key);
        return Ok(Action::await_change());
    }
    if !shared.caches_synced() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Our own status write is not in the cache yet: its watch event wakes this object (the
    // requeue is a fallback), so a slow API server does not make the controller spin.
    if shared.cache_is_stale(&key, object.meta().resource_version.as_deref()) {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let current = object.status().cloned().unwrap_or_default();
    let span = tracing::info_span!(
        "reconcile",
        controller = K::CONTROLLER,
        namespace = %object.namespace().unwrap_or_default(),
        name = %object.name_any(),
        phase = K::phase(&current),
    );
    K::reconcile(object, ctx.clone(), current, Timestamp::now())
        .instrument(span)
        .await
}

/// How a failed reconciliation is retried (see `Shared::retry`).
pub fn error_policy<K: Reconciled>(
    object: Arc<Guarded<K>>,
    error: &Error,
    ctx: Arc<K::Context>,
) -> Action {
    (*ctx)
        .as_ref()
        .retry(K::CONTROLLER, &key(object.as_ref()), error)
}

/// Runs `controller` until its shutdown, with the shared entry and retry policy.
pub async fn run<K: Reconciled>(controller: Controller<Guarded<K>>, ctx: Arc<K::Context>)
where
    K::Status: 'static,
{
    controller
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, controller = K::CONTROLLER, "reconcile");
            }
        })
        .await;
}

/// Writes `next` to the status when it differs from `current`, with `read` (the
/// resourceVersion the decision was taken on) as a precondition, so a decision taken on a
/// stale copy is refused (409) and retried on fresh data. Returns the resourceVersion after
/// the write.
pub async fn write_status<K: Reconciled>(
    shared: &Shared,
    object: &K,
    read: Option<&str>,
    current: &K::Status,
    next: &K::Status,
) -> Result<Option<String>> {
    if current == next {
        return Ok(read.map(str::to_string));
    }
    let api: Api<K> = Api::namespaced(
        shared.client.clone(),
        &object.namespace().unwrap_or_default(),
    );
    let written = crate::apply::apply_status(&api, &object.name_any(), read, next).await?;
    let rv = written.meta().resource_version.clone();
    shared.wrote(&key(object), read, rv.as_deref());
    Ok(rv)
}

/// The spec cannot be acted on: say why once (a condition, a log line, a Warning event), and
/// wait for it to change. `(current, read)`: the status the API server holds and its
/// resourceVersion.
pub async fn invalid<K: Reconciled>(
    shared: &Shared,
    object: &K,
    (current, read): (&K::Status, Option<&str>),
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Result<Action> {
    let mut next = current.clone();
    K::set_invalid(&mut next, reason, message, object.meta().generation, now);
    let changed = &next != current;
    write_status(shared, object, read, current, &next).await?;
    if changed {
        tracing::warn!(
            reason,
            message,
            "spec cannot be acted on; waiting for a change"
        );
        shared
            .event(object, true, reason, "Validate", message.to_string())
            .await;
    }
    shared.backoff.reset(&key(object));
    Ok(Action::await_change())
}

/// Applies each of `desired`, children of `owner`, unless its live copy already matches it
/// (the drift rule of `apply`): the one applier for every child kind. A live object of the
/// same name that this owner did not create (in the cache or, for one the cache does not hold,
/// on the API server) is left alone: the reconciliation fails with `NotOwned`, which the
/// caller reports.
pub async fn apply<K, O>(
    shared: &Shared,
    owner: &O,
    children: &Children<K>,
    desired: &[K],
) -> Result<()>
where
    K: Watched + Slim + Serialize,
    O: crate::tenancy::Tenant,
{
    let writer = shared.writer(owner)?;
    for d in desired {
        let ns = d.namespace().unwrap_or_default();
        // Looked up with the operator's own identity; written with the owner's (`tenancy`).
        let api: Api<K> = Api::namespaced(shared.client.clone(), &ns);
        let name = d.name_any();
        if taken(&api, owner, children, &ns, &name).await? {
            return Err(not_owned::<O>(K::kind(&()).as_ref(), &ns, &name));
        }
        let live = children.compact(&ns, &name);
        if shared
            .apply_child(&writer.api(&ns), d, live.map(|l| l.value()).as_ref())
            .await
            .map_err(|e| writer.error(e))?
        {
            tracing::debug!(kind = %K::kind(&()), name = %d.name_any(), "applied");
        }
    }
    Ok(())
}

/// Whether an object `ns`/`name` of this kind exists that `owner` did not create.
///
/// The caches hold only objects labelled as modelship's: a same-named object that someone
/// else made is invisible to them, and a forced apply would take it over (its selector
/// replaced, an owner reference added, so that deleting the owner garbage-collects it). So a
/// name the cache does not hold is looked up on the API server: one read, before creating.
pub async fn taken<K, O>(
    api: &Api<K>,
    owner: &O,
    children: &Children<K>,
    ns: &str,
    name: &str,
) -> Result<bool>
where
    K: Watched + Slim,
    O: Resource,
{
    Ok(match children.compact(ns, name) {
        Some(live) => !owned_by(live.as_ref(), owner),
        None => api
            .get_metadata_opt(name)
            .await?
            .is_some_and(|other| !owned_by(&other, owner)),
    })
}

/// The refusal to touch `kind` `ns`/`name`, which exists and was not created by the `O`
/// being reconciled.
pub fn not_owned<O: Resource<DynamicType = ()>>(kind: &str, ns: &str, name: &str) -> Error {
    Error::NotOwned(taken_message::<O>(kind, ns, name))
}

/// What a user reads when `kind` `ns`/`name` is someone else's object.
pub fn taken_message<O: Resource<DynamicType = ()>>(kind: &str, ns: &str, name: &str) -> String {
    format!(
        "{kind} {ns}/{name} already exists and was not created by this {}; modelship leaves it untouched: rename or delete it, or rename this {}",
        O::kind(&()),
        O::kind(&()),
    )
}

/// Deletes `owner`'s children of this kind that `keep` refuses. Only objects whose owner
/// references name `owner` are ever deleted.
pub async fn prune<K, O>(
    shared: &Shared,
    owner: &O,
    children: &Children<K>,
    keep: impl Fn(&Compact<K>) -> bool,
) -> Result<()>
where
    K: Watched + Slim,
    O: crate::tenancy::Tenant,
{
    let Some(uid) = owner.meta().uid.as_deref() else {
        return Ok(());
    };
    let mut writer = None;
    for child in children.owned_by(uid) {
        if keep(&child) {
            continue;
        }
        let writer = match &writer {
            Some(w) => w,
            None => writer.insert(shared.writer(owner)?),
        };
        let api: Api<K> = writer.api(&child.namespace().unwrap_or_default());
        if crate::apply::delete_if_exists(&api, &child.name_any())
            .await
            .map_err(|e| writer.error(e))?
        {
            tracing::info!(kind = %K::kind(&()), name = %child.name_any(), "deleted a child no longer wanted");
        }
    }
    Ok(())
}

/// The names of `desired`: what `prune` keeps when the desired set is complete.
pub fn names<K: Resource>(desired: &[K]) -> std::collections::HashSet<String> {
    desired.iter().map(|d| d.name_any()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    #[test]
    fn only_children_that_name_the_owners_uid_are_owned() {
        let mut owner = crate::deployment::testing::sample();
        owner.metadata.uid = Some("uid-1".into());
        let mut child = Deployment::default();
        assert!(!owned_by(&child, &owner));
        child.metadata.owner_references = Some(vec![OwnerReference {
            uid: "uid-2".into(),
            ..Default::default()
        }]);
        assert!(!owned_by(&child, &owner), "same name, another owner");
        child
            .metadata
            .owner_references
            .as_mut()
            .unwrap()
            .push(OwnerReference {
                uid: "uid-1".into(),
                ..Default::default()
            });
        assert!(owned_by(&child, &owner));
        owner.metadata.uid = None;
        assert!(
            !owned_by(&child, &owner),
            "an owner without a uid owns nothing"
        );
    }

    #[test]
    fn keys_are_namespace_and_name() {
        let owner = crate::deployment::testing::sample();
        assert_eq!(
            key(&owner),
            format!("{}/{}", owner.namespace().unwrap(), owner.name_any())
        );
    }

    fn owned(name: &str, uid: Option<&str>) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = Some(name.into());
        d.metadata.namespace = Some("models".into());
        d.metadata.owner_references = uid.map(|uid| {
            vec![OwnerReference {
                uid: uid.into(),
                ..Default::default()
            }]
        });
        d
    }

    #[tokio::test]
    async fn prune_deletes_only_the_owners_children_that_are_not_kept() {
        let (client, sent) = crate::mock_api::client(serde_json::Value::Null, |_, _| None);
        let shared = crate::mock_api::shared(client, "deployment");
        let mut owner = crate::deployment::testing::sample();
        owner.metadata.uid = Some("uid-1".into());
        let children = Children::from_objects(vec![
            owned("fraud-stable", Some("uid-1")),
            owned("fraud-shadow", Some("uid-1")),
            owned("fraud-router", Some("uid-2")),
            owned("fraud-canary", None),
        ]);
        let keep = names(&[owned("fraud-stable", None)]);
        prune(&shared, &owner, &children, |d| keep.contains(&d.name_any()))
            .await
            .unwrap();
        assert_eq!(
            crate::mock_api::writes(&sent.lock().unwrap()),
            ["DELETE /apis/apps/v1/namespaces/models/deployments/fraud-shadow"],
            "another owner's object and an object without owner are never deleted"
        );
    }

    /// `apply` of owner uid-1's `fraud-stable` over the cache `children`, against a mock API
    /// server that answers with `answer`: what it returned and the writes it sent.
    async fn apply_fraud_stable(
        children: Vec<Deployment>,
        answer: fn(&str, &str) -> crate::mock_api::Answer,
    ) -> (Result<()>, Vec<String>) {
        let (client, sent) = crate::mock_api::client(serde_json::Value::Null, answer);
        let shared = crate::mock_api::shared(client, "deployment");
        let mut owner = crate::deployment::testing::sample();
        owner.metadata.uid = Some("uid-1".into());
        let children = Children::from_objects(children);
        let result = apply(
            &shared,
            &owner,
            &children,
            &[owned("fraud-stable", Some("uid-1"))],
        )
        .await;
        let writes = crate::mock_api::writes(&sent.lock().unwrap());
        (result, writes)
    }

    #[tokio::test]
    async fn apply_leaves_an_object_another_owner_holds_and_says_which() {
        let other_owners = vec![owned("fraud-stable", Some("uid-2"))];
        let (result, writes) = apply_fraud_stable(other_owners, |_, _| None).await;
        assert!(
            matches!(&result, Err(Error::NotOwned(m)) if m.contains("Deployment models/fraud-stable already exists and was not created by this ModelDeployment")),
            "{result:?}"
        );
        assert!(writes.is_empty(), "nothing is written: {writes:?}");
    }

    #[tokio::test]
    async fn apply_leaves_a_same_named_object_the_caches_cannot_see() {
        // Someone's own Deployment, without modelship's labels: the cache does not hold it.
        let (result, writes) = apply_fraud_stable(vec![], |method, path| {
            (method == "GET" && path.ends_with("/deployments/fraud-stable")).then(|| {
                let theirs = serde_json::json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": {"name": "fraud-stable", "namespace": "models", "uid": "theirs"},
                });
                (200, theirs)
            })
        })
        .await;
        assert!(
            matches!(&result, Err(Error::NotOwned(m)) if m.contains("Deployment models/fraud-stable already exists and was not created by this ModelDeployment; modelship leaves it untouched")),
            "{result:?}"
        );
        assert!(writes.is_empty(), "their object is not written: {writes:?}");
    }

    #[tokio::test]
    async fn apply_creates_a_child_no_one_has_taken_the_name_of() {
        let (result, writes) = apply_fraud_stable(vec![], |_, _| None).await;
        result.unwrap();
        assert_eq!(
            writes,
            ["PATCH /apis/apps/v1/namespaces/models/deployments/fraud-stable"]
        );
    }

    #[tokio::test]
    async fn nothing_is_decided_before_every_cache_has_its_first_list() {
        let (client, sent) = crate::mock_api::client(serde_json::Value::Null, |_, _| None);
        let ctx = std::sync::Arc::new(crate::deployment::reconcile::Context {
            shared: crate::mock_api::shared(client, "deployment"),
            deployments: Children::from_objects(vec![]),
            services: Children::from_objects(vec![]),
            pipelines: crate::mock_api::store(vec![]),
            prometheus: crate::analysis::prometheus::Clients::new(Duration::from_secs(1)),
        });
        // A restarted operator whose child caches are still listing.
        ctx.shared
            .synced_flag()
            .store(false, std::sync::atomic::Ordering::Release);
        let md = std::sync::Arc::new(crate::deployment::testing::sample());
        let action = crate::mock_api::reconcile(md, ctx).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(1)));
        assert!(
            sent.lock().unwrap().is_empty(),
            "no request before the caches are synced"
        );
    }
}
