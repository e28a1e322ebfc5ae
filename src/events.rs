//! Events about our objects (events.k8s.io/v1), with repeats folded into a series.
//!
//! kube's `Recorder` folds every event with the same type, reason and action about an object
//! into the first one's series and keeps the first note, so five stages of a run starting
//! within minutes showed as one `StageStarted (x5)` that named only the first stage. Here an
//! event is a repeat only when its note is the same too; anything new is its own event.
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use std::collections::HashMap;
use std::sync::Mutex;

/// How long a published event may still be repeated (as kube's recorder and client-go do).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// What makes two events the same event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    warning: bool,
    reason: String,
    action: String,
    /// Kind, namespace, name and uid of the object the event is about.
    regarding: [Option<String>; 4],
    note: String,
}

/// A published event, as far as repeating it needs.
#[derive(Clone, Debug)]
struct Published {
    name: String,
    count: i32,
    last: Timestamp,
}

/// The write an event needs.
#[derive(Debug, PartialEq)]
enum Write {
    Create,
    /// A repeat of the event named: its series count becomes `count`.
    Repeat {
        name: String,
        count: i32,
    },
}

/// The events published lately, to tell a repeat from a new event.
#[derive(Default)]
struct Seen(HashMap<Key, Published>);

impl Seen {
    /// Forgets events older than the series window and says what `key` needs now.
    fn write_for(&mut self, key: &Key, now: Timestamp) -> Write {
        self.0.retain(|_, p| p.last + SERIES_WINDOW > now);
        match self.0.get(key) {
            Some(p) => Write::Repeat {
                name: p.name.clone(),
                count: p.count + 1,
            },
            None => Write::Create,
        }
    }

    fn record(&mut self, key: Key, published: Published) {
        self.0.insert(key, published);
    }
}

/// Publishes events as one controller.
pub struct EventLog {
    client: Client,
    reporter: Reporter,
    seen: Mutex<Seen>,
}

impl EventLog {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            seen: Mutex::default(),
        }
    }

    /// Publishes an event about `regarding`, or counts it again if the same event (same note
    /// too) was published within the series window.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Key {
            warning,
            reason: reason.into(),
            action: action.into(),
            regarding: [
                regarding.kind.clone(),
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ],
            note,
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), event_namespace(regarding));
        let write = self.seen().write_for(&key, now);
        let published = match write {
            Write::Repeat { name, count } => {
                let patch = serde_json::json!({
                    "series": EventSeries { count, last_observed_time: MicroTime(now) }
                });
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => Published {
                        name,
                        count,
                        last: now,
                    },
                    // Deleted meanwhile (the API server's event TTL, a user): a new one.
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        create(&api, &self.reporter, regarding, &key, now).await?
                    }
                    Err(e) => return Err(e),
                }
            }
            Write::Create => create(&api, &self.reporter, regarding, &key, now).await?,
        };
        self.seen().record(key, published);
        Ok(())
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // The map holds no invariant a panic elsewhere could break.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Creates the event `key` about `regarding` through `api` (its namespace's).
async fn create(
    api: &Api<Event>,
    reporter: &Reporter,
    regarding: &ObjectReference,
    key: &Key,
    now: Timestamp,
) -> Result<Published, kube::Error> {
    let event = new_event(reporter, regarding, key, now);
    api.create(&PostParams::default(), &event).await?;
    Ok(Published {
        name: event.metadata.name.unwrap_or_default(),
        count: 1,
        last: now,
    })
}

/// The namespace of events about `regarding`: its own (cluster-scoped objects: `default`).
fn event_namespace(regarding: &ObjectReference) -> &str {
    regarding.namespace.as_deref().unwrap_or("default")
}

/// A new event about `regarding`, in [`event_namespace`].
fn new_event(reporter: &Reporter, regarding: &ObjectReference, key: &Key, now: Timestamp) -> Event {
    let prefix = regarding.name.as_deref().unwrap_or(&reporter.controller);
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{prefix}.{:x}", now.as_nanosecond())),
            namespace: Some(event_namespace(regarding).into()),
            ..Default::default()
        },
        type_: Some(if key.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(key.reason.clone()),
        action: Some(key.action.clone()),
        note: Some(key.note.clone()),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str, note: &str) -> Key {
        Key {
            warning: false,
            reason: reason.into(),
            action: "Reconcile".into(),
            regarding: [
                Some("ModelPipeline".into()),
                Some("models".into()),
                Some("churn".into()),
                Some("u1".into()),
            ],
            note: note.into(),
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn published(name: &str, count: i32, last: Timestamp) -> Published {
        Published {
            name: name.into(),
            count,
            last,
        }
    }

    #[test]
    fn the_same_note_repeats_and_a_new_note_is_its_own_event() {
        let mut seen = Seen::default();
        let checks = key("StageStarted", "r1: checks started");
        assert_eq!(seen.write_for(&checks, at(0)), Write::Create);
        seen.record(checks.clone(), published("churn.1", 1, at(0)));
        // The next stage: same reason and action, another note.
        let validate = key("StageStarted", "r1: validate started");
        assert_eq!(seen.write_for(&validate, at(30)), Write::Create);
        // The same words again: the first event counts two.
        assert_eq!(
            seen.write_for(&checks, at(60)),
            Write::Repeat {
                name: "churn.1".into(),
                count: 2
            }
        );
        seen.record(checks.clone(), published("churn.1", 2, at(60)));
        // The window runs from the last repeat.
        assert!(matches!(
            seen.write_for(&checks, at(60 + 359)),
            Write::Repeat { count: 3, .. }
        ));
        assert_eq!(seen.write_for(&checks, at(60 + 360)), Write::Create);
        assert!(seen.0.is_empty(), "old events are forgotten");
    }

    #[test]
    fn another_object_type_or_action_is_another_event() {
        let mut seen = Seen::default();
        let k = key("Promoted", "v2 promoted");
        seen.record(k.clone(), published("churn.1", 1, at(0)));
        let mut other = k.clone();
        other.regarding[3] = Some("u2".into());
        assert_eq!(seen.write_for(&other, at(1)), Write::Create, "a new object");
        let mut other = k.clone();
        other.warning = true;
        assert_eq!(seen.write_for(&other, at(1)), Write::Create);
        let mut other = k.clone();
        other.action = "Promote v3".into();
        assert_eq!(seen.write_for(&other, at(1)), Write::Create);
    }

    #[test]
    fn a_new_event_names_its_object_reporter_and_time() {
        let reporter = Reporter {
            controller: "modelship-pipeline".into(),
            instance: Some("modelship-0".into()),
        };
        let regarding = ObjectReference {
            kind: Some("ModelPipeline".into()),
            namespace: Some("models".into()),
            name: Some("churn".into()),
            ..Default::default()
        };
        let k = key("StageStarted", "r1: checks started");
        let e = new_event(&reporter, &regarding, &k, at(0));
        assert_eq!(e.metadata.namespace.as_deref(), Some("models"));
        assert!(e.metadata.name.unwrap().starts_with("churn."));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(e.note.as_deref(), Some("r1: checks started"));
        assert_eq!(e.reporting_instance.as_deref(), Some("modelship-0"));
        assert_eq!(e.event_time, Some(MicroTime(at(0))));
        assert_eq!(e.series, None);
        let cluster = ObjectReference {
            name: Some("x".into()),
            ..Default::default()
        };
        let e = new_event(&reporter, &cluster, &k, at(0));
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
    }
}
