//! Workloads and what their pods are given: [sig-apps] StatefulSet's canary and phased rolling
//! updates (test/e2e/apps/statefulset.go, with test/e2e/apps/wait.go and
//! test/e2e/framework/statefulset), [sig-storage] EmptyDir wrapper volumes
//! (test/e2e/storage/empty_dir_wrapper.go), [sig-storage] CSIInlineVolumes' Pod API test
//! (test/e2e/storage/csi_inline.go) and [sig-network] EndpointSlice's pods-matching-a-Service
//! test (test/e2e/network/endpointslice.go, as of v1.33: Endpoints and EndpointSlices both).
//!
//! On Kelp the pods run on `kelp simulate` nodes: no containers, Running and Ready once bound,
//! readiness probes never run. None of these tests breaks a probe on purpose (no exec), so the
//! StatefulSet's HTTP readiness probe is kept as upstream sets it and simply never fails.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, ObjectReference, Pod, ReplicationController, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::{Value, json};

use super::tests;
use crate::framework::{
    api_error, eventually_every, from, is_ready, random_ready_schedulable_node,
};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-apps] StatefulSet Basic StatefulSet functionality [StatefulSetBasic] should perform canary updates and phased rolling updates of template modifications" => ss_canary_and_phased_rolling_updates,
        "[sig-network] EndpointSlice should create Endpoints and EndpointSlices for Pods matching a Service" => endpoints_and_slices_for_matching_pods,
        "[sig-storage] CSIInlineVolumes should support CSIVolumeSource in Pod API" => csi_inline_volume_pod_api,
        "[sig-storage] EmptyDir wrapper volumes should not conflict" => emptydir_wrapper_no_conflict,
        "[sig-storage] EmptyDir wrapper volumes should not cause race condition when used for configmaps [Serial]" => emptydir_wrapper_configmap_race,
    ]
}

/// How often a wait polls (upstream's StatefulSetPoll is 10 s, its pod waits poll each 2 s).
const POLL: Duration = Duration::from_millis(250);
/// How long one wait may take. Upstream's are minutes (StatefulSetTimeout 10 min,
/// PodStartTimeout 5 min); a test here has three in all.
const WAIT: Duration = Duration::from_secs(60);

/// Upstream's images (imageutils: Httpd, HttpdNew, Agnhost, Pause, BusyBox, Nginx); on
/// simulated nodes any image runs.
const WEBSERVER: &str = "registry.k8s.io/e2e-test-images/httpd:2.4.38-4";
const NEW_WEBSERVER: &str = "registry.k8s.io/e2e-test-images/httpd:2.4.39-4";
const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";
const PAUSE: &str = "registry.k8s.io/pause:3.10";
const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1";
const NGINX: &str = "registry.k8s.io/e2e-test-images/nginx:1.14-4";

/// uuid.NewUUID's shape: 32 random hex digits, 8-4-4-4-12.
fn uuid() -> String {
    let h = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// client-go's DeleteOptions with GracePeriodSeconds 0 (metav1.NewDeleteOptions(0)).
fn no_grace() -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// test/e2e/apps/statefulset.go

/// The headless service of "Basic StatefulSet functionality".
const HEADLESS_SVC: &str = "test";
/// appsv1.StatefulSetRevisionLabel.
const REVISION_LABEL: &str = "controller-revision-hash";

/// The labels of "Basic StatefulSet functionality".
fn ss_labels() -> Value {
    json!({"foo": "bar", "baz": "blah"})
}

/// The BeforeEach of "Basic StatefulSet functionality": the headless service
/// (e2eservice.CreateServiceSpec(headlessSvcName, "", true, labels)).
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
        .await
        .with_context(|| format!("creating service {HEADLESS_SVC}"))?;
    Ok(())
}

/// e2estatefulset.NewStatefulSet with no mounts: a webserver set, RollingUpdate.
fn new_stateful_set(name: &str, replicas: i32, labels: &Value) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "replicas": replicas,
            "template": {
                "metadata": {"labels": labels, "annotations": {}},
                "spec": {"containers": [{"name": "webserver", "image": WEBSERVER}]},
            },
            "updateStrategy": {"type": "RollingUpdate"},
            "serviceName": HEADLESS_SVC,
        },
    })
}

/// setHTTPProbe: statefulset.go's httpProbe as the first container's readiness probe.
fn set_http_probe(ss: &mut Value) {
    ss["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = json!({
        "httpGet": {"path": "/index.html", "port": 80},
        "periodSeconds": 1,
        "successThreshold": 1,
        "failureThreshold": 1,
    });
}

fn ss_selector(ss: &StatefulSet) -> String {
    ss.spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn ss_replicas(ss: &StatefulSet) -> i32 {
    ss.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn ss_partition(ss: &StatefulSet) -> Option<i32> {
    ss.spec
        .as_ref()?
        .update_strategy
        .as_ref()?
        .rolling_update
        .as_ref()?
        .partition
}

fn current_revision(ss: &StatefulSet) -> String {
    ss.status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .unwrap_or_default()
}

fn update_revision(ss: &StatefulSet) -> String {
    ss.status
        .as_ref()
        .and_then(|s| s.update_revision.clone())
        .unwrap_or_default()
}

fn template_image(ss: &StatefulSet) -> String {
    ss.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn pod_revision(p: &Pod) -> &str {
    p.labels()
        .get(REVISION_LABEL)
        .map(String::as_str)
        .unwrap_or("")
}

fn pod_image(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .unwrap_or("")
}

/// The ordinal of a stateful pod's name (`-N` at its end), -1 when it has none.
fn ordinal(p: &Pod) -> i64 {
    p.name_any()
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(-1)
}

/// e2estatefulset.GetPodList: the pods of the set's selector, in the order the list gives
/// them (the apiserver's, by name; upstream indexes them by that order).
async fn get_pod_list(ctx: &Ctx, ss: &StatefulSet) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = ctx.namespaced();
    Ok(pods
        .list(&ListParams::default().labels(&ss_selector(ss)))
        .await?
        .items)
}

/// e2estatefulset.WaitForRunning: `running` pods of the set, all Running, those of ordinal
/// below `ready` Ready and the others not; more pods than `running` fails at once.
async fn wait_for_running(
    ctx: &Ctx,
    running: i32,
    ready: i32,
    ss: &StatefulSet,
) -> anyhow::Result<()> {
    let what = format!("{running} stateful pods running, {ready} ready");
    eventually_every(POLL, WAIT, &what, || async {
        let mut pods = get_pod_list(ctx, ss).await?;
        pods.sort_by_key(ordinal);
        let n = pods.len();
        if n < running as usize {
            return Ok(None);
        }
        ensure!(
            n <= running as usize,
            "too many pods scheduled, expected {running} got {n}"
        );
        let settled = pods.iter().all(|p| {
            let should_be_ready = ordinal(p) < i64::from(ready);
            phase(p) == "Running" && should_be_ready == is_ready(p)
        });
        Ok(settled.then_some(()))
    })
    .await
    .context("Failed waiting for pods to enter running")
}

/// e2estatefulset.WaitForRunningAndReady.
async fn wait_for_running_and_ready(ctx: &Ctx, n: i32, ss: &StatefulSet) -> anyhow::Result<()> {
    wait_for_running(ctx, n, n, ss).await
}

/// e2estatefulset.WaitForState: polls the set and its pods until `until` says so (or fails).
async fn wait_for_state<F>(
    ctx: &Ctx,
    ss: &StatefulSet,
    what: &str,
    mut until: F,
) -> anyhow::Result<(StatefulSet, Vec<Pod>)>
where
    F: FnMut(&StatefulSet, &[Pod]) -> anyhow::Result<bool>,
{
    let api: Api<StatefulSet> = ctx.namespaced();
    let name = ss.name_any();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let set = api.get(&name).await?;
        let pods = get_pod_list(ctx, &set).await?;
        if until(&set, pods.as_slice()).context("Failed waiting for state update")? {
            return Ok((set, pods));
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("Failed waiting for state update: timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// waitForStatus: the set's status has observed `ss`'s generation; the set as it is then.
async fn wait_for_status(ctx: &Ctx, ss: &StatefulSet) -> anyhow::Result<StatefulSet> {
    let generation = ss.metadata.generation.unwrap_or(0);
    let (set, _) = wait_for_state(ctx, ss, "the set's generation observed", |set, _| {
        let observed = set
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .unwrap_or(0);
        Ok(observed >= generation)
    })
    .await?;
    Ok(set)
}

/// waitForPartitionedRollingUpdate: every pod of ordinal at or above the partition is at the
/// update revision (all of them, and the update complete, when the partition is 0).
async fn wait_for_partitioned_rolling_update(
    ctx: &Ctx,
    ss: &StatefulSet,
) -> anyhow::Result<(StatefulSet, Vec<Pod>)> {
    let (ns, name) = (ctx.namespace.as_str(), ss.name_any());
    let strategy = ss
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.clone())
        .unwrap_or_default();
    ensure!(
        strategy == "RollingUpdate",
        "StatefulSet {ns}/{name} attempt to wait for partitioned update with updateStrategy {strategy}"
    );
    ensure!(
        ss_partition(ss).is_some(),
        "StatefulSet {ns}/{name} attempt to wait for partitioned update with nil RollingUpdate or nil Partition"
    );
    wait_for_state(ctx, ss, "the partitioned rolling update", |set, pods| {
        let partition = ss_partition(set).unwrap_or(0);
        let replicas = ss_replicas(set);
        if pods.len() < replicas as usize {
            return Ok(false);
        }
        let update = update_revision(set);
        if partition <= 0 && update != current_revision(set) {
            // Waiting for the set to complete its update.
            return Ok(false);
        }
        for i in (partition.max(0)..replicas).rev() {
            if pod_revision(&pods[i as usize]) != update {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
}

/// updateStatefulSetWithRetries: get, change and update the set, every 10 ms for up to a
/// minute while the update fails; the set as updated.
async fn update_stateful_set_with_retries(
    ctx: &Ctx,
    name: &str,
    change: impl Fn(&mut StatefulSet),
) -> anyhow::Result<StatefulSet> {
    let api: Api<StatefulSet> = ctx.namespaced();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut ss = api.get(name).await?;
        change(&mut ss);
        let err = match api.replace(name, &PostParams::default(), &ss).await {
            Ok(updated) => return Ok(updated),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("couldn't apply the provided updated to stateful set {name:?}: {err}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A RollingUpdate strategy with this partition.
fn with_partition(partition: i32) -> impl Fn(&mut StatefulSet) {
    move |ss: &mut StatefulSet| {
        ss.spec.get_or_insert_default().update_strategy = Some(StatefulSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateStatefulSetStrategy {
                partition: Some(partition),
                ..Default::default()
            }),
        });
    }
}

/// deleteStatefulPodAtIndex: the set's pod of that ordinal deleted with no grace.
async fn delete_stateful_pod_at_index(
    ctx: &Ctx,
    index: usize,
    ss: &StatefulSet,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    let name = format!("{}-{index}", ss.name_any());
    pods.delete(&name, &no_grace()).await.with_context(|| {
        format!(
            "Failed to delete stateful pod {name} for StatefulSet {}/{}",
            ctx.namespace,
            ss.name_any()
        )
    })?;
    Ok(())
}

/// The checks the test makes after each step of the update: pods below the partition at the
/// old image and current revision, the others at the new image and update revision (by
/// their place in the list, as upstream).
fn expect_partitioned(
    pods: &[Pod],
    partition: i32,
    images: (&str, &str),
    revisions: (&str, &str),
) -> anyhow::Result<()> {
    let (old_image, new_image) = images;
    let (current, update) = revisions;
    for (i, p) in pods.iter().enumerate() {
        let (ns, name) = (p.namespace().unwrap_or_default(), p.name_any());
        if (i as i64) < i64::from(partition) {
            ensure!(
                pod_image(p) == old_image,
                "Pod {ns}/{name} has image {} not equal to current image {old_image}",
                pod_image(p)
            );
            ensure!(
                pod_revision(p) == current,
                "Pod {ns}/{name} has revision {} not equal to current revision {current}",
                pod_revision(p)
            );
        } else {
            ensure!(
                pod_image(p) == new_image,
                "Pod {ns}/{name} has image {} not equal to new image  {new_image}",
                pod_image(p)
            );
            ensure!(
                pod_revision(p) == update,
                "Pod {ns}/{name} has revision {} not equal to new revision {update}",
                pod_revision(p)
            );
        }
    }
    Ok(())
}

/// statefulset.go "should perform canary updates and phased rolling updates of template
/// modifications", between its Describe's BeforeEach (the headless service) and AfterEach
/// (e2estatefulset.DeleteAllStatefulSets).
async fn ss_canary_and_phased_rolling_updates(ctx: Ctx) -> anyhow::Result<()> {
    create_headless_service(&ctx).await?;
    let body = ss_canary_steps(&ctx).await;
    let after = delete_all_stateful_sets(&ctx).await;
    body.and(after)
}

async fn ss_canary_steps(ctx: &Ctx) -> anyhow::Result<()> {
    let api: Api<StatefulSet> = ctx.namespaced();
    let ns = ctx.namespace.as_str();

    // Creating a new StatefulSet.
    let mut spec = new_stateful_set("ss2", 3, &ss_labels());
    set_http_probe(&mut spec);
    spec["spec"]["updateStrategy"] = json!({
        "type": "RollingUpdate",
        "rollingUpdate": {"partition": 3},
    });
    let ss = api
        .create(&PostParams::default(), &from(spec)?)
        .await
        .context("creating statefulset ss2")?;
    let name = ss.name_any();
    wait_for_running_and_ready(ctx, ss_replicas(&ss), &ss).await?;
    let ss = wait_for_status(ctx, &ss).await?;
    let (current, update) = (current_revision(&ss), update_revision(&ss));
    ensure!(
        current == update,
        "StatefulSet {ns}/{name} created with update revision {update} not equal to current revision {current}"
    );
    let pods = get_pod_list(ctx, &ss).await?;
    for p in &pods {
        ensure!(
            pod_revision(p) == current,
            "Pod {ns}/{} revision {} is not equal to currentRevision {current}",
            p.name_any(),
            pod_revision(p)
        );
    }
    let new_image = NEW_WEBSERVER;
    let old_image = template_image(&ss);

    // Updating stateful set template: update image from old to new.
    ensure!(
        old_image != new_image,
        "Incorrect test setup: should update to a different image"
    );
    let ss = update_stateful_set_with_retries(ctx, &name, |u| {
        if let Some(c) = u
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
            .and_then(|s| s.containers.first_mut())
        {
            c.image = Some(new_image.to_string());
        }
    })
    .await?;

    // Creating a new revision.
    let ss = wait_for_status(ctx, &ss).await?;
    let (current, update) = (current_revision(&ss), update_revision(&ss));
    ensure!(
        current != update,
        "Current revision should not equal update revision during rolling update"
    );

    // Not applying an update when the partition is greater than the number of replicas
    // (upstream checks the list it took before the update).
    for p in &pods {
        ensure!(
            pod_image(p) == old_image,
            "Pod {ns}/{} has image {} not equal to current image {old_image}",
            p.name_any(),
            pod_image(p)
        );
        ensure!(
            pod_revision(p) == current,
            "Pod {ns}/{} has revision {} not equal to current revision {current}",
            p.name_any(),
            pod_revision(p)
        );
    }

    let images = (old_image.as_str(), new_image);
    let revisions = (current.as_str(), update.as_str());

    // Performing a canary update.
    let ss = update_stateful_set_with_retries(ctx, &name, with_partition(2)).await?;
    let (ss, pods) = wait_for_partitioned_rolling_update(ctx, &ss).await?;
    expect_partitioned(&pods, ss_partition(&ss).unwrap_or(0), images, revisions)?;

    // Restoring Pods to the correct revision when they are deleted.
    delete_stateful_pod_at_index(ctx, 0, &ss).await?;
    delete_stateful_pod_at_index(ctx, 2, &ss).await?;
    wait_for_running_and_ready(ctx, 3, &ss).await?;
    let ss = api
        .get(&name)
        .await
        .with_context(|| format!("Failed to get StatefulSet {ns}/{name}"))?;
    let pods = get_pod_list(ctx, &ss).await?;
    expect_partitioned(&pods, ss_partition(&ss).unwrap_or(0), images, revisions)?;

    // Performing a phased rolling update.
    let mut ss = ss;
    for i in (0..ss_partition(&ss).unwrap_or(0)).rev() {
        let updated = update_stateful_set_with_retries(ctx, &name, with_partition(i)).await?;
        let (set, pods) = wait_for_partitioned_rolling_update(ctx, &updated).await?;
        ss = set;
        expect_partitioned(&pods, ss_partition(&ss).unwrap_or(0), images, revisions)?;
    }
    ensure!(
        current_revision(&ss) == update,
        "StatefulSet {ns}/{name} current revision {} does not equal update revision {update} on update completion",
        current_revision(&ss)
    );
    Ok(())
}

/// e2estatefulset.DeleteAllStatefulSets: each set scaled to 0 (its pods gone), its status
/// showing 0 replicas, then deleted (OrphanDependents false: in the background). The sets here
/// claim no volumes, so there are no claims or volumes to wait out.
async fn delete_all_stateful_sets(ctx: &Ctx) -> anyhow::Result<()> {
    let api: Api<StatefulSet> = ctx.namespaced();
    let list = api.list(&ListParams::default()).await?;
    let mut errors = Vec::new();
    for ss in list.items {
        let ss = match scale(ctx, &ss, 0).await? {
            (ss, None) => ss,
            (ss, Some(e)) => {
                errors.push(e);
                ss
            }
        };
        wait_for_status_replicas(ctx, &ss, 0).await?;
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        if let Err(e) = api.delete(&ss.name_any(), &params).await {
            errors.push(e.to_string());
        }
    }
    ensure!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

/// e2estatefulset.Scale: the set's replicas updated (conflicts retried, three tries), then a
/// wait for its pod count; the set as updated, and the error the wait ended in, if any.
async fn scale(
    ctx: &Ctx,
    ss: &StatefulSet,
    count: i32,
) -> anyhow::Result<(StatefulSet, Option<String>)> {
    let api: Api<StatefulSet> = ctx.namespaced();
    let name = ss.name_any();
    let mut updated = None;
    for _ in 0..3 {
        let mut got = api
            .get(&name)
            .await
            .with_context(|| format!("failed to get statefulset {name:?}"))?;
        got.spec.get_or_insert_default().replicas = Some(count);
        match api.replace(&name, &PostParams::default(), &got).await {
            Ok(s) => {
                updated = Some(s);
                break;
            }
            Err(kube::Error::Api(e)) if e.code == 409 || e.reason == "ServerTimeout" => continue,
            Err(e) => bail!("failed to update statefulset {name:?}: {e}"),
        }
    }
    let Some(updated) = updated else {
        bail!("too many retries draining statefulset {name:?}");
    };
    let waited = eventually_every(
        POLL,
        WAIT,
        &format!("statefulset {name} to have {count} pods"),
        || async {
            let pods = get_pod_list(ctx, &updated).await?;
            Ok((pods.len() == count as usize).then_some(()))
        },
    )
    .await;
    Ok(match waited {
        Ok(()) => (updated, None),
        Err(e) => {
            let pods = get_pod_list(ctx, &updated).await.unwrap_or_default();
            let unhealthy: Vec<String> = pods
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_some() || phase(p) != "Running" || !is_ready(p)
                })
                .map(|p| {
                    format!(
                        "{}: deletion {:?}, phase {}, readiness {}",
                        p.name_any(),
                        p.metadata.deletion_timestamp,
                        phase(p),
                        is_ready(p)
                    )
                })
                .collect();
            let message = format!(
                "Failed to scale statefulset to {count} in {WAIT:?}. Remaining pods:\n{unhealthy:?} ({e:#})"
            );
            (updated, Some(message))
        }
    })
}

/// e2estatefulset.WaitForStatusReplicas: the status has observed `ss`'s generation and shows
/// `n` replicas.
async fn wait_for_status_replicas(ctx: &Ctx, ss: &StatefulSet, n: i32) -> anyhow::Result<()> {
    let api: Api<StatefulSet> = ctx.namespaced();
    let (name, generation) = (ss.name_any(), ss.metadata.generation.unwrap_or(0));
    eventually_every(
        POLL,
        WAIT,
        &format!("stateful set status.replicas updated to {n}"),
        || async {
            let got = api.get(&name).await?;
            let status = got.status.unwrap_or_default();
            Ok(
                (status.observed_generation.unwrap_or(0) >= generation && status.replicas == n)
                    .then_some(()),
            )
        },
    )
    .await
    .with_context(|| format!("Failed waiting for stateful set status.replicas updated to {n}"))
}

// ---------------------------------------------------------------------------------------------
// test/e2e/storage/empty_dir_wrapper.go

/// "value-1\n", base64-encoded: the Secret's and the ConfigMap's binary data.
const VALUE_1_BASE64: &str = "dmFsdWUtMQo=";
const RACE_CONFIGMAP_VOLUME_COUNT: usize = 50;
const RACE_CONFIGMAP_POD_COUNT: i32 = 5;
const RACE_CONFIGMAP_ITERATION_COUNT: usize = 3;
const RACE_RC_NAME_PREFIX: &str = "wrapped-volume-race-";

/// e2epod's PodClient.CreateSync: the pod created, then Running and Ready (a pod that ran to
/// completion fails the wait), then read again.
async fn create_sync(ctx: &Ctx, pod: &Pod) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = ctx.namespaced();
    let created = pods.create(&PostParams::default(), pod).await?;
    let name = created.name_any();
    eventually_every(
        POLL,
        WAIT,
        &format!("pod {name} running and ready"),
        || async {
            let p = match pods.get(&name).await {
                Err(e) if is_not_found(&e) => return Ok(None),
                other => other?,
            };
            match phase(&p) {
                "Failed" | "Succeeded" => bail!("pod {name} ran to completion"),
                "Running" => Ok(is_ready(&p).then_some(())),
                _ => Ok(None),
            }
        },
    )
    .await?;
    Ok(pods.get(&name).await?)
}

/// empty_dir_wrapper.go "should not conflict"
async fn emptydir_wrapper_no_conflict(ctx: Ctx) -> anyhow::Result<()> {
    let secrets: Api<Secret> = ctx.namespaced();
    let configmaps: Api<ConfigMap> = ctx.namespaced();
    let pods: Api<Pod> = ctx.namespaced();
    let name = format!("emptydir-wrapper-test-{}", uuid());
    let volume_name = "secret-volume";
    let volume_mount_path = "/etc/secret-volume";

    let secret = secrets
        .create(
            &PostParams::default(),
            &from(json!({
                "metadata": {"name": name},
                "data": {"data-1": VALUE_1_BASE64},
            }))?,
        )
        .await
        .with_context(|| format!("unable to create test secret {name}"))?;

    let configmap_volume_name = "configmap-volume";
    let configmap_volume_mount_path = "/etc/configmap-volume";
    let configmap = configmaps
        .create(
            &PostParams::default(),
            &from(json!({
                "metadata": {"name": name},
                "binaryData": {"data-1": VALUE_1_BASE64},
            }))?,
        )
        .await
        .with_context(|| format!("unable to create test configMap {name}"))?;

    let pod: Pod = from(json!({
        "metadata": {"name": format!("pod-secrets-{}", uuid())},
        "spec": {
            "volumes": [
                {"name": volume_name, "secret": {"secretName": name}},
                {"name": configmap_volume_name, "configMap": {"name": name}},
            ],
            "containers": [{
                "name": "secret-test",
                "image": AGNHOST,
                "args": ["test-webserver"],
                "volumeMounts": [
                    {"name": volume_name, "mountPath": volume_mount_path, "readOnly": true},
                    {"name": configmap_volume_name, "mountPath": configmap_volume_mount_path},
                ],
            }],
        },
    }))?;
    let pod = create_sync(&ctx, &pod).await?;

    // The DeferCleanup, registered once the pod runs.
    secrets
        .delete(&secret.name_any(), &DeleteParams::default())
        .await
        .with_context(|| format!("unable to delete secret {}", secret.name_any()))?;
    configmaps
        .delete(&configmap.name_any(), &DeleteParams::default())
        .await
        .with_context(|| format!("unable to delete configmap {}", configmap.name_any()))?;
    pods.delete(&pod.name_any(), &no_grace())
        .await
        .with_context(|| format!("unable to delete pod {}", pod.name_any()))?;
    Ok(())
}

/// createConfigmapsForRace: `racey-configmap-N`, fifty of them.
async fn create_configmaps_for_race(ctx: &Ctx) -> anyhow::Result<Vec<String>> {
    let configmaps: Api<ConfigMap> = ctx.namespaced();
    let mut names = Vec::new();
    for i in 0..RACE_CONFIGMAP_VOLUME_COUNT {
        let name = format!("racey-configmap-{i}");
        configmaps
            .create(
                &PostParams::default(),
                &from(json!({
                    "metadata": {"name": name},
                    "data": {"data-1": "value-1"},
                }))?,
            )
            .await
            .with_context(|| format!("creating configmap {name}"))?;
        names.push(name);
    }
    Ok(names)
}

/// deleteConfigMaps.
async fn delete_configmaps(ctx: &Ctx, names: &[String]) -> anyhow::Result<()> {
    let configmaps: Api<ConfigMap> = ctx.namespaced();
    for name in names {
        configmaps
            .delete(name, &DeleteParams::default())
            .await
            .with_context(|| format!("unable to delete configMap {name}"))?;
    }
    Ok(())
}

/// makeConfigMapVolumes: a volume of each ConfigMap (its `data-1` key), mounted at
/// `/etc/config-N`.
fn make_configmap_volumes(names: &[String]) -> (Value, Value) {
    let volumes: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({
                "name": format!("racey-configmap-{i}"),
                "configMap": {"name": name, "items": [{"key": "data-1", "path": "data-1"}]},
            })
        })
        .collect();
    let mounts: Vec<Value> = (0..names.len())
        .map(|i| {
            json!({
                "name": format!("racey-configmap-{i}"),
                "mountPath": format!("/etc/config-{i}"),
            })
        })
        .collect();
    (Value::Array(volumes), Value::Array(mounts))
}

/// testNoWrappedVolumeRace: an RC of `pod_count` pods, each with every ConfigMap volume,
/// pinned to one node; each of its pods must come to run. The RC's name is pushed onto
/// `cleanups` once it exists (upstream's DeferCleanup of DeleteRCAndWaitForGC).
async fn no_wrapped_volume_race(
    ctx: &Ctx,
    volumes: &Value,
    mounts: &Value,
    pod_count: i32,
    cleanups: &mut Vec<String>,
) -> anyhow::Result<()> {
    const NODE_HOSTNAME_LABEL_KEY: &str = "kubernetes.io/hostname";
    let rc_name = format!("{RACE_RC_NAME_PREFIX}{}", uuid());
    let target_node = random_ready_schedulable_node(ctx).await?;
    let hostname = target_node
        .labels()
        .get(NODE_HOSTNAME_LABEL_KEY)
        .cloned()
        .unwrap_or_default();

    // Creating RC which spawns configmap-volume pods.
    let rcs: Api<ReplicationController> = ctx.namespaced();
    let rc: ReplicationController = from(json!({
        "metadata": {"name": rc_name},
        "spec": {
            "replicas": pod_count,
            "selector": {"name": rc_name},
            "template": {
                "metadata": {"labels": {"name": rc_name}},
                "spec": {
                    "containers": [{
                        "name": "test-container",
                        "image": PAUSE,
                        "volumeMounts": mounts,
                    }],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{
                            "key": NODE_HOSTNAME_LABEL_KEY,
                            "operator": "In",
                            "values": [hostname],
                        }]}],
                    }}},
                    "dnsPolicy": "Default",
                    "volumes": volumes,
                },
            },
        },
    }))?;
    rcs.create(&PostParams::default(), &rc)
        .await
        .context("error creating replication controller")?;
    cleanups.push(rc_name.clone());

    let pods = pods_created(ctx, &rc_name, pod_count)
        .await
        .context("error creating pods")?;

    // Ensuring each pod is running.
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        wait_for_pod_running(ctx, &pod.name_any())
            .await
            .with_context(|| {
                format!(
                    "Failed waiting for pod {} to enter running state",
                    pod.name_any()
                )
            })?;
    }
    Ok(())
}

/// e2epod.PodsCreated: the pods labelled `name=<name>` (none being deleted) number
/// `replicas`; those pods.
async fn pods_created(ctx: &Ctx, name: &str, replicas: i32) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = ctx.namespaced();
    let selector = format!("name={name}");
    eventually_every(
        POLL,
        WAIT,
        &format!("Pod name {name}: {replicas} pods to come up"),
        || async {
            let created: Vec<Pod> = pods
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            Ok((created.len() == replicas as usize).then_some(created))
        },
    )
    .await
}

/// e2epod.WaitForPodNameRunningInNamespace: the pod Running (one that ran to completion fails
/// the wait).
async fn wait_for_pod_running(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    eventually_every(POLL, WAIT, &format!("pod {name} running"), || async {
        let p = match pods.get(name).await {
            Err(e) if is_not_found(&e) => return Ok(None),
            other => other?,
        };
        match phase(&p) {
            "Running" => Ok(Some(())),
            "Failed" | "Succeeded" => bail!("pod {name} ran to completion"),
            _ => Ok(None),
        }
    })
    .await
}

/// e2erc.DeleteRCAndWaitForGC: the RC deleted in the background (gone already is fine), then
/// its pods no longer active, then gone.
async fn delete_rc_and_wait_for_gc(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let rcs: Api<ReplicationController> = ctx.namespaced();
    let pods: Api<Pod> = ctx.namespaced();
    let rc = match rcs.get(name).await {
        Err(e) if is_not_found(&e) => return Ok(()),
        other => other?,
    };
    let selector = rc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match rcs.delete(name, &params).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context("failed to delete object with non-retriable error")
            );
        }
    }
    let by_selector = ListParams::default().labels(&selector);
    eventually_every(
        Duration::from_millis(100),
        WAIT,
        &format!("the pods of {name} to become inactive"),
        || async {
            let active = pods
                .list(&by_selector)
                .await?
                .items
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && !matches!(phase(p), "Succeeded" | "Failed")
                })
                .count();
            Ok((active == 0).then_some(()))
        },
    )
    .await
    .with_context(|| format!("error while waiting for pods to become inactive {name}"))?;
    eventually_every(
        Duration::from_millis(100),
        WAIT,
        &format!("the pods of {name} to be gone"),
        || async {
            Ok(pods
                .list(&by_selector)
                .await?
                .items
                .is_empty()
                .then_some(()))
        },
    )
    .await
    .with_context(|| format!("error while waiting for pods gone {name}"))
}

/// empty_dir_wrapper.go "should not cause race condition when used for configmaps"
async fn emptydir_wrapper_configmap_race(ctx: Ctx) -> anyhow::Result<()> {
    let names = create_configmaps_for_race(&ctx).await?;
    // From here on, the ConfigMaps' DeferCleanup is registered; each RC's after it.
    let (volumes, mounts) = make_configmap_volumes(&names);
    let mut rcs = Vec::new();
    let mut body = Ok(());
    for _ in 0..RACE_CONFIGMAP_ITERATION_COUNT {
        body = no_wrapped_volume_race(&ctx, &volumes, &mounts, RACE_CONFIGMAP_POD_COUNT, &mut rcs)
            .await;
        if body.is_err() {
            break;
        }
    }
    // The cleanups, the last registered first; every one runs.
    let mut cleanup = Ok(());
    for rc in rcs.iter().rev() {
        let r = delete_rc_and_wait_for_gc(&ctx, rc).await;
        cleanup = cleanup.and(r);
    }
    cleanup = cleanup.and(delete_configmaps(&ctx, &names).await);
    body.and(cleanup)
}

// ---------------------------------------------------------------------------------------------
// test/e2e/storage/csi_inline.go

/// csi_inline.go "should support CSIVolumeSource in Pod API"
async fn csi_inline_volume_pod_api(ctx: Ctx) -> anyhow::Result<()> {
    let client: Api<Pod> = ctx.namespaced();
    // A fake driver: this is a test of the API.
    let driver_name = "e2e.example.com";
    let pod_name = "pod-csi-inline-volumes";
    let (vol1, vol2) = ("csi-inline-vol1", "csi-inline-vol2");

    let pod: Pod = from(json!({
        "metadata": {"name": pod_name},
        "spec": {
            "volumes": [
                {"name": vol1, "csi": {"driver": driver_name}},
                {"name": vol2, "csi": {"driver": driver_name, "fsType": "ext4", "readOnly": true}},
            ],
            "containers": [{
                "name": pod_name,
                "image": BUSYBOX,
                "command": ["sh", "-c", "ls /mnt/*"],
                "volumeMounts": [
                    {"name": vol1, "mountPath": "/mnt/vol1"},
                    {"name": vol2, "mountPath": "/mnt/vol2"},
                ],
            }],
        },
    }))?;

    // creating
    let created = client.create(&PostParams::default(), &pod).await?;
    let again = api_error(client.create(&PostParams::default(), &pod).await)
        .context("expected 409, got")?;
    ensure!(
        again.code == 409 && again.reason == "AlreadyExists",
        "expected 409, got {again:?}"
    );

    // getting
    let retrieved = client.get(pod_name).await?;
    ensure!(
        retrieved.metadata.uid == created.metadata.uid,
        "expected uid {:?}, got {:?}",
        created.metadata.uid,
        retrieved.metadata.uid
    );

    // listing in namespace
    let list = client.list(&ListParams::default()).await?;
    ensure!(
        list.items.len() == 1,
        "list should have 1 items, got: {:?}",
        list.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );

    // patching
    let patched = client
        .patch(
            &created.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"patched": "true"}}})),
        )
        .await?;
    ensure!(
        patched.annotations().get("patched").map(String::as_str) == Some("true"),
        "patched object should have the applied annotation: {:?}",
        patched.annotations()
    );

    // deleting
    client
        .delete(&created.name_any(), &DeleteParams::default())
        .await?;
    match client.get(&created.name_any()).await {
        Err(e) if is_not_found(&e) => {}
        Err(e) => bail!("expected 404, got {e}"),
        Ok(p) if p.metadata.deletion_timestamp.is_some() => {}
        Ok(p) => bail!(
            "Pod should have been deleted or have DeletionTimestamp, but instead got: {:?}",
            p.metadata
        ),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/network/endpointslice.go

/// discoveryv1.LabelServiceName.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// intstr's IntVal: the number, or 0 for a name.
fn int_val(p: Option<&IntOrString>) -> i32 {
    match p {
        Some(IntOrString::Int(n)) => *n,
        _ => 0,
    }
}

/// intstr's String(): the name, or the number written out.
fn int_or_string(p: Option<&IntOrString>) -> String {
    match p {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => "0".into(),
    }
}

fn pod_ip(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

fn has_pod_ips(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .is_some_and(|ips| !ips.is_empty())
}

/// The pod's first container's ports: (name, containerPort).
fn container_ports(p: &Pod) -> Vec<(Option<String>, i32)> {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.ports.as_ref())
        .map(|ps| {
            ps.iter()
                .map(|p| (p.name.clone(), p.container_port))
                .collect()
        })
        .unwrap_or_default()
}

/// ensurePodTargetRef.
fn ensure_pod_target_ref(pod: &Pod, target: Option<&ObjectReference>) -> anyhow::Result<()> {
    let Some(t) = target else {
        bail!("Expected TargetRef to not be nil");
    };
    ensure!(
        t.kind.as_deref() == Some("Pod"),
        "Expected TargetRef.Kind to be Pod, got {:?}",
        t.kind
    );
    ensure!(
        t.namespace == pod.metadata.namespace,
        "Expected TargetRef.Namespace to be {:?}, got {:?}",
        pod.metadata.namespace,
        t.namespace
    );
    ensure!(
        t.name == pod.metadata.name,
        "Expected TargetRef.Name to be {:?}, got {:?}",
        pod.metadata.name,
        t.name
    );
    ensure!(
        t.uid == pod.metadata.uid,
        "Expected TargetRef.UID to be {:?}, got {:?}",
        pod.metadata.uid,
        t.uid
    );
    Ok(())
}

/// hasMatchingEndpointSlices: the Service's slices, when there are at least `num_slices` of
/// them holding at least `num_endpoints` endpoints in all (more is valid: the controller may
/// duplicate).
async fn has_matching_endpoint_slices(
    ctx: &Ctx,
    svc_name: &str,
    num_endpoints: usize,
    num_slices: usize,
) -> anyhow::Result<Option<Vec<EndpointSlice>>> {
    let slices: Api<EndpointSlice> = ctx.namespaced();
    let list = slices
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={svc_name}")))
        .await
        .with_context(|| {
            format!(
                "Error fetching EndpointSlice for Service {}/{svc_name}",
                ctx.namespace
            )
        })?;
    if list.items.is_empty() || list.items.len() < num_slices {
        return Ok(None);
    }
    let endpoints: usize = list.items.iter().map(|s| s.endpoints.len()).sum();
    if endpoints < num_endpoints {
        return Ok(None);
    }
    Ok(Some(list.items))
}

/// hasMatchingEndpoints: the Service's Endpoints, when they have `num_subsets` subsets and
/// `num_ips` addresses (ready or not) in all.
async fn has_matching_endpoints(
    ctx: &Ctx,
    svc_name: &str,
    num_ips: usize,
    num_subsets: usize,
) -> anyhow::Result<Option<Endpoints>> {
    let api: Api<Endpoints> = ctx.namespaced();
    let endpoints = match api.get(svc_name).await {
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "Error fetching Endpoints for {}/{svc_name} Service",
                ctx.namespace
            )));
        }
        Ok(e) => e,
    };
    let subsets = endpoints.subsets.clone().unwrap_or_default();
    if subsets.len() != num_subsets {
        return Ok(None);
    }
    let ips: usize = subsets
        .iter()
        .map(|s| {
            s.addresses.as_ref().map_or(0, Vec::len)
                + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        })
        .sum();
    Ok((ips == num_ips).then_some(endpoints))
}

/// The pods by IP, each of one container (as upstream's expectations check).
fn pods_by_ip<'a>(pods: &[&'a Pod]) -> anyhow::Result<std::collections::BTreeMap<String, &'a Pod>> {
    let mut by_ip = std::collections::BTreeMap::new();
    for pod in pods {
        by_ip.insert(pod_ip(pod), *pod);
        let containers = pod.spec.as_ref().map_or(0, |s| s.containers.len());
        ensure!(
            containers == 1,
            "Expected pod to have 1 container, got {containers}"
        );
    }
    Ok(by_ip)
}

/// expectEndpointsAndSlices' half about Endpoints (upstream's expectEndpoints): once the
/// Service's Endpoints have `num_subsets` subsets and an address per pod, each address refers
/// to its pod, with the ports the Service's (named, or numbered) target port gives it.
pub(super) async fn expect_endpoints(
    ctx: &Ctx,
    svc: &Service,
    pods: &[&Pod],
    num_subsets: usize,
    named_port: bool,
) -> anyhow::Result<()> {
    let svc_name = svc.name_any();
    let endpoints = eventually_every(
        Duration::from_secs(2),
        WAIT,
        "Endpoints to match expectations",
        || has_matching_endpoints(ctx, &svc_name, pods.len(), num_subsets),
    )
    .await
    .context("Timed out waiting for Endpoints to match expectations")?;

    let pods_by_ip = pods_by_ip(pods)?;
    let svc_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let first_target = int_or_string(svc_ports.first().and_then(|p| p.target_port.as_ref()));
    let first_name = svc_ports.first().and_then(|p| p.name.clone());

    ensure!(
        endpoints.name_any() == svc_name,
        "Expected Endpoints name to be {svc_name}, got {}",
        endpoints.name_any()
    );

    let mut total_endpoint_addresses = 0;
    for subset in endpoints.subsets.iter().flatten() {
        let addresses: Vec<_> = subset
            .addresses
            .iter()
            .flatten()
            .chain(subset.not_ready_addresses.iter().flatten())
            .collect();
        total_endpoint_addresses += addresses.len();
        let subset_ports = subset.ports.clone().unwrap_or_default();
        ensure!(
            subset_ports.len() == svc_ports.len(),
            "Expected subset to have {} ports, got {}",
            svc_ports.len(),
            subset_ports.len()
        );

        // Not a named port: the subset's ports are the Service's.
        if !named_port {
            for (subset_port, svc_port) in subset_ports.iter().zip(&svc_ports) {
                ensure!(
                    subset_port.name == svc_port.name,
                    "Expected port name to be {:?}, got {:?}",
                    svc_port.name,
                    subset_port.name
                );
                ensure!(
                    subset_port.protocol == svc_port.protocol,
                    "Expected protocol to be {:?}, got {:?}",
                    svc_port.protocol,
                    subset_port.protocol
                );
                let want = int_val(svc_port.target_port.as_ref());
                ensure!(
                    subset_port.port == want,
                    "Expected port to be {want}, got {}",
                    subset_port.port
                );
            }
        }

        for address in addresses {
            let Some(pod) = pods_by_ip.get(&address.ip) else {
                bail!("Unexpected address with IP: {}", address.ip);
            };
            ensure_pod_target_ref(pod, address.target_ref.as_ref())?;

            // A named port: the subset's port is the pod's.
            if named_port {
                for (port_name, container_port) in container_ports(pod) {
                    if port_name.as_deref() == Some(first_target.as_str()) {
                        let subset_port = &subset_ports[0];
                        ensure!(
                            subset_port.port == container_port,
                            "Expected subset port to be {container_port}, got {}",
                            subset_port.port
                        );
                        ensure!(
                            subset_port.name == first_name,
                            "Expected subset port name to be {first_name:?}, got {:?}",
                            subset_port.name
                        );
                    }
                }
            }
        }
    }
    ensure!(
        pods.len() == total_endpoint_addresses,
        "Expected {} addresses, got {total_endpoint_addresses}",
        pods.len()
    );

    Ok(())
}

/// expectEndpointsAndSlices: the Service's EndpointSlices and Endpoints, once they match the
/// counts, reference exactly `pods`, by address and target, with the ports the Service's
/// (named, or numbered) target port gives each pod.
async fn expect_endpoints_and_slices(
    ctx: &Ctx,
    svc: &Service,
    pods: &[&Pod],
    num_subsets: usize,
    num_slices: usize,
    named_port: bool,
) -> anyhow::Result<()> {
    let svc_name = svc.name_any();
    let endpoint_slices = eventually_every(
        Duration::from_secs(2),
        WAIT,
        "EndpointSlices to match expectations",
        || has_matching_endpoint_slices(ctx, &svc_name, pods.len(), num_slices),
    )
    .await
    .context("Timed out waiting for EndpointSlices to match expectations")?;
    expect_endpoints(ctx, svc, pods, num_subsets, named_port).await?;

    let pods_by_ip = pods_by_ip(pods)?;
    let svc_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let first_target = int_or_string(svc_ports.first().and_then(|p| p.target_port.as_ref()));
    let first_name = svc_ports.first().and_then(|p| p.name.clone());

    ensure!(
        !pods.is_empty() || endpoint_slices.len() == 1,
        "Expected 1 EndpointSlice, got {}",
        endpoint_slices.len()
    );

    // A set: duplicate addresses are valid, if rare.
    let mut es_addresses = BTreeSet::new();
    for slice in &endpoint_slices {
        for endpoint in &slice.endpoints {
            let Some(first) = endpoint.addresses.first() else {
                bail!("Expected EndpointSlice endpoint to have at least 1 address");
            };
            es_addresses.insert(first.clone());
        }
        let slice_ports = slice.ports.clone().unwrap_or_default();
        ensure!(
            !pods.is_empty() || slice_ports.is_empty(),
            "Expected EndpointSlice to have 0 ports, got {}",
            slice_ports.len()
        );
        ensure!(
            pods.is_empty() || slice_ports.len() == svc_ports.len(),
            "Expected EndpointSlice to have {} ports, got {}",
            svc_ports.len(),
            slice_ports.len()
        );

        // Not a named port: the slice's ports are the Service's.
        if !named_port {
            for (es_port, svc_port) in slice_ports.iter().zip(&svc_ports) {
                // Upstream dereferences the slice's name: unset fails, "" is an unnamed port.
                ensure!(
                    es_port.name.as_deref() == Some(svc_port.name.as_deref().unwrap_or_default()),
                    "Expected port name to be {:?}, got {:?}",
                    svc_port.name,
                    es_port.name
                );
                ensure!(
                    es_port.protocol.is_some() && es_port.protocol == svc_port.protocol,
                    "Expected protocol to be {:?}, got {:?}",
                    svc_port.protocol,
                    es_port.protocol
                );
                let want = int_val(svc_port.target_port.as_ref());
                ensure!(
                    es_port.port == Some(want),
                    "Expected port to be {want}, got {:?}",
                    es_port.port
                );
            }
        }

        for endpoint in &slice.endpoints {
            let Some(first) = endpoint.addresses.first() else {
                bail!("Expected EndpointSlice endpoint to have at least 1 address");
            };
            let Some(pod) = pods_by_ip.get(first) else {
                bail!("Unexpected address with IP: {first}");
            };
            ensure_pod_target_ref(pod, endpoint.target_ref.as_ref())?;

            // A named port: the slice's port is the pod's.
            if named_port {
                for (port_name, container_port) in container_ports(pod) {
                    if port_name.as_deref() == Some(first_target.as_str()) {
                        let Some(es_port) = slice_ports.first() else {
                            bail!("Expected EndpointSlice port to be {container_port}, got none");
                        };
                        ensure!(
                            es_port.port == Some(container_port),
                            "Expected EndpointSlice port to be {container_port}, got {:?}",
                            es_port.port
                        );
                        ensure!(
                            es_port.name.is_some() && es_port.name == first_name,
                            "Expected EndpointSlice port name to be {first_name:?}, got {:?}",
                            es_port.name
                        );
                    }
                }
            }
        }
    }
    ensure!(
        pods.len() == es_addresses.len(),
        "Expected {} addresses, got {}",
        pods.len(),
        es_addresses.len()
    );
    Ok(())
}

/// deleteEndpointSlices: every EndpointSlice of the Service deleted.
async fn delete_endpoint_slices(ctx: &Ctx, svc: &Service) -> anyhow::Result<()> {
    let slices: Api<EndpointSlice> = ctx.namespaced();
    let (ns, name) = (&ctx.namespace, svc.name_any());
    let list = slices
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={name}")))
        .await
        .with_context(|| format!("Error fetching EndpointSlices for {ns}/{name} Service"))?;
    for slice in list.items {
        slices
            .delete(&slice.name_any(), &DeleteParams::default())
            .await
            .with_context(|| format!("Error deleting {ns}/{} EndpointSlice", slice.name_any()))?;
    }
    Ok(())
}

/// createServiceReportErr.
async fn create_service(ctx: &Ctx, svc: Value) -> anyhow::Result<Service> {
    let services: Api<Service> = ctx.namespaced();
    services
        .create(&PostParams::default(), &from(svc)?)
        .await
        .context("error creating Service")
}

/// endpointslice.go "should create Endpoints and EndpointSlices for Pods matching a Service"
async fn endpoints_and_slices_for_matching_pods(ctx: Ctx) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    let (label_pod1, label_pod3, label_shared12) = ("pod1", "pod3", "shared12");
    let label_value = "on";

    let pod1: Pod = from(json!({
        "metadata": {"name": "pod1", "labels": {"pod1": label_value, "shared12": label_value}},
        "spec": {"containers": [{
            "name": "container1",
            "image": NGINX,
            "ports": [{"name": "example-name", "containerPort": 3000}],
        }]},
    }))?;
    let pod1 = pods.create(&PostParams::default(), &pod1).await?;
    let pod2: Pod = from(json!({
        "metadata": {"name": "pod2", "labels": {"pod2": label_value, "shared12": label_value}},
        "spec": {"containers": [{
            "name": "container1",
            "image": NGINX,
            "ports": [
                {"name": "example-name", "containerPort": 3001},
                {"name": "other-port", "containerPort": 3002},
            ],
        }]},
    }))?;
    let pod2 = pods.create(&PostParams::default(), &pod2).await?;

    let svc1 = create_service(
        &ctx,
        json!({
            "metadata": {"name": "example-int-port"},
            "spec": {
                "selector": {label_pod1: label_value},
                "publishNotReadyAddresses": true,
                "ports": [{"name": "example", "port": 80, "targetPort": 3000, "protocol": "TCP"}],
            },
        }),
    )
    .await?;
    let svc2 = create_service(
        &ctx,
        json!({
            "metadata": {"name": "example-named-port"},
            "spec": {
                "selector": {label_shared12: label_value},
                "publishNotReadyAddresses": true,
                "ports": [{"name": "http", "port": 80, "targetPort": "example-name", "protocol": "TCP"}],
            },
        }),
    )
    .await?;
    let svc3 = create_service(
        &ctx,
        json!({
            "metadata": {"name": "example-no-match"},
            "spec": {
                "selector": {label_pod3: label_value},
                "publishNotReadyAddresses": true,
                "ports": [{"name": "example-no-match", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        }),
    )
    .await?;

    let (pod1, pod2) = eventually_every(
        Duration::from_secs(2),
        WAIT,
        "Pods to have IPs assigned",
        || async {
            let p1 = pods.get(&pod1.name_any()).await?;
            if !has_pod_ips(&p1) {
                return Ok(None);
            }
            let p2 = pods.get(&pod2.name_any()).await?;
            if !has_pod_ips(&p2) {
                return Ok(None);
            }
            Ok(Some((p1, p2)))
        },
    )
    .await
    .context("timed out waiting for Pods to have IPs assigned")?;

    // referencing a single matching pod
    expect_endpoints_and_slices(&ctx, &svc1, &[&pod1], 1, 1, false).await?;

    // referencing matching pods with named port
    expect_endpoints_and_slices(&ctx, &svc2, &[&pod1, &pod2], 2, 2, true).await?;

    // creating empty Endpoints and EndpointSlices for no matching Pods
    expect_endpoints_and_slices(&ctx, &svc3, &[], 0, 1, false).await?;

    // recreating EndpointSlices after they've been deleted
    delete_endpoint_slices(&ctx, &svc2).await?;
    expect_endpoints_and_slices(&ctx, &svc2, &[&pod1, &pod2], 2, 2, true).await?;
    Ok(())
}
