//! The daemonset controller: one pod on every node the template may run on (its node
//! selector and affinity, its tolerations plus the daemon tolerations upstream adds), placed
//! by the scheduler through a required node affinity to that node's name; new nodes get one,
//! nodes that no longer qualify lose theirs. Templates are ControllerRevisions; RollingUpdate
//! replaces old pods node by node within maxUnavailable, OnDelete only when a pod is deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;

use crate::Informers;
use crate::replicaset::Expectations;
use crate::revisions::{self, HASH_LABEL};
use crate::util::{self, Error, drive, is_status};

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
    expectations: Expectations,
    events: kelp_client::events::Recorder,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let daemonsets = informers.daemonsets.store();
    let controller = Controller::for_stream(informers.daemonsets.changes(), daemonsets.clone())
        .owns_stream(informers.pods.changes())
        // A node that comes, goes or changes may change where every daemon set runs.
        .watches_stream(informers.nodes.changes(), move |_: Node| {
            daemonsets
                .state()
                .iter()
                .map(|d| ObjectRef::from_obj(&**d))
                .collect::<Vec<_>>()
        });
    let ctx = Arc::new(Ctx {
        events: kelp_client::events::Recorder::spawn(
            client.clone(),
            "daemonset-controller",
            String::new(),
        ),
        client,
        informers,
        expectations: Expectations::default(),
    });
    drive("daemonset", controller, reconcile, ctx).await
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// The tolerations every daemon pod gets (upstream's AddOrUpdateDaemonPodTolerations).
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut t = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        t.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    t
}

/// The template's pod for a node: daemon tolerations added, pinned to the node by a required
/// node affinity on its name (the scheduler binds it).
fn pod_for(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let spec = ds.spec.clone().unwrap_or_default();
    let template = spec.template;
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    labels.insert(
        "pod-template-generation".into(),
        ds.metadata.generation.unwrap_or(1).to_string(),
    );
    let mut pod_spec = template.spec.unwrap_or_default();
    let tolerations = pod_spec.tolerations.get_or_insert_default();
    for t in daemon_tolerations(pod_spec.host_network.unwrap_or(false)) {
        if !tolerations
            .iter()
            .any(|o| o.key == t.key && o.effect == t.effect)
        {
            tolerations.push(t);
        }
    }
    let by_name = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
    };
    let affinity = pod_spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![by_name],
    });
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![util::controller_ref(ds)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        ..Default::default()
    }
}

/// Whether the daemon set's pods belong on the node (upstream's NodeShouldRunDaemonPod):
/// its selector and affinity match, and its taints are tolerated.
fn should_run(ds: &DaemonSet, node: &Node) -> bool {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let mut tolerations = spec.tolerations.take().unwrap_or_default();
    tolerations.extend(daemon_tolerations(spec.host_network.unwrap_or(false)));
    let pod = Pod {
        spec: Some(spec),
        ..Default::default()
    };
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    kelp_scheduler::selectors::pod_matches_node(&pod, node)
        && kelp_scheduler::selectors::untolerated(
            taints,
            &tolerations,
            &["NoSchedule", "NoExecute"],
        )
        .is_none()
}

/// The node a daemon pod is for: where it runs, or where its affinity pins it.
fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.labels().get(HASH_LABEL).map(String::as_str)
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", ds.name_any());
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let (hash, _, collisions) = revisions::current(
        &ctx.client,
        &*ds,
        &spec.template,
        ds.status.as_ref().and_then(|s| s.collision_count),
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let store = ctx.informers.pods.store();
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for p in store.state() {
        if p.metadata.namespace.as_deref() == Some(&ns)
            && util::controller_of(&p.metadata).is_some_and(|r| r.uid == uid)
            && p.metadata.deletion_timestamp.is_none()
            && let Some(n) = node_of(&p)
        {
            by_node.entry(n).or_default().push(p);
        }
    }
    for pods in by_node.values_mut() {
        pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    }
    let nodes: Vec<Arc<Node>> = ctx.informers.nodes.store().state();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut create: Vec<String> = vec![];
    let mut delete: Vec<Arc<Pod>> = vec![];
    let mut desired = 0;
    let (mut current, mut misscheduled, mut ready, mut available, mut updated) = (0, 0, 0, 0, 0);
    let mut old_available: Vec<Arc<Pod>> = vec![];
    let mut unavailable = 0;
    let mut next: Option<Duration> = None;
    let names: HashMap<String, &Arc<Node>> = nodes.iter().map(|n| (n.name_any(), n)).collect();
    for node in &nodes {
        let name = node.name_any();
        let pods = by_node.get(&name).cloned().unwrap_or_default();
        if !should_run(&ds, node) {
            if !pods.is_empty() {
                misscheduled += 1;
                delete.extend(pods);
            }
            continue;
        }
        desired += 1;
        // Failed pods are replaced; extra pods go (the oldest stays).
        let (failed, live): (Vec<_>, Vec<_>) = pods
            .into_iter()
            .partition(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"));
        delete.extend(failed);
        let Some(pod) = live.first().cloned() else {
            create.push(name);
            unavailable += 1;
            continue;
        };
        delete.extend(live.into_iter().skip(1));
        current += 1;
        if util::ready_since(&pod).is_some() {
            ready += 1;
        }
        let is_available = match util::available(&pod, min_ready) {
            Ok(()) => true,
            Err(wait) => {
                if let Some(w) = wait {
                    next = Some(next.map_or(w, |n| n.min(w)));
                }
                false
            }
        };
        if is_available {
            available += 1;
        } else {
            unavailable += 1;
        }
        if hash_of(&pod) == Some(hash.as_str()) {
            updated += 1;
        } else if spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate"
        {
            if is_available {
                old_available.push(pod);
            } else {
                // An old pod that is not available anyway goes at once.
                delete.push(pod);
            }
        }
    }
    // Pods on nodes that are gone.
    for (node, pods) in &by_node {
        if !names.contains_key(node) {
            delete.extend(pods.iter().cloned());
        }
    }
    // Rolling update: replace available old pods while within maxUnavailable.
    let max_unavailable = {
        let rolling = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref());
        let v = rolling.and_then(|r| r.max_unavailable.as_ref());
        crate::deployment::resolve(v, desired, true, 1).max(
            if rolling
                .and_then(|r| r.max_surge.as_ref())
                .is_none_or(|s| *s == IntOrString::Int(0))
            {
                1
            } else {
                0
            },
        )
    };
    let room = (max_unavailable - unavailable).max(0) as usize;
    delete.extend(old_available.into_iter().take(room));

    if ctx.expectations.satisfied(&key, &ns, &store) {
        let report = util::Report {
            events: &ctx.events,
            regarding: kube::Resource::object_ref(&*ds, &()),
        };
        let pods: Vec<Pod> = create
            .iter()
            .map(|node| pod_for(&ds, node, &hash))
            .collect();
        let (made, errors) = util::create_pods(&pods_api, pods, &report).await;
        for e in errors {
            tracing::debug!(daemonset = %key, error = %e, "creating a pod");
        }
        let doomed: Vec<String> = delete.iter().map(|p| p.name_any()).collect();
        for e in util::delete_pods(&pods_api, doomed.clone(), &report).await {
            tracing::debug!(daemonset = %key, error = %e, "deleting a pod");
        }
        ctx.expectations.expect(&key, made, doomed);
    }
    let status = DaemonSetStatus {
        collision_count: collisions,
        // Conditions are others' to write (upstream's controller keeps them).
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        current_number_scheduled: current,
        desired_number_scheduled: desired,
        number_available: Some(available),
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_unavailable: Some(desired - available).filter(|n| *n > 0),
        observed_generation: ds.metadata.generation,
        updated_number_scheduled: Some(updated),
    };
    if ds.status.as_ref() != Some(&status) {
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        let mut changed = (*ds).clone();
        changed.status = Some(status);
        match api
            .replace_status(&ds.name_any(), &PostParams::default(), &changed)
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(next.map(Action::requeue).unwrap_or_else(|| {
        if ctx.expectations.satisfied(&key, &ns, &store) {
            Action::await_change()
        } else {
            Action::requeue(Duration::from_secs(1))
        }
    }))
}
