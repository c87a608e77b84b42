//! [sig-node] Pods (test/e2e/common/node/pods.go), Kubelet (test/e2e/common/node/kubelet.go),
//! RuntimeClass scheduling (test/e2e/common/node/runtimeclass.go) and NoExecuteTaintManager
//! (test/e2e/node/taints.go). On Kelp the pods run on `kelp simulate` nodes: Running and Ready
//! at once, with a host and a pod IP; no container runs.
//!
//! The NoExecuteTaintManager tests are [Serial] and [Disruptive]: they put a NoExecute taint on
//! the node their pod runs on. The harness runs them in line, and the taint comes off again
//! whether the test passed or not (upstream's DeferCleanup), even when the harness's timeout
//! drops the test half-way (see [`TaintGuard`]).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Taint};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use rand::Rng;
use serde_json::{Value, json};

use super::apps::same_quantity;
use super::tests;
use crate::framework::{eventually, eventually_every, from, is_ready, node_ready};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-node] Pods should delete a collection of pods" => pod_collection,
        "[sig-node] Pods should get a host IP [NodeConformance]" => host_ip,
        "[sig-node] Pods should be updated [NodeConformance]" => pod_updated,
        "[sig-node] Pods should run through the lifecycle of Pods and PodStatus" => pod_lifecycle,
        "[sig-node] Pods should patch a pod status" => pod_patch_status,
        "[sig-node] Kubelet when scheduling a busybox command that always fails in a pod should have an terminated reason [NodeConformance]" => failing_pod_terminated_reason,
        "[sig-node] Kubelet when scheduling a busybox command that always fails in a pod should be possible to delete [NodeConformance]" => failing_pod_delete,
        "[sig-node] RuntimeClass should schedule a Pod requesting a RuntimeClass without PodOverhead [NodeConformance]" => runtimeclass_without_overhead,
        "[sig-node] RuntimeClass should schedule a Pod requesting a RuntimeClass and initialize its Overhead [NodeConformance]" => runtimeclass_with_overhead,
        "[sig-node] NoExecuteTaintManager Single Pod [Serial] removing taint cancels eviction [Disruptive]" => removing_taint_cancels_eviction,
        "[sig-node] NoExecuteTaintManager Multiple Pods [Serial] evicts pods with minTolerationSeconds [Disruptive]" => evicts_with_min_toleration_seconds,
    ]
}

/// framework.PodStartTimeout and f.Timeouts.PodStart (5m), cut to fit the harness's three
/// minutes a test.
pub(super) const POD_START: Duration = Duration::from_secs(90);
/// f.Timeouts.PodDelete (5m), likewise cut.
pub(super) const POD_DELETE: Duration = Duration::from_secs(90);
/// e2epod's podScheduledBeforeTimeout: podListTimeout (1m) and 20s.
const POD_SCHEDULED: Duration = Duration::from_secs(80);
/// testHostIP's hostIPTimeout (2m), cut.
const HOST_IP_WAIT: Duration = Duration::from_secs(60);
/// e2enode's singleCallTimeout (5m) of ExpectNodeHasTaint, cut.
const TAINT_WAIT: Duration = Duration::from_secs(60);

/// The images of v1.33's test/utils/image manifest.
pub(super) const PAUSE: &str = "registry.k8s.io/pause:3.10";
pub(super) const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";
const HTTPD: &str = "registry.k8s.io/e2e-test-images/httpd:2.4.38-4";
pub(super) const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.37.0-1";

/// e2eruntimeclass.PreconfiguredRuntimeClassHandler.
const PRECONFIGURED_HANDLER: &str = "test-handler";

/// taints.go's test taint and its timings.
const TAINT_KEY: &str = "kubernetes.io/e2e-evict-taint-key";
const TAINT_VALUE: &str = "evictTaintVal";
const KUBELET_POD_DELETION_DELAY_SECONDS: u64 = 60;
const ADDITIONAL_WAIT_PER_DELETE_SECONDS: u64 = 5;

// ---------------------------------------------------------------------------------------------
// Pods (e2epod)
// ---------------------------------------------------------------------------------------------

/// A random UUID (uuid.NewUUID), lowercase hex.
pub(super) fn uuid() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// strconv.Itoa(time.Now().Nanosecond()): the label value pods.go makes unique.
pub(super) fn nanos() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default()
        .to_string()
}

/// utilrand.String(n): n characters of its alphabet without vowels and look-alikes.
fn rand_string(n: usize) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(ALPHANUMS[rng.random_range(0..ALPHANUMS.len())]))
        .collect()
}

/// e2epod.MustMixinRestrictedPodSecurity: what the restricted Pod Security level asks for, set
/// where the pod leaves it unset (runAsUser is GetDefaultNonRootUser's 1000).
pub(super) fn restricted(mut pod: Value) -> Value {
    let spec = &mut pod["spec"];
    if !spec["securityContext"].is_object() {
        spec["securityContext"] = json!({});
    }
    let sc = &mut spec["securityContext"];
    for (field, value) in [
        ("runAsNonRoot", json!(true)),
        ("runAsUser", json!(1000)),
        ("seccompProfile", json!({"type": "RuntimeDefault"})),
    ] {
        if sc.get(field).is_none_or(Value::is_null) {
            sc[field] = value;
        }
    }
    if let Some(containers) = spec["containers"].as_array_mut() {
        for c in containers {
            if !c["securityContext"].is_object() {
                c["securityContext"] = json!({});
            }
            let csc = &mut c["securityContext"];
            if csc
                .get("allowPrivilegeEscalation")
                .is_none_or(Value::is_null)
            {
                csc["allowPrivilegeEscalation"] = json!(false);
            }
            if !csc["capabilities"].is_object() {
                csc["capabilities"] = json!({});
            }
            if csc["capabilities"]["drop"]
                .as_array()
                .is_none_or(|d| d.is_empty())
            {
                csc["capabilities"]["drop"] = json!(["ALL"]);
            }
        }
    }
    pod
}

pub(super) fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn label<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.labels().get(key).map(String::as_str)
}

/// The pod's spec.nodeName, when it has one.
fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// testutils.PodRunningReady: Running, with its Ready condition True.
fn running_ready(p: &Pod) -> bool {
    phase(p) == "Running" && is_ready(p)
}

/// e2epod.WaitTimeoutForPodRunningInNamespace: Running; a pod that ended fails the wait.
pub(super) async fn wait_running(api: &Api<Pod>, name: &str) -> anyhow::Result<Pod> {
    eventually(POD_START, &format!("pod {name} to be running"), || async {
        let p = api.get(name).await?;
        let ph = phase(&p).to_string();
        match ph.as_str() {
            "Running" => Ok(Some(p)),
            "Failed" => bail!("pod {name} failed instead of running"),
            "Succeeded" => bail!("pod {name} ran to completion instead of running"),
            _ => Ok(None),
        }
    })
    .await
}

/// e2epod.WaitTimeoutForPodReadyInNamespace: Running and Ready; a pod that ended fails it.
pub(super) async fn wait_running_ready(api: &Api<Pod>, name: &str) -> anyhow::Result<Pod> {
    eventually(
        POD_START,
        &format!("pod {name} to be running and ready"),
        || async {
            let p = api.get(name).await?;
            let ph = phase(&p).to_string();
            match ph.as_str() {
                "Failed" | "Succeeded" => {
                    bail!("The phase of Pod {name} is {ph} which is unexpected.")
                }
                "Running" if is_ready(&p) => Ok(Some(p)),
                _ => Ok(None),
            }
        },
    )
    .await
}

/// PodClient.CreateSync: created, then Running and Ready, then read again.
pub(super) async fn create_sync(api: &Api<Pod>, pod: Value) -> anyhow::Result<Pod> {
    let pod: Pod = from(pod)?;
    let created = api
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {}", pod.name_any()))?;
    let name = created.name_any();
    wait_running_ready(api, &name).await?;
    Ok(api.get(&name).await?)
}

/// PodClient.Update: read, change, write; again on a conflict or a server timeout (every
/// 500ms, for 30s).
pub(super) async fn update_pod(
    api: &Api<Pod>,
    name: &str,
    change: impl Fn(&mut Pod),
) -> anyhow::Result<()> {
    eventually_every(
        Duration::from_millis(500),
        Duration::from_secs(30),
        &format!("pod {name} to be updated"),
        || async {
            let mut pod = api
                .get(name)
                .await
                .with_context(|| format!("failed to get pod {name:?}"))?;
            change(&mut pod);
            match api.replace(name, &PostParams::default(), &pod).await {
                Ok(_) => Ok(Some(())),
                Err(kube::Error::Api(e)) if e.code == 409 || e.reason == "ServerTimeout" => {
                    Ok(None)
                }
                Err(e) => bail!("failed to update pod {name:?}: {e}"),
            }
        },
    )
    .await
}

/// The controller among the pod's owners, if any (metav1.GetControllerOf).
fn has_controller(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true))
}

/// e2epod.WaitForPodsRunningReady(ns, min, allowedNotReady 0): every pod of the namespace
/// Running and Ready, and at least `min` of them. Succeeded pods are not counted; Failed ones a
/// controller owns are let be.
async fn wait_pods_running_ready(api: &Api<Pod>, min: usize) -> anyhow::Result<()> {
    eventually(
        POD_START,
        &format!("at least {min} pods, and all, to be running and ready"),
        || async {
            let pods = api.list(&ListParams::default()).await?.items;
            let (mut ok, mut bad) = (0, 0);
            for p in &pods {
                if running_ready(p) {
                    ok += 1;
                } else if phase(p) == "Succeeded" {
                    // it doesn't make sense to wait for this pod
                } else if phase(p) != "Failed" || !has_controller(p) {
                    bad += 1;
                }
            }
            Ok((ok >= min && bad == 0).then_some(()))
        },
    )
    .await
}

/// watchtools.Until over the namespace's pods of the label selector, from `rv`: reads events
/// (watching again from the last resource version should the watch end) until `done` takes
/// one, for at most `timeout`. Upstream only logs when it does not come, and so only tells.
async fn watch_until(
    api: &Api<Pod>,
    selector: &str,
    rv: &str,
    timeout: Duration,
    done: impl Fn(&WatchEvent<Pod>) -> bool,
) -> bool {
    let watch = watch_for(api, selector, rv, &done);
    matches!(tokio::time::timeout(timeout, watch).await, Ok(Ok(())))
}

/// The watch of [`watch_until`]: Ok once `done` took an event.
async fn watch_for(
    api: &Api<Pod>,
    selector: &str,
    rv: &str,
    done: &impl Fn(&WatchEvent<Pod>) -> bool,
) -> anyhow::Result<()> {
    let mut rv = rv.to_string();
    loop {
        let mut events = api
            .watch(&WatchParams::default().labels(selector), &rv)
            .await?
            .boxed();
        while let Some(event) = events.next().await {
            let event = event?;
            match &event {
                WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) => {
                    if let Some(v) = p.resource_version() {
                        rv = v;
                    }
                }
                WatchEvent::Bookmark(b) => rv = b.metadata.resource_version.clone(),
                WatchEvent::Error(e) => bail!("the watch failed: {e:?}"),
            }
            if done(&event) {
                return Ok(());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// test/e2e/common/node/pods.go
// ---------------------------------------------------------------------------------------------

/// "should get a host IP" (testHostIP).
async fn host_ip(ctx: Ctx) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    let name = format!("pod-hostip-{}", uuid());
    // creating pod
    create_sync(
        &pods,
        restricted(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "test", "image": PAUSE}]},
        })),
    )
    .await?;
    // Try to make sure we get a hostIP for each pod (every 5s).
    eventually_every(
        Duration::from_secs(5),
        HOST_IP_WAIT,
        &format!("the hostIP of pod {name}"),
        || async {
            let p = pods
                .get(&name)
                .await
                .with_context(|| format!("Failed to get pod {name:?}"))?;
            let ip = p.status.and_then(|s| s.host_ip).unwrap_or_default();
            Ok((!ip.is_empty()).then_some(()))
        },
    )
    .await
    .with_context(|| format!("Gave up waiting for hostIP of pod {name}"))
}

/// "should be updated".
async fn pod_updated(ctx: Ctx) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    // creating the pod
    let name = format!("pod-update-{}", uuid());
    let value = nanos();
    let pod = restricted(json!({
        "metadata": {"name": name, "labels": {"name": "foo", "time": value}},
        "spec": {"containers": [{"name": "pause", "image": PAUSE}]},
    }));
    // submitting the pod to kubernetes
    create_sync(&pods, pod).await?;
    // verifying the pod is in kubernetes
    let listed = pods
        .list(&ListParams::default().labels(&format!("time={value}")))
        .await
        .context("failed to query for pods")?;
    ensure!(
        listed.items.len() == 1,
        "expected 1 pod labelled time={value}, found {}",
        listed.items.len()
    );
    // updating the pod (upstream takes a new time in the update function)
    let value = nanos();
    update_pod(&pods, &name, |p| {
        p.metadata
            .labels
            .get_or_insert_default()
            .insert("time".into(), value.clone());
    })
    .await?;
    wait_running(&pods, &name).await?;
    // verifying the updated pod is in kubernetes
    let listed = pods
        .list(&ListParams::default().labels(&format!("time={value}")))
        .await
        .context("failed to query for pods")?;
    ensure!(
        listed.items.len() == 1,
        "expected 1 pod labelled time={value}, found {}",
        listed.items.len()
    );
    Ok(())
}

/// "should delete a collection of pods".
async fn pod_collection(ctx: Ctx) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    // Create set of pods
    for name in ["test-pod-1", "test-pod-2", "test-pod-3"] {
        let pod: Pod = from(restricted(json!({
            "metadata": {"name": name, "labels": {"type": "Testing"}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"image": AGNHOST, "name": "token-test"}],
                "restartPolicy": "Never",
            },
        })))?;
        pods.create(&PostParams::default(), &pod)
            .await
            .context("failed to create pod")?;
    }
    // waiting for all 3 pods to be running
    wait_pods_running_ready(&pods, 3)
        .await
        .context("3 pods not found running.")?;
    // delete Collection of pods with a label in the current namespace
    let one_second = DeleteParams {
        grace_period_seconds: Some(1),
        ..Default::default()
    };
    pods.delete_collection(&one_second, &ListParams::default().labels("type=Testing"))
        .await
        .context("failed to delete collection of pods")?;
    // waiting for all pods to be deleted (checkPodListQuantity 0, every second)
    eventually_every(
        Duration::from_secs(1),
        POD_DELETE,
        "no pod labelled type=Testing",
        || async {
            let left = pods
                .list(&ListParams::default().labels("type=Testing"))
                .await?;
            Ok(left.items.is_empty().then_some(()))
        },
    )
    .await
    .context("found a pod(s)")
}

/// "should run through the lifecycle of Pods and PodStatus".
async fn pod_lifecycle(ctx: Ctx) -> anyhow::Result<()> {
    let ns = ctx.namespace.clone();
    let pods: Api<Pod> = ctx.namespaced();
    let name = "pod-test";
    let selector = "test-pod-static=true";
    let listed = ctx
        .all::<Pod>()
        .list(&ListParams::default().labels(selector))
        .await
        .context("failed to list Pods")?;
    let list_rv = listed.metadata.resource_version.unwrap_or_default();
    let pod: Pod = from(restricted(json!({
        "metadata": {"name": name, "labels": {"test-pod-static": "true"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": name, "image": AGNHOST}],
        },
    })))?;
    // creating a Pod with a static label
    pods.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("failed to create Pod {name} in namespace {ns}"))?;

    // watching for Pod to be ready
    let _ = watch_until(&pods, selector, &list_rv, POD_START, |e| match e {
        WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) => {
            p.name_any() == name
                && p.namespace().as_deref() == Some(ns.as_str())
                && label(p, "test-pod-static") == Some("true")
                && phase(p) == "Running"
        }
        _ => false,
    })
    .await;
    let p = pods
        .get(name)
        .await
        .with_context(|| format!("failed to get Pod {name} in namespace {ns}"))?;
    ensure!(
        phase(&p) == "Running",
        "failed to see Pod {name} in namespace {ns} running (phase {:?})",
        phase(&p)
    );

    // patching the Pod with a new Label and updated data. The patch is json.Marshal of a v1.Pod
    // with just these set: Go writes its zero creationTimestamp as null, and the empty
    // resources and status as {}.
    let pre_patch_rv = p.resource_version().unwrap_or_default();
    let patch = json!({
        "metadata": {"labels": {"test-pod": "patched"}, "creationTimestamp": null},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": name, "image": HTTPD, "resources": {}}],
        },
        "status": {},
    });
    pods.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .with_context(|| format!("failed to patch Pod {name} in namespace {ns}"))?;
    let _ = watch_until(
        &pods,
        selector,
        &pre_patch_rv,
        Duration::from_secs(30),
        |e| matches!(e, WatchEvent::Modified(p) if label(p, "test-pod-static") == Some("true")),
    )
    .await;

    // getting the Pod and ensuring that it's patched
    let pod = pods
        .get(name)
        .await
        .with_context(|| format!("failed to fetch Pod {name} in namespace {ns}"))?;
    ensure!(
        label(&pod, "test-pod") == Some("patched"),
        "failed to patch Pod - missing label: {:?}",
        pod.labels()
    );
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    ensure!(
        image == HTTPD,
        "failed to patch Pod - wrong image: {image:?}"
    );

    // replacing the Pod's status Ready condition to False
    let updated = set_ready_false(&pods, name).await?;

    // check the Pod again to ensure its Ready conditions are False
    let false_count = updated
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .filter(|c| (c.type_ == "Ready" || c.type_ == "ContainersReady") && c.status == "False")
        .count();
    ensure!(
        false_count == 2,
        "failed to update PodStatus - field patch count doesn't match the total ({false_count} of 2)"
    );

    // deleting the Pod via a Collection with a LabelSelector
    let pre_delete_rv = updated.resource_version().unwrap_or_default();
    let one_second = DeleteParams {
        grace_period_seconds: Some(1),
        ..Default::default()
    };
    pods.delete_collection(&one_second, &ListParams::default().labels(selector))
        .await
        .context("failed to delete Pod by collection")?;

    // watching for the Pod to be deleted
    let _ = watch_until(
        &pods,
        selector,
        &pre_delete_rv,
        POD_DELETE,
        |e| matches!(e, WatchEvent::Deleted(p) if label(p, "test-pod-static") == Some("true")),
    )
    .await;
    match pods.get(name).await {
        Ok(p) => bail!(
            "pod {name} found in namespace {ns}, but it should be deleted: {}",
            serde_json::to_string(&p).unwrap_or_default()
        ),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => bail!("expected IsNotFound error, got {e:?}"),
    }
}

/// The RetryOnConflict (DefaultRetry: five tries, 10ms apart) of "replacing the Pod's status
/// Ready condition to False": the pod read through pods/status, its True Ready and
/// ContainersReady conditions turned False (both must be there), written back (UpdateStatus).
async fn set_ready_false(api: &Api<Pod>, name: &str) -> anyhow::Result<Pod> {
    let mut tries = 0;
    loop {
        let mut pod = api
            .get_status(name)
            .await
            .with_context(|| format!("failed to fetch PodStatus of Pod {name}"))?;
        let mut flipped = 0;
        for c in pod
            .status
            .iter_mut()
            .flat_map(|s| s.conditions.iter_mut().flatten())
        {
            if (c.type_ == "Ready" || c.type_ == "ContainersReady") && c.status == "True" {
                c.status = "False".into();
                flipped += 1;
            }
        }
        ensure!(
            flipped == 2,
            "failed to patch all relevant Pod conditions ({flipped} of 2 were True)"
        );
        match api.replace_status(name, &PostParams::default(), &pod).await {
            Ok(p) => return Ok(p),
            Err(kube::Error::Api(e)) if e.code == 409 && tries < 4 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => bail!("failed to update PodStatus of Pod {name}: {e}"),
        }
    }
}

/// "should patch a pod status".
async fn pod_patch_status(ctx: Ctx) -> anyhow::Result<()> {
    let ns = ctx.namespace.clone();
    let pods: Api<Pod> = ctx.namespaced();
    let name = format!("pod-{}", rand_string(5));
    // Create a pod
    let pod: Pod = from(restricted(json!({
        "metadata": {"name": name, "labels": {"e2e": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "agnhost", "image": AGNHOST}],
        },
    })))?;
    pods.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("failed to create Pod {name} in namespace {ns}"))?;
    wait_running(&pods, &name)
        .await
        .context("Pod didn't start within time out period")?;
    // patching /status
    let patch = json!({
        "metadata": {"annotations": {"patchedstatus": "true"}},
        "status": {"message": "Patched by e2e test", "reason": "E2E"},
    });
    let patched = pods
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("failed to patch pod: {name:?}"))?;
    let status = patched.status.unwrap_or_default();
    ensure!(
        status.message.as_deref() == Some("Patched by e2e test"),
        "Status.Message for {name:?} was {:?} but expected it to be \"Patched by e2e test\"",
        status.message
    );
    ensure!(
        status.reason.as_deref() == Some("E2E"),
        "Status.Reason for {name:?} was {:?} but expected it to be \"E2E\"",
        status.reason
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/common/node/kubelet.go
// ---------------------------------------------------------------------------------------------

/// The BeforeEach of "when scheduling a busybox command that always fails in a pod": a pod
/// (PodClient.Create) running /bin/false, never restarted.
async fn create_bin_false_pod(ctx: &Ctx) -> anyhow::Result<String> {
    let name = format!("bin-false{}", uuid());
    let pod: Pod = from(json!({
        "metadata": {"name": name},
        "spec": {
            // Don't restart the Pod since it is expected to exit
            "restartPolicy": "Never",
            "containers": [{"image": BUSYBOX, "name": name, "command": ["/bin/false"]}],
        },
    }))?;
    ctx.namespaced::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {name}"))?;
    Ok(name)
}

/// The check "should have an terminated reason" polls for: one container, terminated with a
/// non-zero exit code and a reason.
async fn terminated_with_reason(api: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    let pod = api.get(name).await?;
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    ensure!(
        statuses.len() == 1,
        "expected only one container in the pod {name:?}"
    );
    let Some(terminated) = statuses[0]
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
    else {
        bail!(
            "expected state to be terminated. Got pod status: {:?}",
            pod.status
        );
    };
    let reason = terminated.reason.clone().unwrap_or_default();
    ensure!(
        terminated.exit_code != 0 && !reason.is_empty(),
        "expected non-zero exitCode and non-empty terminated state reason. Got exitCode: {} and \
         terminated state reason: {reason:?}",
        terminated.exit_code
    );
    Ok(())
}

/// "should have an terminated reason": gomega.Eventually (PodStartTimeout) of the check, the
/// last failure reported. Upstream polls every 4s; this every second.
async fn failing_pod_terminated_reason(ctx: Ctx) -> anyhow::Result<()> {
    let name = create_bin_false_pod(&ctx).await?;
    let pods: Api<Pod> = ctx.namespaced();
    let deadline = tokio::time::Instant::now() + POD_START;
    loop {
        match terminated_with_reason(&pods, &name).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context(format!("still failing after {POD_START:?}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// "should be possible to delete".
async fn failing_pod_delete(ctx: Ctx) -> anyhow::Result<()> {
    let name = create_bin_false_pod(&ctx).await?;
    ctx.namespaced::<Pod>()
        .delete(&name, &DeleteParams::default())
        .await
        .context("deleting Pod")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/common/node/runtimeclass.go
// ---------------------------------------------------------------------------------------------

/// createRuntimeClass: a RuntimeClass named after the namespace (`<ns>-<name>`), with this
/// handler and overhead; its name.
async fn create_runtime_class(
    ctx: &Ctx,
    name: &str,
    handler: &str,
    overhead: Option<Value>,
) -> anyhow::Result<String> {
    let unique = format!("{}-{name}", ctx.namespace);
    let mut rc = json!({"metadata": {"name": unique}, "handler": handler});
    if let Some(overhead) = overhead {
        rc["overhead"] = overhead;
    }
    let rc: RuntimeClass = from(rc)?;
    let created = ctx
        .cluster::<RuntimeClass>()
        .create(&PostParams::default(), &rc)
        .await
        .context("failed to create RuntimeClass resource")?;
    Ok(created.name_any())
}

/// deleteRuntimeClass, the DeferCleanup: its failure fails the test.
async fn delete_runtime_class(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    ctx.cluster::<RuntimeClass>()
        .delete(name, &DeleteParams::default())
        .await
        .context("failed to delete RuntimeClass resource")?;
    Ok(())
}

/// e2eruntimeclass.NewRuntimeClassPod.
fn runtime_class_pod(runtime_class: &str) -> Value {
    json!({
        "metadata": {"generateName": format!("test-runtimeclass-{runtime_class}-")},
        "spec": {
            "runtimeClassName": runtime_class,
            "containers": [{"name": "test", "image": BUSYBOX, "command": ["true"]}],
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
        },
    })
}

/// e2epod.WaitForPodsWithLabelScheduled with the empty selector: at least one pod in the
/// namespace, and every one bound to a node (polled every 2s).
async fn wait_pods_scheduled(api: &Api<Pod>) -> anyhow::Result<Vec<Pod>> {
    eventually_every(
        Duration::from_secs(2),
        POD_SCHEDULED,
        "the namespace's pods to be scheduled",
        || async {
            let pods = api.list(&ListParams::default()).await?.items;
            let scheduled = !pods.is_empty() && pods.iter().all(|p| node_of(p).is_some());
            Ok(scheduled.then_some(pods))
        },
    )
    .await
}

/// The two "should schedule a Pod requesting a RuntimeClass" tests up to their last checks:
/// a RuntimeClass of the preconfigured handler (with this overhead), a pod of it, which must be
/// the only pod of the namespace and scheduled. The RuntimeClass is deleted after. The
/// scheduled pod.
async fn schedule_runtime_class_pod(ctx: &Ctx, overhead: Option<Value>) -> anyhow::Result<Pod> {
    let rc = create_runtime_class(
        ctx,
        "preconfigured-handler",
        PRECONFIGURED_HANDLER,
        overhead,
    )
    .await?;
    let scheduled = async {
        let pods: Api<Pod> = ctx.namespaced();
        let pod: Pod = from(runtime_class_pod(&rc))?;
        let pod = pods
            .create(&PostParams::default(), &pod)
            .await
            .context("creating the pod")?;
        // there is only one pod in the namespace
        let listed = wait_pods_scheduled(&pods)
            .await
            .context("Failed to schedule Pod with the RuntimeClass")?;
        ensure!(
            listed.len() == 1,
            "expected 1 pod in the namespace, found {}",
            listed.len()
        );
        let scheduled = listed.into_iter().next().context("no pod")?;
        ensure!(
            scheduled.name_any() == pod.name_any(),
            "the scheduled pod is {}, not {}",
            scheduled.name_any(),
            pod.name_any()
        );
        anyhow::Ok(scheduled)
    }
    .await;
    let cleanup = delete_runtime_class(ctx, &rc).await;
    let scheduled = scheduled?;
    cleanup?;
    Ok(scheduled)
}

/// "should schedule a Pod requesting a RuntimeClass without PodOverhead".
async fn runtimeclass_without_overhead(ctx: Ctx) -> anyhow::Result<()> {
    let pod = schedule_runtime_class_pod(&ctx, None).await?;
    // Overhead should not be set
    let overhead = pod.spec.and_then(|s| s.overhead).unwrap_or_default();
    ensure!(
        overhead.is_empty(),
        "expected no overhead, got {overhead:?}"
    );
    Ok(())
}

/// "should schedule a Pod requesting a RuntimeClass and initialize its Overhead".
async fn runtimeclass_with_overhead(ctx: Ctx) -> anyhow::Result<()> {
    let overhead = json!({"podFixed": {"cpu": "10m", "memory": "1Mi"}});
    let pod = schedule_runtime_class_pod(&ctx, Some(overhead)).await?;
    let overhead = pod.spec.and_then(|s| s.overhead).unwrap_or_default();
    for (resource, want) in [("cpu", "10m"), ("memory", "1Mi")] {
        let got = overhead.get(resource).map(|q| q.0.clone());
        ensure!(
            got.as_deref().is_some_and(|q| same_quantity(q, want)),
            "expected overhead {resource} {want}, got {got:?} (overhead {overhead:?})"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/node/taints.go
// ---------------------------------------------------------------------------------------------

/// createPodForTaintsTest: a pause pod labelled group=`label`, tolerating the test taint when
/// `has_toleration` (forever unless `toleration_seconds` > 0), its deletion grace one second
/// (which the API server clears on create).
fn taint_pod(
    has_toleration: bool,
    toleration_seconds: u64,
    name: &str,
    label: &str,
    ns: &str,
) -> Value {
    let mut pod = json!({
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"group": label},
            "deletionGracePeriodSeconds": 1,
        },
        "spec": {"containers": [{"name": "pause", "image": PAUSE}]},
    });
    if has_toleration {
        let mut toleration = json!({"key": TAINT_KEY, "value": TAINT_VALUE, "effect": "NoExecute"});
        if toleration_seconds > 0 {
            toleration["tolerationSeconds"] = json!(toleration_seconds);
        }
        pod["spec"]["tolerations"] = json!([toleration]);
    }
    pod
}

/// getTestTaint: NoExecute, added now (metav1.Now, which goes on the wire in whole seconds).
fn test_taint() -> Taint {
    use k8s_openapi::jiff::Timestamp;
    let now = Timestamp::now();
    let added = Timestamp::from_second(now.as_second()).unwrap_or(now);
    Taint {
        key: TAINT_KEY.into(),
        value: Some(TAINT_VALUE.into()),
        effect: "NoExecute".into(),
        time_added: Some(Time(added)),
    }
}

/// Taint.MatchTaint: the same key and effect.
fn match_taint(a: &Taint, b: &Taint) -> bool {
    a.key == b.key && a.effect == b.effect
}

fn taints_of(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

fn show(t: &Taint) -> String {
    format!(
        "{}={}:{}",
        t.key,
        t.value.as_deref().unwrap_or(""),
        t.effect
    )
}

/// patchNodeTaints: the two-way strategic merge patch of the node's taints, a list without a
/// merge key, so replaced whole (null when none are left).
async fn patch_taints(api: &Api<Node>, node: &str, taints: Vec<Taint>) -> anyhow::Result<()> {
    let list = if taints.is_empty() {
        Value::Null
    } else {
        serde_json::to_value(&taints)?
    };
    api.patch(
        node,
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"taints": list}})),
    )
    .await
    .with_context(|| format!("patching the taints of node {node}"))?;
    Ok(())
}

/// e2enode.AddOrUpdateTaintOnNode: a taint of the same key and effect replaced (left alone
/// when equal), else the taint added.
async fn add_or_update_taint(api: &Api<Node>, node: &str, taint: &Taint) -> anyhow::Result<()> {
    let current = taints_of(&api.get(node).await?);
    let mut updated = false;
    let mut taints = Vec::new();
    for t in current {
        if match_taint(taint, &t) {
            if *taint == t {
                return Ok(());
            }
            taints.push(taint.clone());
            updated = true;
        } else {
            taints.push(t);
        }
    }
    if !updated {
        taints.push(taint.clone());
    }
    patch_taints(api, node, taints).await
}

/// e2enode.ExpectNodeHasTaint: polls (every 2s) until the node has a taint of that key and
/// effect.
async fn expect_node_has_taint(api: &Api<Node>, node: &str, taint: &Taint) -> anyhow::Result<()> {
    eventually_every(
        Duration::from_secs(2),
        TAINT_WAIT,
        &format!("node {node} to have taint {}", show(taint)),
        || async {
            let taints = taints_of(&api.get(node).await?);
            Ok(taints.iter().any(|t| match_taint(taint, t)).then_some(()))
        },
    )
    .await
}

/// e2enode.RemoveTaintOffNode: the taints of that key and effect taken off (no call when there
/// are none), then checked gone.
async fn remove_taint_off_node(api: &Api<Node>, node: &str, taint: &Taint) -> anyhow::Result<()> {
    let current = taints_of(&api.get(node).await?);
    if current.iter().any(|t| match_taint(taint, t)) {
        let kept = current
            .into_iter()
            .filter(|t| !match_taint(taint, t))
            .collect();
        patch_taints(api, node, kept).await?;
    }
    let after = taints_of(&api.get(node).await?);
    ensure!(
        !after.iter().any(|t| match_taint(taint, t)),
        "Failed removing taint {} of the node {node}",
        show(taint)
    );
    Ok(())
}

/// The test taint's DeferCleanup: [`TaintGuard::remove`] takes it off (RemoveTaintOffNode);
/// should the test be dropped first (the harness's timeout), the drop takes it off in a task
/// of its own, so that no node stays tainted.
struct TaintGuard {
    api: Option<Api<Node>>,
    node: String,
    taint: Taint,
}

impl TaintGuard {
    fn new(api: &Api<Node>, node: &str, taint: &Taint) -> TaintGuard {
        TaintGuard {
            api: Some(api.clone()),
            node: node.to_string(),
            taint: taint.clone(),
        }
    }

    /// Takes the taint off, once; the guard stays armed when that fails.
    async fn remove(&mut self) -> anyhow::Result<()> {
        let Some(api) = self.api.clone() else {
            return Ok(());
        };
        remove_taint_off_node(&api, &self.node, &self.taint).await?;
        self.api = None;
        Ok(())
    }
}

impl Drop for TaintGuard {
    fn drop(&mut self) {
        let Some(api) = self.api.take() else {
            return;
        };
        let (node, taint) = (self.node.clone(), self.taint.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = remove_taint_off_node(&api, &node, &taint).await;
            });
        }
    }
}

/// createTestController: an informer on the namespace's pods labelled group=`group`, telling
/// the name of every pod it sees deleted (a pod gone from a relist counts, as the informer's
/// DeletedFinalStateUnknown does). Stops with the test.
struct Deletions {
    seen: tokio::sync::mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Deletions {
    async fn start(ctx: &Ctx, group: &str) -> anyhow::Result<Deletions> {
        let api: Api<Pod> = ctx.namespaced();
        let config = watcher::Config::default().labels(&format!("group={group}"));
        let (tell, seen) = tokio::sync::mpsc::unbounded_channel();
        let (synced, on_sync) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut synced = Some(synced);
            let mut known: BTreeSet<String> = BTreeSet::new();
            let mut relisted: Option<BTreeSet<String>> = None;
            let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Init) => relisted = Some(BTreeSet::new()),
                    Ok(watcher::Event::InitApply(p)) => {
                        if let Some(fresh) = relisted.as_mut() {
                            fresh.insert(p.name_any());
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(fresh) = relisted.take() {
                            for gone in known.difference(&fresh) {
                                let _ = tell.send(gone.clone());
                            }
                            known = fresh;
                        }
                        if let Some(tx) = synced.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(p)) => {
                        known.insert(p.name_any());
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        known.remove(&p.name_any());
                        let _ = tell.send(p.name_any());
                    }
                    Err(_) => {}
                }
            }
        });
        let deletions = Deletions { seen, task };
        tokio::time::timeout(Duration::from_secs(30), on_sync)
            .await
            .map_err(|_| anyhow::anyhow!("the pod informer did not sync within 30s"))?
            .map_err(|_| anyhow::anyhow!("the pod informer ended before it synced"))?;
        Ok(deletions)
    }

    /// The next pod seen deleted within `window`; None when none was.
    async fn next_within(&mut self, window: Duration) -> anyhow::Result<Option<String>> {
        match tokio::time::timeout(window, self.seen.recv()).await {
            Err(_) => Ok(None),
            Ok(Some(name)) => Ok(Some(name)),
            Ok(None) => bail!("the pod informer stopped"),
        }
    }
}

impl Drop for Deletions {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// e2enode.WaitForTotalHealthy, whose outcome the BeforeEach does not check: up to a minute
/// for every node to be Ready. Its check of the per-node system pods (kube-proxy,
/// fluentd-elasticsearch, node-problem-detector) is left out: Kelp runs none, so upstream's
/// wait would only spend its minute.
async fn wait_total_healthy(ctx: &Ctx) {
    let api: Api<Node> = ctx.cluster();
    let _ = eventually_every(
        Duration::from_secs(2),
        Duration::from_secs(60),
        "all nodes to be ready",
        || async {
            let nodes = api.list(&ListParams::default()).await?.items;
            Ok(nodes.iter().all(node_ready).then_some(()))
        },
    )
    .await;
}

/// framework.CheckTestingNSDeletedExcept: waits (every 15s) for the other namespaces named
/// "e2e-tests-…" to finish terminating; an active one is an error. (This harness's namespaces,
/// like upstream's today, are not so named: this finds none.)
async fn check_testing_ns_deleted_except(ctx: &Ctx) -> anyhow::Result<()> {
    let api: Api<Namespace> = ctx.cluster();
    eventually_every(
        Duration::from_secs(15),
        POD_START,
        "terminating namespaces to be deleted",
        || async {
            let mut terminating = 0;
            for ns in api.list(&ListParams::default()).await?.items {
                let name = ns.name_any();
                if name.starts_with("e2e-tests-") && name != ctx.namespace {
                    let active =
                        ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Active");
                    if active {
                        bail!("Namespace {name} is active");
                    }
                    terminating += 1;
                }
            }
            Ok((terminating == 0).then_some(()))
        },
    )
    .await
}

/// The BeforeEach of both NoExecuteTaintManager describes.
async fn taints_before_each(ctx: &Ctx) -> anyhow::Result<()> {
    wait_total_healthy(ctx).await;
    check_testing_ns_deleted_except(ctx).await
}

/// testutils.RunPodAndGetNodeName: created, Running, and the node it runs on.
async fn run_pod_and_get_node_name(api: &Api<Pod>, pod: &Value) -> anyhow::Result<String> {
    let pod: Pod = from(pod.clone())?;
    let name = pod.name_any();
    api.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {name}"))?;
    let running = wait_running(api, &name).await?;
    Ok(node_of(&running).unwrap_or_default().to_string())
}

/// "NoExecuteTaintManager Single Pod [Serial] removing taint cancels eviction".
async fn removing_taint_cancels_eviction(ctx: Ctx) -> anyhow::Result<()> {
    taints_before_each(&ctx).await?;
    let pods: Api<Pod> = ctx.namespaced();
    let nodes: Api<Node> = ctx.cluster();
    let pod_name = "taint-eviction-4";
    let pod = taint_pod(
        true,
        2 * ADDITIONAL_WAIT_PER_DELETE_SECONDS,
        pod_name,
        pod_name,
        &ctx.namespace,
    );
    let mut deletions = Deletions::start(&ctx, pod_name).await?;

    // 1. Run a pod with short toleration
    let node = run_pod_and_get_node_name(&pods, &pod).await?;

    // 2. Taint the node running this pod with a no-execute taint
    let taint = test_taint();
    add_or_update_taint(&nodes, &node, &taint).await?;
    let mut guard = TaintGuard::new(&nodes, &node, &taint);
    let outcome = async {
        expect_node_has_taint(&nodes, &node, &taint).await?;

        // 3. Wait some time. Upstream's timer is of additionalWaitPerDeleteSeconds
        // nanoseconds (the untyped 5 made a Duration as is), so it looks only at what was
        // already seen.
        let short = Duration::from_nanos(ADDITIONAL_WAIT_PER_DELETE_SECONDS);
        if deletions.next_within(short).await?.is_some() {
            bail!("Pod was evicted despite toleration");
        }

        // 4. Remove the taint
        guard.remove().await?;

        // 5. See if Pod won't be evicted.
        let wait = KUBELET_POD_DELETION_DELAY_SECONDS + 3 * ADDITIONAL_WAIT_PER_DELETE_SECONDS;
        if deletions
            .next_within(Duration::from_secs(wait))
            .await?
            .is_some()
        {
            bail!("Pod was evicted despite toleration");
        }
        anyhow::Ok(())
    }
    .await;
    // The DeferCleanup: the taint off, unless step 4 took it off.
    let cleanup = guard.remove().await;
    outcome.and(cleanup)
}

/// "NoExecuteTaintManager Multiple Pods [Serial] evicts pods with minTolerationSeconds".
async fn evicts_with_min_toleration_seconds(ctx: Ctx) -> anyhow::Result<()> {
    taints_before_each(&ctx).await?;
    let pods: Api<Pod> = ctx.namespaced();
    let nodes: Api<Node> = ctx.cluster();
    let group = "taint-eviction-b";
    let mut deletions = Deletions::start(&ctx, group).await?;

    // 1. Run two pods both with toleration; one with tolerationSeconds=5, the other with 25
    let (name1, name2) = (format!("{group}1"), format!("{group}2"));
    let pod1 = taint_pod(
        true,
        ADDITIONAL_WAIT_PER_DELETE_SECONDS,
        &name1,
        group,
        &ctx.namespace,
    );
    let mut pod2 = taint_pod(
        true,
        5 * ADDITIONAL_WAIT_PER_DELETE_SECONDS,
        &name2,
        group,
        &ctx.namespace,
    );
    let node_name = run_pod_and_get_node_name(&pods, &pod1).await?;
    let node = nodes.get(&node_name).await?;
    let Some(hostname) = node.labels().get("kubernetes.io/hostname").cloned() else {
        bail!("error getting kubernetes.io/hostname label on node {node_name}");
    };
    // ensure pod2 lands on the same node as pod1
    pod2["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": hostname});
    run_pod_and_get_node_name(&pods, &pod2).await?;
    // Wait for pods to be running state before eviction happens
    wait_running(&pods, &name1).await?;
    wait_running(&pods, &name2).await?;

    // 2. Taint the nodes running those pods with a no-execute taint
    let taint = test_taint();
    add_or_update_taint(&nodes, &node_name, &taint).await?;
    let mut guard = TaintGuard::new(&nodes, &node_name, &taint);
    let outcome = async {
        expect_node_has_taint(&nodes, &node_name, &taint).await?;

        // 3. Wait to see if both pods get evicted in between [5, 25] seconds
        let wait = KUBELET_POD_DELETION_DELAY_SECONDS + 10 * ADDITIONAL_WAIT_PER_DELETE_SECONDS;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        let mut evicted = 0;
        while evicted != 2 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match deletions.next_within(left).await? {
                Some(_) => evicted += 1,
                None => bail!(
                    "Failed to evict all Pods. {} pod(s) is not evicted.",
                    2 - evicted
                ),
            }
        }
        anyhow::Ok(())
    }
    .await;
    // The DeferCleanup: RemoveTaintOffNode, whose failure fails the test.
    let cleanup = guard.remove().await;
    outcome.and(cleanup)
}
