//! [sig-api-machinery] ResourceQuota, the object-count and scope tests of
//! test/e2e/apimachinery/resource_quota.go: the life of a service, a replica set, a
//! replication controller and a pod under a quota, and quotas scoped to BestEffort /
//! NotBestEffort and Terminating / NotTerminating pods. (The configMap, secret, status and
//! lifecycle ports are in apps.rs, update-and-delete in auth.rs.)

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ReplicationController, ResourceQuota, Service};
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use serde_json::{Value, json};

use super::apps::{count_resource_quota, same_quantity};
use super::tests;
use crate::framework::from;
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-api-machinery] ResourceQuota should create a ResourceQuota and capture the life of a service." => quota_service,
        "[sig-api-machinery] ResourceQuota should create a ResourceQuota and capture the life of a replica set." => quota_replica_set,
        "[sig-api-machinery] ResourceQuota should create a ResourceQuota and capture the life of a replication controller." => quota_replication_controller,
        "[sig-api-machinery] ResourceQuota should create a ResourceQuota and capture the life of a pod." => quota_pod,
        "[sig-api-machinery] ResourceQuota should verify ResourceQuota with best effort scope." => quota_best_effort_scope,
        "[sig-api-machinery] ResourceQuota should verify ResourceQuota with terminating scopes." => quota_terminating_scopes,
    ]
}

/// resource_quota.go's resourceQuotaTimeout: how long a quota update may take to show.
const RESOURCE_QUOTA_TIMEOUT: Duration = Duration::from_secs(60);

/// How often waitForResourceQuota looks (upstream's framework.Poll is 2s; looking more often
/// only ends the wait sooner).
const POLL: Duration = Duration::from_millis(500);

/// resource_quota.go's podName (the best-effort scope test's pod).
const POD_NAME: &str = "pfpod";

/// resource_quota.go's extendedResourceName.
const EXTENDED_RESOURCE_NAME: &str = "example.com/dongle";

/// imageutils.GetPauseImageName() of v1.33.
const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// The usage a quota is expected to show (v1.ResourceList): resource name to amount.
type Used = BTreeMap<String, String>;

fn put(used: &mut Used, resource: &str, amount: &str) {
    used.insert(resource.to_string(), amount.to_string());
}

fn used_of(pairs: &[(&str, &str)]) -> Used {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// resource_quota.go's newTestResourceQuota: a quota with default constraints.
fn new_test_resource_quota(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"hard": {
        "pods": "5",
        "services": "10",
        "services.nodeports": "1",
        "services.loadbalancers": "1",
        "replicationcontrollers": "10",
        "resourcequotas": "1",
        "cpu": "1",
        "memory": "500Mi",
        "configmaps": "10",
        "secrets": "10",
        "persistentvolumeclaims": "10",
        "requests.storage": "10Gi",
        "ephemeral-storage": "50Gi",
        "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "10",
        "gold.storageclass.storage.k8s.io/requests.storage": "10Gi",
        // quota on a discovered resource type
        "count/replicasets.apps": "5",
        // quota on an extended resource
        format!("requests.{EXTENDED_RESOURCE_NAME}"): "3",
    }}})
}

/// resource_quota.go's newTestResourceQuotaWithScope.
fn new_test_resource_quota_with_scope(name: &str, scope: &str) -> Value {
    let mut hard = json!({"pods": "5"});
    if matches!(scope, "Terminating" | "NotTerminating") {
        hard["requests.cpu"] = json!("1");
        hard["requests.memory"] = json!("500Mi");
        hard["limits.cpu"] = json!("2");
        hard["limits.memory"] = json!("1Gi");
    }
    json!({"metadata": {"name": name}, "spec": {"hard": hard, "scopes": [scope]}})
}

/// resource_quota.go's newTestPodForQuota: a pause pod with these requests and limits (an
/// empty list is left out, as Go's omitempty does), kept off every node by an unsatisfiable
/// node selector.
fn new_test_pod_for_quota(name: &str, requests: Value, limits: Value) -> anyhow::Result<Pod> {
    let mut resources = json!({});
    if requests.as_object().is_some_and(|m| !m.is_empty()) {
        resources["requests"] = requests;
    }
    if limits.as_object().is_some_and(|m| !m.is_empty()) {
        resources["limits"] = limits;
    }
    from(json!({
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"x-test.k8s.io/unsatisfiable": "not-schedulable"},
            "containers": [{"name": "pause", "image": PAUSE_IMAGE, "resources": resources}],
        }
    }))
}

/// resource_quota.go's newTestServiceForQuota (allocateLoadBalancerNodePorts only set on a
/// LoadBalancer service).
fn new_test_service_for_quota(
    name: &str,
    service_type: &str,
    allocate_load_balancer_node_ports: bool,
) -> anyhow::Result<Service> {
    let mut spec = json!({
        "type": service_type,
        "ports": [{"port": 80, "targetPort": 80}],
    });
    if service_type == "LoadBalancer" {
        spec["allocateLoadBalancerNodePorts"] = json!(allocate_load_balancer_node_ports);
    }
    from(json!({"metadata": {"name": name}, "spec": spec}))
}

/// resource_quota.go's newTestReplicationControllerForQuota.
fn new_test_replication_controller_for_quota(
    name: &str,
    image: &str,
    replicas: i32,
) -> anyhow::Result<ReplicationController> {
    from(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"name": name},
            "template": {
                "metadata": {"labels": {"name": name}},
                "spec": {"containers": [{"name": name, "image": image}]},
            },
        }
    }))
}

/// resource_quota.go's newTestReplicaSetForQuota.
fn new_test_replica_set_for_quota(
    name: &str,
    image: &str,
    replicas: i32,
) -> anyhow::Result<ReplicaSet> {
    from(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"name": name}},
            "template": {
                "metadata": {"labels": {"name": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": name, "image": image}],
                },
            },
        }
    }))
}

/// resource_quota.go's createResourceQuota.
async fn create_resource_quota(
    api: &Api<ResourceQuota>,
    quota: Value,
) -> anyhow::Result<ResourceQuota> {
    let quota: ResourceQuota = from(quota)?;
    let name = quota.metadata.name.clone().unwrap_or_default();
    api.create(&PostParams::default(), &quota)
        .await
        .with_context(|| format!("creating ResourceQuota {name}"))
}

/// resource_quota.go's waitForResourceQuota: polls until the quota's status.used shows these
/// amounts (its other entries aside; amounts compared as quantities, "0" equals "0Gi"), for
/// at most resourceQuotaTimeout. A failed GET ends the wait, as in the original.
async fn wait_for_resource_quota(
    api: &Api<ResourceQuota>,
    name: &str,
    used: &Used,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + RESOURCE_QUOTA_TIMEOUT;
    loop {
        let quota = api
            .get(name)
            .await
            .with_context(|| format!("getting ResourceQuota {name}"))?;
        let have = quota.status.as_ref().and_then(|s| s.used.as_ref());
        // used may not yet be calculated
        let mismatch = match have {
            None => Some("status.used not calculated yet".to_string()),
            Some(have) => used.iter().find_map(|(k, want)| match have.get(k) {
                Some(actual) if same_quantity(&actual.0, want) => None,
                Some(actual) => Some(format!(
                    "resource {k}, expected {want}, actual {}",
                    actual.0
                )),
                None => Some(format!("resource {k}, expected {want}, actual absent")),
            }),
        };
        let Some(mismatch) = mismatch else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "ResourceQuota {name} did not show status.used {used:?} within {}s: {mismatch}; status: {:?}",
                RESOURCE_QUOTA_TIMEOUT.as_secs(),
                quota.status
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The create must be refused (upstream only expects an error).
fn expect_refused<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
    what: &str,
) -> anyhow::Result<()> {
    match result {
        Err(_) => Ok(()),
        Ok(created) => bail!("{what} succeeded, an error was expected: {created:?}"),
    }
}

/// metav1.NewDeleteOptions(0).
fn delete_now() -> DeleteParams {
    DeleteParams::default().grace_period(0)
}

/// resource_quota.go "should create a ResourceQuota and capture the life of a service."
async fn quota_service(ctx: Ctx) -> anyhow::Result<()> {
    let quotas: Api<ResourceQuota> = ctx.namespaced();
    let services: Api<Service> = ctx.namespaced();
    let pp = PostParams::default();

    // Counting existing ResourceQuota
    let c = count_resource_quota(&quotas).await?;

    // Creating a ResourceQuota
    let quota_name = "test-quota";
    create_resource_quota(&quotas, new_test_resource_quota(quota_name)).await?;

    // Ensuring resource quota status is calculated
    let quota_count = (c + 1).to_string();
    let mut used = used_of(&[("resourcequotas", quota_count.as_str())]);
    wait_for_resource_quota(&quotas, quota_name, &used)
        .await
        .context("Ensuring resource quota status is calculated")?;

    // Creating a Service
    let service = services
        .create(
            &pp,
            &new_test_service_for_quota("test-service", "ClusterIP", false)?,
        )
        .await
        .context("Creating a Service")?;

    // Creating a NodePort Service
    let nodeport = services
        .create(
            &pp,
            &new_test_service_for_quota("test-service-np", "NodePort", false)?,
        )
        .await
        .context("Creating a NodePort Service")?;

    // Not allowing a LoadBalancer Service with NodePort to be created that exceeds remaining
    // quota
    let result = services
        .create(
            &pp,
            &new_test_service_for_quota("test-service-lb", "LoadBalancer", true)?,
        )
        .await;
    expect_refused(
        result,
        "creating LoadBalancer Service test-service-lb, which exceeds the remaining services.nodeports quota",
    )?;

    // Ensuring resource quota status captures service creation
    used = used_of(&[
        ("resourcequotas", quota_count.as_str()),
        ("services", "2"),
        ("services.nodeports", "1"),
    ]);
    wait_for_resource_quota(&quotas, quota_name, &used)
        .await
        .context("Ensuring resource quota status captures service creation")?;

    // Deleting Services
    let service_name = service.metadata.name.clone().unwrap_or_default();
    services
        .delete(&service_name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting Service {service_name}"))?;
    let nodeport_name = nodeport.metadata.name.clone().unwrap_or_default();
    services
        .delete(&nodeport_name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting Service {nodeport_name}"))?;

    // Ensuring resource quota status released usage
    put(&mut used, "services", "0");
    put(&mut used, "services.nodeports", "0");
    wait_for_resource_quota(&quotas, quota_name, &used)
        .await
        .context("Ensuring resource quota status released usage")
}

/// resource_quota.go "should create a ResourceQuota and capture the life of a replication
/// controller."
async fn quota_replication_controller(ctx: Ctx) -> anyhow::Result<()> {
    let quotas: Api<ResourceQuota> = ctx.namespaced();
    let rcs: Api<ReplicationController> = ctx.namespaced();

    // Counting existing ResourceQuota
    let c = count_resource_quota(&quotas).await?;

    // Creating a ResourceQuota
    let quota_name = "test-quota";
    create_resource_quota(&quotas, new_test_resource_quota(quota_name)).await?;

    // Ensuring resource quota status is calculated
    let quota_count = (c + 1).to_string();
    let mut used = used_of(&[
        ("resourcequotas", quota_count.as_str()),
        ("replicationcontrollers", "0"),
    ]);
    wait_for_resource_quota(&quotas, quota_name, &used)
        .await
        .context("Ensuring resource quota status is calculated")?;

    // Creating a ReplicationController
    let rc = rcs
        .create(
            &PostParams::default(),
            &new_test_replication_controller_for_quota("test-rc", "nginx", 0)?,
        )
        .await
        .context("Creating a ReplicationController")?;

    // Ensuring resource quota status captures replication controller creation
    used = used_of(&[("replicationcontrollers", "1")]);
    wait_for_resource_quota(&quotas, quota_name, &used)
        .await
        .context("Ensuring resource quota status captures replication controller creation")?;

    // Deleting a ReplicationController (in the background: without it the object is not
    // removed until the garbage collector has orphaned its pods, the RC default)
    let rc_name = rc.metadata.name.clone().unwrap_or_default();
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    rcs.delete(&rc_name, &params)
        .await
        .with_context(|| format!("deleting ReplicationController {rc_name}"))?;

    // Ensuring resource quota status released usage
    put(&mut used, "replicationcontrollers", "0");
    wait_for_resource_quota(&quotas, quota_name, &used)
        .await
        .context("Ensuring resource quota status released usage")
}

/// resource_quota.go "should create a ResourceQuota and capture the life of a replica set."
async fn quota_replica_set(ctx: Ctx) -> anyhow::Result<()> {
    let quotas: Api<ResourceQuota> = ctx.namespaced();
    let rss: Api<ReplicaSet> = ctx.namespaced();

    // Counting existing ResourceQuota
    let c = count_resource_quota(&quotas).await?;

    // Creating a ResourceQuota
    let quota_name = "test-quota";
    create_resource_quota(&quotas, new_test_resource_quota(quota_name)).await?;

    // Ensuring resource quota status is calculated
    let quota_count = (c + 1).to_string();
    let mut used = used_of(&[
        ("resourcequotas", quota_count.as_str()),
        ("count/replicasets.apps", "0"),
    ]);
    wait_for_resource_quota(&quotas, quota_name, &used)
        .await
        .context("Ensuring resource quota status is calculated")?;

    // Creating a ReplicaSet
    let rs = rss
        .create(
            &PostParams::default(),
            &new_test_replica_set_for_quota("test-rs", "nginx", 0)?,
        )
        .await
        .context("Creating a ReplicaSet")?;

    // Ensuring resource quota status captures replicaset creation
    used = used_of(&[("count/replicasets.apps", "1")]);
    wait_for_resource_quota(&quotas, quota_name, &used)
        .await
        .context("Ensuring resource quota status captures replicaset creation")?;

    // Deleting a ReplicaSet
    let rs_name = rs.metadata.name.clone().unwrap_or_default();
    rss.delete(&rs_name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting ReplicaSet {rs_name}"))?;

    // Ensuring resource quota status released usage
    put(&mut used, "count/replicasets.apps", "0");
    wait_for_resource_quota(&quotas, quota_name, &used)
        .await
        .context("Ensuring resource quota status released usage")
}

/// resource_quota.go "should create a ResourceQuota and capture the life of a pod."
async fn quota_pod(ctx: Ctx) -> anyhow::Result<()> {
    let quotas: Api<ResourceQuota> = ctx.namespaced();
    let pods: Api<Pod> = ctx.namespaced();
    let pp = PostParams::default();
    let extended_request = format!("requests.{EXTENDED_RESOURCE_NAME}");

    // Counting existing ResourceQuota
    let c = count_resource_quota(&quotas).await?;

    // Creating a ResourceQuota
    let quota_name = "test-quota";
    create_resource_quota(&quotas, new_test_resource_quota(quota_name)).await?;

    // Ensuring resource quota status is calculated
    let quota_count = (c + 1).to_string();
    let mut used = used_of(&[("resourcequotas", quota_count.as_str())]);
    wait_for_resource_quota(&quotas, quota_name, &used)
        .await
        .context("Ensuring resource quota status is calculated")?;

    // Creating a Pod that fits quota
    let pod_name = "test-pod";
    let requests = json!({
        "cpu": "500m",
        "memory": "252Mi",
        "ephemeral-storage": "30Gi",
        EXTENDED_RESOURCE_NAME: "2",
    });
    let limits = json!({EXTENDED_RESOURCE_NAME: "2"});
    let pod_to_update = pods
        .create(&pp, &new_test_pod_for_quota(pod_name, requests, limits)?)
        .await
        .context("Creating a Pod that fits quota")?;

    // Ensuring ResourceQuota status captures the pod usage
    put(&mut used, "resourcequotas", &quota_count);
    put(&mut used, "pods", "1");
    put(&mut used, "cpu", "500m");
    put(&mut used, "memory", "252Mi");
    put(&mut used, "ephemeral-storage", "30Gi");
    put(&mut used, &extended_request, "2");
    wait_for_resource_quota(&quotas, quota_name, &used)
        .await
        .context("Ensuring ResourceQuota status captures the pod usage")?;

    // Not allowing a pod to be created that exceeds remaining quota
    let requests = json!({"cpu": "600m", "memory": "100Mi"});
    let result = pods
        .create(
            &pp,
            &new_test_pod_for_quota("fail-pod", requests, json!({}))?,
        )
        .await;
    expect_refused(
        result,
        "creating pod fail-pod, which exceeds the remaining quota",
    )?;

    // Not allowing a pod to be created that exceeds remaining quota (validation on extended
    // resources)
    let requests = json!({
        "cpu": "500m",
        "memory": "100Mi",
        "ephemeral-storage": "30Gi",
        EXTENDED_RESOURCE_NAME: "2",
    });
    let limits = json!({EXTENDED_RESOURCE_NAME: "2"});
    let result = pods
        .create(
            &pp,
            &new_test_pod_for_quota("fail-pod-for-extended-resource", requests, limits)?,
        )
        .await;
    expect_refused(
        result,
        "creating pod fail-pod-for-extended-resource, which exceeds the remaining quota",
    )?;

    // Ensuring a pod cannot update its resource requirements (a pod cannot dynamically
    // update them)
    let mut pod_to_update = pod_to_update;
    let container = pod_to_update
        .spec
        .as_mut()
        .and_then(|s| s.containers.first_mut())
        .context("the created pod has no container")?;
    container
        .resources
        .get_or_insert_with(Default::default)
        .requests = Some(from(json!({
        "cpu": "100m",
        "memory": "100Mi",
        "ephemeral-storage": "10Gi",
    }))?);
    let result = pods.replace(pod_name, &pp, &pod_to_update).await;
    expect_refused(result, "updating the resource requests of pod test-pod")?;

    // Ensuring attempts to update pod resource requirements did not change quota usage
    wait_for_resource_quota(&quotas, quota_name, &used)
        .await
        .context(
            "Ensuring attempts to update pod resource requirements did not change quota usage",
        )?;

    // Deleting the pod
    pods.delete(pod_name, &delete_now())
        .await
        .with_context(|| format!("deleting pod {pod_name}"))?;

    // Ensuring resource quota status released the pod usage
    put(&mut used, "resourcequotas", &quota_count);
    put(&mut used, "pods", "0");
    put(&mut used, "cpu", "0");
    put(&mut used, "memory", "0");
    put(&mut used, "ephemeral-storage", "0");
    put(&mut used, &extended_request, "0");
    wait_for_resource_quota(&quotas, quota_name, &used)
        .await
        .context("Ensuring resource quota status released the pod usage")
}

/// resource_quota.go "should verify ResourceQuota with terminating scopes."
async fn quota_terminating_scopes(ctx: Ctx) -> anyhow::Result<()> {
    let quotas: Api<ResourceQuota> = ctx.namespaced();
    let pods: Api<Pod> = ctx.namespaced();
    let pp = PostParams::default();

    // Creating a ResourceQuota with terminating scope
    let terminating = "quota-terminating";
    create_resource_quota(
        &quotas,
        new_test_resource_quota_with_scope(terminating, "Terminating"),
    )
    .await?;

    // Ensuring ResourceQuota status is calculated
    let mut used = used_of(&[("pods", "0")]);
    wait_for_resource_quota(&quotas, terminating, &used)
        .await
        .context("Ensuring ResourceQuota status is calculated")?;

    // Creating a ResourceQuota with not terminating scope
    let not_terminating = "quota-not-terminating";
    create_resource_quota(
        &quotas,
        new_test_resource_quota_with_scope(not_terminating, "NotTerminating"),
    )
    .await?;

    // Ensuring ResourceQuota status is calculated
    wait_for_resource_quota(&quotas, not_terminating, &used)
        .await
        .context("Ensuring ResourceQuota status is calculated")?;

    // Creating a long running pod
    let mut pod_name = "test-pod";
    let requests = json!({"cpu": "500m", "memory": "200Mi"});
    let limits = json!({"cpu": "1", "memory": "400Mi"});
    pods.create(
        &pp,
        &new_test_pod_for_quota(pod_name, requests.clone(), limits.clone())?,
    )
    .await
    .context("Creating a long running pod")?;

    let captured = |used: &mut Used| {
        put(used, "pods", "1");
        put(used, "requests.cpu", "500m");
        put(used, "requests.memory", "200Mi");
        put(used, "limits.cpu", "1");
        put(used, "limits.memory", "400Mi");
    };
    let released = |used: &mut Used| {
        put(used, "pods", "0");
        put(used, "requests.cpu", "0");
        put(used, "requests.memory", "0");
        put(used, "limits.cpu", "0");
        put(used, "limits.memory", "0");
    };

    // Ensuring resource quota with not terminating scope captures the pod usage
    captured(&mut used);
    wait_for_resource_quota(&quotas, not_terminating, &used)
        .await
        .context("Ensuring resource quota with not terminating scope captures the pod usage")?;

    // Ensuring resource quota with terminating scope ignored the pod usage
    released(&mut used);
    wait_for_resource_quota(&quotas, terminating, &used)
        .await
        .context("Ensuring resource quota with terminating scope ignored the pod usage")?;

    // Deleting the pod
    pods.delete(pod_name, &delete_now())
        .await
        .with_context(|| format!("deleting pod {pod_name}"))?;

    // Ensuring resource quota status released the pod usage
    released(&mut used);
    wait_for_resource_quota(&quotas, not_terminating, &used)
        .await
        .context("Ensuring resource quota status released the pod usage")?;

    // Creating a terminating pod
    pod_name = "terminating-pod";
    let mut pod = new_test_pod_for_quota(pod_name, requests, limits)?;
    pod.spec
        .as_mut()
        .context("the pod has no spec")?
        .active_deadline_seconds = Some(3600);
    pods.create(&pp, &pod)
        .await
        .context("Creating a terminating pod")?;

    // Ensuring resource quota with terminating scope captures the pod usage
    captured(&mut used);
    wait_for_resource_quota(&quotas, terminating, &used)
        .await
        .context("Ensuring resource quota with terminating scope captures the pod usage")?;

    // Ensuring resource quota with not terminating scope ignored the pod usage
    released(&mut used);
    wait_for_resource_quota(&quotas, not_terminating, &used)
        .await
        .context("Ensuring resource quota with not terminating scope ignored the pod usage")?;

    // Deleting the pod
    pods.delete(pod_name, &delete_now())
        .await
        .with_context(|| format!("deleting pod {pod_name}"))?;

    // Ensuring resource quota status released the pod usage
    released(&mut used);
    wait_for_resource_quota(&quotas, terminating, &used)
        .await
        .context("Ensuring resource quota status released the pod usage")
}

/// resource_quota.go "should verify ResourceQuota with best effort scope."
async fn quota_best_effort_scope(ctx: Ctx) -> anyhow::Result<()> {
    let quotas: Api<ResourceQuota> = ctx.namespaced();
    let pods: Api<Pod> = ctx.namespaced();
    let pp = PostParams::default();

    // Creating a ResourceQuota with best effort scope
    let best_effort = "quota-besteffort";
    create_resource_quota(
        &quotas,
        new_test_resource_quota_with_scope(best_effort, "BestEffort"),
    )
    .await?;

    // Ensuring ResourceQuota status is calculated
    let mut used = used_of(&[("pods", "0")]);
    wait_for_resource_quota(&quotas, best_effort, &used)
        .await
        .context("Ensuring ResourceQuota status is calculated")?;

    // Creating a ResourceQuota with not best effort scope
    let not_best_effort = "quota-not-besteffort";
    create_resource_quota(
        &quotas,
        new_test_resource_quota_with_scope(not_best_effort, "NotBestEffort"),
    )
    .await?;

    // Ensuring ResourceQuota status is calculated
    wait_for_resource_quota(&quotas, not_best_effort, &used)
        .await
        .context("Ensuring ResourceQuota status is calculated")?;

    // Creating a best-effort pod
    let pod = pods
        .create(
            &pp,
            &new_test_pod_for_quota(POD_NAME, json!({}), json!({}))?,
        )
        .await
        .context("Creating a best-effort pod")?;
    let name = pod.metadata.name.clone().unwrap_or_default();

    // Ensuring resource quota with best effort scope captures the pod usage
    put(&mut used, "pods", "1");
    wait_for_resource_quota(&quotas, best_effort, &used)
        .await
        .context("Ensuring resource quota with best effort scope captures the pod usage")?;

    // Ensuring resource quota with not best effort ignored the pod usage
    put(&mut used, "pods", "0");
    wait_for_resource_quota(&quotas, not_best_effort, &used)
        .await
        .context("Ensuring resource quota with not best effort ignored the pod usage")?;

    // Deleting the pod
    pods.delete(&name, &delete_now())
        .await
        .with_context(|| format!("deleting pod {name}"))?;

    // Ensuring resource quota status released the pod usage
    put(&mut used, "pods", "0");
    wait_for_resource_quota(&quotas, best_effort, &used)
        .await
        .context("Ensuring resource quota status released the pod usage")?;

    // Creating a not best-effort pod
    let requests = json!({"cpu": "500m", "memory": "200Mi"});
    let limits = json!({"cpu": "1", "memory": "400Mi"});
    let pod = pods
        .create(
            &pp,
            &new_test_pod_for_quota("burstable-pod", requests, limits)?,
        )
        .await
        .context("Creating a not best-effort pod")?;
    let name = pod.metadata.name.clone().unwrap_or_default();

    // Ensuring resource quota with not best effort scope captures the pod usage
    put(&mut used, "pods", "1");
    wait_for_resource_quota(&quotas, not_best_effort, &used)
        .await
        .context("Ensuring resource quota with not best effort scope captures the pod usage")?;

    // Ensuring resource quota with best effort scope ignored the pod usage
    put(&mut used, "pods", "0");
    wait_for_resource_quota(&quotas, best_effort, &used)
        .await
        .context("Ensuring resource quota with best effort scope ignored the pod usage")?;

    // Deleting the pod
    pods.delete(&name, &delete_now())
        .await
        .with_context(|| format!("deleting pod {name}"))?;

    // Ensuring resource quota status released the pod usage
    put(&mut used, "pods", "0");
    wait_for_resource_quota(&quotas, not_best_effort, &used)
        .await
        .context("Ensuring resource quota status released the pod usage")
}
