//! Controller behaviour of [sig-apps] DaemonSets, StatefulSets and Jobs, and the garbage
//! collector's [sig-api-machinery] cases (test/e2e/apps/daemon_set.go, statefulset.go,
//! job.go, test/e2e/apimachinery/garbage_collector.go), on `kelp simulate` nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetCondition, StatefulSet, StatefulSetCondition,
};
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{
    Container, Namespace, Node, Pod, PodCondition, ReplicationController, ResourceRequirements,
    Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions,
    PropagationPolicy, WatchEvent, WatchParams,
};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::tests;
use crate::framework::{eventually, ready_schedulable_nodes};
use crate::framework::{from, retry_on_conflict};
use crate::{Ctx, Test};

/// Ported, and not passed by Kelp yet.
pub fn pending() -> Vec<Test> {
    Vec::new()
}

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-api-machinery] Garbage collector should not be blocked by dependency circle" => gc_dependency_circle,
        "[sig-api-machinery] Garbage collector should not delete dependents that have both valid owner and owner that's waiting for dependents to be deleted" => gc_valid_and_pending_owners,
        "[sig-apps] Daemon set [Serial] should list and delete a collection of DaemonSets" => ds_list_and_delete_collection,
        "[sig-apps] Daemon set [Serial] should retry creating failed daemon pods" => ds_retry_failed_pods,
        "[sig-apps] Daemon set [Serial] should rollback without unnecessary restarts" => ds_rollback,
        "[sig-apps] Daemon set [Serial] should run and stop complex daemon" => ds_complex,
        "[sig-apps] Daemon set [Serial] should verify changes to a daemon set status" => ds_status,
        "[sig-apps] StatefulSet Basic StatefulSet functionality [StatefulSetBasic] should list, patch and delete a collection of StatefulSets" => ss_list_patch_delete_collection,
        "[sig-apps] StatefulSet Basic StatefulSet functionality [StatefulSetBasic] should validate Statefulset Status endpoints" => ss_status_endpoints,
        "[sig-apps] Job should adopt matching orphans and release non-matching pods" => job_adopt_release,
        "[sig-apps] Job should apply changes to a job status" => job_status,
        "[sig-api-machinery] Garbage collector should keep the rc around until all its pods are deleted if the deleteOptions says so" => gc_keep_rc,
    ]
}

/// How long a wait on a controller may take (upstream's are minutes; a test here has three
/// in all).
const WAIT: Duration = Duration::from_secs(60);
/// How long the garbage collector may take over an owner's dependents (upstream's 30 s, or
/// 90 s, plus its minute for informer resyncs, within this run's per-test limit).
const GC_WAIT: Duration = Duration::from_secs(90);

/// The images of upstream's fixtures (WebserverImage, Pause, Nginx, BusyBox); on simulated
/// nodes any image runs.
const WEBSERVER: &str = "httpd:2.4";
const PAUSE: &str = "pause:3.10";
const NGINX: &str = "nginx:1.27";
const BUSYBOX: &str = "busybox:1.37";

/// watchtools.Until: the objects of the label selector from `rv` on (the watch reopened from
/// the last version seen when it closes), until one meets `done`; for up to a minute.
async fn watch_until<K>(
    api: &Api<K>,
    selector: &str,
    rv: &str,
    done: impl Fn(&K) -> bool,
) -> anyhow::Result<K>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + WAIT;
    let mut rv = rv.to_string();
    loop {
        if Instant::now() >= deadline {
            bail!("timed out waiting for the condition");
        }
        let mut events = Box::pin(
            api.watch(&WatchParams::default().labels(selector), &rv)
                .await?,
        );
        loop {
            let next = tokio::time::timeout_at(deadline, events.next())
                .await
                .map_err(|_| anyhow::anyhow!("timed out waiting for the condition"))?;
            match next {
                None => break,
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(WatchEvent::Error(e))) => bail!("the watch failed: {e:?}"),
                Some(Ok(WatchEvent::Bookmark(b))) => rv = b.metadata.resource_version,
                Some(Ok(
                    WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o),
                )) => {
                    if let Some(v) = o.resource_version() {
                        rv = v;
                    }
                    if done(&o) {
                        return Ok(o);
                    }
                }
            }
        }
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn ready_condition(p: &Pod) -> Option<&PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
}

/// podutil.IsPodReady
fn is_ready(p: &Pod) -> bool {
    ready_condition(p).is_some()
}

/// podutil.IsPodAvailable: ready, for `min_ready` seconds at least.
fn is_available(p: &Pod, min_ready: i32) -> bool {
    let Some(c) = ready_condition(p) else {
        return false;
    };
    min_ready <= 0
        || c.last_transition_time
            .as_ref()
            .is_some_and(|t| Timestamp::now().duration_since(t.0).as_secs() >= i64::from(min_ready))
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn pod_image(p: &Pod) -> Option<&str> {
    p.spec.as_ref()?.containers.first()?.image.as_deref()
}

/// metav1.GetControllerOf
fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// Deletion with a propagation policy, on condition the object is still the one of `uid`
/// (metav1.NewUIDPreconditions).
fn delete_options(policy: PropagationPolicy, uid: Option<String>) -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(policy),
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apps/daemon_set.go

const DS_NAME: &str = "daemon-set";
const DS_LABEL_PREFIX: &str = "daemonset-";
const DS_NAME_LABEL: &str = "daemonset-name";
const DS_COLOR_LABEL: &str = "daemonset-color";

fn ds_selector() -> String {
    format!("{DS_NAME_LABEL}={DS_NAME}")
}

/// newDaemonSetWithLabel (e2edaemonset.NewDaemonSet with port 9376); unlabelled, newDaemonSet,
/// whose object carries no labels of its own.
fn daemon_set_json(labelled: bool) -> Value {
    let labels = json!({DS_NAME_LABEL: DS_NAME});
    let mut ds = json!({
        "metadata": {"name": DS_NAME},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {},
                    "containers": [{
                        "name": "app",
                        "image": WEBSERVER,
                        "ports": [{"containerPort": 9376}],
                        "securityContext": {},
                    }],
                },
            },
        },
    });
    if labelled {
        ds["metadata"]["labels"] = labels;
    }
    ds
}

/// The tolerations the daemon set controller adds to every daemon pod (hostNetwork's
/// network-unavailable aside).
const DAEMON_TOLERATIONS: [(&str, &str); 6] = [
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];

/// daemon.NodeShouldRunDaemonPod, for the templates here: the node selector matches and every
/// NoSchedule/NoExecute taint is tolerated.
fn should_run(ds: &DaemonSet, node: &Node) -> bool {
    let spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let labels = node.labels();
    let selected = spec
        .and_then(|s| s.node_selector.as_ref())
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let tolerations = spec
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    selected
        && taints
            .iter()
            .filter(|t| t.effect != "PreferNoSchedule")
            .all(|t| {
                DAEMON_TOLERATIONS
                    .iter()
                    .any(|(k, e)| *k == t.key && *e == t.effect)
                    || tolerations.iter().any(|o| {
                        o.effect
                            .as_deref()
                            .is_none_or(|e| e.is_empty() || e == t.effect)
                            && match o.operator.as_deref() {
                                Some("Exists") => {
                                    o.key.as_deref().is_none_or(|k| k.is_empty() || k == t.key)
                                }
                                _ => {
                                    o.key.as_deref() == Some(t.key.as_str())
                                        && o.value.as_deref().unwrap_or("")
                                            == t.value.as_deref().unwrap_or("")
                                }
                            }
                    })
            })
}

/// e2edaemonset.SchedulableNodes: the nodes the daemon set's pods belong on.
async fn schedulable_nodes_for(ctx: &Ctx, ds: &DaemonSet) -> anyhow::Result<Vec<String>> {
    let nodes: Api<Node> = ctx.all();
    Ok(nodes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|n| should_run(ds, n))
        .map(|n| n.name_any())
        .collect())
}

/// e2edaemonset.CheckDaemonPodOnNodes: exactly one available pod of the daemon set on each of
/// `nodes`, and none elsewhere (pods being deleted aside).
async fn daemon_pods_on(ctx: &Ctx, ds: &DaemonSet, nodes: &[String]) -> anyhow::Result<bool> {
    let uid = ds.uid().unwrap_or_default();
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let pods: Api<Pod> = ctx.namespaced();
    // A failed list is another try, as upstream's.
    let Ok(list) = pods.list(&ListParams::default()).await else {
        return Ok(false);
    };
    let mut on: BTreeMap<String, usize> = BTreeMap::new();
    for p in &list.items {
        if controlled_by(&p.metadata, &uid)
            && p.metadata.deletion_timestamp.is_none()
            && is_available(p, min_ready)
        {
            *on.entry(node_of(p)).or_default() += 1;
        }
    }
    Ok(nodes.iter().all(|n| on.get(n) == Some(&1)) && on.len() == nodes.len())
}

async fn wait_daemon_pods_on(ctx: &Ctx, ds: &DaemonSet, nodes: &[String]) -> anyhow::Result<()> {
    eventually(WAIT, &format!("daemon pods on nodes {nodes:?}"), || async {
        Ok(daemon_pods_on(ctx, ds, nodes).await?.then_some(()))
    })
    .await
}

/// checkRunningOnAllNodes
async fn wait_running_on_all_nodes(ctx: &Ctx, ds: &DaemonSet) -> anyhow::Result<()> {
    eventually(WAIT, "daemon pods on every node of the cluster", || async {
        let nodes = schedulable_nodes_for(ctx, ds).await?;
        Ok(daemon_pods_on(ctx, ds, &nodes).await?.then_some(()))
    })
    .await
}

/// e2edaemonset.CheckDaemonStatus: every desired pod scheduled and ready. Upstream reads the
/// status once, right after seeing the pods available; the controller's status write may
/// trail its pods, so here it has a few seconds to land (the check is the same).
async fn check_daemon_status(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let api: Api<DaemonSet> = ctx.namespaced();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = api.get(name).await?.status.unwrap_or_default();
        let (desired, scheduled, ready) = (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_ready,
        );
        if desired == scheduled && scheduled == ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "error in daemon status. DesiredScheduled: {desired}, CurrentScheduled: \
                 {scheduled}, Ready: {ready}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// listDaemonPods: the pods of the daemon set's label, at least one.
async fn list_daemon_pods(ctx: &Ctx) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = ctx.namespaced();
    let list = pods
        .list(&ListParams::default().labels(&ds_selector()))
        .await?
        .items;
    ensure!(!list.is_empty(), "no daemon pods listed");
    Ok(list)
}

/// separateDaemonSetNodeLabels: the node's labels of this test, and the others.
fn separate_daemon_set_node_labels(
    labels: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    labels
        .clone()
        .into_iter()
        .partition(|(k, _)| k.starts_with(DS_LABEL_PREFIX))
}

/// setDaemonSetNodeLabels: the node's daemonset- labels made `labels` (its others kept).
async fn set_daemon_set_node_labels(
    ctx: &Ctx,
    node: &str,
    labels: &BTreeMap<String, String>,
) -> anyhow::Result<Node> {
    let nodes: Api<Node> = ctx.all();
    let updated = eventually(WAIT, &format!("the labels of node {node}"), || async {
        let mut n = nodes.get(node).await?;
        let (ours, mut others) = separate_daemon_set_node_labels(n.labels());
        if &ours == labels {
            return Ok(Some(n));
        }
        others.extend(labels.clone());
        n.metadata.labels = Some(others);
        match nodes.replace(node, &PostParams::default(), &n).await {
            Ok(n) => Ok(Some(n)),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    let (ours, _) = separate_daemon_set_node_labels(updated.labels());
    ensure!(
        ours.len() == labels.len(),
        "could not set daemon set test labels as expected"
    );
    Ok(updated)
}

/// clearDaemonSetNodeLabels
async fn clear_daemon_set_node_labels(ctx: &Ctx) -> anyhow::Result<()> {
    for n in ready_schedulable_nodes(ctx).await? {
        set_daemon_set_node_labels(ctx, &n.name_any(), &BTreeMap::new()).await?;
    }
    Ok(())
}

/// A "Daemon set [Serial]" test: its BeforeEach (the namespace's node-selector annotation
/// emptied, the nodes' test labels cleared), the body, then its AfterEach (every daemon set
/// deleted and its pods reaped, the node labels cleared again).
async fn daemon_set_test(
    ctx: &Ctx,
    body: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = ctx.all();
    let annotations =
        json!({"metadata": {"annotations": {"scheduler.alpha.kubernetes.io/node-selector": ""}}});
    namespaces
        .patch(
            &ctx.namespace,
            &PatchParams::default(),
            &Patch::Strategic(&annotations),
        )
        .await?;
    clear_daemon_set_node_labels(ctx).await?;
    let result = body.await;
    let cleanup = daemon_set_after_each(ctx).await;
    result.and(cleanup)
}

async fn daemon_set_after_each(ctx: &Ctx) -> anyhow::Result<()> {
    let api: Api<DaemonSet> = ctx.namespaced();
    for ds in api.list(&ListParams::default()).await?.items {
        match api
            .delete(&ds.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        wait_daemon_pods_on(ctx, &ds, &[])
            .await
            .context("error waiting for daemon pod to be reaped")?;
    }
    clear_daemon_set_node_labels(ctx).await
}

/// daemon_set.go "should list and delete a collection of DaemonSets"
async fn ds_list_and_delete_collection(ctx: Ctx) -> anyhow::Result<()> {
    daemon_set_test(&ctx, list_and_delete_collection(&ctx)).await
}

async fn list_and_delete_collection(ctx: &Ctx) -> anyhow::Result<()> {
    let selector = ds_selector();
    let api: Api<DaemonSet> = ctx.namespaced();
    let all: Api<DaemonSet> = ctx.all();
    let ds = api
        .create(&PostParams::default(), &from(daemon_set_json(true))?)
        .await?;
    wait_running_on_all_nodes(ctx, &ds)
        .await
        .context("error waiting for daemon pod to start")?;
    check_daemon_status(ctx, DS_NAME).await?;

    let listed = all
        .list(&ListParams::default().labels(&selector))
        .await
        .context("failed to list Daemon Sets")?;
    ensure!(
        listed.items.len() == 1,
        "filtered list wasn't found: {} daemon sets",
        listed.items.len()
    );
    api.delete_collection(
        &DeleteParams::default().grace_period(1),
        &ListParams::default().labels(&selector),
    )
    .await
    .context("failed to delete DaemonSets")?;
    let listed = all
        .list(&ListParams::default().labels(&selector))
        .await
        .context("failed to list DaemonSets")?;
    ensure!(
        listed.items.is_empty(),
        "filtered list should have no daemonset: {} listed",
        listed.items.len()
    );
    Ok(())
}

/// daemon_set.go "should retry creating failed daemon pods"
async fn ds_retry_failed_pods(ctx: Ctx) -> anyhow::Result<()> {
    daemon_set_test(&ctx, retry_failed_pods(&ctx)).await
}

async fn retry_failed_pods(ctx: &Ctx) -> anyhow::Result<()> {
    let api: Api<DaemonSet> = ctx.namespaced();
    let ds = api
        .create(&PostParams::default(), &from(daemon_set_json(false))?)
        .await?;
    wait_running_on_all_nodes(ctx, &ds)
        .await
        .context("error waiting for daemon pod to start")?;
    check_daemon_status(ctx, DS_NAME).await?;

    // A daemon pod's phase set to Failed (unconditionally: no resource version): it is
    // replaced, and the failed one deleted.
    let mut pod = list_daemon_pods(ctx).await?.remove(0);
    let name = pod.name_any();
    pod.metadata.resource_version = None;
    pod.status.get_or_insert_default().phase = Some("Failed".into());
    let pods: Api<Pod> = ctx.namespaced();
    pods.replace_status(&name, &PostParams::default(), &pod)
        .await
        .context("error failing a daemon pod")?;
    wait_running_on_all_nodes(ctx, &ds)
        .await
        .context("error waiting for daemon pod to revive")?;
    eventually(
        WAIT,
        &format!("the failed daemon pod {name} deleted"),
        || async { Ok(pods.get_opt(&name).await?.is_none().then_some(())) },
    )
    .await
    .context("error waiting for the failed daemon pod to be completely deleted")
}

/// The image of upstream's bad update: it never pulls, so the rollout cannot finish.
const NON_EXISTENT_IMAGE: &str = "foo:non-existent";

fn container_mut(ds: &mut DaemonSet) -> anyhow::Result<&mut Container> {
    ds.spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|s| s.containers.first_mut())
        .context("the daemon set's template has no container")
}

/// updateDaemonSetWithRetries: get, change, update, until the update goes through (a minute
/// at most).
async fn update_daemon_set_with_retries(
    api: &Api<DaemonSet>,
    name: &str,
    change: impl Fn(&mut DaemonSet) -> anyhow::Result<()>,
) -> anyhow::Result<DaemonSet> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut ds = api.get(name).await?;
        change(&mut ds)?;
        match api.replace(name, &PostParams::default(), &ds).await {
            Ok(ds) => return Ok(ds),
            Err(e) if Instant::now() >= deadline => {
                bail!("couldn't apply the provided updated to DaemonSet {name:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// checkDaemonPodsImageAndAvailability: each node the daemon set belongs on has a pod of
/// `image`, and at most `max_unavailable` of its pods are unavailable (more fails at once).
async fn pods_image_and_availability(
    ctx: &Ctx,
    ds: &DaemonSet,
    image: &str,
    max_unavailable: usize,
) -> anyhow::Result<bool> {
    let uid = ds.uid().unwrap_or_default();
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let pods: Api<Pod> = ctx.namespaced();
    let mut updated: BTreeMap<String, usize> = BTreeMap::new();
    let mut unavailable = 0;
    for p in pods.list(&ListParams::default()).await?.items {
        if p.metadata.deletion_timestamp.is_some() || !controlled_by(&p.metadata, &uid) {
            continue;
        }
        if pod_image(&p) == Some(image) {
            *updated.entry(node_of(&p)).or_default() += 1;
        }
        if !is_available(&p, min_ready) {
            unavailable += 1;
        }
    }
    ensure!(
        unavailable <= max_unavailable,
        "number of unavailable pods: {unavailable} is greater than maxUnavailable: \
         {max_unavailable}"
    );
    let nodes = schedulable_nodes_for(ctx, ds).await?;
    Ok(nodes.iter().all(|n| updated.get(n).is_some_and(|c| *c > 0)))
}

/// daemon_set.go "should rollback without unnecessary restarts"
async fn ds_rollback(ctx: Ctx) -> anyhow::Result<()> {
    daemon_set_test(&ctx, rollback_without_restarts(&ctx)).await
}

async fn rollback_without_restarts(ctx: &Ctx) -> anyhow::Result<()> {
    let nodes = ready_schedulable_nodes(ctx).await?;
    ensure!(
        nodes.len() > 1,
        "Conformance test suite needs a cluster with at least 2 nodes."
    );
    let api: Api<DaemonSet> = ctx.namespaced();
    let mut ds = daemon_set_json(false);
    ds["spec"]["updateStrategy"] = json!({"type": "RollingUpdate"});
    let ds = api.create(&PostParams::default(), &from(ds)?).await?;
    wait_running_on_all_nodes(ctx, &ds)
        .await
        .context("error waiting for daemon pod to start")?;
    let first = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .context("the daemon set's template has no container")?;
    let image = first.image.clone().unwrap_or_default();
    let resources = first.resources.clone();

    // The update to trigger a rollout. On simulated nodes every image "pulls", so a pod of the
    // bad template would become ready and the rollout finish before it could be rolled back.
    // The bad template therefore also requests more CPU than any node has: its pod stays
    // Pending, unavailable, as a pod whose image cannot be pulled stays on a real node (and
    // does there too). The rollback restores the requests along with the image, so the
    // template is the original one again.
    let unschedulable: ResourceRequirements = from(json!({"requests": {"cpu": "100000"}}))?;
    update_daemon_set_with_retries(&api, DS_NAME, |ds| {
        let c = container_mut(ds)?;
        c.image = Some(NON_EXISTENT_IMAGE.into());
        c.resources = Some(unschedulable.clone());
        Ok(())
    })
    .await?;

    // In the middle of the rollout.
    eventually(WAIT, "a daemon pod of the new image", || async {
        Ok(list_daemon_pods(ctx)
            .await?
            .iter()
            .any(|p| pod_image(p) == Some(NON_EXISTENT_IMAGE))
            .then_some(()))
    })
    .await?;
    let (mut existing, mut new) = (Vec::new(), 0);
    for p in list_daemon_pods(ctx).await? {
        // A pod the rollout already deleted is not one that must survive it (upstream counts
        // it, on a real node it is usually gone by now).
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match pod_image(&p) {
            Some(i) if i == image => existing.push(p.name_any()),
            Some(NON_EXISTENT_IMAGE) => new += 1,
            other => bail!("unexpected pod found, image = {}", other.unwrap_or("")),
        }
    }
    if ready_schedulable_nodes(ctx).await?.len() < 2 {
        ensure!(
            existing.is_empty(),
            "old pods {existing:?} on a single node"
        );
    } else {
        ensure!(
            !existing.is_empty(),
            "no pod of the old image is left mid-rollout"
        );
    }
    ensure!(new != 0, "no pod of the new image");

    // Rolled back before the rollout is complete.
    let rollback = update_daemon_set_with_retries(&api, DS_NAME, |ds| {
        let c = container_mut(ds)?;
        c.image = Some(image.clone());
        c.resources = resources.clone();
        Ok(())
    })
    .await?;
    eventually(WAIT, "the daemon set rollback complete", || async {
        Ok(pods_image_and_availability(ctx, &rollback, &image, 1)
            .await?
            .then_some(()))
    })
    .await?;

    // The pods of the old image during the rollout are still there: not restarted.
    let after: BTreeSet<String> = list_daemon_pods(ctx)
        .await?
        .iter()
        .map(|p| p.name_any())
        .collect();
    for p in &existing {
        ensure!(after.contains(p), "unexpected pod {p} be restarted");
    }
    Ok(())
}

/// daemon_set.go "should run and stop complex daemon"
async fn ds_complex(ctx: Ctx) -> anyhow::Result<()> {
    daemon_set_test(&ctx, complex_daemon(&ctx)).await
}

async fn complex_daemon(ctx: &Ctx) -> anyhow::Result<()> {
    let api: Api<DaemonSet> = ctx.namespaced();
    let blue = BTreeMap::from([(DS_COLOR_LABEL.to_string(), "blue".to_string())]);
    let mut ds = daemon_set_json(false);
    ds["spec"]["template"]["spec"]["nodeSelector"] = json!(blue);
    let ds = api.create(&PostParams::default(), &from(ds)?).await?;
    wait_daemon_pods_on(ctx, &ds, &[])
        .await
        .context("error waiting for daemon pods to be running on no nodes")?;

    // Node labelled blue: the daemon pod is launched there.
    let nodes = ready_schedulable_nodes(ctx).await?;
    ensure!(!nodes.is_empty(), "no ready schedulable node");
    let node = nodes[rand::rng().random_range(0..nodes.len())].name_any();
    let new_node = set_daemon_set_node_labels(ctx, &node, &blue)
        .await
        .context("error setting labels on node")?;
    let (labels, _) = separate_daemon_set_node_labels(new_node.labels());
    ensure!(labels.len() == 1, "node daemon set labels {labels:?}");
    wait_daemon_pods_on(ctx, &ds, &[new_node.name_any()])
        .await
        .context("error waiting for daemon pods to be running on new nodes")?;
    check_daemon_status(ctx, DS_NAME).await?;

    // Node relabelled green: the daemon pod goes.
    let green = BTreeMap::from([(DS_COLOR_LABEL.to_string(), "green".to_string())]);
    let green_node = set_daemon_set_node_labels(ctx, &node, &green)
        .await
        .context("error removing labels on node")?;
    wait_daemon_pods_on(ctx, &ds, &[])
        .await
        .context("error waiting for daemon pod to not be running on nodes")?;

    // The daemon set's selector made green, its strategy RollingUpdate: back on the node.
    let color = green_node
        .labels()
        .get(DS_COLOR_LABEL)
        .cloned()
        .unwrap_or_default();
    let patch = json!({"spec": {
        "template": {"spec": {"nodeSelector": {DS_COLOR_LABEL: color}}},
        "updateStrategy": {"type": "RollingUpdate"},
    }});
    let ds = api
        .patch(DS_NAME, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .context("error patching daemon set")?;
    let (labels, _) = separate_daemon_set_node_labels(green_node.labels());
    ensure!(labels.len() == 1, "node daemon set labels {labels:?}");
    wait_daemon_pods_on(ctx, &ds, &[green_node.name_any()])
        .await
        .context("error waiting for daemon pods to be running on new nodes")?;
    check_daemon_status(ctx, DS_NAME).await
}

fn ds_conditions(ds: &DaemonSet) -> &[DaemonSetCondition] {
    ds.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

/// daemon_set.go "should verify changes to a daemon set status"
async fn ds_status(ctx: Ctx) -> anyhow::Result<()> {
    daemon_set_test(&ctx, daemon_set_status(&ctx)).await
}

async fn daemon_set_status(ctx: &Ctx) -> anyhow::Result<()> {
    let ns = ctx.namespace.as_str();
    let selector = ds_selector();
    let api: Api<DaemonSet> = ctx.namespaced();
    let rv = ctx
        .all::<DaemonSet>()
        .list(&ListParams::default().labels(&selector))
        .await
        .context("failed to list Daemon Sets")?
        .metadata
        .resource_version
        .unwrap_or_default();
    let ds = api
        .create(&PostParams::default(), &from(daemon_set_json(true))?)
        .await?;
    wait_running_on_all_nodes(ctx, &ds)
        .await
        .context("error waiting for daemon pod to start")?;
    check_daemon_status(ctx, DS_NAME).await?;

    api.get_status(DS_NAME).await.with_context(|| {
        format!("Failed to fetch the status of daemon set {DS_NAME} in namespace {ns}")
    })?;

    // Updating the status: a condition added.
    let condition: DaemonSetCondition = from(json!({
        "type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from e2e test",
    }))?;
    retry_on_conflict(|| async {
        let mut d = api.get(DS_NAME).await?;
        d.status
            .get_or_insert_default()
            .conditions
            .get_or_insert_default()
            .push(condition.clone());
        api.replace_status(DS_NAME, &PostParams::default(), &d)
            .await
    })
    .await
    .context("Failed to update status.")?;
    let ours = |d: &DaemonSet| {
        d.name_any() == DS_NAME
            && d.namespace().as_deref() == Some(ns)
            && d.labels().get(DS_NAME_LABEL).map(String::as_str) == Some(DS_NAME)
    };
    watch_until(&api, &selector, &rv, |d| {
        ours(d)
            && ds_conditions(d).iter().any(|c| {
                c.type_ == "StatusUpdate"
                    && c.reason.as_deref() == Some("E2E")
                    && c.message.as_deref() == Some("Set from e2e test")
            })
    })
    .await
    .with_context(|| format!("failed to locate daemon set {DS_NAME} in namespace {ns}"))?;

    // Patching the status: upstream merge-patches the JSON of a DaemonSet holding only the
    // condition, which is this (Go's zero values and nulls included).
    let patch = json!({
        "metadata": {"creationTimestamp": null},
        "spec": {
            "selector": null,
            "template": {"metadata": {"creationTimestamp": null}, "spec": {"containers": null}},
            "updateStrategy": {},
        },
        "status": {
            "currentNumberScheduled": 0,
            "numberMisscheduled": 0,
            "desiredNumberScheduled": 0,
            "numberReady": 0,
            "conditions": [{"type": "StatusPatched", "status": "True", "lastTransitionTime": null}],
        },
    });
    api.patch_status(DS_NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("Failed to patch daemon set status")?;
    watch_until(&api, &selector, &rv, |d| {
        ours(d) && ds_conditions(d).iter().any(|c| c.type_ == "StatusPatched")
    })
    .await
    .with_context(|| format!("failed to locate daemon set {DS_NAME} in namespace {ns}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apps/statefulset.go

const SS_NAME: &str = "ss";
const HEADLESS_SVC: &str = "test";

/// The labels of "Basic StatefulSet functionality".
fn ss_labels() -> Value {
    json!({"foo": "bar", "baz": "blah"})
}

fn selector_of(labels: &Value) -> String {
    labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",")
}

/// The BeforeEach of "Basic StatefulSet functionality": the headless service
/// (e2eservice.CreateServiceSpec).
async fn create_headless_service(ctx: &Ctx) -> anyhow::Result<()> {
    let services: Api<Service> = ctx.namespaced();
    services
        .create(
            &PostParams::default(),
            &from(json!({
                "metadata": {"name": HEADLESS_SVC},
                "spec": {
                    "selector": ss_labels(),
                    "clusterIP": "None",
                    "ports": [{"port": 80, "name": "http", "protocol": "TCP"}],
                },
            }))?,
        )
        .await?;
    Ok(())
}

/// e2estatefulset.NewStatefulSet (no mounts) with setHTTPProbe's readiness probe.
fn new_stateful_set(name: &str, replicas: i32, labels: &Value) -> anyhow::Result<StatefulSet> {
    from(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "replicas": replicas,
            "serviceName": HEADLESS_SVC,
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": labels, "annotations": {}},
                "spec": {"containers": [{
                    "name": "webserver",
                    "image": WEBSERVER,
                    "readinessProbe": {
                        "httpGet": {"path": "/index.html", "port": 80},
                        "periodSeconds": 1,
                        "successThreshold": 1,
                        "failureThreshold": 1,
                    },
                }]},
            },
        },
    }))
}

/// e2estatefulset.WaitForRunningAndReady: `n` pods of the set, all Running and Ready (more than
/// `n` fails at once).
async fn wait_for_running_and_ready(ctx: &Ctx, n: usize, selector: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    eventually(
        WAIT,
        &format!("{n} stateful pods running and ready"),
        || async {
            let list = pods
                .list(&ListParams::default().labels(selector))
                .await?
                .items;
            ensure!(
                list.len() <= n,
                "too many pods scheduled, expected {n} got {}",
                list.len()
            );
            Ok(
                (list.len() == n && list.iter().all(|p| phase(p) == "Running" && is_ready(p)))
                    .then_some(()),
            )
        },
    )
    .await
}

/// waitForStatus: the controller has observed the set's generation.
async fn wait_for_ss_status(api: &Api<StatefulSet>, ss: &StatefulSet) -> anyhow::Result<()> {
    let generation = ss.metadata.generation;
    eventually(WAIT, "the statefulset's generation observed", || async {
        let got = api.get(&ss.name_any()).await?;
        Ok((got.status.and_then(|s| s.observed_generation) >= generation).then_some(()))
    })
    .await
}

/// statefulset.go "should list, patch and delete a collection of StatefulSets"
async fn ss_list_patch_delete_collection(ctx: Ctx) -> anyhow::Result<()> {
    create_headless_service(&ctx).await?;
    let api: Api<StatefulSet> = ctx.namespaced();
    let all: Api<StatefulSet> = ctx.all();
    let name = "test-ss";
    let labels = json!({"name": "sample-pod", "pod": "httpd"});
    let selector = selector_of(&labels);
    let ss = api
        .create(&PostParams::default(), &new_stateful_set(name, 1, &labels)?)
        .await?;
    wait_for_running_and_ready(&ctx, 1, &selector).await?;
    wait_for_ss_status(&api, &ss).await?;

    // Patched: a label, two replicas, a container of another image. The patch is upstream's,
    // its misspelt "TerminationGracePeriodSeconds" (an unknown field) included.
    let patch = json!({
        "metadata": {"labels": {"test-ss": "patched"}},
        "spec": {
            "replicas": 2,
            "template": {"spec": {
                "TerminationGracePeriodSeconds": 1,
                "containers": [{"name": name, "image": PAUSE}],
            }},
        },
    });
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .context("failed to patch Set")?;
    let ss = api
        .get(name)
        .await
        .context("Failed to get statefulset resource")?;
    let replicas = ss.spec.as_ref().and_then(|s| s.replicas);
    ensure!(
        replicas == Some(2),
        "statefulset should have 2 replicas, has {replicas:?}"
    );
    let image = ss
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone());
    ensure!(
        image.as_deref() == Some(PAUSE),
        "statefulset not using ssPatchImage. Is using {image:?}"
    );
    wait_for_running_and_ready(&ctx, 2, &selector).await?;
    wait_for_ss_status(&api, &ss).await?;

    let patched = ListParams::default().labels("test-ss=patched");
    let listed = all
        .list(&patched)
        .await
        .context("failed to list StatefulSets")?;
    ensure!(
        listed.items.len() == 1,
        "filtered list wasn't found: {} listed",
        listed.items.len()
    );
    api.delete_collection(&DeleteParams::default().grace_period(1), &patched)
        .await
        .context("failed to delete StatefulSets")?;
    let listed = all
        .list(&patched)
        .await
        .context("failed to list StatefulSets")?;
    ensure!(
        listed.items.is_empty(),
        "filtered list should have no Statefulsets: {} listed",
        listed.items.len()
    );
    Ok(())
}

fn ss_conditions(ss: &StatefulSet) -> &[StatefulSetCondition] {
    ss.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

/// statefulset.go "should validate Statefulset Status endpoints"
async fn ss_status_endpoints(ctx: Ctx) -> anyhow::Result<()> {
    create_headless_service(&ctx).await?;
    let ns = ctx.namespace.as_str();
    let api: Api<StatefulSet> = ctx.namespaced();
    let selector = "e2e=testing";
    let rv = ctx
        .all::<StatefulSet>()
        .list(&ListParams::default().labels(selector))
        .await
        .context("failed to list StatefulSets")?
        .metadata
        .resource_version
        .unwrap_or_default();
    let labels = ss_labels();
    let ss = api
        .create(
            &PostParams::default(),
            &new_stateful_set(SS_NAME, 1, &labels)?,
        )
        .await?;
    wait_for_running_and_ready(&ctx, 1, &selector_of(&labels)).await?;
    wait_for_ss_status(&api, &ss).await?;

    let ss = api
        .patch(
            SS_NAME,
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"e2e": "testing"}}})),
        )
        .await?;
    api.get_status(SS_NAME).await.with_context(|| {
        format!("Failed to fetch the status of replica set {SS_NAME} in namespace {ns}")
    })?;

    // Updating the status: a condition added.
    let condition: StatefulSetCondition = from(json!({
        "type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from e2e test",
    }))?;
    retry_on_conflict(|| async {
        let mut s = api.get(SS_NAME).await?;
        s.status
            .get_or_insert_default()
            .conditions
            .get_or_insert_default()
            .push(condition.clone());
        api.replace_status(SS_NAME, &PostParams::default(), &s)
            .await
    })
    .await
    .context("Failed to update status.")?;
    let label = ss.labels().get("e2e").cloned();
    let ours = |s: &StatefulSet| {
        s.name_any() == SS_NAME
            && s.namespace().as_deref() == Some(ns)
            && s.labels().get("e2e") == label.as_ref()
    };
    watch_until(&api, selector, &rv, |s| {
        ours(s)
            && ss_conditions(s).iter().any(|c| {
                c.type_ == "StatusUpdate"
                    && c.reason.as_deref() == Some("E2E")
                    && c.message.as_deref() == Some("Set from e2e test")
            })
    })
    .await
    .with_context(|| format!("failed to locate Statefulset {SS_NAME} in namespace {ns}"))?;

    // Patching the status.
    let patch = json!({"status": {"conditions": [{"type": "StatusPatched", "status": "True"}]}});
    api.patch_status(SS_NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("Failed to patch status.")?;
    watch_until(&api, selector, &rv, |s| {
        ours(s) && ss_conditions(s).iter().any(|c| c.type_ == "StatusPatched")
    })
    .await
    .with_context(|| format!("failed to locate Statefulset {SS_NAME} in namespace {ns}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apps/job.go

/// e2ejob.NewTestJob("notTerminate", name, Never, parallelism, completions, nil, backoffLimit).
fn new_not_terminating_job(
    name: &str,
    parallelism: i32,
    completions: i32,
    backoff_limit: i32,
) -> anyhow::Result<Job> {
    from(json!({
        "metadata": {"name": name},
        "spec": {
            "parallelism": parallelism,
            "completions": completions,
            "backoffLimit": backoff_limit,
            "manualSelector": false,
            "template": {
                "metadata": {"labels": {"job": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "containers": [{
                        "name": "c",
                        "image": BUSYBOX,
                        "command": ["sleep", "1000000"],
                        "volumeMounts": [{"mountPath": "/data", "name": "data"}],
                        "securityContext": {},
                    }],
                },
            },
        },
    }))
}

/// e2ejob.GetJobPods: the pods of the job's label.
async fn job_pods(ctx: &Ctx, name: &str) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = ctx.namespaced();
    Ok(pods
        .list(&ListParams::default().labels(&format!("job={name}")))
        .await?
        .items)
}

/// e2ejob.WaitForJobPodsRunning: `n` of the job's pods Running.
async fn wait_for_job_pods_running(ctx: &Ctx, name: &str, n: usize) -> anyhow::Result<()> {
    eventually(WAIT, &format!("{n} running pods of job {name}"), || async {
        let running = job_pods(ctx, name)
            .await?
            .iter()
            .filter(|p| phase(p) == "Running")
            .count();
        Ok((running == n).then_some(()))
    })
    .await
}

/// The pod client's Update: get, change, update, again on a conflict.
async fn update_pod(api: &Api<Pod>, name: &str, change: impl Fn(&mut Pod)) -> anyhow::Result<()> {
    retry_on_conflict(|| async {
        let mut p = api.get(name).await?;
        change(&mut p);
        api.replace(name, &PostParams::default(), &p).await
    })
    .await
    .with_context(|| format!("failed to update pod {name:?}"))?;
    Ok(())
}

/// job.go "should adopt matching orphans and release non-matching pods"
async fn job_adopt_release(ctx: Ctx) -> anyhow::Result<()> {
    let jobs: Api<Job> = ctx.namespaced();
    let pods: Api<Pod> = ctx.namespaced();
    let name = "adopt-release";
    let parallelism = 2;
    let job = jobs
        .create(
            &PostParams::default(),
            &new_not_terminating_job(name, parallelism, 4, 6)?,
        )
        .await
        .with_context(|| format!("failed to create job in namespace: {}", ctx.namespace))?;
    let uid = job.uid().unwrap_or_default();
    wait_for_job_pods_running(&ctx, name, parallelism as usize)
        .await
        .with_context(|| {
            format!(
                "failed to ensure active pods == parallelism in namespace: {}",
                ctx.namespace
            )
        })?;

    // One of the job's pods orphaned: the job adopts it again.
    let list = job_pods(&ctx, name).await?;
    ensure!(
        list.len() == parallelism as usize,
        "expected {parallelism} pods of the job, got {}",
        list.len()
    );
    let pod = list[0].name_any();
    update_pod(&pods, &pod, |p| p.metadata.owner_references = None).await?;
    eventually(WAIT, &format!("pod {pod:?} to be readopted"), || async {
        let p = pods.get(&pod).await?;
        let Some(r) = controller_of(&p.metadata) else {
            return Ok(None);
        };
        ensure!(
            r.kind == "Job" && r.name == name && r.uid == uid,
            "pod has wrong controllerRef: got {r:?}, want Job {name} ({uid})"
        );
        Ok(Some(()))
    })
    .await?;

    // Its labels removed: the job releases it.
    update_pod(&pods, &pod, |p| p.metadata.labels = None).await?;
    eventually(WAIT, &format!("pod {pod:?} to be released"), || async {
        let p = pods.get(&pod).await?;
        Ok(controller_of(&p.metadata).is_none().then_some(()))
    })
    .await
}

fn job_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// metav1.Now().Rfc3339Copy(): now, to the second (what survives the wire).
fn now_to_the_second() -> anyhow::Result<Timestamp> {
    Ok(Timestamp::from_second(Timestamp::now().as_second())?)
}

/// job.go "should apply changes to a job status"
async fn job_status(ctx: Ctx) -> anyhow::Result<()> {
    let jobs: Api<Job> = ctx.namespaced();
    let name = "suspend-false-to-true";
    let custom = "CustomConditionType";
    let job = jobs
        .create(
            &PostParams::default(),
            &new_not_terminating_job(name, 2, 4, 6)?,
        )
        .await
        .with_context(|| format!("failed to create job in namespace: {}", ctx.namespace))?;
    wait_for_job_pods_running(&ctx, name, 2)
        .await
        .with_context(|| {
            format!(
                "failed to ensure number of pods associated with job {name} is equal to \
             parallelism count in namespace: {}",
                ctx.namespace
            )
        })?;

    // Patching /status: an annotation and a condition (the JSON of a JobStatus holding only
    // the condition).
    let now1 = now_to_the_second()?;
    let patch = json!({
        "metadata": {"annotations": {"patchedstatus": "true"}},
        "status": {"conditions": [{
            "type": custom, "status": "True", "lastProbeTime": null, "lastTransitionTime": Time(now1),
        }]},
    });
    let patched = jobs
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let condition = job_condition(&patched, custom)
        .with_context(|| format!("patched object does not have the required condition {custom}"))?;
    ensure!(
        condition.last_transition_time.as_ref().map(|t| t.0) == Some(now1),
        "patched object should have the applied condition with LastTransitionTime {now1}, got \
         {:?} instead",
        condition.last_transition_time
    );
    ensure!(
        patched
            .annotations()
            .get("patchedstatus")
            .map(String::as_str)
            == Some("true"),
        "patched object should have the applied annotation: {:?}",
        patched.annotations()
    );

    // Updating /status: the condition's time moved on.
    let now2 = now_to_the_second()?;
    let updated = retry_on_conflict(|| async {
        let mut j = jobs.get(name).await?;
        let Some(c) = j
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|cs| cs.iter_mut().find(|c| c.type_ == custom))
        else {
            return Ok(None);
        };
        c.last_transition_time = Some(Time(now2));
        jobs.replace_status(name, &PostParams::default(), &j)
            .await
            .map(Some)
    })
    .await?
    .with_context(|| format!("patched object does not have the required condition {custom}"))?;
    let condition = job_condition(&updated, custom)
        .with_context(|| format!("patched object does not have the required condition {custom}"))?;
    ensure!(
        condition.last_transition_time.as_ref().map(|t| t.0) == Some(now2),
        "patched object should have the applied condition with LastTransitionTime {now2}, got \
         {:?} instead",
        condition.last_transition_time
    );

    // GET /status (as the dynamic client does): the job's own uid.
    let status: Value = ctx
        .get_json(&format!(
            "/apis/batch/v1/namespaces/{}/jobs/{name}/status",
            ctx.namespace
        ))
        .await?;
    let status_uid = status["metadata"]["uid"].as_str().unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    ensure!(
        uid == status_uid,
        "job.UID: {uid} expected to match statusUID: {status_uid}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apimachinery/garbage_collector.go

static LABEL_COUNT: AtomicU64 = AtomicU64::new(0);

/// getUniqLabel: a label of its own for each use.
fn uniq_label(key: &str, value: &str) -> BTreeMap<String, String> {
    let n = LABEL_COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    BTreeMap::from([(format!("{key}-{n:05}"), format!("{value}-{n:05}"))])
}

/// newOwnerRC
fn new_owner_rc(
    name: &str,
    replicas: i32,
    labels: &BTreeMap<String, String>,
) -> anyhow::Result<ReplicationController> {
    from(json!({
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": labels,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "nginx", "image": NGINX}],
                },
            },
        },
    }))
}

/// estimateMaximumPods: half the pods the ready schedulable nodes take (10 a node that does
/// not say), within [min, max].
async fn estimate_maximum_pods(ctx: &Ctx, min: i32, max: i32) -> anyhow::Result<i32> {
    let mut available = 0i64;
    for n in ready_schedulable_nodes(ctx).await? {
        let pods = n
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get("pods"))
            .and_then(|q| q.0.parse::<i64>().ok());
        available += pods.unwrap_or(10);
    }
    let available = (available as f64 * 0.5) as i64;
    Ok(available.clamp(i64::from(min), i64::from(max)) as i32)
}

/// waitForReplicas: the controller counts as many replicas as the rc asks for.
async fn wait_for_replicas(
    rcs: &Api<ReplicationController>,
    rc: &ReplicationController,
) -> anyhow::Result<()> {
    let want = rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let name = rc.name_any();
    eventually(
        WAIT,
        &format!("the rc.Status.Replicas of {name} to reach {want}"),
        || async {
            let got = rcs.get(&name).await?;
            Ok((got.status.map(|s| s.replicas) == Some(want)).then_some(()))
        },
    )
    .await
}

/// Waits for the rc to be gone (a GET answering 404).
async fn wait_rc_deleted(rcs: &Api<ReplicationController>, name: &str) -> anyhow::Result<()> {
    eventually(GC_WAIT, &format!("the rc {name} to be deleted"), || async {
        Ok(rcs.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

fn pod_names(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

/// garbage_collector.go "should keep the rc around until all its pods are deleted if the
/// deleteOptions says so"
async fn gc_keep_rc(ctx: Ctx) -> anyhow::Result<()> {
    let rcs: Api<ReplicationController> = ctx.namespaced();
    let pods: Api<Pod> = ctx.namespaced();
    let labels = uniq_label("gctest", "delete_pods_foreground");
    let replicas = estimate_maximum_pods(&ctx, 10, 100).await?;
    let rc = rcs
        .create(
            &PostParams::default(),
            &new_owner_rc("simpletest.rc", replicas, &labels)?,
        )
        .await
        .context("Failed to create replication controller")?;
    wait_for_replicas(&rcs, &rc).await?;

    rcs.delete(
        &rc.name_any(),
        &delete_options(PropagationPolicy::Foreground, rc.uid()),
    )
    .await
    .context("failed to delete the rc")?;
    if let Err(e) = wait_rc_deleted(&rcs, &rc.name_any()).await {
        let left = pods.list(&ListParams::default()).await?.items;
        let live = left
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        bail!(
            "failed to delete the rc: {e:#}; {} pods remaining, {live} with no deletion \
             timestamp",
            left.len()
        );
    }
    // There are no pods left.
    let left = pods.list(&ListParams::default()).await?.items;
    ensure!(
        left.is_empty(),
        "expected no pods, got {:?}",
        pod_names(&left)
    );
    Ok(())
}

/// garbage_collector.go "should not delete dependents that have both valid owner and owner
/// that's waiting for dependents to be deleted"
async fn gc_valid_and_pending_owners(ctx: Ctx) -> anyhow::Result<()> {
    let rcs: Api<ReplicationController> = ctx.namespaced();
    let pods: Api<Pod> = ctx.namespaced();
    let replicas = estimate_maximum_pods(&ctx, 10, 100).await?;
    let half = (replicas / 2) as usize;
    let rc1_name = "simpletest-rc-to-be-deleted";
    let rc1 = rcs
        .create(
            &PostParams::default(),
            &new_owner_rc(
                rc1_name,
                replicas,
                &uniq_label("gctest_d", "valid_and_pending_owners_d"),
            )?,
        )
        .await
        .context("Failed to create replication controller")?;
    let rc2_name = "simpletest-rc-to-stay";
    let rc2 = rcs
        .create(
            &PostParams::default(),
            &new_owner_rc(
                rc2_name,
                0,
                &uniq_label("gctest_s", "valid_and_pending_owners_s"),
            )?,
        )
        .await
        .context("Failed to create replication controller")?;
    wait_for_replicas(&rcs, &rc1).await?;

    // Half of rc1's pods get rc2 as an owner as well.
    let list = pods
        .list(&ListParams::default())
        .await
        .with_context(|| format!("failed to list pods in namespace: {}", ctx.namespace))?
        .items;
    ensure!(
        list.len() >= half,
        "{} pods listed, fewer than {half}",
        list.len()
    );
    let patch = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "v1", "kind": "ReplicationController",
        "name": rc2.name_any(), "uid": rc2.uid().unwrap_or_default(),
    }]}});
    for p in list.iter().take(half) {
        pods.patch(
            &p.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .with_context(|| {
            format!(
                "failed to apply to pod {} in namespace {}, a strategic merge patch: {patch}",
                p.name_any(),
                ctx.namespace
            )
        })?;
    }

    rcs.delete(
        rc1_name,
        &delete_options(PropagationPolicy::Foreground, rc1.uid()),
    )
    .await
    .context("failed to delete the rc")?;
    if let Err(e) = wait_rc_deleted(&rcs, rc1_name).await {
        let left = pods.list(&ListParams::default()).await?.items;
        bail!(
            "failed to delete rc {rc1_name}, err: {e:#}; {} pods remaining",
            left.len()
        );
    }
    // Half of the pods are still there, rc2 their one owner.
    let left = pods.list(&ListParams::default()).await?.items;
    ensure!(
        left.len() == half,
        "expected {half} pods, got {}",
        left.len()
    );
    for p in &left {
        ensure!(
            p.metadata.deletion_timestamp.is_none(),
            "expected pod DeletionTimestamp to be nil, got {:?}",
            p.metadata
        );
        ensure!(
            p.owner_references().len() == 1,
            "expected pod to only have 1 owner, got {:?}",
            p.owner_references()
        );
    }
    Ok(())
}

/// newGCPod
fn new_gc_pod(name: &str) -> anyhow::Result<Pod> {
    from(json!({
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "nginx", "image": NGINX}],
        },
    }))
}

/// garbage_collector.go "should not be blocked by dependency circle"
async fn gc_dependency_circle(ctx: Ctx) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    let mut created = Vec::new();
    for name in ["pod1", "pod2", "pod3"] {
        created.push(
            pods.create(&PostParams::default(), &new_gc_pod(name)?)
                .await
                .with_context(|| {
                    format!(
                        "failed to create pod {name} in namespace: {}",
                        ctx.namespace
                    )
                })?,
        );
    }
    // The circle: pod1 owned by pod3, pod2 by pod1, pod3 by pod2.
    let owned_by = |owner: &Pod| {
        json!({"metadata": {"ownerReferences": [{
            "apiVersion": "v1", "kind": "Pod",
            "name": owner.name_any(), "uid": owner.uid().unwrap_or_default(),
            "controller": true, "blockOwnerDeletion": true,
        }]}})
    };
    let add_ref = |name: &'static str, owner: &Pod| {
        let patch = owned_by(owner);
        let pods = pods.clone();
        async move {
            pods.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                .with_context(|| {
                    format!("failed to apply to pod {name}, a strategic merge patch: {patch}")
                })
        }
    };
    let pod1 = add_ref("pod1", &created[2]).await?;
    let pod2 = add_ref("pod2", &pod1).await?;
    add_ref("pod3", &pod2).await?;

    // Deleting one deletes them all.
    pods.delete(
        "pod1",
        &delete_options(PropagationPolicy::Foreground, pod1.uid()),
    )
    .await
    .with_context(|| format!("failed to delete pod pod1 in namespace: {}", ctx.namespace))?;
    let result = eventually(
        Duration::from_secs(120),
        "all pods to be deleted",
        || async {
            Ok(pods
                .list(&ListParams::default())
                .await?
                .items
                .is_empty()
                .then_some(()))
        },
    )
    .await;
    if let Err(e) = result {
        let left = pods.list(&ListParams::default()).await?.items;
        bail!(
            "failed to wait for all pods to be deleted: {e:#}; pods are {:?}",
            left.iter().map(|p| &p.metadata).collect::<Vec<_>>()
        );
    }
    Ok(())
}
