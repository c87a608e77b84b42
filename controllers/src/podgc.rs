//! The pod garbage collector: force-deletes pods bound to nodes that no longer exist (after
//! upstream's 40 s quarantine, and once the API confirms the node is gone), unscheduled pods
//! that are terminating, and the oldest finished pods beyond the threshold (12,500). Each pod
//! is first marked with a DisruptionTarget condition, and Failed unless it had finished, as
//! upstream does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::Informers;
use crate::util::is_status;

const CHECK_PERIOD: Duration = Duration::from_secs(20);
const QUARANTINE: Duration = Duration::from_secs(40);
const TERMINATED_THRESHOLD: usize = 12_500;

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    // Pods first seen orphaned, by key, with when.
    let mut orphans: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(CHECK_PERIOD).await;
        let nodes = informers.nodes.store();
        let pods = informers.pods.store().state();
        let mut seen = HashMap::new();
        for pod in &pods {
            let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty());
            match node {
                Some(n) if nodes.get(&ObjectRef::<Node>::new(&n)).is_none() => {
                    let since = orphans.get(&key).copied().unwrap_or_else(Instant::now);
                    seen.insert(key.clone(), since);
                    if since.elapsed() >= QUARANTINE && node_gone(&client, &n).await {
                        collect(&client, pod, "PodGC: node no longer exists").await;
                    }
                }
                None if pod.metadata.deletion_timestamp.is_some() => {
                    collect(&client, pod, "PodGC: unscheduled pod is terminating").await;
                }
                _ => {}
            }
        }
        orphans = seen;
        let mut finished: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .collect();
        if finished.len() > TERMINATED_THRESHOLD {
            finished.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let extra = finished.len() - TERMINATED_THRESHOLD;
            for pod in finished.into_iter().take(extra) {
                collect(&client, pod, "PodGC: terminated pods over the threshold").await;
            }
        }
    }
}

async fn node_gone(client: &kube::Client, name: &str) -> bool {
    let api: Api<Node> = Api::all(client.clone());
    matches!(api.get(name).await, Err(e) if is_status(&e, 404))
}

async fn collect(client: &kube::Client, pod: &Pod, message: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let name = pod.name_any();
    // A pod that never finished ends Failed (upstream's markFailedAndDeletePodWithCondition):
    // a Job with podReplacementPolicy Failed replaces it only then.
    let terminal = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let mut condition = json!({"status": {"conditions": [{
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "DeletionByPodGC",
        "message": message,
        "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }]}});
    if !terminal {
        condition["status"]["phase"] = json!("Failed");
    }
    let _ = api
        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(condition))
        .await;
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => tracing::info!(pod = %name, %message, "collected"),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
        Err(e) => tracing::debug!(pod = %name, error = %e, "collecting a pod"),
    }
}
