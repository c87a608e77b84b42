//! Kelp's scheduler, in upstream's framework shape: pending pods wait in a priority queue
//! (active, backoff, unschedulable), each attempt filters the nodes with the default
//! profile's plugins, scores the feasible ones and binds the pod to the best through the
//! `binding` subresource; a pod that fits nowhere gets PodScheduled=False and a
//! FailedScheduling event with upstream's message, and may preempt lower-priority pods. It
//! reaches the cluster only over HTTPS, with informers, as `system:kube-scheduler`, and acts
//! only while it holds the `kube-system/kube-scheduler` Lease.

pub mod algorithm;
pub mod cache;
pub mod plugins;
pub mod queue;
pub mod resources;
pub mod selectors;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kelp_client::Informer;
use kelp_client::events::Recorder;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::algorithm::{Algorithm, Outcome, Preemption};
use crate::cache::{Cache, PodInfo, pod_key};
use crate::queue::Queue;

/// The scheduler name pods ask for by default (`spec.schedulerName`).
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// How many bindings may be in flight at once (upstream binds asynchronously too).
const PARALLEL_BINDINGS: usize = 64;

#[derive(Clone)]
pub struct Options {
    /// The client configuration of the scheduler's identity (system:kube-scheduler).
    pub config: kube::Config,
    /// This process among its peers (the Lease's holderIdentity).
    pub identity: String,
}

/// Runs the scheduler until the process ends: leader election, then scheduling while leading.
pub async fn run(mut options: Options) -> anyhow::Result<()> {
    kelp_client::configure(&mut options.config, "kube-scheduler");
    let client = kube::Client::try_from(options.config.clone())?;
    let election = kelp_client::leader::Election::new("kube-scheduler", &options.identity);
    election
        .run(client.clone(), || {
            lead(client.clone(), options.identity.clone())
        })
        .await;
    Ok(())
}

enum Msg {
    Pod(Box<Pod>),
    Node(Box<Node>),
    Bound {
        key: String,
        uid: String,
        result: Result<(), kube::Error>,
    },
}

/// One term of leadership: informers, then the scheduling loop.
async fn lead(client: kube::Client, identity: String) -> anyhow::Result<()> {
    let all = watcher::Config::default();
    let pods: Arc<Informer<Pod>> = Informer::spawn_trimmed(
        Api::all(client.clone()),
        all.clone(),
        kelp_client::informer::trim_pod,
    );
    let nodes: Arc<Informer<Node>> = Informer::spawn(Api::all(client.clone()), all.clone());
    let namespaces: Arc<Informer<Namespace>> = Informer::spawn(Api::all(client.clone()), all);
    pods.ready().await;
    nodes.ready().await;
    namespaces.ready().await;
    tracing::info!("scheduler: caches synced, scheduling");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut feeds = tokio::task::JoinSet::new();
    {
        let (node_tx, changes) = (tx.clone(), nodes.changes());
        feeds.spawn(async move {
            let mut changes = std::pin::pin!(changes);
            while let Some(Ok(n)) = changes.next().await {
                if node_tx.send(Msg::Node(Box::new(n))).is_err() {
                    break;
                }
            }
        });
        let (pod_tx, changes) = (tx.clone(), pods.changes());
        feeds.spawn(async move {
            let mut changes = std::pin::pin!(changes);
            while let Some(Ok(p)) = changes.next().await {
                if pod_tx.send(Msg::Pod(Box::new(p))).is_err() {
                    break;
                }
            }
        });
    }
    let host = identity.split('_').next().unwrap_or("kelp").to_string();
    let mut s = Scheduler {
        cache: Cache::default(),
        queue: Queue::default(),
        algorithm: Algorithm::new(),
        pods: pods.store(),
        nodes: nodes.store(),
        namespaces: namespaces.store(),
        client: client.clone(),
        tx,
        events: Recorder::spawn(client, SCHEDULER_NAME, format!("{SCHEDULER_NAME}-{host}")),
        binds: Arc::new(Semaphore::new(PARALLEL_BINDINGS)),
    };
    loop {
        while let Ok(m) = rx.try_recv() {
            s.handle(m);
        }
        if s.queue.has_active() {
            let permit = s.binds.clone().acquire_owned().await?;
            if let Some(pod) = s.queue.pop(Instant::now()) {
                s.schedule_one(pod, permit);
                continue;
            }
        }
        let wake = s
            .queue
            .next_wakeup()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1));
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => s.handle(m),
                None => anyhow::bail!("the informers stopped"),
            },
            _ = tokio::time::sleep_until(wake) => s.queue.flush(Instant::now()),
        }
    }
}

struct Scheduler {
    cache: Cache,
    queue: Queue,
    algorithm: Algorithm,
    pods: Store<Pod>,
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    client: kube::Client,
    tx: mpsc::UnboundedSender<Msg>,
    events: Recorder,
    binds: Arc<Semaphore>,
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

impl Scheduler {
    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Node(n) => self.on_node(*n),
            Msg::Pod(p) => self.on_pod(*p),
            Msg::Bound { key, uid, result } => self.on_bound(key, uid, result),
        }
    }

    fn on_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let current = self.nodes.get(&ObjectRef::new(&name));
        match current.filter(|c| c.metadata.uid == node.metadata.uid) {
            Some(current) => {
                if self.cache.set_node(current) {
                    self.queue.move_all(Instant::now());
                }
            }
            None => self.cache.remove_node(&name),
        }
    }

    fn on_pod(&mut self, pod: Pod) {
        let key = pod_key(&pod);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let reference = ObjectRef::new(pod.metadata.name.as_deref().unwrap_or(""))
            .within(pod.metadata.namespace.as_deref().unwrap_or(""));
        let current = self
            .pods
            .get(&reference)
            .filter(|c| c.metadata.uid.as_deref() == Some(uid.as_str()));
        let Some(current) = current else {
            // Gone: whatever it held is free.
            self.queue.remove(&key);
            self.cache.forget_nominated(&key);
            if self.cache.placed(&key, &uid).is_some() {
                self.cache.unplace(&key);
                self.queue.move_all(Instant::now());
            }
            return;
        };
        let terminal = matches!(phase(&current), "Succeeded" | "Failed");
        let spec = current.spec.as_ref();
        let node = spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        if let Some(node) = node {
            self.queue.done(&key);
            let placed = self.cache.placed(&key, &uid).is_some();
            if terminal {
                if placed {
                    self.cache.unplace(&key);
                    self.queue.move_all(Instant::now());
                }
            } else {
                self.cache
                    .place(Arc::new(PodInfo::new(current)), &node, false);
                if !placed {
                    // A pod placed by someone else may satisfy pending pods' affinity.
                    self.queue.move_all(Instant::now());
                }
            }
            return;
        }
        let ours = spec
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(SCHEDULER_NAME)
            == SCHEDULER_NAME;
        let gated = spec
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        if terminal || !ours || current.metadata.deletion_timestamp.is_some() {
            self.queue.remove(&key);
            self.cache.forget_nominated(&key);
            return;
        }
        if let Some((_, true)) = self.cache.placed(&key, &uid) {
            return; // being bound
        }
        let info = Arc::new(PodInfo::new(current));
        let nominated = info
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.clone());
        self.cache.nominate(info.clone(), nominated.as_deref());
        if gated {
            self.queue.remove(&key);
            return;
        }
        self.queue.add_or_update(info, Instant::now());
    }

    fn on_bound(&mut self, key: String, uid: String, result: Result<(), kube::Error>) {
        match result {
            Ok(()) => self.queue.done(&key),
            Err(e) => {
                tracing::warn!(pod = %key, error = %e, "binding failed");
                if let Some((_, true)) = self.cache.placed(&key, &uid) {
                    self.cache.unplace(&key);
                }
                if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    self.queue.remove(&key);
                } else {
                    self.queue.failed(&key, true, Instant::now());
                }
            }
        }
    }

    fn schedule_one(&mut self, pod: Arc<PodInfo>, permit: tokio::sync::OwnedSemaphorePermit) {
        let namespaces = self.namespaces.clone();
        let ns_labels = move |ns: &str| {
            namespaces
                .get(&ObjectRef::new(ns))
                .and_then(|n| n.metadata.labels.clone())
        };
        match self.algorithm.schedule(&mut self.cache, &pod, &ns_labels) {
            Outcome::Fits(node) => {
                self.cache.place(pod.clone(), &node, true);
                let (client, tx, events) =
                    (self.client.clone(), self.tx.clone(), self.events.clone());
                tokio::spawn(async move {
                    let result = bind(&client, &pod, &node).await;
                    if result.is_ok() {
                        events.record(
                            pod.pod.object_ref(&()),
                            "Normal",
                            "Scheduled",
                            "Binding",
                            format!("Successfully assigned {} to {node}", pod.key),
                        );
                    }
                    drop(permit);
                    let _ = tx.send(Msg::Bound {
                        key: pod.key.clone(),
                        uid: pod.uid.clone(),
                        result,
                    });
                });
            }
            Outcome::Unschedulable {
                message,
                preemption,
            } => {
                drop(permit);
                self.queue.failed(&pod.key, false, Instant::now());
                tracing::debug!(pod = %pod.key, %message, "unschedulable");
                if let Some(p) = &preemption {
                    self.cache.nominate(pod.clone(), Some(&p.node));
                }
                let (client, events) = (self.client.clone(), self.events.clone());
                tokio::spawn(async move {
                    if let Err(e) =
                        record_failure(&client, &events, &pod, &message, preemption).await
                    {
                        tracing::debug!(pod = %pod.key, error = %e, "recording the scheduling failure");
                    }
                });
            }
        }
    }
}

async fn bind(client: &kube::Client, pod: &PodInfo, node: &str) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let name = pod.pod.metadata.name.clone().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    api.create_subresource::<_, serde_json::Value>(
        "binding",
        &name,
        &PostParams::default(),
        &binding,
    )
    .await
    .map(|_| ())
}

/// PodScheduled=False (when it says something new), the FailedScheduling event, and the
/// preemption: nominate the node, mark and delete the victims.
async fn record_failure(
    client: &kube::Client,
    events: &Recorder,
    pod: &PodInfo,
    message: &str,
    preemption: Option<Preemption>,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let name = pod.pod.metadata.name.clone().unwrap_or_default();
    events.record(
        pod.pod.object_ref(&()),
        "Warning",
        "FailedScheduling",
        "Scheduling",
        message.to_string(),
    );
    let current = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
    let same = current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    });
    let mut status = serde_json::Map::new();
    if !same {
        status.insert(
            "conditions".into(),
            json!([{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            }]),
        );
    }
    if let Some(p) = &preemption {
        status.insert("nominatedNodeName".into(), json!(p.node));
    }
    if !status.is_empty() {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": status})),
        )
        .await?;
    }
    let Some(p) = preemption else {
        return Ok(());
    };
    for victim in &p.victims {
        let vapi: Api<Pod> = Api::namespaced(client.clone(), &victim.namespace);
        let vname = victim.pod.metadata.name.clone().unwrap_or_default();
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "PreemptionByScheduler",
            "message": format!("{SCHEDULER_NAME}: preempting to accommodate a higher priority pod"),
            "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }]}});
        let _ = vapi
            .patch_status(
                &vname,
                &PatchParams::default(),
                &Patch::Strategic(condition),
            )
            .await;
        events.record(
            victim.pod.object_ref(&()),
            "Normal",
            "Preempted",
            "Preempting",
            format!("Preempted by pod {} on node {}", pod.uid, p.node),
        );
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(victim.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match vapi.delete(&vname, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
