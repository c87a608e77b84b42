//! Writes core/v1 Events off the caller's path, as upstream's event broadcaster does: a
//! repeat of the same reason and message about the same object bumps the earlier event's
//! count and lastTimestamp. When the API is slow, events are dropped rather than slowing the
//! component that records them.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

/// One event to write.
struct Record {
    regarding: ObjectReference,
    type_: &'static str,
    reason: String,
    action: &'static str,
    message: String,
}

/// A component's event recorder (cheap to clone; one writer task behind it).
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Record>,
}

impl Recorder {
    /// Starts the writer: events are reported by `component` (its source and
    /// reportingComponent), from `instance` (none when empty, as upstream's controllers).
    pub fn spawn(client: kube::Client, component: &str, instance: String) -> Recorder {
        let (tx, mut rx) = mpsc::channel::<Record>(4096);
        let component = component.to_string();
        tokio::spawn(async move {
            // (namespace, object uid, reason, message) → (event name, count)
            let mut seen: HashMap<(String, String, String, String), (String, i32)> = HashMap::new();
            while let Some(r) = rx.recv().await {
                // Events about cluster-scoped objects live in default, as upstream's.
                let ns = r
                    .regarding
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let uid = r.regarding.uid.clone().unwrap_or_default();
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                let now = Time(jiff::Timestamp::now());
                let key = (ns.clone(), uid, r.reason.clone(), r.message.clone());
                if let Some((name, count)) = seen.get_mut(&key) {
                    *count += 1;
                    let patch = json!({"count": *count, "lastTimestamp": now});
                    if api
                        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .is_ok()
                    {
                        continue;
                    }
                }
                let object = r.regarding.name.clone().unwrap_or_default();
                let event = Event {
                    metadata: ObjectMeta {
                        name: Some(format!(
                            "{object}.{:x}",
                            jiff::Timestamp::now().as_nanosecond()
                        )),
                        namespace: Some(ns.clone()),
                        ..Default::default()
                    },
                    involved_object: r.regarding,
                    reason: Some(r.reason),
                    message: Some(r.message),
                    type_: Some(r.type_.into()),
                    action: Some(r.action.into()),
                    source: Some(EventSource {
                        component: Some(component.clone()),
                        host: None,
                    }),
                    reporting_component: Some(component.clone()),
                    reporting_instance: (!instance.is_empty()).then(|| instance.clone()),
                    first_timestamp: Some(now.clone()),
                    last_timestamp: Some(now),
                    count: Some(1),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &event).await {
                    Ok(created) => {
                        if seen.len() > 10_000 {
                            seen.clear();
                        }
                        seen.insert(key, (created.metadata.name.unwrap_or_default(), 1));
                    }
                    Err(e) => tracing::debug!(error = %e, "writing an event"),
                }
            }
        });
        Recorder { tx }
    }

    /// Queues an event about `regarding` (type Normal or Warning).
    pub fn record(
        &self,
        regarding: ObjectReference,
        type_: &'static str,
        reason: &str,
        action: &'static str,
        message: String,
    ) {
        let _ = self.tx.try_send(Record {
            regarding,
            type_,
            reason: reason.into(),
            action,
            message,
        });
    }
}
