//! One watch and one cache per kind, shared by both controllers, with the indexes their
//! watch mappings look objects up by.
//!
//! Each kind is listed and watched once: its cache (a reflector store) is read by every
//! controller that needs it, and every object the watch touches (applied, deleted or
//! re-listed) is handed to each subscriber, a controller's trigger or child stream. kube's
//! own shared streams hand on applied objects only; a deleted child must wake its owner too.
use crate::compact::{Compact, Slim};
use crate::guarded::Guarded;
use crate::scope::{Scope, Watched};
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

use crate::api::{ModelDeployment, ModelPipeline};

/// Touched objects a subscriber may hold before the watch waits for it.
const SUBSCRIBER_BUFFER: usize = 1024;

type Hook<K> = Box<dyn Fn(&watcher::Event<K>) + Send + Sync>;

/// One kind's watch: its cache, its subscribers and what runs on each of its events.
pub struct Watch<K: Watched> {
    api: Api<K>,
    config: watcher::Config,
    store: Store<K>,
    writer: reflector::store::Writer<K>,
    subscribers: Vec<mpsc::Sender<K>>,
    hooks: Vec<Hook<K>>,
    by_owner: Option<Index<K>>,
}

impl<K: Watched> Watch<K>
where
    K::DynamicType: Default,
{
    pub fn new(api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        Self {
            api,
            config,
            store,
            writer,
            subscribers: Vec::new(),
            hooks: Vec::new(),
            by_owner: None,
        }
    }

    /// The cache, shared by every reader.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// A stream of every object the watch touches from now on, in the shape a controller's
    /// `for_stream`, `owns_stream` and `watches_stream` take.
    pub fn subscribe(
        &mut self,
    ) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static + use<K> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        self.subscribers.push(tx);
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|object| (Ok(object), rx))
        })
    }

    /// Calls `f` with each object the watch reports deleted (after the cache dropped it):
    /// without finalizers a deleted object is never reconciled again, so this is where what
    /// is kept about it goes.
    pub fn on_delete(&mut self, f: impl Fn(&K) + Send + Sync + 'static) {
        self.hooks.push(Box::new(move |event| {
            if let watcher::Event::Delete(object) = event {
                f(object);
            }
        }));
    }

    /// An index of this kind's objects by the keys `keys` gives each, kept up to date before
    /// any subscriber sees the event.
    pub fn index(&mut self, keys: fn(&K) -> Vec<String>) -> Index<K> {
        let index = Index {
            inner: Arc::default(),
            keys,
        };
        let kept = index.clone();
        let store = self.store.clone();
        self.hooks
            .push(Box::new(move |event| kept.apply(event, &store)));
        index
    }

    /// Watches until the task is dropped: the cache is written first, then the hooks run,
    /// then each subscriber gets the touched object (waiting while its buffer is full).
    pub async fn run(self) {
        let Self {
            api,
            config,
            writer,
            mut subscribers,
            hooks,
            ..
        } = self;
        let kind = K::kind(&K::DynamicType::default()).to_string();
        // Nothing reads managedFields, often a third of an object: the cache does not keep them.
        let mut events = watcher(api, config)
            .default_backoff()
            .modify(|object| object.managed_fields_mut().clear())
            .reflect(writer)
            .boxed();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    // The backoff paces these; a refused list (RBAC) must be seen.
                    tracing::warn!(%error, kind, "watch failed; retrying");
                    continue;
                }
            };
            dispatch(&hooks, &mut subscribers, event).await;
        }
    }
}

impl<K> Watch<Compact<K>>
where
    K: Slim + Watched,
{
    /// The cache with an index of its objects by owner (one index, however many readers).
    pub fn children(&mut self) -> Children<K> {
        let by_owner = match &self.by_owner {
            Some(index) => index.clone(),
            None => {
                let index = self.index(owner_uids::<Compact<K>>);
                self.by_owner = Some(index.clone());
                index
            }
        };
        Children {
            store: self.store(),
            by_owner,
        }
    }
}

/// Runs the hooks on `event`, then hands the object it touched to each subscriber.
async fn dispatch<K: Watched>(
    hooks: &[Hook<K>],
    subscribers: &mut Vec<mpsc::Sender<K>>,
    event: watcher::Event<K>,
) {
    for hook in hooks {
        hook(&event);
    }
    let object = match event {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) => o,
        watcher::Event::Init | watcher::Event::InitDone => return,
    };
    let mut gone = Vec::new();
    for (i, tx) in subscribers.iter().enumerate() {
        if tx.send(object.clone()).await.is_err() {
            gone.push(i);
        }
    }
    // A controller that stopped takes no more events.
    for i in gone.into_iter().rev() {
        subscribers.swap_remove(i);
    }
}

/// Objects of one kind by keys computed from each (for example `namespace/pipeline` for the
/// ModelDeployments that follow a pipeline), so that a watch mapping finds the objects an
/// event concerns without scanning the cache.
pub struct Index<K: Watched> {
    inner: Arc<RwLock<IndexState<K>>>,
    keys: fn(&K) -> Vec<String>,
}

impl<K: Watched> Clone for Index<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            keys: self.keys,
        }
    }
}

struct IndexState<K: Watched> {
    by_key: HashMap<String, HashSet<ObjectRef<K>>>,
    keys_of: HashMap<ObjectRef<K>, Vec<String>>,
}

impl<K: Watched> Default for IndexState<K> {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            keys_of: HashMap::new(),
        }
    }
}

impl<K: Watched> IndexState<K>
where
    K::DynamicType: Default,
{
    fn remove(&mut self, object: &ObjectRef<K>) {
        for key in self.keys_of.remove(object).unwrap_or_default() {
            if let Some(refs) = self.by_key.get_mut(&key) {
                refs.remove(object);
                if refs.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
    }

    fn insert(&mut self, object: &K, keys: Vec<String>) {
        let mut at = ObjectRef::from_obj(object);
        // Its uid and resourceVersion: compared by neither equality nor hash, held twice per
        // indexed object, and read by no one.
        at.extra = Default::default();
        self.remove(&at);
        for key in &keys {
            self.by_key
                .entry(key.clone())
                .or_default()
                .insert(at.clone());
        }
        if !keys.is_empty() {
            self.keys_of.insert(at, keys);
        }
    }
}

impl<K: Watched> Index<K>
where
    K::DynamicType: Default,
{
    /// The objects filed under `key`.
    pub fn get(&self, key: &str) -> Vec<ObjectRef<K>> {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        state
            .by_key
            .get(key)
            .map(|refs| refs.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether any object is filed under `key`.
    pub fn contains(&self, key: &str) -> bool {
        let state = self.inner.read().unwrap_or_else(|e| e.into_inner());
        state.by_key.contains_key(key)
    }

    fn apply(&self, event: &watcher::Event<K>, store: &Store<K>) {
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(object) => state.insert(object, (self.keys)(object)),
            watcher::Event::Delete(object) => state.remove(&ObjectRef::from_obj(object)),
            // A re-list replaced the cache: file what it holds now.
            watcher::Event::InitDone => {
                *state = IndexState::default();
                for object in store.state() {
                    state.insert(&object, (self.keys)(&object));
                }
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }
}

/// The uids of the objects that own `object`: what children are indexed by.
pub fn owner_uids<K: kube::Resource>(object: &K) -> Vec<String> {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .map(|r| r.uid.clone())
        .collect()
}

/// One kind of children: the cache (in compact form) and the index of its objects by owner.
pub struct Children<K: Slim + Watched> {
    store: Store<Compact<K>>,
    by_owner: Index<Compact<K>>,
}

impl<K: Slim + Watched> Clone for Children<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            by_owner: self.by_owner.clone(),
        }
    }
}

impl<K: Slim + Watched> Children<K> {
    /// A cache holding `objects`, as after a first list (for tests of what reads it).
    pub fn from_objects(objects: Vec<K>) -> Self
    where
        K: serde::Serialize,
    {
        let (store, mut writer) = reflector::store();
        let by_owner = Index {
            inner: Arc::default(),
            keys: owner_uids::<Compact<K>>,
        };
        for o in objects {
            let event = watcher::Event::Apply(Compact::new(&o));
            writer.apply_watcher_event(&event);
            by_owner.apply(&event, &store);
        }
        Self { store, by_owner }
    }

    /// The cached object `namespace/name`, whoever owns it, decoded.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.compact(namespace, name).map(|c| Arc::new(c.object()))
    }

    /// The cached object `namespace/name`, whoever owns it, as cached.
    pub fn compact(&self, namespace: &str, name: &str) -> Option<Arc<Compact<K>>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// The cached objects that name `uid` among their owners, as cached (their metadata is
    /// at hand; `object()` decodes the rest).
    pub fn owned_by(&self, uid: &str) -> Vec<Arc<Compact<K>>> {
        self.by_owner
            .get(uid)
            .iter()
            .filter_map(|r| self.store.get(r))
            .collect()
    }

    pub fn store(&self) -> &Store<Compact<K>> {
        &self.store
    }
}

/// The ModelDeployments' cache with the index of those that follow each pipeline: what a
/// pipeline reads of them, without decoding the others.
#[derive(Clone)]
pub struct ModelDeployments {
    store: Store<Guarded<ModelDeployment>>,
    followers: Index<Guarded<ModelDeployment>>,
}

impl ModelDeployments {
    /// What `caches` holds of them.
    pub fn new(caches: &Caches) -> Self {
        Self {
            store: caches.model_deployments.store(),
            followers: caches.followers.clone(),
        }
    }

    /// A cache holding `objects`, as after a first list (for tests of what reads it).
    pub fn from_objects(objects: Vec<ModelDeployment>) -> Self {
        let (store, mut writer) = reflector::store();
        let followers = Index {
            inner: Arc::default(),
            keys: crate::deployment::followed_pipeline,
        };
        for o in objects {
            let event = watcher::Event::Apply(Guarded::new(&o));
            writer.apply_watcher_event(&event);
            followers.apply(&event, &store);
        }
        Self { store, followers }
    }

    /// The ModelDeployments of `namespace` that follow pipeline `pipeline`, and the one
    /// named `also`, each once, as cached.
    pub fn following(
        &self,
        namespace: &str,
        pipeline: &str,
        also: Option<&str>,
    ) -> Vec<Arc<Guarded<ModelDeployment>>> {
        let mut refs = self.followers.get(&index_key(namespace, pipeline));
        if let Some(name) = also {
            let named = ObjectRef::new(name).within(namespace);
            if !refs.contains(&named) {
                refs.push(named);
            }
        }
        refs.iter().filter_map(|r| self.store.get(r)).collect()
    }

    pub fn store(&self) -> &Store<Guarded<ModelDeployment>> {
        &self.store
    }
}

/// `namespace/name`: how indexes name what they file objects under.
pub fn index_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Every kind the operator watches, each once.
pub struct Caches {
    pub model_deployments: Watch<Guarded<ModelDeployment>>,
    /// The ModelDeployments that follow each pipeline, by the pipeline's `namespace/name`.
    pub followers: Index<Guarded<ModelDeployment>>,
    pub pipelines: Watch<Guarded<ModelPipeline>>,
    /// Deployments and Services that carry `app.kubernetes.io/managed-by=modelship`: both
    /// controllers' children.
    pub deployments: Watch<Compact<Deployment>>,
    pub services: Watch<Compact<Service>>,
    /// The pipelines' Jobs and their stage pods (which hold the results).
    pub jobs: Watch<Compact<Job>>,
    pub pods: Watch<Compact<Pod>>,
    /// ConfigMaps' metadata only: a pipeline reads the one it names when it changes, so
    /// memory does not grow with the cluster's ConfigMaps.
    pub configmaps: Watch<PartialObjectMeta<ConfigMap>>,
}

impl Caches {
    pub fn new(scope: &Scope, client: &Client) -> Self {
        let all = watcher::Config::default;
        let children = || all().labels(crate::deployment::CHILD_SELECTOR);
        let mut model_deployments = Watch::new(scope.api(client), all());
        let followers = model_deployments.index(crate::deployment::followed_pipeline);
        Self {
            model_deployments,
            followers,
            pipelines: Watch::new(scope.api(client), all()),
            deployments: Watch::new(scope.api(client), children()),
            services: Watch::new(scope.api(client), children()),
            jobs: Watch::new(
                scope.api(client),
                all().labels(crate::pipeline::jobs::LABEL_PIPELINE),
            ),
            pods: Watch::new(
                scope.api(client),
                all().labels(&crate::pipeline::reconcile::stage_pod_selector()),
            ),
            configmaps: Watch::new(scope.api(client), all()),
        }
    }

    /// Runs every watch until the future is dropped. Subscribe first.
    pub async fn run(self) {
        let Self {
            model_deployments,
            followers: _,
            pipelines,
            deployments,
            services,
            jobs,
            pods,
            configmaps,
        } = self;
        futures::join!(
            model_deployments.run(),
            pipelines.run(),
            deployments.run(),
            services.run(),
            jobs.run(),
            pods.run(),
            configmaps.run(),
        );
    }
}

/// The namespace and name of an object, as an index key.
pub fn key_of<K: ResourceExt>(object: &K) -> String {
    index_key(&object.namespace().unwrap_or_default(), &object.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::testing::sample;

    fn follows(md: &Guarded<ModelDeployment>) -> Vec<String> {
        md.valid()
            .as_ref()
            .and_then(|md| md.spec.model_from.as_ref())
            .map(|f| vec![index_key("models", &f.pipeline)])
            .unwrap_or_default()
    }

    fn following(pipeline: &str, name: &str) -> Guarded<ModelDeployment> {
        let mut md = sample();
        md.metadata.name = Some(name.into());
        md.metadata.namespace = Some("models".into());
        md.spec.model = None;
        md.spec.model_from =
            Some(serde_json::from_value(serde_json::json!({"pipeline": pipeline})).unwrap());
        Guarded::new(&md)
    }

    #[test]
    fn a_pipeline_finds_its_followers_and_the_deployment_it_names_each_once() {
        let plain = |name: &str| {
            let mut md = sample();
            md.metadata.name = Some(name.into());
            md.metadata.namespace = Some("models".into());
            md
        };
        let mds = ModelDeployments::from_objects(
            [
                following("fraud", "a"),
                following("fraud", "b"),
                following("churn", "c"),
            ]
            .iter()
            .map(|g| g.decode().unwrap())
            .chain([plain("serving"), plain("other")])
            .collect(),
        );
        let names = |found: Vec<Arc<Guarded<ModelDeployment>>>| {
            let mut names: Vec<String> = found.iter().map(|g| g.name_any()).collect();
            names.sort();
            names
        };
        assert_eq!(names(mds.following("models", "fraud", None)), ["a", "b"]);
        assert_eq!(
            names(mds.following("models", "fraud", Some("serving"))),
            ["a", "b", "serving"]
        );
        assert_eq!(
            names(mds.following("models", "fraud", Some("a"))),
            ["a", "b"]
        );
        assert_eq!(
            names(mds.following("other", "fraud", Some("missing"))),
            [] as [&str; 0]
        );
    }

    #[test]
    fn an_index_follows_applies_deletes_and_relists() {
        let (store, mut writer) = reflector::store::<Guarded<ModelDeployment>>();
        let index = Index {
            inner: Arc::default(),
            keys: follows,
        };
        let mut feed = |event: watcher::Event<Guarded<ModelDeployment>>| {
            writer.apply_watcher_event(&event);
            index.apply(&event, &store);
        };
        feed(watcher::Event::Apply(following("fraud", "a")));
        feed(watcher::Event::Apply(following("fraud", "b")));
        feed(watcher::Event::Apply(following("churn", "c")));
        let names = |key: &str| -> Vec<String> {
            let mut names: Vec<String> = index.get(key).into_iter().map(|r| r.name).collect();
            names.sort();
            names
        };
        assert_eq!(names("models/fraud"), ["a", "b"]);
        // b now follows another pipeline: it moves.
        feed(watcher::Event::Apply(following("churn", "b")));
        assert_eq!(names("models/fraud"), ["a"]);
        assert_eq!(names("models/churn"), ["b", "c"]);
        feed(watcher::Event::Delete(following("fraud", "a")));
        assert!(!index.contains("models/fraud"), "an empty key is dropped");
        // A re-list holds only c: b's entry goes with the old cache.
        feed(watcher::Event::Init);
        feed(watcher::Event::InitApply(following("churn", "c")));
        feed(watcher::Event::InitDone);
        assert_eq!(names("models/churn"), ["c"]);
        assert_eq!(index.inner.read().unwrap().keys_of.len(), 1);
    }

    #[tokio::test]
    async fn every_subscriber_sees_applied_and_deleted_objects_and_deletes_run_the_hooks() {
        let (client, _) = crate::mock_api::client(serde_json::Value::Null, |_, _| None);
        let mut watch: Watch<Guarded<ModelDeployment>> =
            Watch::new(Api::all(client), watcher::Config::default());
        let mut first = Box::pin(watch.subscribe());
        let mut second = Box::pin(watch.subscribe());
        let deleted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = deleted.clone();
        watch.on_delete(move |md| seen.lock().unwrap().push(md.name_any()));
        let dropped = watch.subscribe();
        drop(dropped);
        let (hooks, mut subscribers) = (watch.hooks, watch.subscribers);
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(following("fraud", "a")),
            watcher::Event::InitDone,
            watcher::Event::Apply(following("fraud", "b")),
            watcher::Event::Delete(following("fraud", "a")),
        ] {
            dispatch(&hooks, &mut subscribers, event).await;
        }
        assert_eq!(
            subscribers.len(),
            2,
            "a subscriber that went away is dropped"
        );
        for s in [&mut first, &mut second] {
            let mut names = Vec::new();
            for _ in 0..3 {
                names.push(s.next().await.unwrap().unwrap().name_any());
            }
            assert_eq!(names, ["a", "b", "a"]);
        }
        assert_eq!(*deleted.lock().unwrap(), ["a"]);
    }
}
