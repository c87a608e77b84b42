//! The node lifecycle controller and the taint eviction controller. Every 5 s (upstream's
//! node-monitor-period) each node's last sign of life is its Lease's renewTime or its Ready
//! condition's heartbeat; after 50 s (node-monitor-grace-period) without one, its conditions
//! become Unknown ("Kubelet stopped posting node status.") and its pods not Ready. Nodes are
//! tainted by their Ready condition: `node.kubernetes.io/unreachable` (Unknown) or
//! `node.kubernetes.io/not-ready` (False), NoSchedule and NoExecute. Pods on a node with a
//! NoExecute taint they do not tolerate are deleted at once; those tolerating it for
//! `tolerationSeconds` when that has passed since the taint was added.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::Informers;
use crate::util::is_status;

pub const MONITOR_PERIOD: Duration = Duration::from_secs(5);
pub const GRACE_PERIOD: Duration = Duration::from_secs(50);
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
const LEASE_NAMESPACE: &str = "kube-node-lease";

fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// The node's last sign of life: the later of its lease's renewal and its Ready heartbeat.
fn last_seen(node: &Node, lease: Option<&Lease>) -> Option<jiff::Timestamp> {
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let heartbeat = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| {
            c.last_heartbeat_time
                .as_ref()
                .or(c.last_transition_time.as_ref())
        })
        .map(|t| t.0);
    renewed.max(heartbeat)
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let nodes_api: Api<Node> = Api::all(client.clone());
    loop {
        tokio::time::sleep(MONITOR_PERIOD).await;
        let now = jiff::Timestamp::now();
        let leases = informers.node_leases.store();
        for node in informers.nodes.store().state() {
            let name = node.name_any();
            let lease = leases.get(&ObjectRef::new(&name).within(LEASE_NAMESPACE));
            let silent = last_seen(&node, lease.as_deref())
                .is_none_or(|t| now.duration_since(t).unsigned_abs() > GRACE_PERIOD);
            let mut status = ready_status(&node).map(str::to_string);
            if silent && status.as_deref() != Some("Unknown") {
                if let Err(e) = mark_unknown(&nodes_api, &node).await {
                    tracing::debug!(node = %name, error = %e, "marking a node Unknown");
                    continue;
                }
                tracing::info!(node = %name, "node stopped posting status");
                mark_pods_not_ready(&client, &informers, &name).await;
                status = Some("Unknown".into());
            }
            if let Err(e) = sync_taints(&nodes_api, &node, status.as_deref()).await {
                tracing::debug!(node = %name, error = %e, "tainting a node");
            }
        }
        evict(&client, &informers).await;
    }
}

async fn mark_unknown(api: &Api<Node>, node: &Node) -> Result<(), kube::Error> {
    let now = Time(jiff::Timestamp::now());
    let conditions: Vec<serde_json::Value> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| {
            ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"].contains(&c.type_.as_str())
        })
        .map(|c| {
            json!({
                "type": c.type_,
                "status": "Unknown",
                "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.",
                "lastHeartbeatTime": c.last_heartbeat_time,
                "lastTransitionTime": now,
            })
        })
        .collect();
    let patch = json!({"status": {"conditions": conditions}});
    api.patch_status(
        &node.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(&patch),
    )
    .await
    .map(|_| ())
}

async fn mark_pods_not_ready(client: &kube::Client, informers: &Informers, node: &str) {
    for pod in informers.pods.store().state() {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
            continue;
        }
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": {"conditions": [{
            "type": "Ready", "status": "False", "lastTransitionTime": Time(jiff::Timestamp::now()),
        }]}});
        let _ = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await;
    }
}

/// The taints the Ready condition calls for, kept in step (others untouched).
async fn sync_taints(api: &Api<Node>, node: &Node, ready: Option<&str>) -> Result<(), kube::Error> {
    let key = match ready {
        Some("Unknown") => Some(UNREACHABLE),
        Some("False") => Some(NOT_READY),
        _ => None,
    };
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut wanted: Vec<Taint> = current
        .iter()
        .filter(|t| t.key != UNREACHABLE && t.key != NOT_READY || Some(t.key.as_str()) == key)
        .cloned()
        .collect();
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !wanted.iter().any(|t| t.key == key && t.effect == effect) {
                wanted.push(Taint {
                    key: key.into(),
                    value: None,
                    effect: effect.into(),
                    time_added: (effect == "NoExecute").then(|| Time(jiff::Timestamp::now())),
                });
            }
        }
    }
    if wanted == current {
        return Ok(());
    }
    let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": wanted}});
    match api
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Taint-based eviction of the pods on NoExecute-tainted nodes.
async fn evict(client: &kube::Client, informers: &Informers) {
    let nodes = informers.nodes.store();
    let now = jiff::Timestamp::now();
    for pod in informers.pods.store().state() {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| nodes.get(&ObjectRef::new(n)))
        else {
            continue;
        };
        let taints: Vec<&Taint> = node
            .spec
            .iter()
            .flat_map(|s| s.taints.iter().flatten())
            .filter(|t| t.effect == "NoExecute")
            .collect();
        if taints.is_empty() {
            continue;
        }
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        // The pod may stay until the earliest expiry of its tolerations of these taints.
        let mut due: Option<jiff::Timestamp> = None;
        let mut now_due = false;
        for taint in &taints {
            let matching: Vec<_> = tolerations
                .iter()
                .filter(|t| kelp_scheduler::selectors::tolerates(t, taint))
                .collect();
            if matching.is_empty() {
                now_due = true;
                break;
            }
            // Forever, unless every matching toleration has a limit (the smallest wins).
            if matching.iter().all(|t| t.toleration_seconds.is_some()) {
                let secs = matching
                    .iter()
                    .filter_map(|t| t.toleration_seconds)
                    .min()
                    .unwrap_or(0);
                let added = taint.time_added.as_ref().map_or(now, |t| t.0);
                let at = added + jiff::SignedDuration::from_secs(secs.max(0));
                due = Some(due.map_or(at, |d| d.min(at)));
            }
        }
        if now_due || due.is_some_and(|d| d <= now) {
            let api: Api<Pod> =
                Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
            let condition = json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint",
                "lastTransitionTime": Time(now),
            }]}});
            let _ = api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&condition),
                )
                .await;
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&pod.name_any(), &params).await {
                Ok(_) => {
                    tracing::info!(pod = %pod.name_any(), node = %node.name_any(), "evicted by taint")
                }
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => tracing::debug!(error = %e, "evicting a pod"),
            }
        }
    }
}
