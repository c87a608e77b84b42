//! The statefulset controller: pods with stable identities `<set>-<ordinal>` (hostname,
//! subdomain, the pod-name and pod-index labels) and, from volumeClaimTemplates, claims
//! `<claim>-<set>-<ordinal>` made before their pod. OrderedReady creates in ordinal order, each
//! once the one before is Running and Ready, and removes from the highest; Parallel does not
//! wait. RollingUpdate replaces pods from the highest ordinal down to the partition, one at a
//! time; OnDelete only when deleted. Revisions are ControllerRevisions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kelp_client::events::Recorder;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Resource, ResourceExt};

use crate::Informers;
use crate::revisions::{self, HASH_LABEL};
use crate::util::{self, Error, drive, is_status};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
    events: Recorder,
}

impl Ctx {
    /// Records an event on the set, in upstream's words (StatefulPodControl's recordPodEvent
    /// and recordClaimEvent), so `kubectl describe statefulset` shows its pod and claim writes.
    fn event(&self, sts: &StatefulSet, type_: &'static str, reason: &str, message: String) {
        self.events
            .record(sts.object_ref(&()), type_, reason, "", message);
    }
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let controller = Controller::for_stream(
        informers.statefulsets.changes(),
        informers.statefulsets.store(),
    )
    .owns_stream(informers.pods.changes());
    let events = Recorder::spawn(client.clone(), "statefulset-controller", String::new());
    let ctx = Arc::new(Ctx {
        client,
        informers,
        events,
    });
    drive("statefulset", controller, reconcile, ctx).await
}

fn running_and_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && util::ready_since(pod).is_some()
        && pod.metadata.deletion_timestamp.is_none()
}

fn failed(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
}

fn ordinal_of(set: &str, pod: &Pod) -> Option<i32> {
    pod.name_any()
        .strip_prefix(&format!("{set}-"))?
        .parse()
        .ok()
}

/// The pod for an ordinal from a revision's template, with its identity and claims.
fn pod_for(sts: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let set = sts.name_any();
    let name = format!("{set}-{ordinal}");
    let spec = sts.spec.clone().unwrap_or_default();
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(HASH_LABEL.into(), revision.into());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let mut pod_spec = template.spec.clone().unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    if let Some(service) = spec.service_name.as_ref().filter(|s| !s.is_empty()) {
        pod_spec.subdomain = Some(service.clone());
    }
    let volumes = pod_spec.volumes.get_or_insert_default();
    for claim in spec.volume_claim_templates.iter().flatten() {
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        volumes.retain(|v| v.name != claim_name);
        volumes.push(Volume {
            name: claim_name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{claim_name}-{name}"),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if volumes.is_empty() {
        pod_spec.volumes = None;
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sts.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![util::controller_ref(sts)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        ..Default::default()
    }
}

/// The ordinal's claims, made if missing (kept after the pod: the Retain policy). Each claim
/// made, or refused, is recorded on the set; a refusal also as the pod's failed creation, since
/// the pod is not made without its claims (upstream's CreateStatefulPod).
async fn ensure_claims(ctx: &Ctx, sts: &StatefulSet, ordinal: i32) -> Result<(), Error> {
    let ns = sts.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = sts.spec.clone().unwrap_or_default();
    let set = sts.name_any();
    let pod = format!("{set}-{ordinal}");
    for template in spec.volume_claim_templates.iter().flatten() {
        let name = format!(
            "{}-{set}-{ordinal}",
            template.metadata.name.clone().unwrap_or_default(),
        );
        let mut labels = template.metadata.labels.clone().unwrap_or_default();
        for (k, v) in spec.selector.match_labels.iter().flatten() {
            labels.insert(k.clone(), v.clone());
        }
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: template.metadata.annotations.clone(),
                ..Default::default()
            },
            spec: template.spec.clone(),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => ctx.event(
                sts,
                "Normal",
                "SuccessfulCreate",
                format!("create Claim {name} Pod {pod} in StatefulSet {set} success"),
            ),
            Err(e) if is_status(&e, 409) => {}
            Err(e) => {
                let why = util::api_message(&e);
                ctx.event(
                    sts,
                    "Warning",
                    "FailedCreate",
                    format!(
                        "create Claim {name} for Pod {pod} in StatefulSet {set} failed error: {why}"
                    ),
                );
                ctx.event(
                    sts,
                    "Warning",
                    "FailedCreate",
                    format!(
                        "create Pod {pod} in StatefulSet {set} failed error: failed to create PVC {name}: {why}"
                    ),
                );
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Deletes a pod of the set and records it on the set (upstream's DeleteStatefulPod). A pod
/// already gone is nothing to tell; other refusals are recorded and left for the next pass.
async fn delete_pod(ctx: &Ctx, api: &Api<Pod>, sts: &StatefulSet, pod: &Pod) {
    let (name, set) = (pod.name_any(), sts.name_any());
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => ctx.event(
            sts,
            "Normal",
            "SuccessfulDelete",
            format!("delete Pod {name} in StatefulSet {set} successful"),
        ),
        Err(e) if is_status(&e, 404) => {}
        Err(e) => ctx.event(
            sts,
            "Warning",
            "FailedDelete",
            format!(
                "delete Pod {name} in StatefulSet {set} failed error: {}",
                util::api_message(&e)
            ),
        ),
    }
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = sts.namespace().unwrap_or_default();
    let set = sts.name_any();
    let uid = sts.metadata.uid.clone().unwrap_or_default();
    let spec = sts.spec.clone().unwrap_or_default();
    let old_status = sts.status.clone().unwrap_or_default();
    let (update_hash, _, collisions) = revisions::current(
        &ctx.client,
        &*sts,
        &spec.template,
        old_status.collision_count,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    let update_revision = format!("{set}-{update_hash}");
    let current_revision = old_status
        .current_revision
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| update_revision.clone());
    // The current revision's template (for pods below the partition).
    let current_template = if current_revision == update_revision {
        None
    } else {
        let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
        api.get_opt(&current_revision)
            .await?
            .and_then(|cr| revisions::template_of(&cr))
    };

    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut pods: HashMap<i32, Arc<Pod>> = HashMap::new();
    for p in ctx.informers.pods.store().state() {
        if p.metadata.namespace.as_deref() == Some(&ns)
            && util::controller_of(&p.metadata).is_some_and(|r| r.uid == uid)
            && let Some(i) = ordinal_of(&set, &p)
        {
            pods.insert(i, p);
        }
    }
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let wanted = start..start + replicas;
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    // Upstream labels a set's pods with the whole revision name (`<set>-<hash>`).
    let hash_of = |p: &Pod| p.labels().get(HASH_LABEL).cloned().unwrap_or_default();

    // Create (and replace failed pods) in ordinal order.
    let mut blocked = false;
    for i in wanted.clone() {
        match pods.get(&i) {
            Some(p) if failed(p) => {
                delete_pod(&ctx, &pods_api, &sts, p).await;
                blocked = !parallel;
            }
            Some(p) => {
                if !parallel && !running_and_ready(p) {
                    blocked = true;
                }
            }
            None => {
                ensure_claims(&ctx, &sts, i).await?;
                let use_current = rolling && (i - start) < partition && current_template.is_some();
                let (template, hash) = match (&current_template, use_current) {
                    (Some(t), true) => (t.clone(), current_revision.clone()),
                    _ => (spec.template.clone(), update_revision.clone()),
                };
                let pod = pod_for(&sts, &template, &hash, i);
                let name = pod.name_any();
                match pods_api.create(&PostParams::default(), &pod).await {
                    Ok(_) => ctx.event(
                        &sts,
                        "Normal",
                        "SuccessfulCreate",
                        format!("create Pod {name} in StatefulSet {set} successful"),
                    ),
                    // Already there (the cache is behind): upstream tells nothing either.
                    Err(e) if is_status(&e, 409) => {}
                    Err(e) => {
                        ctx.event(
                            &sts,
                            "Warning",
                            "FailedCreate",
                            format!(
                                "create Pod {name} in StatefulSet {set} failed error: {}",
                                util::api_message(&e)
                            ),
                        );
                        return Err(e.into());
                    }
                }
                blocked = !parallel;
            }
        }
        if blocked {
            break;
        }
    }
    // Scale down from the highest ordinal, once the rest is healthy.
    let all_healthy = wanted
        .clone()
        .all(|i| pods.get(&i).is_some_and(|p| running_and_ready(p)));
    let mut extra: Vec<i32> = pods
        .keys()
        .copied()
        .filter(|i| !wanted.contains(i))
        .collect();
    extra.sort_unstable_by(|a, b| b.cmp(a));
    if !blocked && (parallel || all_healthy) {
        let take = if parallel { extra.len() } else { 1 };
        for i in extra.iter().take(take) {
            if let Some(p) = pods.get(i)
                && p.metadata.deletion_timestamp.is_none()
            {
                delete_pod(&ctx, &pods_api, &sts, p).await;
            }
        }
    }
    // Rolling update: the highest outdated pod at or above the partition, when all are healthy.
    if rolling && extra.is_empty() && all_healthy {
        let outdated = wanted
            .clone()
            .rev()
            .filter(|i| i - start >= partition)
            .find(|i| pods.get(i).is_some_and(|p| hash_of(p) != update_revision));
        if let Some(i) = outdated
            && let Some(p) = pods.get(&i)
        {
            delete_pod(&ctx, &pods_api, &sts, p).await;
        }
    }

    // Status.
    let live: Vec<&Arc<Pod>> = pods
        .values()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut next = None;
    let mut available = 0;
    for p in &live {
        match util::available(p, min_ready) {
            Ok(()) => available += 1,
            Err(Some(w)) => next = Some(w),
            Err(None) => {}
        }
    }
    let updated = live
        .iter()
        .filter(|p| hash_of(p) == update_revision)
        .count() as i32;
    let ready = live.iter().filter(|p| running_and_ready(p)).count() as i32;
    let mut current = live
        .iter()
        .filter(|p| hash_of(p) == current_revision)
        .count() as i32;
    let mut current_revision = current_revision;
    if updated == replicas && ready == replicas && live.len() as i32 == replicas {
        current_revision = update_revision.clone();
        current = updated;
    }
    let status = StatefulSetStatus {
        available_replicas: Some(available),
        collision_count: collisions,
        conditions: old_status.conditions.clone(),
        current_replicas: Some(current),
        current_revision: Some(current_revision),
        observed_generation: sts.metadata.generation,
        ready_replicas: Some(ready),
        replicas: live.len() as i32,
        update_revision: Some(update_revision),
        updated_replicas: Some(updated),
    };
    if sts.status.as_ref() != Some(&status) {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        let mut changed = (*sts).clone();
        changed.status = Some(status);
        match api
            .replace_status(&set, &PostParams::default(), &changed)
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(next
        .map(Action::requeue)
        .unwrap_or_else(|| Action::requeue(Duration::from_secs(30))))
}
