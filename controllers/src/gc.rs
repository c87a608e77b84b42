//! The garbage collector: a graph of every object's owner references, fed by metadata-only
//! informers on every resource the API serves (found by discovery, new kinds included).
//! Dependents whose owners are all gone are deleted (background); an owner deleted with the
//! `orphan` finalizer lets go of its dependents first; one with `foregroundDeletion` waits
//! until its blocking dependents are gone, deleting them first. An owner missing from the
//! graph is looked up live before anything is deleted for it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::sync::mpsc;

use crate::util::is_status;

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// An object as the graph knows it.
#[derive(Clone, Debug)]
struct Node {
    resource: Arc<ApiResource>,
    namespaced: bool,
    namespace: Option<String>,
    name: String,
    resource_version: Option<String>,
    owners: Vec<OwnerReference>,
    finalizers: Vec<String>,
    deleting: bool,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Puts an object in; returns the uids whose work this changes.
    fn upsert(&mut self, uid: String, node: Node) -> Vec<String> {
        let mut touched = vec![uid.clone()];
        if let Some(old) = self.nodes.get(&uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(&uid);
                }
            }
        }
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
            touched.push(o.uid.clone());
        }
        self.nodes.insert(uid, node);
        touched
    }

    /// Takes an object out; returns its dependents (their owner is gone) and owners (one may
    /// be waiting for it).
    fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut touched: Vec<String> = self
            .dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        if let Some(old) = self.nodes.remove(uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                }
                touched.push(o.uid.clone());
            }
        }
        touched
    }
}

/// The served resources by (group, kind): their API and whether they are namespaced.
type Kinds = HashMap<(String, String), (Arc<ApiResource>, bool)>;

struct Collector {
    /// Acts as the generic-garbage-collector service account.
    client: kube::Client,
    graph: Mutex<Graph>,
    /// The served resources by (group, kind), to look owners up.
    kinds: Mutex<Kinds>,
    queue: mpsc::UnboundedSender<String>,
}

pub async fn run(client: kube::Client, root: kube::Client) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gc = Arc::new(Collector {
        client,
        graph: Mutex::default(),
        kinds: Mutex::default(),
        queue: tx,
    });
    let mut watches = tokio::task::JoinSet::new();
    let mut watched: HashSet<String> = HashSet::new();
    let discover = {
        let gc = gc.clone();
        let root = root.clone();
        async move {
            loop {
                match Discovery::new(root.clone()).run().await {
                    Ok(d) => {
                        for group in d.groups() {
                            for (ar, caps) in group.recommended_resources() {
                                if !(caps.supports_operation(verbs::LIST)
                                    && caps.supports_operation(verbs::WATCH)
                                    && caps.supports_operation(verbs::DELETE))
                                {
                                    continue;
                                }
                                let namespaced = caps.scope == Scope::Namespaced;
                                let ar = Arc::new(ar);
                                gc.lock_kinds().insert(
                                    (ar.group.clone(), ar.kind.clone()),
                                    (ar.clone(), namespaced),
                                );
                                let id = format!("{}/{}", ar.group, ar.plural);
                                if watched.insert(id) {
                                    watches.spawn(watch(gc.clone(), root.clone(), ar, namespaced));
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "garbage collector: discovery failed"),
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    };
    let work = async {
        let mut queued: HashSet<String> = HashSet::new();
        let mut batch = Vec::new();
        loop {
            let Some(uid) = rx.recv().await else { break };
            batch.push(uid);
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            for uid in batch.drain(..) {
                if !queued.insert(uid.clone()) {
                    continue;
                }
                if let Err(e) = gc.process(&uid).await {
                    tracing::debug!(uid = %uid, error = %e, "garbage collector: retrying");
                    let tx = gc.queue.clone();
                    let uid = uid.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = tx.send(uid);
                    });
                }
            }
            queued.clear();
        }
    };
    tokio::select! {
        _ = discover => {}
        _ = work => {}
    }
    Err(anyhow::anyhow!("garbage collector stopped"))
}

/// One resource's metadata informer, feeding the graph.
async fn watch(gc: Arc<Collector>, root: kube::Client, ar: Arc<ApiResource>, namespaced: bool) {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(root, ar.as_ref());
    let mut events =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    let mut listed: HashSet<String> = HashSet::new();
    let mut relisting: Option<HashSet<String>> = None;
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let mut touched = Vec::new();
        match event {
            Event::Init => relisting = Some(HashSet::new()),
            Event::InitApply(o) | Event::Apply(o) => {
                let uid = o.metadata.uid.clone().unwrap_or_default();
                if let Some(r) = relisting.as_mut() {
                    r.insert(uid.clone());
                }
                listed.insert(uid.clone());
                touched = gc.lock_graph().upsert(uid, node(&ar, namespaced, &o));
            }
            Event::Delete(o) => {
                let uid = o.metadata.uid.clone().unwrap_or_default();
                listed.remove(&uid);
                touched = gc.lock_graph().remove(&uid);
            }
            Event::InitDone => {
                if let Some(now) = relisting.take() {
                    let gone: Vec<String> = listed.difference(&now).cloned().collect();
                    let mut graph = gc.lock_graph();
                    for uid in gone {
                        touched.extend(graph.remove(&uid));
                    }
                    listed = now;
                }
            }
        }
        for uid in touched {
            let _ = gc.queue.send(uid);
        }
    }
}

fn node(ar: &Arc<ApiResource>, namespaced: bool, o: &PartialObjectMeta<DynamicObject>) -> Node {
    node_of(ar.clone(), namespaced, &o.metadata)
}

fn node_of(resource: Arc<ApiResource>, namespaced: bool, meta: &ObjectMeta) -> Node {
    Node {
        resource,
        namespaced,
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone(),
        owners: meta.owner_references.clone().unwrap_or_default(),
        finalizers: meta.finalizers.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
    }
}

/// What an owner reference points at, as far as the collector can tell.
enum Owner {
    Solid,
    Dangling,
    Waiting,
}

impl Collector {
    fn lock_graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_kinds(&self) -> std::sync::MutexGuard<'_, Kinds> {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn api(&self, n: &Node) -> Api<DynamicObject> {
        match (&n.namespace, n.namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, n.resource.as_ref()),
            _ => Api::all_with(self.client.clone(), n.resource.as_ref()),
        }
    }

    async fn process(&self, uid: &str) -> anyhow::Result<()> {
        let (node, dependents) = {
            let graph = self.lock_graph();
            let Some(node) = graph.nodes.get(uid).cloned() else {
                return Ok(());
            };
            let dependents: Vec<(String, Node)> = graph
                .dependents
                .get(uid)
                .into_iter()
                .flatten()
                .filter_map(|d| graph.nodes.get(d).map(|n| (d.clone(), n.clone())))
                .collect();
            (node, dependents)
        };
        if node.deleting && node.finalizers.iter().any(|f| f == ORPHAN) {
            return self.orphan(uid, &node, &dependents).await;
        }
        if node.deleting && node.finalizers.iter().any(|f| f == FOREGROUND) {
            return self.foreground(uid, &node, &dependents).await;
        }
        if node.owners.is_empty() || node.deleting {
            return Ok(());
        }
        self.attempt_to_delete(uid, &node, !dependents.is_empty())
            .await
    }

    /// Removes the owner's references from its dependents, then its `orphan` finalizer.
    async fn orphan(
        &self,
        uid: &str,
        node: &Node,
        dependents: &[(String, Node)],
    ) -> anyhow::Result<()> {
        for (_, d) in dependents {
            let refs: Vec<&OwnerReference> = d.owners.iter().filter(|r| r.uid != uid).collect();
            self.patch_meta(d, json!({"ownerReferences": refs})).await?;
        }
        self.remove_finalizer(node, ORPHAN).await
    }

    /// Collects the blocking dependents, each as its other owners allow (one with another
    /// solid owner only lets go of this one); once none is left, removes `foregroundDeletion`
    /// (upstream's processDeletingDependentsItem).
    async fn foreground(
        &self,
        uid: &str,
        node: &Node,
        dependents: &[(String, Node)],
    ) -> anyhow::Result<()> {
        let blocking: Vec<&(String, Node)> = dependents
            .iter()
            .filter(|(_, d)| {
                d.owners
                    .iter()
                    .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
            })
            .collect();
        if blocking.is_empty() {
            return self.remove_finalizer(node, FOREGROUND).await;
        }
        for (duid, d) in blocking {
            // One on its way out is waited for.
            if d.deleting {
                continue;
            }
            let has_dependents = self
                .lock_graph()
                .dependents
                .get(duid)
                .is_some_and(|s| !s.is_empty());
            self.attempt_to_delete(duid, d, has_dependents).await?;
        }
        Ok(())
    }

    /// Whether one of the object's dependents is itself waiting for its dependents: deleting
    /// this one in the foreground could close a circle.
    fn dependent_waits(&self, uid: &str) -> bool {
        let graph = self.lock_graph();
        graph.dependents.get(uid).into_iter().flatten().any(|d| {
            graph
                .nodes
                .get(d)
                .is_some_and(|n| n.deleting && n.finalizers.iter().any(|f| f == FOREGROUND))
        })
    }

    /// A dependent: deleted when no owner is left, else rid of the references to owners
    /// that are gone (upstream's attemptToDeleteItem).
    async fn attempt_to_delete(
        &self,
        uid: &str,
        node: &Node,
        has_dependents: bool,
    ) -> anyhow::Result<()> {
        // The graph may lag (owner references changed a moment ago): decide on the object as
        // it is now.
        let Some(latest) = self.api(node).get_metadata_opt(&node.name).await? else {
            return Ok(());
        };
        if latest.metadata.uid.as_deref() != Some(uid) {
            return Ok(());
        }
        let node = &node_of(node.resource.clone(), node.namespaced, &latest.metadata);
        if node.deleting || node.owners.is_empty() {
            return Ok(());
        }
        let mut solid = Vec::new();
        let mut gone = Vec::new();
        let mut waiting = Vec::new();
        for r in &node.owners {
            match self.owner(node, r).await? {
                Owner::Solid => solid.push(r),
                Owner::Dangling => gone.push(r),
                Owner::Waiting => waiting.push(r),
            }
        }
        if !solid.is_empty() {
            if gone.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            let keep: Vec<&OwnerReference> = solid;
            return self
                .patch_meta(node, json!({"ownerReferences": keep}))
                .await;
        }
        let policy = if !waiting.is_empty() && has_dependents {
            if self.dependent_waits(uid) {
                // A possible circle (upstream's detection, false positives and all): this
                // object stops blocking its owners before it waits for its own dependents.
                let unblocked: Vec<OwnerReference> = node
                    .owners
                    .iter()
                    .cloned()
                    .map(|mut r| {
                        if r.block_owner_deletion == Some(true) {
                            r.block_owner_deletion = Some(false);
                        }
                        r
                    })
                    .collect();
                self.patch_meta(node, json!({"ownerReferences": unblocked}))
                    .await?;
            }
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        tracing::debug!(uid, name = %node.name, kind = %node.resource.kind, "garbage collector: deleting a dependent");
        self.delete(uid, node, policy).await
    }

    async fn owner(&self, dependent: &Node, r: &OwnerReference) -> anyhow::Result<Owner> {
        let known = self.lock_graph().nodes.get(&r.uid).cloned();
        if let Some(o) = known {
            return Ok(
                if o.deleting && o.finalizers.iter().any(|f| f == FOREGROUND) {
                    Owner::Waiting
                } else {
                    Owner::Solid
                },
            );
        }
        // Not in the graph: ask the API before calling it gone.
        let group = r
            .api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
            .to_string();
        let Some((ar, namespaced)) = self.lock_kinds().get(&(group, r.kind.clone())).cloned()
        else {
            // A kind the API does not serve (yet): nothing can be told.
            return Ok(Owner::Solid);
        };
        let api: Api<DynamicObject> = match (&dependent.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, ar.as_ref()),
            _ => Api::all_with(self.client.clone(), ar.as_ref()),
        };
        match api.get_metadata_opt(&r.name).await? {
            Some(o) if o.metadata.uid.as_deref() == Some(&r.uid) => Ok(
                if o.metadata.deletion_timestamp.is_some()
                    && o.metadata
                        .finalizers
                        .unwrap_or_default()
                        .iter()
                        .any(|f| f == FOREGROUND)
                {
                    Owner::Waiting
                } else {
                    Owner::Solid
                },
            ),
            _ => Ok(Owner::Dangling),
        }
    }

    async fn delete(
        &self,
        uid: &str,
        node: &Node,
        policy: PropagationPolicy,
    ) -> anyhow::Result<()> {
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api(node).delete(&node.name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> anyhow::Result<()> {
        let rest: Vec<&String> = node.finalizers.iter().filter(|f| *f != finalizer).collect();
        self.patch_meta(node, json!({"finalizers": rest})).await
    }

    /// A metadata change, against the version the graph saw (a conflict is retried after the
    /// graph caught up).
    async fn patch_meta(&self, node: &Node, mut meta: serde_json::Value) -> anyhow::Result<()> {
        meta["resourceVersion"] = json!(node.resource_version);
        let patch = json!({"metadata": meta});
        match self
            .api(node)
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
