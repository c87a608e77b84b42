//! The deployment controller: one ReplicaSet per pod template (named by its
//! `pod-template-hash`), rolled from the old to the new by the strategy (RollingUpdate within
//! maxSurge/maxUnavailable, or Recreate), revisions in annotations (what `kubectl rollout
//! history` and `undo` read), old ReplicaSets kept to revisionHistoryLimit, pause/resume, and
//! the status counters and conditions `kubectl rollout status` waits on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kelp_client::events::Recorder;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::Informers;
use crate::util::{self, Error, drive, is_status};

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX: &str = "deployment.kubernetes.io/max-replicas";

struct Ctx {
    client: kube::Client,
    informers: Arc<Informers>,
    events: Recorder,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let controller = Controller::for_stream(
        informers.deployments.changes(),
        informers.deployments.store(),
    )
    .owns_stream(informers.replicasets.changes());
    let events = Recorder::spawn(client.clone(), "deployment-controller", String::new());
    drive(
        "deployment",
        controller,
        reconcile,
        Arc::new(Ctx {
            client,
            informers,
            events,
        }),
    )
    .await
}

/// Where a deployment's ReplicaSets are written, and where each change of their size is told
/// on the deployment, as upstream's `ScalingReplicaSet` events (what `kubectl describe
/// deployment` lists).
struct Writer<'a> {
    api: &'a Api<ReplicaSet>,
    events: &'a Recorder,
    d: &'a Deployment,
}

impl Writer<'_> {
    /// Records a ReplicaSet's size going `from` → `to` (nothing when it did not change).
    fn scaled(&self, name: &str, from: i32, to: i32) {
        if from == to {
            return;
        }
        let direction = if to > from { "up" } else { "down" };
        self.events.record(
            self.d.object_ref(&()),
            "Normal",
            "ScalingReplicaSet",
            "",
            format!("Scaled {direction} replica set {name} from {from} to {to}"),
        );
    }
}

/// The template's hash, as a label value (upstream hashes with FNV-32a and spells the
/// decimal digits in its safe alphabet).
pub fn template_hash(template: &PodTemplateSpec, collisions: Option<i32>) -> String {
    let mut hash: u32 = 0x811c9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash ^= *b as u32;
            hash = hash.wrapping_mul(0x01000193);
        }
    };
    eat(serde_json::to_string(template)
        .unwrap_or_default()
        .as_bytes());
    if let Some(c) = collisions {
        eat(&c.to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Whether a ReplicaSet's template is the deployment's, as upstream's semantic equality
/// sees it: the hash label aside, and Go's non-pointer fields equal whether zero or absent
/// (a template read back from a ReplicaSet may spell `stdin: false`, another may omit it).
fn same_template(rs: &ReplicaSet, template: &PodTemplateSpec) -> bool {
    let theirs = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    normalized(&theirs) == normalized(template)
}

/// Fields that are plain values (not pointers) in upstream's Go types, so zero means unset.
const VALUE_FIELDS: &[&str] = &[
    "stdin",
    "stdinOnce",
    "tty",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "readOnly",
    "generation",
];

fn normalized(template: &PodTemplateSpec) -> Option<serde_json::Value> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.retain(|k, v| {
                    !(VALUE_FIELDS.contains(&k.as_str())
                        && (v == &serde_json::Value::Bool(false) || v == &serde_json::json!(0)))
                });
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut t = template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    let mut v = serde_json::to_value(&t).ok()?;
    strip(&mut v);
    Some(v)
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

/// An IntOrString as a count of `total` (percentages round up for surge, down for
/// unavailability, as upstream's ResolveFenceposts).
pub(crate) fn resolve(v: Option<&IntOrString>, total: i32, round_up: bool, default: i32) -> i32 {
    match v {
        None => default,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let percent: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let exact = percent * total as f64 / 100.0;
            if round_up {
                exact.ceil() as i32
            } else {
                exact.floor() as i32
            }
        }
    }
}

/// maxSurge and maxUnavailable of a rolling deployment (both zero is one unavailable).
fn fenceposts(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let rolling = spec
        .strategy
        .and_then(|s| s.rolling_update)
        .unwrap_or_default();
    let default = IntOrString::String("25%".into());
    let surge = resolve(
        rolling.max_surge.as_ref().or(Some(&default)),
        replicas,
        true,
        0,
    );
    let mut unavailable = resolve(
        rolling.max_unavailable.as_ref().or(Some(&default)),
        replicas,
        false,
        0,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = d.namespace().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let writer = Writer {
        api: &rs_api,
        events: &ctx.events,
        d: &d,
    };
    let mut all: Vec<ReplicaSet> = Vec::new();
    for rs in ctx.informers.replicasets.store().state() {
        if rs.metadata.namespace.as_deref() != Some(&ns) || rs.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let labels = rs
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref());
        match util::controller_of(&rs.metadata) {
            Some(r) if r.uid == uid => all.push((*rs).clone()),
            None if util::selects(Some(&spec.selector), labels) => {
                // An orphan this deployment selects: adopt it.
                let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                refs.push(util::controller_ref(&*d));
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": rs.metadata.uid, "resourceVersion": rs.metadata.resource_version}});
                match rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(adopted) => all.push(adopted),
                    Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            _ => {}
        }
    }
    let template = spec.template.clone();
    let replicas = spec.replicas.unwrap_or(1);
    let (surge, max_unavailable) = fenceposts(&d);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let (new, mut old): (Vec<ReplicaSet>, Vec<ReplicaSet>) =
        all.into_iter().partition(|rs| same_template(rs, &template));
    // Two ReplicaSets with this template (an adoption, a race): the newest revision is it.
    let mut new = new;
    new.sort_by_key(revision);
    let mut new = new.pop();
    let max_old = old.iter().map(revision).max().unwrap_or(0);
    old.sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let collisions = d.status.as_ref().and_then(|s| s.collision_count);

    let paused = spec.paused.unwrap_or(false);
    // A changed spec.replicas (or a paused deployment) only resizes what exists, in proportion
    // during a rollout (upstream's isScalingEvent and sync).
    let scaling = paused || is_scaling_event(new.iter().chain(old.iter()), replicas);
    let mut created_now = None;
    if !paused {
        match &new {
            None if !scaling => {
                let hash = template_hash(&template, collisions);
                let name = format!("{}-{hash}", d.name_any());
                let old_total: i32 = old.iter().map(spec_replicas).sum();
                let initial = if recreate {
                    0
                } else {
                    (replicas + surge - old_total).clamp(0, replicas)
                };
                let rs = new_replicaset(&d, &template, &hash, &name, initial, max_old + 1, surge);
                match rs_api.create(&PostParams::default(), &rs).await {
                    Ok(made) => {
                        // Made at its initial size: a scale up from nothing, as upstream tells it.
                        writer.scaled(&made.name_any(), 0, spec_replicas(&made));
                        created_now = Some(made.name_any());
                        new = Some(made);
                    }
                    Err(e) if is_status(&e, 409) => {
                        // The name is taken: by our own ReplicaSet the cache has not shown yet,
                        // or by another template (a hash collision: count it, hash again).
                        match rs_api.get_opt(&name).await? {
                            Some(existing) if same_template(&existing, &template) => {
                                return Ok(Action::requeue(Duration::from_millis(200)));
                            }
                            _ => {
                                bump_collisions(&ctx.client, &d).await?;
                                return Ok(Action::requeue(Duration::from_millis(200)));
                            }
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Some(rs) if revision(rs) <= max_old => {
                // An old template came back (`rollout undo`): it is the newest revision now.
                let patch =
                    json!({"metadata": {"annotations": {REVISION: (max_old + 1).to_string()}}});
                let updated = rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                new = Some(updated);
            }
            _ => {}
        }
    }

    if scaling {
        resize(&writer, new.as_mut(), &mut old, replicas, surge, !recreate).await?;
        if paused {
            cleanup_history(&rs_api, &old, spec.revision_history_limit.unwrap_or(10)).await?;
        }
        return Ok(
            update_status(&ctx.client, &d, new.as_ref(), &old, None, max_unavailable).await?,
        );
    }

    if let Some(rs) = &new {
        let current = spec_replicas(rs);
        let old_total: i32 = old.iter().map(spec_replicas).sum();
        let target = if recreate {
            let old_pods_left = old.iter().any(|o| status_of(o).0 > 0);
            for o in &old {
                scale(&writer, o, 0, replicas, surge).await?;
            }
            if old_total > 0 || old_pods_left {
                0.min(current)
            } else {
                replicas
            }
        } else if current > replicas {
            replicas
        } else {
            // Rolling up: as far as maxSurge allows over everything that exists.
            let allowed = replicas + surge - old_total - current;
            (current + allowed.max(0)).min(replicas)
        };
        if target != current || rs.annotations().get(DESIRED) != Some(&replicas.to_string()) {
            scale(&writer, rs, target, replicas, surge).await?;
        }
        if !recreate && target == current {
            scale_down_old(&writer, rs, &mut old, replicas, max_unavailable, surge).await?;
        }
    }

    cleanup_history(&rs_api, &old, spec.revision_history_limit.unwrap_or(10)).await?;
    let next = update_status(
        &ctx.client,
        &d,
        new.as_ref(),
        &old,
        created_now,
        max_unavailable,
    )
    .await?;
    Ok(next)
}

fn new_replicaset(
    d: &Deployment,
    template: &PodTemplateSpec,
    hash: &str,
    name: &str,
    replicas: i32,
    revision: i64,
    surge: i32,
) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = template.clone();
    let meta = template.metadata.get_or_insert_default();
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    meta.labels = Some(labels.clone());
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_default()
        .insert(HASH_LABEL.into(), hash.into());
    // The deployment's own annotations travel to its ReplicaSets (kubectl's change-cause
    // among them), but for what is about the deployment object itself.
    let mut annotations: BTreeMap<String, String> = d
        .annotations()
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("deployment.kubernetes.io/")
                && k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let want = spec.replicas.unwrap_or(1);
    annotations.insert(REVISION.into(), revision.to_string());
    annotations.insert(DESIRED.into(), want.to_string());
    annotations.insert(MAX.into(), (want + surge).to_string());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: d.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![util::controller_ref(d)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        ..Default::default()
    }
}

/// Sets a ReplicaSet's replicas (and the deployment's size in its annotations), against the
/// version the cache holds, and records the change of size on the deployment.
async fn scale(
    w: &Writer<'_>,
    rs: &ReplicaSet,
    replicas: i32,
    desired: i32,
    surge: i32,
) -> anyhow::Result<()> {
    if spec_replicas(rs) == replicas && rs.annotations().get(DESIRED) == Some(&desired.to_string())
    {
        return Ok(());
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": rs.metadata.resource_version,
            "annotations": {DESIRED: desired.to_string(), MAX: (desired + surge).to_string()},
        },
        "spec": {"replicas": replicas},
    });
    w.api
        .patch(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    w.scaled(&rs.name_any(), spec_replicas(rs), replicas);
    Ok(())
}

/// Whether some active ReplicaSet was sized for another deployment size than `replicas`
/// (upstream's isScalingEvent).
fn is_scaling_event<'a>(mut all: impl Iterator<Item = &'a ReplicaSet>, replicas: i32) -> bool {
    all.any(|rs| {
        spec_replicas(rs) > 0 && annotated(rs, DESIRED).is_some_and(|desired| desired != replicas)
    })
}

fn annotated(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.annotations().get(key).and_then(|v| v.parse().ok())
}

/// Resizes the deployment's ReplicaSets to a new deployment size without rolling (upstream's
/// DeploymentController.scale): a lone active (or else the newest) ReplicaSet takes the whole
/// size; a saturated new one leaves the old ones nothing; during a rolling update the
/// difference is spread over the active ReplicaSets in proportion to their sizes, the
/// leftover of the rounding going to the largest.
async fn resize(
    w: &Writer<'_>,
    new: Option<&mut ReplicaSet>,
    old: &mut [ReplicaSet],
    replicas: i32,
    surge: i32,
    rolling: bool,
) -> anyhow::Result<()> {
    let new_name = new.as_ref().map(|rs| rs.name_any());
    let saturated = new.as_ref().is_some_and(|rs| {
        spec_replicas(rs) == replicas
            && annotated(rs, DESIRED) == Some(replicas)
            && status_of(rs).2 == replicas
    });
    let mut all: Vec<&mut ReplicaSet> = new.into_iter().chain(old.iter_mut()).collect();
    let mut active: Vec<&mut ReplicaSet> = Vec::new();
    let mut newest: Option<&mut ReplicaSet> = None;
    for rs in all.drain(..) {
        if spec_replicas(rs) > 0 {
            active.push(rs);
        } else if newest.as_ref().is_none_or(|n| {
            // The new ReplicaSet comes first; among the old, the latest created.
            new_name.as_deref() != Some(&n.name_any()) && created(rs) > created(n)
        }) {
            newest = Some(rs);
        }
    }
    let mut sizes: Vec<i32> = active.iter().map(|rs| spec_replicas(rs)).collect();
    match active.len() {
        0 => {
            if let Some(rs) = newest {
                set_size(w, rs, replicas, replicas, surge).await?;
            }
            return Ok(());
        }
        1 => sizes[0] = replicas,
        _ if saturated => {
            for (rs, size) in active.iter().zip(sizes.iter_mut()) {
                if new_name.as_deref() != Some(&rs.name_any()) {
                    *size = 0;
                }
            }
        }
        _ if rolling => {
            let allowed = if replicas > 0 { replicas + surge } else { 0 };
            let to_add = allowed - sizes.iter().sum::<i32>();
            // Largest first; among equals, the newest first when growing, the oldest first
            // when shrinking.
            let mut order: Vec<usize> = (0..active.len()).collect();
            order.sort_by(|&a, &b| {
                let by_age = created(active[a]).cmp(&created(active[b]));
                sizes[b]
                    .cmp(&sizes[a])
                    .then(if to_add > 0 { by_age.reverse() } else { by_age })
            });
            let before = w.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let mut added = 0;
            for &i in &order {
                let share = proportion(active[i], replicas, surge, before, to_add, added);
                sizes[i] += share;
                added += share;
            }
            if let Some(&largest) = order.first() {
                sizes[largest] = (sizes[largest] + to_add - added).max(0);
            }
        }
        _ => {}
    }
    for (rs, size) in active.into_iter().zip(sizes) {
        set_size(w, rs, size, replicas, surge).await?;
    }
    Ok(())
}

/// The share of `to_add` (less what is `added` already) that falls to a ReplicaSet: its size
/// scaled from the deployment's maximum it was sized for (its max-replicas annotation, else
/// the deployment's status) to the new maximum (upstream's GetProportion).
fn proportion(
    rs: &ReplicaSet,
    replicas: i32,
    surge: i32,
    before: i32,
    to_add: i32,
    added: i32,
) -> i32 {
    let size = spec_replicas(rs);
    if size == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if replicas == 0 {
        -size
    } else {
        let was = annotated(rs, MAX).filter(|m| *m > 0).unwrap_or(before);
        if was <= 0 {
            return 0;
        }
        (f64::from(size) * f64::from(replicas + surge) / f64::from(was)).round() as i32 - size
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

fn created(rs: &ReplicaSet) -> (Option<jiff::Timestamp>, String) {
    (
        rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        rs.name_any(),
    )
}

/// Scales a ReplicaSet and keeps the in-memory copy in step (the status written next reads it).
async fn set_size(
    w: &Writer<'_>,
    rs: &mut ReplicaSet,
    size: i32,
    replicas: i32,
    surge: i32,
) -> anyhow::Result<()> {
    scale(w, rs, size, replicas, surge).await?;
    if let Some(s) = rs.spec.as_mut() {
        s.replicas = Some(size);
    }
    Ok(())
}

/// Scales old ReplicaSets down as far as maxUnavailable allows: their unavailable pods
/// first, then the oldest (upstream's reconcileOldReplicaSets).
async fn scale_down_old(
    w: &Writer<'_>,
    new: &ReplicaSet,
    old: &mut [ReplicaSet],
    replicas: i32,
    max_unavailable: i32,
    surge: i32,
) -> anyhow::Result<()> {
    let old_count: i32 = old.iter().map(spec_replicas).sum();
    if old_count == 0 {
        return Ok(());
    }
    let all_count = old_count + spec_replicas(new);
    let min_available = replicas - max_unavailable;
    let new_unavailable = spec_replicas(new) - status_of(new).2;
    let mut budget = all_count - min_available - new_unavailable;
    if budget <= 0 {
        return Ok(());
    }
    let mut targets: Vec<i32> = old.iter().map(spec_replicas).collect();
    for (i, rs) in old.iter().enumerate() {
        let unhealthy = (targets[i] - status_of(rs).2).max(0).min(budget);
        targets[i] -= unhealthy;
        budget -= unhealthy;
    }
    let available: i32 = old.iter().map(|rs| status_of(rs).2).sum::<i32>() + status_of(new).2;
    let mut room = (available - min_available).max(0);
    for t in targets.iter_mut() {
        let cut = (*t).min(room);
        *t -= cut;
        room -= cut;
    }
    for (rs, target) in old.iter_mut().zip(targets) {
        if target != spec_replicas(rs) {
            set_size(w, rs, target, replicas, surge).await?;
        }
    }
    Ok(())
}

/// Deletes old, empty ReplicaSets beyond the revision history limit, the oldest first.
async fn cleanup_history(
    api: &Api<ReplicaSet>,
    old: &[ReplicaSet],
    limit: i32,
) -> anyhow::Result<()> {
    let mut empty: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| spec_replicas(rs) == 0 && status_of(rs).0 == 0)
        .collect();
    let excess = empty.len() as i64 - limit.max(0) as i64;
    if excess <= 0 {
        return Ok(());
    }
    empty.sort_by_key(|rs| revision(rs));
    for rs in empty.into_iter().take(excess as usize) {
        match api
            .delete(&rs.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn bump_collisions(client: &kube::Client, d: &Deployment) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &d.namespace().unwrap_or_default());
    let mut updated = d.clone();
    let status = updated.status.get_or_insert_default();
    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
    match api
        .replace_status(&d.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    old: Option<&DeploymentCondition>,
) -> DeploymentCondition {
    let now = Time(jiff::Timestamp::now());
    let same = old.is_some_and(|o| o.status == status && o.reason.as_deref() == Some(reason));
    let transition = old
        .filter(|o| o.status == status)
        .and_then(|o| o.last_transition_time.clone())
        .unwrap_or(now.clone());
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(transition),
        last_update_time: if same {
            old.and_then(|o| o.last_update_time.clone()).or(Some(now))
        } else {
            Some(now)
        },
    }
}

/// Writes the deployment's counters and conditions; returns when to look again (a rollout
/// that has not finished is checked against its progress deadline).
async fn update_status(
    client: &kube::Client,
    d: &Deployment,
    new: Option<&ReplicaSet>,
    old: &[ReplicaSet],
    created_now: Option<String>,
    max_unavailable: i32,
) -> anyhow::Result<Action> {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let all: Vec<&ReplicaSet> = new.into_iter().chain(old.iter()).collect();
    let sum = |f: fn(&ReplicaSet) -> i32| all.iter().map(|rs| f(rs)).sum::<i32>();
    let (total, ready, available) = (
        sum(|rs| status_of(rs).0),
        sum(|rs| status_of(rs).1),
        sum(|rs| status_of(rs).2),
    );
    let updated = new.map(|rs| status_of(rs).0).unwrap_or(0);
    let old_status = d.status.clone().unwrap_or_default();
    let conditions = old_status.conditions.clone().unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|c| c.type_ == t);
    let available_cond = if available >= replicas - max_unavailable {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            find("Available"),
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            find("Available"),
        )
    };
    let new_name = new.map(|rs| rs.name_any()).unwrap_or_default();
    let complete = new.is_some()
        && updated == replicas
        && spec_replicas(new.unwrap_or(&ReplicaSet::default())) == replicas
        && available >= replicas
        && total == updated
        && old.iter().all(|o| spec_replicas(o) == 0);
    let progressing_old = find("Progressing");
    let deadline = spec.progress_deadline_seconds.unwrap_or(600) as i64;
    let progress_changed = old_status.updated_replicas.unwrap_or(0) != updated
        || old_status.available_replicas.unwrap_or(0) != available
        || old_status.ready_replicas.unwrap_or(0) != ready
        || old_status.replicas.unwrap_or(0) != total;
    let mut next = Action::await_change();
    let progressing = if spec.paused.unwrap_or(false) {
        condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            progressing_old,
        )
    } else if let Some(name) = created_now {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{name}\""),
            progressing_old,
        )
    } else if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            progressing_old,
        )
    } else {
        let last = progressing_old
            .and_then(|c| c.last_update_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(jiff::Timestamp::now);
        let overdue = jiff::Timestamp::now().duration_since(last).as_secs() > deadline;
        if overdue && !progress_changed {
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                progressing_old,
            )
        } else {
            next = Action::requeue(Duration::from_secs(deadline.clamp(1, 10) as u64));
            let mut c = condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
                progressing_old,
            );
            if progress_changed {
                c.last_update_time = Some(Time(jiff::Timestamp::now()));
            }
            c
        }
    };
    let mut conditions: Vec<DeploymentCondition> = conditions
        .iter()
        .filter(|c| c.type_ != "Available" && c.type_ != "Progressing")
        .cloned()
        .collect();
    conditions.push(available_cond);
    conditions.push(progressing);
    let status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((replicas - available).max(0)),
        collision_count: old_status.collision_count,
        conditions: Some(conditions),
        ..Default::default()
    };
    let revision_now = new.map(revision).map(|r| r.to_string());
    let changed_counts = serde_json::to_value(&DeploymentStatus {
        conditions: None,
        ..status.clone()
    })
    .ok()
        != serde_json::to_value(&DeploymentStatus {
            conditions: None,
            ..old_status.clone()
        })
        .ok();
    let changed_conditions = status.conditions.as_ref().map(|cs| {
        cs.iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect::<Vec<_>>()
    }) != old_status.conditions.as_ref().map(|cs| {
        let mut v: Vec<_> = cs
            .iter()
            .filter(|c| c.type_ != "Available" && c.type_ != "Progressing")
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect();
        for t in ["Available", "Progressing"] {
            v.extend(
                cs.iter()
                    .filter(|c| c.type_ == t)
                    .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone())),
            );
        }
        v
    });
    let api: Api<Deployment> = Api::namespaced(client.clone(), &d.namespace().unwrap_or_default());
    if revision_now.is_some() && d.annotations().get(REVISION) != revision_now.as_ref() {
        let mut annotated = d.clone();
        annotated
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(REVISION.into(), revision_now.unwrap_or_default());
        match api
            .replace(&d.name_any(), &PostParams::default(), &annotated)
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
        // The annotation's event brings the deployment back for its status.
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    if changed_counts || changed_conditions || progress_changed {
        let mut updated_d = d.clone();
        updated_d.status = Some(status);
        match api
            .replace_status(&d.name_any(), &PostParams::default(), &updated_d)
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(next)
}
