//! Writes core/v1 Events off the caller's path, as upstream's event broadcaster does, with its
//! correlator in front:
//! - a repeat of the same reason and message about the same object bumps the earlier event's
//!   count and lastTimestamp;
//! - the tenth different message of one reason about one object within ten minutes becomes
//!   one event `(combined from similar events): <message>`, which later ones bump in turn;
//! - each object gets at most 25 writes at once from a component, then one every 5 minutes
//!   (upstream's spam filter), so a replica set making 10,000 pods writes a few dozen events.
//!
//! When the API is slow, events are dropped rather than slowing the component that records
//! them.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

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

/// Different messages of one reason about one object, within [`SIMILAR_WINDOW`], before they
/// are combined (upstream's defaultAggregateMaxEvents).
const SIMILAR: usize = 10;
const SIMILAR_WINDOW: Duration = Duration::from_secs(600);
/// Writes about one object: a burst, then one per refill period (defaultSpamBurst, QPS 1/300).
const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Entries each cache keeps before starting afresh (upstream's LRU holds 4096).
const CACHE: usize = 10_000;

/// Events of one reason about one object: (namespace, uid, type, reason).
type Similar = (String, String, &'static str, String);
/// One event as written: (namespace, uid, type, reason, message; empty when combined).
type EventKey = (String, String, &'static str, String, String);

/// Upstream's EventCorrelator, for one component.
#[derive(Default)]
struct Correlator {
    /// → (last seen, the different messages seen)
    similar: HashMap<Similar, (Instant, HashSet<String>)>,
    /// → (the event written, its count)
    written: HashMap<EventKey, (String, i32)>,
    /// (namespace, uid) → (tokens, when last refilled)
    tokens: HashMap<(String, String), (f64, Instant)>,
}

/// What to write for an event.
enum Write {
    Create {
        message: String,
    },
    Bump {
        name: String,
        count: i32,
        message: String,
    },
}

impl Correlator {
    /// What the event becomes: a new event, a bump of an earlier one, or nothing (spam).
    fn correlate(&mut self, ns: &str, r: &Record) -> (Option<Write>, EventKey) {
        let uid = r.regarding.uid.clone().unwrap_or_default();
        let now = Instant::now();
        if self.similar.len() > CACHE {
            self.similar.clear();
        }
        let (seen, messages) = self
            .similar
            .entry((ns.to_string(), uid.clone(), r.type_, r.reason.clone()))
            .or_insert_with(|| (now, HashSet::new()));
        if now.duration_since(*seen) > SIMILAR_WINDOW {
            messages.clear();
        }
        *seen = now;
        messages.insert(r.message.clone());
        let (message, key_message) = if messages.len() >= SIMILAR {
            // Keep the set from growing past the threshold.
            let drop = messages.iter().next().cloned();
            if let Some(drop) = drop {
                messages.remove(&drop);
            }
            (
                format!("(combined from similar events): {}", r.message),
                String::new(),
            )
        } else {
            (r.message.clone(), r.message.clone())
        };
        let key = (
            ns.to_string(),
            uid.clone(),
            r.type_,
            r.reason.clone(),
            key_message,
        );
        // The spam filter, on every write.
        if self.tokens.len() > CACHE {
            self.tokens.clear();
        }
        let (tokens, refilled) = self
            .tokens
            .entry((ns.to_string(), uid))
            .or_insert((SPAM_BURST, now));
        let gained = now.duration_since(*refilled).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        *tokens = (*tokens + gained).min(SPAM_BURST);
        *refilled = now;
        if *tokens < 1.0 {
            return (None, key);
        }
        *tokens -= 1.0;
        let write = match self.written.get(&key) {
            Some((name, count)) => Write::Bump {
                name: name.clone(),
                count: count + 1,
                message,
            },
            None => Write::Create { message },
        };
        (Some(write), key)
    }

    fn remember(&mut self, key: EventKey, name: String, count: i32) {
        if self.written.len() > CACHE {
            self.written.clear();
        }
        self.written.insert(key, (name, count));
    }
}

impl Recorder {
    /// Starts the writer: events are reported by `component` (its source and
    /// reportingComponent), from `instance` (none when empty, as upstream's controllers).
    pub fn spawn(client: kube::Client, component: &str, instance: String) -> Recorder {
        let (tx, mut rx) = mpsc::channel::<Record>(4096);
        let component = component.to_string();
        tokio::spawn(async move {
            let mut correlator = Correlator::default();
            while let Some(r) = rx.recv().await {
                // Events about cluster-scoped objects live in default, as upstream's.
                let ns = r
                    .regarding
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into());
                let (write, key) = correlator.correlate(&ns, &r);
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                let now = Time(jiff::Timestamp::now());
                let message = match write {
                    None => continue,
                    Some(Write::Bump {
                        name,
                        count,
                        message,
                    }) => {
                        let patch =
                            json!({"count": count, "lastTimestamp": now, "message": message});
                        if api
                            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                            .await
                            .is_ok()
                        {
                            correlator.remember(key, name, count);
                            continue;
                        }
                        // Gone (expired, deleted): written afresh.
                        message
                    }
                    Some(Write::Create { message }) => message,
                };
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
                    message: Some(message),
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
                        correlator.remember(key, created.metadata.name.unwrap_or_default(), 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uid: &str, reason: &str, message: &str) -> Record {
        Record {
            regarding: ObjectReference {
                uid: Some(uid.into()),
                ..Default::default()
            },
            type_: "Normal",
            reason: reason.into(),
            action: "",
            message: message.into(),
        }
    }

    /// Applies what the writer would, assuming every write succeeds: (creates, bumps, dropped).
    fn run(c: &mut Correlator, records: &[Record]) -> (Vec<String>, Vec<(String, i32)>, usize) {
        let (mut made, mut bumped, mut dropped) = (vec![], vec![], 0);
        for r in records {
            match c.correlate("ns", r) {
                (Some(Write::Create { message }), key) => {
                    c.remember(key, format!("e{}", made.len()), 1);
                    made.push(message);
                }
                (
                    Some(Write::Bump {
                        name,
                        count,
                        message,
                    }),
                    key,
                ) => {
                    c.remember(key, name, count);
                    bumped.push((message, count));
                }
                (None, _) => dropped += 1,
            }
        }
        (made, bumped, dropped)
    }

    #[test]
    fn similar_events_are_combined_and_spam_is_dropped() {
        let mut c = Correlator::default();
        // The same message twice: one event, counted twice.
        let (made, bumped, _) = run(&mut c, &[record("a", "R", "m"), record("a", "R", "m")]);
        assert_eq!(made, ["m"]);
        assert_eq!(bumped, [("m".to_string(), 2)]);
        // Nine different messages of a reason are written as they are; the tenth and later
        // become one combined event.
        let mut c = Correlator::default();
        let pods: Vec<Record> = (0..12)
            .map(|i| record("rs", "SuccessfulCreate", &format!("Created pod: p{i}")))
            .collect();
        let (made, bumped, dropped) = run(&mut c, &pods);
        assert_eq!(made.len(), 10, "{made:?}");
        assert_eq!(made[8], "Created pod: p8");
        assert_eq!(made[9], "(combined from similar events): Created pod: p9");
        assert_eq!(
            bumped,
            [
                (
                    "(combined from similar events): Created pod: p10".to_string(),
                    2
                ),
                (
                    "(combined from similar events): Created pod: p11".to_string(),
                    3
                ),
            ]
        );
        assert_eq!(dropped, 0);
        // Other objects are not affected; past 25 writes about one object, the rest drop.
        let other = run(&mut c, &[record("other", "SuccessfulCreate", "x")]);
        assert_eq!(other.0.len(), 1);
        let reasons: Vec<Record> = (0..30)
            .map(|i| record("rs", &format!("R{i}"), "m"))
            .collect();
        let (_, _, dropped) = run(&mut c, &reasons);
        assert_eq!(dropped, 30 - (25 - 12));
    }
}
