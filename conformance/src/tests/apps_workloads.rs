//! [sig-apps] workload tests of Deployments (test/e2e/apps/deployment.go), ReplicaSets
//! (test/e2e/apps/replica_set.go), the ReplicationController lifecycle (test/e2e/apps/rc.go)
//! and ControllerRevisions (test/e2e/apps/controller_revision.go), with the deployment
//! utilities they stand on (test/utils/deployment.go, pkg/controller/deployment/util).
//!
//! On Kelp the nodes are `kelp simulate` ones, which run any image. Where upstream relies on
//! an image that can never be pulled to hold a rollout back ("webserver:404",
//! "gb-redisslave:nonexistent"), the template also gets a node selector no node matches
//! (`NO_NODE`): its pods stay Pending and never become available, as upstream's stay in
//! ImagePullBackOff. That holds on any cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, DeploymentCondition, ReplicaSet, ReplicaSetCondition,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::tests;
use crate::framework::{Events, eventually};
use crate::framework::{from, is_ready, retry_on_conflict};
use crate::{Ctx, Test};

/// Ported, and not passed by Kelp yet.
pub fn pending() -> Vec<Test> {
    Vec::new()
}

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-apps] Deployment deployment should support proportional scaling" => deployment_proportional_scaling,
        "[sig-apps] Deployment Deployment should have a working scale subresource" => deployment_scale_subresource,
        "[sig-apps] Deployment deployment should delete old replica sets" => deployment_cleanup_policy,
        "[sig-apps] Deployment deployment should support rollover" => deployment_rollover,
        "[sig-apps] Deployment should run the lifecycle of a Deployment" => deployment_lifecycle,
        "[sig-apps] Deployment should validate Deployment Status endpoints" => deployment_status_endpoints,
        "[sig-apps] ReplicaSet Replace and Patch tests" => replicaset_replace_and_patch,
        "[sig-apps] ReplicaSet should list and delete a collection of ReplicaSets" => replicaset_list_delete_collection,
        "[sig-apps] ReplicaSet should validate Replicaset Status endpoints" => replicaset_status_endpoints,
        "[sig-apps] ReplicationController should test the lifecycle of a ReplicationController" => rc_lifecycle,
        "[sig-apps] ControllerRevision [Serial] should manage the lifecycle of a ControllerRevision" => controller_revision_lifecycle,
    ]
}

/// How long a wait may take; upstream's are longer (minutes), this cluster is fast.
const WAIT: Duration = Duration::from_secs(60);

/// The images of upstream's fixtures, by the short names the other ports use, and the
/// container names upstream gives them (WebserverImageName, AgnhostImageName).
const WEBSERVER_NAME: &str = "httpd";
const WEBSERVER: &str = "httpd:2.4";
const AGNHOST_NAME: &str = "agnhost";
const AGNHOST: &str = "agnhost:2.52";
const PAUSE: &str = "pause";
const NGINX: &str = "nginx";

/// deploymentutil.RevisionAnnotation and appsv1.DefaultDeploymentUniqueLabelKey.
const REVISION: &str = "deployment.kubernetes.io/revision";
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The label of a node selector no node carries (see the module's comment).
const NO_NODE: &str = "e2e.kelp.dev/no-such-node";

fn label_is<K: kube::Resource>(o: &K, key: &str, value: &str) -> bool {
    o.labels().get(key).map(String::as_str) == Some(value)
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The UID of an object's controller (metav1.GetControllerOf).
fn controller_uid<K: kube::Resource>(o: &K) -> Option<String> {
    o.owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

/// labels.SelectorFromSet(...).String() of a selector's matchLabels (the fixtures here use no
/// matchExpressions).
fn selector_string(selector: &LabelSelector) -> String {
    selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// UpdateDeploymentWithRetries / UpdateReplicaSetWithRetries: GET, change, PUT, until a PUT
/// succeeds (any PUT error is retried; a GET error ends it), for at most a minute.
async fn update_with_retries<K>(
    api: &Api<K>,
    name: &str,
    change: impl Fn(&mut K),
) -> anyhow::Result<K>
where
    K: Clone + DeserializeOwned + Serialize + Debug,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut obj = api.get(name).await?;
        change(&mut obj);
        let err = match api.replace(name, &PostParams::default(), &obj).await {
            Ok(updated) => return Ok(updated),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("couldn't apply the provided updated to {name:?}: {err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads events until `done` accepts one (its type, its object), for at most `timeout`
/// (watchtools.UntilWithoutRetry; rc.go's watchUntilWithoutRetry).
async fn next_until<K>(
    events: &mut Events<K>,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&str, &K) -> bool,
) -> anyhow::Result<(&'static str, K)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| anyhow!("timed out after {timeout:?} waiting for {what}"))?;
        let (kind, obj) = match next {
            None => bail!("the watch closed while waiting for {what}"),
            Some(Err(e)) => {
                return Err(anyhow::Error::from(e).context(format!("waiting for {what}")));
            }
            Some(Ok(WatchEvent::Error(e))) => bail!("the watch failed waiting for {what}: {e:?}"),
            Some(Ok(WatchEvent::Bookmark(_))) => continue,
            Some(Ok(WatchEvent::Added(o))) => ("ADDED", o),
            Some(Ok(WatchEvent::Modified(o))) => ("MODIFIED", o),
            Some(Ok(WatchEvent::Deleted(o))) => ("DELETED", o),
        };
        if done(kind, &obj) {
            return Ok((kind, obj));
        }
    }
}

/// A watch of the kind's objects with the label selector (none when empty), from `rv` (a
/// ListWatch's watch, which needs a resource version to start from).
async fn watch_from<K>(api: &Api<K>, selector: &str, rv: &str) -> anyhow::Result<Events<K>>
where
    K: Clone + DeserializeOwned + Debug + Send + 'static,
{
    ensure!(
        !rv.is_empty() && rv != "0",
        "the list gave no resource version to watch from ({rv:?})"
    );
    let mut params = WatchParams::default();
    if !selector.is_empty() {
        params = params.labels(selector);
    }
    Ok(api.watch(&params, rv).await?.boxed())
}

/// watchtools.Until: a fresh watch from `rv` (so every event since then is seen again), read
/// until `done` accepts an event, for at most `timeout`.
async fn until<K>(
    api: &Api<K>,
    selector: &str,
    rv: &str,
    timeout: Duration,
    what: &str,
    done: impl FnMut(&str, &K) -> bool,
) -> anyhow::Result<K>
where
    K: Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut events = watch_from(api, selector, rv).await?;
    Ok(next_until(&mut events, timeout, what, done).await?.1)
}

/// The resource version of a list across all namespaces with the label selector.
async fn list_rv<K>(ctx: &Ctx, selector: &str) -> anyhow::Result<String>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    Ok(ctx
        .all::<K>()
        .list(&ListParams::default().labels(selector))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default())
}

/// e2epod.VerifyPodsRunning: `n` pods labelled name=<name> (none being deleted), all Running.
async fn verify_pods_running(ctx: &Ctx, name: &str, n: usize) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    let selector = format!("name={name}");
    eventually(WAIT, &format!("{n} running pods {selector}"), || async {
        let live: Vec<Pod> = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        Ok((live.len() == n && live.iter().all(|p| phase(p) == "Running")).then_some(()))
    })
    .await
    .context("error in waiting for pods to come up")
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// e2edeployment.NewDeployment, as JSON to adjust before it is made.
pub(super) fn new_deployment(
    name: &str,
    replicas: i32,
    labels: &Value,
    container: &str,
    image: &str,
    strategy: &str,
) -> Value {
    json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": strategy},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": container, "image": image, "securityContext": {}}],
                },
            },
        },
    })
}

/// replica_set.go's newRS.
fn new_rs(
    name: &str,
    replicas: i32,
    labels: &Value,
    container: &str,
    image: &str,
) -> anyhow::Result<ReplicaSet> {
    from(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": container, "image": image}],
                },
            },
        },
    }))
}

// ---------------------------------------------------------------------------------------------
// Deployment utilities

fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn template_of(d: &Deployment) -> Option<&PodTemplateSpec> {
    d.spec.as_ref().map(|s| &s.template)
}

fn rs_template(rs: &ReplicaSet) -> Option<&PodTemplateSpec> {
    rs.spec.as_ref().and_then(|s| s.template.as_ref())
}

fn first_image(t: Option<&PodTemplateSpec>) -> &str {
    t.and_then(|t| t.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .unwrap_or("")
}

fn grace_period(t: Option<&PodTemplateSpec>) -> Option<i64> {
    t.and_then(|t| t.spec.as_ref())
        .and_then(|s| s.termination_grace_period_seconds)
}

fn contains_image(t: Option<&PodTemplateSpec>, image: &str) -> bool {
    t.and_then(|t| t.spec.as_ref()).is_some_and(|s| {
        s.containers
            .iter()
            .any(|c| c.image.as_deref() == Some(image))
    })
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// apiequality.Semantic.DeepEqual's view of JSON: Go's zero values are the same as absent
/// ones (a `stdin: false` spelled out equals one left out).
fn semantic(v: Value) -> Value {
    fn zero(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
        }
    }
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, semantic(v)))
                .filter(|(_, v)| !zero(v))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(semantic).collect()),
        other => other,
    }
}

/// A template as EqualIgnoreHash compares it: without the pod-template-hash label.
fn template_key(t: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    if let Some(labels) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    semantic(v)
}

/// A deployment's ReplicaSets (deploymentutil.ListReplicaSets, FindNewReplicaSet and
/// FindOldReplicaSets).
struct Sets {
    /// The oldest one whose template is the deployment's.
    new: Option<ReplicaSet>,
    /// The others that still want replicas.
    old: Vec<ReplicaSet>,
    /// All the others.
    all_old: Vec<ReplicaSet>,
}

async fn replica_sets_of(ctx: &Ctx, d: &Deployment) -> anyhow::Result<Sets> {
    let rss: Api<ReplicaSet> = ctx.namespaced();
    let spec = d.spec.as_ref().context("the deployment has no spec")?;
    let uid = d.uid();
    let mut owned: Vec<ReplicaSet> = rss
        .list(&ListParams::default().labels(&selector_string(&spec.selector)))
        .await?
        .items
        .into_iter()
        .filter(|rs| uid.is_some() && controller_uid(rs) == uid)
        .collect();
    owned.sort_by_key(|rs| {
        (
            rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            rs.name_any(),
        )
    });
    let want = template_key(&spec.template);
    let new = owned
        .iter()
        .find(|rs| rs_template(rs).map(template_key).as_ref() == Some(&want))
        .cloned();
    let new_uid = new.as_ref().and_then(|rs| rs.uid());
    let all_old: Vec<ReplicaSet> = owned
        .into_iter()
        .filter(|rs| new_uid.is_none() || rs.uid() != new_uid)
        .collect();
    let old = all_old
        .iter()
        .filter(|rs| spec_replicas(rs) != 0)
        .cloned()
        .collect();
    Ok(Sets { new, old, all_old })
}

/// checkRevisionAndImage: Err with the reason the deployment and its new ReplicaSet are not
/// yet at the revision and image.
fn check_revision_and_image(
    d: &Deployment,
    new: Option<&ReplicaSet>,
    revision: &str,
    image: &str,
) -> Result<(), String> {
    let name = d.name_any();
    let Some(new) = new else {
        return Err(format!(
            "new replicaset for deployment {name:?} is yet to be created"
        ));
    };
    let rs = new.name_any();
    let hashed = new
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .is_some_and(|m| m.contains_key(POD_TEMPLATE_HASH));
    if !hashed {
        return Err(format!(
            "new replica set {rs:?} doesn't have {POD_TEMPLATE_HASH:?} label selector"
        ));
    }
    if d.annotations().get(REVISION).map(String::as_str) != Some(revision) {
        return Err(format!(
            "deployment {name:?} doesn't have the required revision set"
        ));
    }
    if new.annotations().get(REVISION).map(String::as_str) != Some(revision) {
        return Err(format!(
            "new replicaset {rs:?} doesn't have the required revision set"
        ));
    }
    if !contains_image(template_of(d), image) {
        return Err(format!(
            "deployment {name:?} doesn't have the required image {image} set"
        ));
    }
    if !contains_image(rs_template(new), image) {
        return Err(format!(
            "new replica set {rs:?} doesn't have the required image {image}."
        ));
    }
    Ok(())
}

/// CheckDeploymentRevisionAndImage, read now.
async fn revision_and_image(
    ctx: &Ctx,
    name: &str,
    revision: &str,
    image: &str,
) -> anyhow::Result<Result<(), String>> {
    let d = ctx.namespaced::<Deployment>().get(name).await?;
    let sets = replica_sets_of(ctx, &d).await?;
    Ok(check_revision_and_image(
        &d,
        sets.new.as_ref(),
        revision,
        image,
    ))
}

/// WaitForDeploymentRevisionAndImage.
async fn wait_revision_and_image(
    ctx: &Ctx,
    name: &str,
    revision: &str,
    image: &str,
) -> anyhow::Result<()> {
    let what = format!("deployment {name:?} at revision {revision} with image {image}");
    let waited = eventually(WAIT, &what, || async {
        Ok(revision_and_image(ctx, name, revision, image)
            .await?
            .is_ok()
            .then_some(()))
    })
    .await;
    if let Err(e) = waited {
        let reason = revision_and_image(ctx, name, revision, image)
            .await?
            .err()
            .unwrap_or_default();
        return Err(e.context(reason));
    }
    Ok(())
}

/// ResolveFenceposts: maxSurge (rounded up) and maxUnavailable (rounded down) of the
/// desired replicas, never both zero.
fn fenceposts(d: &Deployment) -> anyhow::Result<(i32, i32)> {
    let desired = replicas_of(d);
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let zero = IntOrString::Int(0);
    let surge = scaled(
        rolling.and_then(|r| r.max_surge.as_ref()).unwrap_or(&zero),
        desired,
        true,
    )?;
    let unavailable = scaled(
        rolling
            .and_then(|r| r.max_unavailable.as_ref())
            .unwrap_or(&zero),
        desired,
        false,
    )?;
    Ok(if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    })
}

/// intstr.GetScaledValueFromIntOrPercent.
fn scaled(v: &IntOrString, total: i32, round_up: bool) -> anyhow::Result<i32> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .with_context(|| format!("invalid value for IntOrString: {s:?}"))?;
            let x = percent * i64::from(total);
            let v = if round_up {
                (x + 99).div_euclid(100)
            } else {
                x.div_euclid(100)
            };
            Ok(i32::try_from(v)?)
        }
    }
}

fn is_rolling_update(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("RollingUpdate")
}

/// checkRollingUpdateStatus: the rollout keeps within maxSurge and minAvailable.
async fn check_rolling(ctx: &Ctx, d: &Deployment) -> anyhow::Result<()> {
    let sets = replica_sets_of(ctx, d).await?;
    // The new ReplicaSet not made yet, or one not labelled yet: nothing to check.
    let Some(new) = sets.new else {
        return Ok(());
    };
    let mut all = sets.old;
    all.push(new);
    let hashed = |rs: &ReplicaSet| {
        rs.spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref())
            .is_some_and(|m| m.contains_key(POD_TEMPLATE_HASH))
    };
    if !all.iter().all(hashed) {
        return Ok(());
    }
    let rolling = is_rolling_update(d);
    let (surge, unavailable) = if rolling { fenceposts(d)? } else { (0, 0) };
    let replicas = replicas_of(d);
    let total: i32 = all.iter().map(spec_replicas).sum();
    let max_created = replicas + surge;
    ensure!(
        total <= max_created,
        "total pods created: {total}, more than the max allowed: {max_created}"
    );
    let max_unavailable = if !rolling || replicas == 0 {
        0
    } else {
        unavailable.min(replicas)
    };
    let min_available = if rolling {
        replicas - max_unavailable
    } else {
        0
    };
    let available = d
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    ensure!(
        available >= min_available,
        "total pods available: {available}, less than the min required: {min_available}"
    );
    Ok(())
}

/// The deployment's status now, for a failed wait's message.
async fn last_status(ctx: &Ctx, name: &str) -> String {
    match ctx.namespaced::<Deployment>().get(name).await {
        Ok(d) => format!("deployment status: {:?}", d.status),
        Err(e) => e.to_string(),
    }
}

/// WaitForDeploymentComplete (and with `rolling`, WaitForDeploymentCompleteAndCheckRolling):
/// the status counts `d`'s replicas as updated, total and available, and has seen `d`'s
/// generation.
pub(super) async fn wait_complete(ctx: &Ctx, d: &Deployment, rolling: bool) -> anyhow::Result<()> {
    let api: Api<Deployment> = ctx.namespaced();
    let name = d.name_any();
    let want = replicas_of(d);
    let generation = d.metadata.generation.unwrap_or(0);
    let waited = eventually(
        WAIT,
        &format!("deployment {name:?} to complete"),
        || async {
            let current = api.get(&name).await?;
            if rolling {
                check_rolling(ctx, &current).await?;
            }
            let s = current.status.clone().unwrap_or_default();
            Ok((s.updated_replicas.unwrap_or(0) == want
                && s.replicas.unwrap_or(0) == want
                && s.available_replicas.unwrap_or(0) == want
                && s.observed_generation.unwrap_or(0) >= generation)
                .then_some(()))
        },
    )
    .await;
    match waited {
        Ok(()) => Ok(()),
        Err(e) => Err(e.context(last_status(ctx, &name).await)),
    }
}

/// Polls the deployment until `ok` holds.
async fn wait_deployment(
    ctx: &Ctx,
    name: &str,
    what: &str,
    ok: impl Fn(&Deployment) -> bool,
) -> anyhow::Result<()> {
    let api: Api<Deployment> = ctx.namespaced();
    let waited = eventually(WAIT, &format!("deployment {name:?}: {what}"), || async {
        Ok(ok(&api.get(name).await?).then_some(()))
    })
    .await;
    match waited {
        Ok(()) => Ok(()),
        Err(e) => Err(e.context(last_status(ctx, name).await)),
    }
}

fn observed_generation(d: &Deployment) -> i64 {
    d.status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0)
}

/// WaitForObservedDeployment.
async fn wait_observed(ctx: &Ctx, name: &str, generation: i64) -> anyhow::Result<()> {
    wait_deployment(
        ctx,
        name,
        &format!("observed generation {generation}"),
        |d| observed_generation(d) >= generation,
    )
    .await
}

/// Polls the ReplicaSet until the controller has seen `rs`'s generation and `ok` holds
/// (waitForReplicaSetTargetSpecReplicas and its kin).
async fn wait_rs(
    ctx: &Ctx,
    rs: &ReplicaSet,
    what: &str,
    ok: impl Fn(&ReplicaSet) -> bool,
) -> anyhow::Result<()> {
    let rss: Api<ReplicaSet> = ctx.namespaced();
    let name = rs.name_any();
    let generation = rs.metadata.generation.unwrap_or(0);
    eventually(
        WAIT,
        &format!("replicaset {name:?} to have {what}"),
        || async {
            let current = rss.get(&name).await?;
            let observed = current
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            Ok((observed >= generation && ok(&current)).then_some(()))
        },
    )
    .await
}

/// waitForReplicaSetTargetSpecReplicas.
async fn wait_rs_spec_replicas(ctx: &Ctx, rs: &ReplicaSet, n: i32) -> anyhow::Result<()> {
    wait_rs(ctx, rs, &format!(".spec.replicas = {n}"), |c| {
        spec_replicas(c) == n
    })
    .await
}

/// waitForReplicaSetDesiredReplicas: the pods made for `rs`'s .spec.replicas.
async fn wait_rs_desired(ctx: &Ctx, rs: &ReplicaSet) -> anyhow::Result<()> {
    let want = spec_replicas(rs);
    wait_rs(ctx, rs, "desired number of replicas", |c| {
        status_replicas(c) == want && status_replicas(c) == spec_replicas(c)
    })
    .await
}

/// e2ereplicaset.WaitForReplicaSetTargetAvailableReplicas.
async fn wait_rs_available(ctx: &Ctx, rs: &ReplicaSet, n: i32) -> anyhow::Result<()> {
    wait_rs(ctx, rs, &format!(".status.availableReplicas = {n}"), |c| {
        available_replicas(c) == n
    })
    .await
}

/// rollover's ensureReplicas.
fn ensure_replicas(rs: &ReplicaSet, n: i32) -> anyhow::Result<()> {
    let (spec, status) = (spec_replicas(rs), status_replicas(rs));
    ensure!(
        spec == n && status == n,
        "replica set {:?} has .spec.replicas {spec} and .status.replicas {status}, expected {n}",
        rs.name_any()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apps/deployment.go

/// deployment.go testDeploymentSubresources
async fn deployment_scale_subresource(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<Deployment> = ctx.namespaced();
    let name = "test-new-deployment";
    let labels = json!({"name": WEBSERVER_NAME});
    let d = from(new_deployment(
        name,
        1,
        &labels,
        WEBSERVER_NAME,
        WEBSERVER,
        "RollingUpdate",
    ))?;
    let deploy = api.create(&PostParams::default(), &d).await?;
    wait_revision_and_image(&ctx, name, "1", WEBSERVER).await?;
    wait_complete(&ctx, &deploy, false).await?;
    api.get(name).await?;

    // getting scale subresource
    let mut scale = api
        .get_scale(name)
        .await
        .context("Failed to get scale subresource")?;
    let (spec, status) = (
        scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        scale.status.as_ref().map_or(0, |s| s.replicas),
    );
    ensure!(spec == 1, "the scale's spec.replicas is {spec}, not 1");
    ensure!(
        status == 1,
        "the scale's status.replicas is {status}, not 1"
    );

    // updating a scale subresource, unconditionally
    scale.metadata.resource_version = None;
    scale.spec.get_or_insert_default().replicas = Some(2);
    let result = api
        .replace_scale(name, &PostParams::default(), &scale)
        .await
        .context("Failed to put scale subresource")?;
    let got = result.spec.and_then(|s| s.replicas).unwrap_or(0);
    ensure!(
        got == 2,
        "the updated scale's spec.replicas is {got}, not 2"
    );

    // verifying the deployment Spec.Replicas was modified
    let d = api
        .get(name)
        .await
        .context("Failed to get deployment resource")?;
    ensure!(
        replicas_of(&d) == 2,
        "the deployment has {} replicas, not 2",
        replicas_of(&d)
    );

    // Patch a scale subresource: the patch is a Scale as Go marshals it.
    let patch = json!({"metadata": {"creationTimestamp": null}, "spec": {"replicas": 4}, "status": {"replicas": 0}});
    api.patch_scale(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .context("Failed to patch deployment")?;
    let d = api
        .get(name)
        .await
        .context("Failed to get deployment resource")?;
    ensure!(
        replicas_of(&d) == 4,
        "deployment should have 4 replicas, has {}",
        replicas_of(&d)
    );
    Ok(())
}

/// deployment.go testDeploymentCleanUpPolicy: with revisionHistoryLimit 0 the adopted old
/// ReplicaSet is cleaned up, and only the new pod is ever made.
async fn deployment_cleanup_policy(ctx: Ctx) -> anyhow::Result<()> {
    let rs_labels = json!({"name": "cleanup-pod", "pod": WEBSERVER_NAME});
    let rss: Api<ReplicaSet> = ctx.namespaced();
    rss.create(
        &PostParams::default(),
        &new_rs(
            "test-cleanup-controller",
            1,
            &rs_labels,
            WEBSERVER_NAME,
            WEBSERVER,
        )?,
    )
    .await?;
    verify_pods_running(&ctx, "cleanup-pod", 1).await?;

    let name = "test-cleanup-deployment";
    let pods: Api<Pod> = ctx.namespaced();
    let rv = pods
        .list(&ListParams::default())
        .await
        .context("Failed to query for pods")?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut events = watch_from(&pods, "", &rv).await?;
    // There should be only one pod being created, which is the pod with the agnhost image.
    let watcher = async move {
        let mut creations = 0;
        while let Some(Ok(event)) = events.next().await {
            let WatchEvent::Added(pod) = event else {
                continue;
            };
            creations += 1;
            if creations > 1 {
                return anyhow!(
                    "Expect only one pod creation, the second creation event: {}",
                    pod.name_any()
                );
            }
            let container = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .map(|c| c.name.clone())
                .unwrap_or_default();
            if container != AGNHOST_NAME {
                return anyhow!(
                    "Expect the created pod to have container name {AGNHOST_NAME}, got pod {} \
                     with {container:?}",
                    pod.name_any()
                );
            }
        }
        std::future::pending::<anyhow::Error>().await
    };
    let main = async {
        let mut d = new_deployment(
            name,
            1,
            &json!({"name": "cleanup-pod"}),
            AGNHOST_NAME,
            AGNHOST,
            "RollingUpdate",
        );
        d["spec"]["revisionHistoryLimit"] = json!(0);
        ctx.namespaced::<Deployment>()
            .create(&PostParams::default(), &from(d)?)
            .await?;
        // Waiting for deployment history to be cleaned up
        let api: Api<Deployment> = ctx.namespaced();
        let waited = eventually(WAIT, "the old replica sets cleaned up", || async {
            let d = api.get(name).await?;
            Ok(replica_sets_of(&ctx, &d)
                .await?
                .all_old
                .is_empty()
                .then_some(()))
        })
        .await;
        if waited.is_err() {
            let d = api.get(name).await?;
            let left = replica_sets_of(&ctx, &d).await?.all_old.len();
            bail!("{left} old replica sets were not cleaned up for deployment {name:?}");
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = main => r,
        e = watcher => Err(e),
    }
}

/// deployment.go testProportionalScalingDeployment (without the PodReplacementPolicy
/// variant): scaled in the middle of a rollout, the deployment spreads the new replicas over
/// its active ReplicaSets in proportion.
async fn deployment_proportional_scaling(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<Deployment> = ctx.namespaced();
    let rss: Api<ReplicaSet> = ctx.namespaced();
    let name = "webserver-deployment";
    let replicas = 10;
    let mut d = new_deployment(
        name,
        replicas,
        &json!({"name": WEBSERVER_NAME}),
        WEBSERVER_NAME,
        WEBSERVER,
        "RollingUpdate",
    );
    d["spec"]["strategy"]["rollingUpdate"] = json!({"maxSurge": 3, "maxUnavailable": 2});
    let deployment = api.create(&PostParams::default(), &from(d)?).await?;
    wait_observed(&ctx, name, deployment.metadata.generation.unwrap_or(0)).await?;
    verify_pods_running(&ctx, WEBSERVER_NAME, replicas as usize).await?;
    wait_complete(&ctx, &deployment, false).await?;
    let first = replica_sets_of(&ctx, &deployment)
        .await?
        .new
        .context("the deployment has no new replica set")?;

    // Update the deployment with a non-existent image so that the new replica set will be
    // blocked to simulate a partial rollout.
    let deployment = update_with_retries(&api, name, |d| {
        if let Some(spec) = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            if let Some(c) = spec.containers.first_mut() {
                c.image = Some("webserver:404".into());
            }
            spec.node_selector = Some(BTreeMap::from([(NO_NODE.into(), "true".into())]));
        }
    })
    .await?;
    wait_observed(&ctx, name, deployment.metadata.generation.unwrap_or(0)).await?;

    // Checking state of first rollout's replicaset.
    let (max_surge, max_unavailable) = {
        let rolling = deployment
            .spec
            .as_ref()
            .and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.rolling_update.as_ref())
            .context("the deployment has no rollingUpdate")?;
        let total = replicas_of(&deployment);
        let get = |v: Option<&IntOrString>| scaled(v.unwrap_or(&IntOrString::Int(0)), total, false);
        (
            get(rolling.max_surge.as_ref())?,
            get(rolling.max_unavailable.as_ref())?,
        )
    };
    // First rollout's replicaset should have (replicas - maxUnavailable) = 10 - 2 = 8
    // available replicas, and .spec.replicas = 8 too.
    let min_available = replicas - max_unavailable;
    wait_rs_available(&ctx, &first, min_available).await?;
    wait_rs_spec_replicas(&ctx, &first, min_available).await?;
    let first = rss.get(&first.name_any()).await?;
    wait_rs_desired(&ctx, &first).await?;

    // Checking state of second rollout's replicaset.
    let second = replica_sets_of(&ctx, &deployment)
        .await?
        .new
        .context("the deployment has no second replica set")?;
    // Second rollout's replicaset should have 0 available replicas.
    ensure!(
        available_replicas(&second) == 0,
        "the second rollout's replicaset has {} available replicas, not 0",
        available_replicas(&second)
    );
    // ... and (replicas + maxSurge - first RS's replicas) = 10 + 3 - 8 = 5 for .spec.replicas.
    let new_replicas = replicas + max_surge - min_available;
    wait_rs_spec_replicas(&ctx, &second, new_replicas).await?;
    let second = rss.get(&second.name_any()).await?;
    wait_rs_desired(&ctx, &second).await?;

    // Check the deployment's minimum availability.
    let available = deployment
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    ensure!(
        available >= min_available,
        "observed {available} available replicas, less than min required {min_available}"
    );

    // Scale the deployment to 30 replicas.
    update_with_retries(&api, name, |d| {
        d.spec.get_or_insert_default().replicas = Some(30);
    })
    .await?;
    let first = rss.get(&first.name_any()).await?;
    let second = rss.get(&second.name_any()).await?;
    // First rollout's replicaset should have .spec.replicas = 8 + (30-10)*(8/13) = 8 + 12 = 20
    // replicas, the second 5 + (30-10)*(5/13) = 5 + 8 = 13.
    wait_rs_spec_replicas(&ctx, &first, 20).await?;
    wait_rs_spec_replicas(&ctx, &second, 13).await?;
    Ok(())
}

/// deployment.go testRolloverDeployment: the desired state changed again before a rollout
/// finishes, the deployment rolls over both older ReplicaSets.
async fn deployment_rollover(ctx: Ctx) -> anyhow::Result<()> {
    let api: Api<Deployment> = ctx.namespaced();
    let rss: Api<ReplicaSet> = ctx.namespaced();
    let pod_name = "rollover-pod";
    let rs_name = "test-rollover-controller";
    rss.create(
        &PostParams::default(),
        &new_rs(
            rs_name,
            1,
            &json!({"name": pod_name, "pod": WEBSERVER_NAME}),
            WEBSERVER_NAME,
            WEBSERVER,
        )?,
    )
    .await?;
    verify_pods_running(&ctx, pod_name, 1).await?;

    // Wait for replica set to become ready before adopting it (WaitForReadyReplicaSet).
    eventually(WAIT, &format!("replica set {rs_name:?} ready"), || async {
        let rs = rss.get(rs_name).await?;
        let ready = rs
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        Ok(
            (spec_replicas(&rs) == status_replicas(&rs) && spec_replicas(&rs) == ready)
                .then_some(()),
        )
    })
    .await?;

    // A deployment of an image that never runs, so it won't finish.
    let name = "test-rollover-deployment";
    let image = "gcr.io/google_samples/gb-redisslave:nonexistent";
    let mut d = new_deployment(
        name,
        1,
        &json!({"name": pod_name}),
        "redis-slave",
        image,
        "RollingUpdate",
    );
    d["spec"]["strategy"]["rollingUpdate"] = json!({"maxUnavailable": 0, "maxSurge": 1});
    d["spec"]["minReadySeconds"] = json!(10);
    d["spec"]["template"]["spec"]["nodeSelector"] = json!({NO_NODE: "true"});
    api.create(&PostParams::default(), &from(d)?).await?;

    // Make sure the deployment starts to scale up and down replica sets.
    let deployment = api.get(name).await?;
    let generation = deployment.metadata.generation.unwrap_or(0);
    wait_deployment(&ctx, name, "at least 1 updated replica", |d| {
        observed_generation(d) >= generation
            && d.status
                .as_ref()
                .and_then(|s| s.updated_replicas)
                .unwrap_or(0)
                >= 1
    })
    .await?;
    // Check if it's updated to revision 1 correctly
    revision_and_image(&ctx, name, "1", image)
        .await?
        .map_err(|reason| anyhow!(reason))?;

    // Ensure that both replica sets have 1 created replica
    ensure_replicas(&rss.get(rs_name).await?, 1)?;
    let new = replica_sets_of(&ctx, &deployment)
        .await?
        .new
        .context("the deployment has no new replica set")?;
    ensure_replicas(&new, 1)?;

    // The deployment is stuck: update it to roll over the two ReplicaSets to agnhost pods.
    let deployment = update_with_retries(&api, name, |d| {
        if let Some(spec) = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            if let Some(c) = spec.containers.first_mut() {
                c.name = AGNHOST_NAME.into();
                c.image = Some(AGNHOST.into());
            }
            spec.node_selector = None;
        }
    })
    .await?;
    wait_observed(&ctx, name, deployment.metadata.generation.unwrap_or(0)).await?;
    wait_revision_and_image(&ctx, name, "2", AGNHOST).await?;
    wait_complete(&ctx, &deployment, true).await?;

    // Ensure that both old replica sets have no replicas
    ensure_replicas(&rss.get(rs_name).await?, 0)?;
    ensure_replicas(&rss.get(&new.name_any()).await?, 0)?;
    Ok(())
}

/// deployment.go "should run the lifecycle of a Deployment": created, patched, scaled,
/// updated, its status read and patched, and deleted as a collection, each step seen on a
/// watch from before the creation.
async fn deployment_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let ns = ctx.namespace.clone();
    let api: Api<Deployment> = ctx.namespaced();
    let name = "test-deployment";
    let selector = "test-deployment-static=true";
    let rv = list_rv::<Deployment>(&ctx, selector)
        .await
        .context("failed to list Deployments")?;
    let ours =
        |d: &Deployment| d.name_any() == name && label_is(d, "test-deployment-static", "true");
    let status = |d: &Deployment| d.status.clone().unwrap_or_default();

    // creating a Deployment
    let mut test_deployment = new_deployment(
        name,
        2,
        &json!({"test-deployment-static": "true"}),
        name,
        AGNHOST,
        "RollingUpdate",
    );
    test_deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(1);
    api.create(&PostParams::default(), &from(test_deployment.clone())?)
        .await
        .with_context(|| format!("failed to create Deployment {name} in namespace {ns}"))?;

    // waiting for Deployment to be created
    until(
        &api,
        selector,
        &rv,
        Duration::from_secs(30),
        "the ADDED event",
        |kind, d| kind == "ADDED" && ours(d),
    )
    .await
    .context("failed to see ADDED event")?;

    // waiting for all Replicas to be Ready
    until(&api, selector, &rv, WAIT, "2 ready replicas", |_, d| {
        ours(d) && status(d).ready_replicas.unwrap_or(0) == 2
    })
    .await
    .with_context(|| {
        format!("failed to see replicas of {name} in namespace {ns} scale to requested amount of 2")
    })?;

    // patching the Deployment
    let patch = json!({
        "metadata": {"labels": {"test-deployment": "patched"}},
        "spec": {
            "replicas": 1,
            "template": {"spec": {
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": name, "image": PAUSE}],
            }},
        },
    });
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .context("failed to patch Deployment")?;
    until(
        &api,
        selector,
        &rv,
        Duration::from_secs(30),
        "a MODIFIED event",
        |kind, d| kind == "MODIFIED" && ours(d),
    )
    .await
    .context("failed to see MODIFIED event")?;

    // waiting for Replicas to scale
    until(
        &api,
        selector,
        &rv,
        WAIT,
        "1 ready replica of the patched template",
        |_, d| {
            let s = status(d);
            ours(d)
                && s.ready_replicas.unwrap_or(0) == 1
                && s.updated_replicas.unwrap_or(0) == 1
                && s.unavailable_replicas.unwrap_or(0) == 0
                && first_image(template_of(d)) == PAUSE
                && grace_period(template_of(d)) == Some(2)
        },
    )
    .await
    .with_context(|| {
        format!("failed to see replicas of {name} in namespace {ns} scale to requested amount of 1")
    })?;

    // listing Deployments
    let list = ctx
        .all::<Deployment>()
        .list(&ListParams::default().labels(selector))
        .await
        .context("failed to list Deployments")?;
    ensure!(
        list.items
            .iter()
            .any(|d| ours(d) && d.namespace().as_deref() == Some(ns.as_str())),
        "unable to find the Deployment in the following list {:?}",
        list.items.iter().map(|d| d.name_any()).collect::<Vec<_>>()
    );

    // updating the Deployment: the object first made, relabelled, with another image and
    // two replicas, put without a resource version (an unconditional update).
    test_deployment["metadata"]["labels"]["test-deployment"] = json!("updated");
    test_deployment["spec"]["template"]["spec"]["containers"][0]["image"] = json!(WEBSERVER);
    test_deployment["spec"]["replicas"] = json!(2);
    api.replace(name, &PostParams::default(), &from(test_deployment)?)
        .await
        .context("failed to update the DeploymentStatus")?;
    until(
        &api,
        selector,
        &rv,
        Duration::from_secs(30),
        "a MODIFIED event",
        |kind, d| kind == "MODIFIED" && ours(d),
    )
    .await
    .context("failed to see MODIFIED event")?;

    // fetching the DeploymentStatus
    let got = api
        .get_status(name)
        .await
        .context("failed to fetch the Deployment")?;
    ensure!(
        first_image(template_of(&got)) == WEBSERVER,
        "failed to update image: {}",
        first_image(template_of(&got))
    );
    ensure!(
        label_is(&got, "test-deployment", "updated"),
        "failed to update labels: {:?}",
        got.labels()
    );
    until(&api, selector, &rv, WAIT, "2 ready replicas", |_, d| {
        let s = status(d);
        ours(d)
            && s.ready_replicas.unwrap_or(0) == 2
            && s.updated_replicas.unwrap_or(0) == 2
            && s.unavailable_replicas.unwrap_or(0) == 0
    })
    .await
    .with_context(|| {
        format!("failed to see replicas of {name} in namespace {ns} scale to requested amount of 2")
    })?;

    // patching the DeploymentStatus
    let patch = json!({
        "metadata": {"labels": {"test-deployment": "patched-status"}},
        "status": {"readyReplicas": 0, "availableReplicas": 0},
    });
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    until(
        &api,
        selector,
        &rv,
        Duration::from_secs(30),
        "a MODIFIED event",
        |kind, d| kind == "MODIFIED" && ours(d),
    )
    .await
    .context("failed to see MODIFIED event")?;

    // fetching the DeploymentStatus
    let got = api
        .get_status(name)
        .await
        .context("failed to fetch the DeploymentStatus")?;
    ensure!(
        first_image(template_of(&got)) == WEBSERVER,
        "failed to update image: {}",
        first_image(template_of(&got))
    );
    ensure!(
        label_is(&got, "test-deployment", "updated"),
        "failed to update labels: {:?}",
        got.labels()
    );
    until(
        &api,
        selector,
        &rv,
        WAIT,
        "2 ready replicas of the updated image",
        |_, d| {
            let s = status(d);
            ours(d)
                && s.ready_replicas.unwrap_or(0) == 2
                && s.updated_replicas.unwrap_or(0) == 2
                && s.unavailable_replicas.unwrap_or(0) == 0
                && first_image(template_of(d)) == WEBSERVER
        },
    )
    .await
    .with_context(|| {
        format!("failed to see replicas of {name} in namespace {ns} scale to requested amount of 2")
    })?;

    // deleting the Deployment
    let params = DeleteParams {
        grace_period_seconds: Some(1),
        ..Default::default()
    };
    api.delete_collection(&params, &ListParams::default().labels(selector))
        .await
        .context("failed to delete Deployment via collection")?;
    until(
        &api,
        selector,
        &rv,
        Duration::from_secs(60),
        "a DELETED event",
        |kind, d| kind == "DELETED" && ours(d),
    )
    .await
    .context("failed to see DELETED event")?;
    Ok(())
}

/// deployment.go "should validate Deployment Status endpoints": /status read, updated (a
/// condition added) and merge-patched, each change seen on a watch.
async fn deployment_status_endpoints(ctx: Ctx) -> anyhow::Result<()> {
    let ns = ctx.namespace.clone();
    let api: Api<Deployment> = ctx.namespaced();
    let name = ctx.unique("test-deployment");
    let selector = "e2e=testing";
    let rv = list_rv::<Deployment>(&ctx, selector)
        .await
        .context("failed to list Deployments")?;

    // creating a Deployment
    let labels = json!({"name": WEBSERVER_NAME, "e2e": "testing"});
    let d = from(new_deployment(
        &name,
        1,
        &labels,
        WEBSERVER_NAME,
        WEBSERVER,
        "RollingUpdate",
    ))?;
    let deploy = api.create(&PostParams::default(), &d).await?;
    wait_revision_and_image(&ctx, &name, "1", WEBSERVER).await?;
    wait_complete(&ctx, &deploy, false).await?;
    let test_deployment = api.get(&name).await?;

    // Getting /status
    api.get_status(&name).await.with_context(|| {
        format!("Failed to fetch the status of deployment {name} in namespace {ns}")
    })?;

    // updating Deployment Status
    retry_on_conflict(|| async {
        let mut d = api.get(&name).await?;
        d.status
            .get_or_insert_default()
            .conditions
            .get_or_insert_default()
            .push(DeploymentCondition {
                type_: "StatusUpdate".into(),
                status: "True".into(),
                reason: Some("E2E".into()),
                message: Some("Set from e2e test".into()),
                ..Default::default()
            });
        api.replace_status(&name, &PostParams::default(), &d).await
    })
    .await
    .context("Failed to update status")?;

    let ours = |d: &Deployment| {
        d.name_any() == test_deployment.name_any()
            && d.namespace() == test_deployment.namespace()
            && label_is(d, "e2e", "testing")
    };
    let conditions = |d: &Deployment| {
        d.status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
    };

    // watching for the Deployment status to be updated
    until(
        &api,
        selector,
        &rv,
        WAIT,
        "the StatusUpdate condition",
        |_, d| {
            ours(d)
                && conditions(d).iter().any(|c| {
                    c.type_ == "StatusUpdate"
                        && c.reason.as_deref() == Some("E2E")
                        && c.message.as_deref() == Some("Set from e2e test")
                })
        },
    )
    .await
    .with_context(|| format!("failed to locate Deployment {name} in namespace {ns}"))?;

    // patching the Deployment Status
    let payload = json!({"status": {"conditions": [{"type": "StatusPatched", "status": "True"}]}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&payload))
        .await
        .context("Failed to patch status")?;

    // watching for the Deployment status to be patched
    until(
        &api,
        selector,
        &rv,
        WAIT,
        "the StatusPatched condition",
        |_, d| ours(d) && conditions(d).iter().any(|c| c.type_ == "StatusPatched"),
    )
    .await
    .with_context(|| format!("failed to locate deployment {name} in namespace {ns}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apps/replica_set.go

/// replica_set.go testRSLifeCycle: scaled by an update, then patched (labels, replicas and
/// template), the patch seen through on a watch.
async fn replicaset_replace_and_patch(ctx: Ctx) -> anyhow::Result<()> {
    let ns = ctx.namespace.clone();
    let rss: Api<ReplicaSet> = ctx.namespaced();
    let name = "test-rs";
    let selector = "test-rs=patched";
    let rv = list_rv::<ReplicaSet>(&ctx, selector)
        .await
        .context("failed to list rsList")?;
    let labels = json!({"name": "sample-pod", "pod": WEBSERVER_NAME});
    rss.create(
        &PostParams::default(),
        &new_rs(name, 1, &labels, WEBSERVER_NAME, WEBSERVER)?,
    )
    .await?;
    verify_pods_running(&ctx, "sample-pod", 1).await?;

    // Scaling up the replicaset
    update_with_retries(&rss, name, |rs| {
        rs.spec.get_or_insert_default().replicas = Some(2);
    })
    .await
    .context("ReplicaSet fail to scale to 2 replicasets")?;

    // patching the ReplicaSet
    let patch = json!({
        "metadata": {"labels": {"test-rs": "patched"}},
        "spec": {
            "replicas": 3,
            "template": {"spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": name, "image": PAUSE}],
            }},
        },
    });
    rss.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .context("failed to patch ReplicaSet")?;
    until(
        &rss,
        selector,
        &rv,
        WAIT,
        "3 ready replicas of the patched ReplicaSet",
        |_, rs| {
            let s = rs.status.clone().unwrap_or_default();
            rs.name_any() == name
                && label_is(rs, "test-rs", "patched")
                && s.ready_replicas.unwrap_or(0) == 3
                && s.available_replicas.unwrap_or(0) == 3
                && first_image(rs_template(rs)) == PAUSE
                && grace_period(rs_template(rs)) == Some(0)
        },
    )
    .await
    .with_context(|| {
        format!("failed to see replicas of {name} in namespace {ns} scale to requested amount of 3")
    })?;
    Ok(())
}

/// replica_set.go listRSDeleteCollection
async fn replicaset_list_delete_collection(ctx: Ctx) -> anyhow::Result<()> {
    let rss: Api<ReplicaSet> = ctx.namespaced();
    let name = "test-rs";
    let e2e_value = ctx.unique("e").trim_start_matches("e-").to_string();
    let selector = format!("e2e={e2e_value}");
    let labels = json!({"name": "sample-pod", "pod": WEBSERVER_NAME, "e2e": e2e_value});

    // Create a ReplicaSet
    rss.create(
        &PostParams::default(),
        &new_rs(name, 3, &labels, WEBSERVER_NAME, WEBSERVER)?,
    )
    .await?;
    // Verify that the required pods have come up
    verify_pods_running(&ctx, "sample-pod", 3)
        .await
        .context("Failed to create pods")?;
    rss.get(name).await.context("failed to get ReplicaSets")?;

    // Listing all ReplicaSets
    let all: Api<ReplicaSet> = ctx.all();
    let list = all
        .list(&ListParams::default().labels(&selector))
        .await
        .context("failed to list ReplicaSets")?;
    ensure!(
        list.items.len() == 1,
        "filtered list wasn't found: {} listed",
        list.items.len()
    );

    // DeleteCollection of the ReplicaSets
    let params = DeleteParams {
        grace_period_seconds: Some(1),
        ..Default::default()
    };
    rss.delete_collection(&params, &ListParams::default().labels(&selector))
        .await
        .context("failed to delete ReplicaSets")?;

    // After DeleteCollection verify that ReplicaSets have been deleted
    let list = all
        .list(&ListParams::default().labels(&selector))
        .await
        .context("failed to list ReplicaSets")?;
    ensure!(
        list.items.is_empty(),
        "filtered list should have no replicas: {} listed",
        list.items.len()
    );
    Ok(())
}

/// replica_set.go testRSStatus
async fn replicaset_status_endpoints(ctx: Ctx) -> anyhow::Result<()> {
    let ns = ctx.namespace.clone();
    let rss: Api<ReplicaSet> = ctx.namespaced();
    let name = "test-rs";
    let labels = json!({"name": "sample-pod", "pod": WEBSERVER_NAME});
    let selector = format!("name=sample-pod,pod={WEBSERVER_NAME}");
    let rv = list_rv::<ReplicaSet>(&ctx, &selector)
        .await
        .context("failed to list Replicasets")?;

    // Create a Replicaset
    let test_rs = rss
        .create(
            &PostParams::default(),
            &new_rs(name, 1, &labels, WEBSERVER_NAME, WEBSERVER)?,
        )
        .await?;
    // Verify that the required pods have come up.
    verify_pods_running(&ctx, "sample-pod", 1)
        .await
        .context("Failed to create pods")?;

    // Getting /status
    rss.get_status(name).await.with_context(|| {
        format!("Failed to fetch the status of replicaset {name} in namespace {ns}")
    })?;

    // updating the Replicaset Status
    retry_on_conflict(|| async {
        let mut rs = rss.get(name).await?;
        rs.status
            .get_or_insert_default()
            .conditions
            .get_or_insert_default()
            .push(ReplicaSetCondition {
                type_: "StatusUpdate".into(),
                status: "True".into(),
                reason: Some("E2E".into()),
                message: Some("Set from e2e test".into()),
                ..Default::default()
            });
        rss.replace_status(name, &PostParams::default(), &rs).await
    })
    .await
    .context("Failed to update status")?;

    let ours = |rs: &ReplicaSet| {
        rs.name_any() == test_rs.name_any()
            && rs.namespace() == test_rs.namespace()
            && rs.labels().get("name") == test_rs.labels().get("name")
            && rs.labels().get("pod") == test_rs.labels().get("pod")
    };
    let conditions = |rs: &ReplicaSet| {
        rs.status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
    };

    // watching for the ReplicaSet status to be updated
    until(
        &rss,
        &selector,
        &rv,
        WAIT,
        "the StatusUpdate condition",
        |_, rs| {
            ours(rs)
                && conditions(rs).iter().any(|c| {
                    c.type_ == "StatusUpdate"
                        && c.reason.as_deref() == Some("E2E")
                        && c.message.as_deref() == Some("Set from e2e test")
                })
        },
    )
    .await
    .with_context(|| format!("failed to locate replicaset {name} in namespace {ns}"))?;

    // patching the Replicaset Status
    let payload = json!({"status": {"conditions": [{"type": "StatusPatched", "status": "True"}]}});
    rss.patch_status(name, &PatchParams::default(), &Patch::Merge(&payload))
        .await
        .context("Failed to patch status")?;

    // watching for the Replicaset status to be patched
    until(
        &rss,
        &selector,
        &rv,
        WAIT,
        "the StatusPatched condition",
        |_, rs| ours(rs) && conditions(rs).iter().any(|c| c.type_ == "StatusPatched"),
    )
    .await
    .with_context(|| format!("failed to locate replicaset {name} in namespace {ns}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apps/rc.go

/// framework.WatchEventSequenceVerifier's check: every expected event type is matched by an
/// actual event of its own.
fn verify_event_sequence(expected: &[&str], actual: &[&str]) -> anyhow::Result<()> {
    ensure!(
        expected.len() <= actual.len(),
        "Did not get enough watch events: {actual:?}"
    );
    let mut used = vec![false; actual.len()];
    let mut missing = BTreeSet::new();
    for want in expected {
        match (0..actual.len()).find(|&i| !used[i] && actual[i] == *want) {
            Some(i) => used[i] = true,
            None => {
                missing.insert(format!("Watch event {want} not found"));
            }
        }
    }
    ensure!(
        missing.is_empty(),
        "Unexpected error(s): {}",
        missing.into_iter().collect::<Vec<_>>().join("\n - ")
    );
    Ok(())
}

/// rc.go "should test the lifecycle of a ReplicationController": created, patched, its
/// status patched, scaled through /scale, its status replaced, listed and deleted as a
/// collection, with one watch following along.
async fn rc_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let rcs: Api<ReplicationController> = ctx.namespaced();
    let selector = "test-rc-static=true";
    let rv = rcs
        .list(&ListParams::default().labels(selector))
        .await
        .context("Failed to fetch initial resource")?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut events = watch_from(&rcs, selector, &rv)
        .await
        .context("Failed to create a resource watch of replicationcontrollers")?;
    let actual = rc_lifecycle_scenario(&ctx, &rcs, &mut events).await;
    // retryCleanup
    let _ = rcs
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(selector),
        )
        .await;
    verify_event_sequence(
        &[
            "ADDED", "MODIFIED", "MODIFIED", "MODIFIED", "MODIFIED", "DELETED",
        ],
        &actual?,
    )
}

async fn rc_lifecycle_scenario(
    ctx: &Ctx,
    rcs: &Api<ReplicationController>,
    events: &mut Events<ReplicationController>,
) -> anyhow::Result<Vec<&'static str>> {
    let ns = ctx.namespace.as_str();
    let name = "rc-test";
    let selector = "test-rc-static=true";
    let minute = Duration::from_secs(60);
    let mut actual = Vec::new();
    let status = |rc: &ReplicationController| rc.status.clone().unwrap_or_default();

    // creating a ReplicationController
    let rc: ReplicationController = from(json!({
        "metadata": {"name": name, "labels": {"test-rc-static": "true"}},
        "spec": {
            "replicas": 1,
            "selector": {"test-rc-static": "true"},
            "template": {
                "metadata": {"name": name, "labels": {"test-rc-static": "true"}},
                "spec": {"containers": [{"name": name, "image": NGINX}]},
            },
        },
    }))?;
    rcs.create(&PostParams::default(), &rc)
        .await
        .context("Failed to create ReplicationController")?;

    // waiting for RC to be added
    let (kind, _) = next_until(events, minute, "the RC ADDED", |kind, _| kind == "ADDED").await?;
    actual.push(kind);

    // waiting for available Replicas
    next_until(events, WAIT, "1 ready replica", |_, rc| {
        let s = status(rc);
        s.replicas == 1 && s.ready_replicas.unwrap_or(0) == 1
    })
    .await
    .context("RC has not reached ReadyReplicas count of 1")?;

    // patching ReplicationController: the patch is a ReplicationController as Go marshals it.
    let patch = json!({
        "metadata": {"labels": {"test-rc": "patched"}, "creationTimestamp": null},
        "spec": {},
        "status": {"replicas": 0},
    });
    let patched = rcs
        .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .context("Failed to patch ReplicationController")?;
    ensure!(
        label_is(&patched, "test-rc", "patched"),
        "failed to patch RC: labels {:?}",
        patched.labels()
    );
    // waiting for RC to be modified
    let (kind, _) = next_until(events, minute, "the RC MODIFIED", |kind, _| {
        kind == "MODIFIED"
    })
    .await?;
    actual.push(kind);

    // patching ReplicationController status
    let patch = json!({"status": {"readyReplicas": 0, "availableReplicas": 0}});
    let rc_status = rcs
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .context("Failed to patch ReplicationControllerStatus")?;
    ensure!(
        status(&rc_status).ready_replicas.unwrap_or(0) == 0,
        "ReplicationControllerStatus's readyReplicas does not equal 0"
    );
    // waiting for RC to be modified
    let (kind, _) = next_until(events, minute, "the RC MODIFIED", |kind, _| {
        kind == "MODIFIED"
    })
    .await?;
    actual.push(kind);

    // waiting for available Replicas (upstream waits without a limit)
    next_until(events, WAIT, "1 replica", |_, rc| status(rc).replicas == 1)
        .await
        .context("Failed to find updated ready replica count")?;

    // fetching ReplicationController status
    let rc_status = rcs
        .get_status(name)
        .await
        .context("Failed to fetch ReplicationControllerStatus")?;
    ensure!(
        status(&rc_status).replicas == 1,
        "ReplicationController ReplicaSet cound does not match initial Replica count: {}",
        status(&rc_status).replicas
    );

    // patching ReplicationController scale: the patch is a Scale as Go marshals it.
    let patch = json!({"metadata": {"creationTimestamp": null}, "spec": {"replicas": 2}, "status": {"replicas": 0}});
    rcs.patch_scale(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .context("Failed to patch ReplicationControllerScale")?;
    // waiting for RC to be modified
    let (kind, _) = next_until(events, WAIT, "the RC MODIFIED", |kind, _| {
        kind == "MODIFIED"
    })
    .await?;
    actual.push(kind);

    // waiting for ReplicationController's scale to be the max amount (upstream waits without
    // a limit)
    next_until(events, WAIT, "2 ready replicas", |_, rc| {
        let s = status(rc);
        rc.name_any() == name
            && rc.namespace().as_deref() == Some(ns)
            && s.replicas == 2
            && s.ready_replicas.unwrap_or(0) == 2
    })
    .await
    .context("Failed to find updated ready replica count")?;

    // fetching ReplicationController; ensuring that it's patched
    let mut rc = rcs
        .get(name)
        .await
        .context("failed to fetch ReplicationController")?;
    ensure!(
        label_is(&rc, "test-rc", "patched"),
        "ReplicationController is missing a label from earlier patch"
    );

    // updating ReplicationController status
    let s = rc.status.get_or_insert_default();
    s.available_replicas = Some(1);
    s.ready_replicas = Some(1);
    rcs.replace_status(name, &PostParams::default(), &rc)
        .await
        .context("failed to update ReplicationControllerStatus")?;
    // waiting for RC to be modified
    let (kind, _) = next_until(events, minute, "the RC MODIFIED", |kind, _| {
        kind == "MODIFIED"
    })
    .await?;
    actual.push(kind);

    // listing all ReplicationControllers
    let list = ctx
        .all::<ReplicationController>()
        .list(&ListParams::default().labels(selector))
        .await
        .context("failed to list ReplicationController")?;
    ensure!(
        !list.items.is_empty(),
        "Expected to find a ReplicationController but none was found"
    );
    // checking that ReplicationController has expected values
    ensure!(
        list.items.iter().any(|rc| {
            rc.name_any() == name
                && rc.namespace().as_deref() == Some(ns)
                && label_is(rc, "test-rc-static", "true")
                && label_is(rc, "test-rc", "patched")
        }),
        "ReplicationController doesn't have expected values. Values that are in the \
         ReplicationController list: {:?}",
        list.items
            .iter()
            .map(|rc| (rc.name_any(), rc.labels().clone()))
            .collect::<Vec<_>>()
    );

    // deleting ReplicationControllers by collection
    rcs.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(selector),
    )
    .await
    .context("Failed to delete ReplicationControllers")?;
    // waiting for ReplicationController to have a DELETED watchEvent
    let (kind, _) = next_until(events, minute, "the RC DELETED", |kind, _| {
        kind == "DELETED"
    })
    .await?;
    actual.push(kind);
    Ok(actual)
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apps/controller_revision.go

/// daemon_set.go's daemonsetLabelPrefix: the node labels the DaemonSet tests set.
const DAEMONSET_LABEL_PREFIX: &str = "daemonset-";

/// clearDaemonSetNodeLabels: no node keeps a label of the DaemonSet tests.
async fn clear_daemon_set_node_labels(ctx: &Ctx) -> anyhow::Result<()> {
    let nodes: Api<Node> = ctx.cluster();
    for n in nodes.list(&ListParams::default()).await?.items {
        let ours: serde_json::Map<String, Value> = n
            .labels()
            .keys()
            .filter(|k| k.starts_with(DAEMONSET_LABEL_PREFIX))
            .map(|k| (k.clone(), Value::Null))
            .collect();
        if !ours.is_empty() {
            nodes
                .patch(
                    &n.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": ours}})),
                )
                .await?;
        }
    }
    Ok(())
}

/// daemon.NodeShouldRunDaemonPod for a DaemonSet with no tolerations or node selection of its
/// own: every NoSchedule/NoExecute taint of the node is one the controller tolerates for all
/// daemon pods.
fn daemon_runs_on(n: &Node) -> bool {
    const TOLERATED: [(&str, &str); 6] = [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_none_or(|taints| {
            taints.iter().all(|t| {
                t.effect == "PreferNoSchedule"
                    || TOLERATED.contains(&(t.key.as_str(), t.effect.as_str()))
            })
        })
}

/// e2edaemonset.CheckRunningOnAllNodes: one available pod of the DaemonSet on every node it
/// should run on, and on no other.
async fn running_on_all_nodes(ctx: &Ctx, ds: &DaemonSet) -> anyhow::Result<bool> {
    let nodes: Vec<String> = ctx
        .cluster::<Node>()
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|n| daemon_runs_on(n))
        .map(|n| n.name_any())
        .collect();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in ctx
        .namespaced::<Pod>()
        .list(&ListParams::default())
        .await?
        .items
    {
        if ds.uid().is_some()
            && controller_uid(&p) == ds.uid()
            && p.metadata.deletion_timestamp.is_none()
            && is_ready(&p)
        {
            let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
            *per_node.entry(node).or_default() += 1;
        }
    }
    Ok(nodes.iter().all(|n| per_node.get(n) == Some(&1)) && per_node.len() == nodes.len())
}

/// controller.ComputeHash: FNV-32a of the template and the collision count, spelled in
/// rand.SafeEncodeString's alphabet. Upstream hashes Go's dump of the struct, which has no
/// counterpart here; the template's JSON stands in for it.
fn compute_hash(template: &PodTemplateSpec, collisions: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    eat(serde_json::to_vec(template).unwrap_or_default().as_slice());
    if let Some(c) = collisions {
        eat(&c.to_le_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// checkControllerRevisionListQuantity, polled every second for a minute.
async fn wait_revisions(ctx: &Ctx, selector: &str, quantity: usize) -> anyhow::Result<()> {
    let api: Api<ControllerRevision> = ctx.namespaced();
    eventually(
        WAIT,
        &format!("{quantity} ControllerRevisions {selector}"),
        || async {
            let n = api
                .list(&ListParams::default().labels(selector))
                .await?
                .items
                .len();
            Ok((n == quantity).then_some(()))
        },
    )
    .await
    .context("failed to count required ControllerRevisions")
}

/// controller_revision.go "should manage the lifecycle of a ControllerRevision"
async fn controller_revision_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    // BeforeEach: the namespace's node selector annotation emptied, no DaemonSet node labels.
    ctx.cluster::<Namespace>()
        .patch(
            &ctx.namespace,
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"annotations": {"scheduler.alpha.kubernetes.io/node-selector": ""}}})),
        )
        .await?;
    clear_daemon_set_node_labels(&ctx).await?;
    let ds_name = format!("{}-daemon-set", ctx.unique("e2e"));
    let result = controller_revision_scenario(&ctx, &ds_name).await;
    // AfterEach: the DaemonSet deleted, the node labels cleared.
    let _ = ctx
        .namespaced::<DaemonSet>()
        .delete(&ds_name, &DeleteParams::background())
        .await;
    let _ = clear_daemon_set_node_labels(&ctx).await;
    result
}

async fn controller_revision_scenario(ctx: &Ctx, ds_name: &str) -> anyhow::Result<()> {
    let ns = ctx.namespace.as_str();
    let daemon_sets: Api<DaemonSet> = ctx.namespaced();
    let revisions: Api<ControllerRevision> = ctx.namespaced();
    let label = json!({"daemonset-name": ds_name});
    let selector = format!("daemonset-name={ds_name}");

    // Creating DaemonSet (newDaemonSetWithLabel)
    let ds: DaemonSet = from(json!({
        "metadata": {"name": ds_name, "labels": label},
        "spec": {
            "selector": {"matchLabels": label},
            "template": {
                "metadata": {"labels": label},
                "spec": {
                    "containers": [{
                        "name": "app",
                        "image": AGNHOST,
                        "ports": [{"containerPort": 9376}],
                        "securityContext": {},
                    }],
                    "securityContext": {},
                },
            },
        },
    }))?;
    let test_daemon_set = daemon_sets.create(&PostParams::default(), &ds).await?;

    // Check that daemon pods launch on every node of the cluster.
    eventually(WAIT, "daemon pods on every node", || async {
        Ok(running_on_all_nodes(ctx, &test_daemon_set)
            .await?
            .then_some(()))
    })
    .await
    .context("error waiting for daemon pod to start")?;
    // CheckDaemonStatus: all desired pods scheduled and ready (polled here, as the status
    // write may trail the pods).
    eventually(WAIT, "the daemon set's status", || async {
        let s = daemon_sets.get(ds_name).await?.status.unwrap_or_default();
        Ok((s.desired_number_scheduled == s.current_number_scheduled
            && s.current_number_scheduled == s.number_ready)
            .then_some(()))
    })
    .await
    .context("error in daemon status")?;

    // Confirm DaemonSet successfully created with the label
    let listed = ctx
        .all::<DaemonSet>()
        .list(&ListParams::default().labels(&selector))
        .await
        .context("failed to list Daemon Sets")?;
    ensure!(
        listed.items.len() == 1,
        "filtered list wasn't found: {} listed",
        listed.items.len()
    );
    let mut ds = daemon_sets.get(ds_name).await?;

    // Listing all ControllerRevisions with the label, across namespaces
    let revs = ctx
        .all::<ControllerRevision>()
        .list(&ListParams::default().labels(&selector))
        .await
        .context("Failed to list ControllerRevision")?;
    ensure!(
        revs.items.len() == 1,
        "Failed to find any controllerRevisions: {} listed",
        revs.items.len()
    );

    // Locate the current ControllerRevision from the list
    let rev = &revs.items[0];
    let owner = rev
        .owner_references()
        .first()
        .context("the ControllerRevision has no owner")?;
    ensure!(
        owner.kind == "DaemonSet" && Some(&owner.uid) == ds.uid().as_ref(),
        "the ControllerRevision {} is not the DaemonSet's: owner {owner:?}",
        rev.name_any()
    );
    let initial = revisions
        .get(&rev.name_any())
        .await
        .context("failed to lookup ControllerRevision")?;
    let initial_name = initial.name_any();

    // Patching ControllerRevision
    let patched = revisions
        .patch(
            &initial_name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {&initial_name: "patched"}}})),
        )
        .await
        .with_context(|| {
            format!("failed to patch ControllerRevision {initial_name} in namespace {ns}")
        })?;
    ensure!(
        label_is(&patched, &initial_name, "patched"),
        "Did not find 'patched' label for this ControllerRevision. Current labels: {:?}",
        patched.labels()
    );

    // Create a new ControllerRevision
    let template = {
        let spec = ds.spec.get_or_insert_default();
        spec.template
            .spec
            .get_or_insert_default()
            .termination_grace_period_seconds = Some(1);
        spec.template.clone()
    };
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    let new_hash = compute_hash(&template, collisions);
    let new_name = format!("{}-{new_hash}", ds.name_any());
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert("controller-revision-hash".into(), new_hash.clone());
    let new_revision = ControllerRevision {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(new_name),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: ds.metadata.annotations.clone(),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "DaemonSet".into(),
                name: ds.name_any(),
                uid: ds.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        data: initial.data.clone(),
        revision: initial.revision + 1,
    };
    revisions
        .create(&PostParams::default(), &new_revision)
        .await
        .context("Failed to create ControllerRevision")?;

    // Confirm that there are two ControllerRevisions
    wait_revisions(ctx, &selector, 2).await?;

    // Deleting the first ControllerRevision
    revisions
        .delete(&initial_name, &DeleteParams::default())
        .await
        .context("Failed to delete ControllerRevision")?;

    // Confirm that there is only one ControllerRevision
    wait_revisions(ctx, &selector, 1).await?;
    let current = revisions
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .next()
        .context("no ControllerRevision is left")?;
    let current_name = current.name_any();

    // Updating the ControllerRevision
    let updated = retry_on_conflict(|| async {
        let mut rev = revisions.get(&current_name).await?;
        rev.labels_mut()
            .insert(current_name.clone(), "updated".into());
        revisions
            .replace(&current_name, &PostParams::default(), &rev)
            .await
    })
    .await
    .with_context(|| format!("failed to update ControllerRevision in namespace: {ns}"))?;
    ensure!(
        label_is(&updated, &current_name, "updated"),
        "Did not find 'updated' label for this ControllerRevision. Current labels: {:?}",
        updated.labels()
    );

    // Generate another ControllerRevision by patching the Daemonset (upstream's patch, its
    // misplaced updateStrategy included).
    let patch = json!({
        "spec": {"template": {"spec": {"terminationGracePeriodSeconds": 1}}},
        "updateStrategy": {"type": "RollingUpdate"},
    });
    daemon_sets
        .patch(ds_name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .context("error patching daemon set")?;

    // Confirm that there are two ControllerRevisions
    wait_revisions(ctx, &selector, 2).await?;

    // Removing a ControllerRevision via 'DeleteCollection' with the updated label
    let updated_selector = format!("{}=updated", updated.name_any());
    revisions
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&updated_selector),
        )
        .await
        .context("Failed to delete ControllerRevision")?;

    // Confirm that there is only one ControllerRevision
    wait_revisions(ctx, &selector, 1).await?;
    let list = revisions
        .list(&ListParams::default())
        .await
        .context("failed to list ControllerRevision")?;
    let last = list
        .items
        .first()
        .context("no ControllerRevision is left")?;
    ensure!(
        last.revision == 3,
        "failed to find the expected revision for the Controller: {} has revision {}",
        last.name_any(),
        last.revision
    );
    Ok(())
}
