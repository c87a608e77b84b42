//! [sig-scheduling] SchedulerPredicates and SchedulerPreemption (test/e2e/scheduling/predicates.go,
//! preemption.go, framework.go) and [sig-architecture] Conformance Tests
//! (test/e2e/architecture/conformance.go). On Kelp the nodes are `kelp simulate` ones.
//!
//! Upstream marks these [Serial]: they assume nothing else schedules meanwhile. The harness
//! runs its tests one after another (only the `clocked` ones run beside them, in namespaces of
//! their own, asking for no resources, ports or priorities), and these ports touch nodes only
//! through what they add and take off again: labels of their own keys ("node", random
//! `kubernetes.io/e2e-…`), and fake extended resources (`scheduling.k8s.io/foo`,
//! `example.com/fakecpu`) that no other test asks for. Cleanup runs whether the test passed or
//! not (upstream's defer and AfterEach).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::tests;
use crate::framework::{
    eventually, eventually_every, from, node_ready, node_schedulable, node_untainted,
    ready_schedulable_nodes, retry_on_conflict,
};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-scheduling] SchedulerPredicates [Serial] validates resource limits of pods that are allowed to run" => resource_limits,
        "[sig-scheduling] SchedulerPredicates [Serial] validates that there exists conflict between pods with same hostPort and protocol but one using 0.0.0.0 hostIP" => host_port_conflict,
        "[sig-scheduling] SchedulerPreemption [Serial] validates basic preemption works" => basic_preemption,
        "[sig-scheduling] SchedulerPreemption [Serial] validates lower priority pod preemption by critical pod" => critical_pod_preemption,
        "[sig-scheduling] SchedulerPreemption [Serial] PreemptionExecutionPath runs ReplicaSets to verify preemption running path" => preemption_execution_path,
        "[sig-scheduling] SchedulerPreemption [Serial] validates pod disruption condition is added to the preempted pod" => preempted_pod_disruption_condition,
        "[sig-architecture] Conformance Tests should have at least two untainted nodes" => two_untainted_nodes,
    ]
}

/// Upstream's pod start and get timeouts (PodStartTimeout 5m, PodStartShort and PodGetTimeout
/// 2m, PodDeleteTimeout 5m), cut to fit the harness's three minutes a test.
const WAIT: Duration = Duration::from_secs(90);
/// observeEventAfterAction's two minutes, and WaitForStableCluster's ten.
const EVENT_WAIT: Duration = Duration::from_secs(60);
/// e2enode.AllNodesReady / WaitForTotalHealthy: a minute.
const NODES_WAIT: Duration = Duration::from_secs(60);

/// imageutils.GetPauseImageName() and the Agnhost image of v1.33.
const PAUSE: &str = "registry.k8s.io/pause:3.10";
const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";

/// preemption.go's testExtendedResource.
const FOO: &str = "scheduling.k8s.io/foo";
/// preemption.go's fakecpu (PreemptionExecutionPath).
const FAKE_CPU: &str = "example.com/fakecpu";
/// preemption.go's testFinalizer.
const TEST_FINALIZER: &str = "example.com/test-finalizer";
/// The framework's BaseName ("sched-preemption") and its three classes.
const LOW: &str = "sched-preemption-low-priority";
const MEDIUM: &str = "sched-preemption-medium-priority";
const HIGH: &str = "sched-preemption-high-priority";
const PRIORITIES: [(&str, i32); 3] = [(LOW, 1), (MEDIUM, 100), (HIGH, 1000)];
/// scheduling.SystemClusterCritical: a class every cluster has from its start.
const SYSTEM_CLUSTER_CRITICAL: &str = "system-cluster-critical";

// ---------------------------------------------------------------------------------------------
// Pods (predicates.go's pausePodConfig, initPausePod, createPausePod, runPausePod)
// ---------------------------------------------------------------------------------------------

/// predicates.go's pausePodConfig: a Null field is one the config leaves out.
#[derive(Default)]
struct PausePod<'a> {
    name: &'a str,
    labels: Value,
    node_selector: Value,
    affinity: Value,
    resources: Value,
    priority_class: &'a str,
    finalizers: Value,
}

impl PausePod<'_> {
    /// initPausePod: one pause container named as the pod, the restricted security contexts,
    /// a termination grace period of one second.
    fn object(&self) -> Value {
        let mut container = json!({
            "name": self.name,
            "image": PAUSE,
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
        });
        if !self.resources.is_null() {
            container["resources"] = self.resources.clone();
        }
        let mut spec = json!({
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            "terminationGracePeriodSeconds": 1,
        });
        for (field, value) in [
            ("nodeSelector", &self.node_selector),
            ("affinity", &self.affinity),
        ] {
            if !value.is_null() {
                spec[field] = value.clone();
            }
        }
        if !self.priority_class.is_empty() {
            spec["priorityClassName"] = json!(self.priority_class);
        }
        let labels = if self.labels.is_null() {
            json!({})
        } else {
            self.labels.clone()
        };
        let mut metadata = json!({"name": self.name, "labels": labels});
        if !self.finalizers.is_null() {
            metadata["finalizers"] = self.finalizers.clone();
        }
        json!({"metadata": metadata, "spec": spec})
    }
}

/// createPausePod (in the namespace of `api`).
async fn create_pause_pod(api: &Api<Pod>, conf: &PausePod<'_>) -> anyhow::Result<Pod> {
    let pod: Pod = from(conf.object())?;
    api.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {}", conf.name))
}

/// runPausePod: created, then Running.
async fn run_pause_pod(api: &Api<Pod>, conf: &PausePod<'_>) -> anyhow::Result<Pod> {
    create_pause_pod(api, conf).await?;
    wait_running(api, conf.name).await
}

/// e2epod.WaitForPodRunningInNamespace: Running, failing early on a pod that ended.
async fn wait_running(api: &Api<Pod>, name: &str) -> anyhow::Result<Pod> {
    eventually(WAIT, &format!("pod {name} to be running"), || async {
        let p = api.get(name).await?;
        let ph = phase(&p).to_string();
        match ph.as_str() {
            "Running" => Ok(Some(p)),
            "Succeeded" | "Failed" => bail!("pod {name} ended ({ph}) instead of running"),
            _ => Ok(None),
        }
    })
    .await
}

/// e2epod.WaitForPodNotPending: the pod has a phase past Pending.
async fn wait_not_pending(api: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    eventually(WAIT, &format!("pod {name} to leave Pending"), || async {
        let p = api.get(name).await?;
        Ok((!matches!(phase(&p), "" | "Pending")).then_some(()))
    })
    .await
}

/// GetNodeThatCanRunPod (runPodAndGetNodeName): run a plain pause pod, note its node, and
/// delete it at once to free what it takes.
async fn node_that_can_run_pod(ctx: &Ctx) -> anyhow::Result<String> {
    let pods: Api<Pod> = ctx.namespaced();
    let pod = run_pause_pod(
        &pods,
        &PausePod {
            name: "without-label",
            ..Default::default()
        },
    )
    .await?;
    pods.delete("without-label", &now()).await?;
    node_of(&pod)
        .map(str::to_string)
        .context("the pod without a label runs on no node")
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The pod's spec.nodeName, when it has one.
fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn terminated(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

/// metav1.NewDeleteOptions(0).
fn now() -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    }
}

/// Requests and limits of one amount of one resource.
fn limits_and_requests(resource: &str, amount: &str) -> Value {
    json!({"requests": {resource: amount}, "limits": {resource: amount}})
}

/// Required node affinity to the node of this name (matchFields metadata.name In).
fn affinity_to_node(node: &str) -> Value {
    json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    ]}}})
}

/// A random UUID (uuid.NewUUID), lowercase hex.
fn uuid() -> String {
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

/// resource.Quantity's MilliValue: the amount in thousandths, rounded up.
fn milli_value(q: &str) -> anyhow::Result<i64> {
    let text = q.trim();
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(end);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    ensure!(
        !(int_part.is_empty() && frac_part.is_empty()),
        "quantity {q:?} has no number"
    );
    let digits: i128 = format!("{int_part}{frac_part}")
        .parse()
        .with_context(|| format!("quantity {q:?}"))?;
    let (power_of_two, exponent): (u32, i64) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        other => (
            0,
            other
                .strip_prefix(['e', 'E'])
                .and_then(|e| e.parse().ok())
                .with_context(|| format!("quantity {q:?} has an unknown suffix"))?,
        ),
    };
    let overflow = || anyhow::anyhow!("quantity {q:?} is out of range");
    let mut numerator = digits
        .checked_mul(1i128 << power_of_two)
        .ok_or_else(overflow)?;
    let mut denominator: i128 = 1;
    // Thousandths: three more decimal places than units.
    let mut scale = exponent + 3 - i64::try_from(frac_part.len())?;
    while scale > 0 {
        numerator = numerator.checked_mul(10).ok_or_else(overflow)?;
        scale -= 1;
    }
    while scale < 0 {
        denominator = denominator.checked_mul(10).ok_or_else(overflow)?;
        scale += 1;
    }
    let milli =
        i64::try_from((numerator + denominator - 1) / denominator).map_err(|_| overflow())?;
    Ok(if negative { -milli } else { milli })
}

/// predicates.go's getRequestedCPU: the pod's containers' CPU requests, in millicores.
fn requested_cpu(pod: &Pod) -> anyhow::Result<i64> {
    let mut total = 0;
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        if let Some(q) = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("cpu"))
        {
            total += milli_value(&q.0)?;
        }
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Nodes (e2enode)
// ---------------------------------------------------------------------------------------------

fn condition(node: &Node, type_: &str) -> Option<String> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .map(|c| c.status.clone())
}

fn taints(node: &Node) -> &[k8s_openapi::api::core::v1::Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

/// e2enode.AllNodesReady and WaitForTotalHealthy, whose outcome upstream's BeforeEach does not
/// check: waits up to a minute for every node to be Ready, and goes on either way.
async fn wait_nodes_ready(ctx: &Ctx) {
    let api: Api<Node> = ctx.cluster();
    let _ = eventually_every(
        Duration::from_secs(2),
        NODES_WAIT,
        "all nodes to be ready",
        || async {
            let nodes = api.list(&ListParams::default()).await?.items;
            Ok(nodes.iter().all(node_ready).then_some(()))
        },
    )
    .await;
}

fn names(nodes: &[Node]) -> BTreeSet<String> {
    nodes.iter().map(|n| n.name_any()).collect()
}

/// e2enode.AddOrUpdateLabelOnNode and ExpectNodeHasLabel.
async fn add_label(ctx: &Ctx, node: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let api: Api<Node> = ctx.cluster();
    api.patch(
        node,
        &PatchParams::default(),
        &Patch::Strategic(json!({"metadata": {"labels": {key: value}}})),
    )
    .await
    .with_context(|| format!("labelling node {node} {key}={value}"))?;
    let n = api.get(node).await?;
    ensure!(
        n.labels().get(key).map(String::as_str) == Some(value),
        "Failed to find label {key}:{value} on node {node}: {:?}",
        n.labels()
    );
    Ok(())
}

/// e2enode.RemoveLabelOffNode: the label removed, and checked gone.
async fn remove_label(ctx: &Ctx, node: &str, key: &str) -> anyhow::Result<()> {
    let api: Api<Node> = ctx.cluster();
    api.patch(
        node,
        &PatchParams::default(),
        &Patch::Strategic(json!({"metadata": {"labels": {key: null}}})),
    )
    .await
    .with_context(|| format!("removing label {key} off node {node}"))?;
    let n = api.get(node).await?;
    ensure!(
        !n.labels().contains_key(key),
        "Failed removing label {key} of node {node}"
    );
    Ok(())
}

/// preemption.go's patchNode of status.capacity and status.allocatable: the node advertises
/// `amount` of the extended resource.
async fn add_extended_resource(
    ctx: &Ctx,
    node: &str,
    resource: &str,
    amount: &str,
) -> anyhow::Result<()> {
    let api: Api<Node> = ctx.cluster();
    let patch =
        json!({"status": {"capacity": {resource: amount}, "allocatable": {resource: amount}}});
    api.patch_status(node, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .with_context(|| format!("advertising {amount} {resource} on node {node}"))?;
    Ok(())
}

/// The AfterEach's patchNode deleting the resource from capacity and allocatable.
async fn remove_extended_resource(ctx: &Ctx, node: &str, resource: &str) -> anyhow::Result<()> {
    let api: Api<Node> = ctx.cluster();
    let patch = json!({"status": {"capacity": {resource: null}, "allocatable": {resource: null}}});
    api.patch_status(node, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .with_context(|| format!("removing {resource} from node {node}"))?;
    Ok(())
}

/// getNodeHostIP: the node's first IPv4 InternalIP.
async fn node_host_ip(ctx: &Ctx, node: &str) -> anyhow::Result<String> {
    let api: Api<Node> = ctx.cluster();
    let n = api.get(node).await?;
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| {
            a.iter().find(|a| {
                a.type_ == "InternalIP" && a.address.parse::<std::net::Ipv4Addr>().is_ok()
            })
        })
        .map(|a| a.address.clone())
        .with_context(|| format!("node {node} has no IPv4 InternalIP address"))
}

// ---------------------------------------------------------------------------------------------
// Scheduling outcomes (framework.go, events.go, predicates.go's verifyResult)
// ---------------------------------------------------------------------------------------------

/// GetPodsScheduled: pods bound to a worker node (which must say PodScheduled=True), and pods
/// bound to none.
fn pods_scheduled(
    workers: &BTreeSet<String>,
    pods: impl IntoIterator<Item = Pod>,
) -> anyhow::Result<(Vec<Pod>, Vec<Pod>)> {
    let (mut scheduled, mut not_scheduled) = (Vec::new(), Vec::new());
    for pod in pods {
        let on = node_of(&pod).map(str::to_string);
        match on.as_deref() {
            Some(n) if workers.contains(n) => {
                let cond = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
                let Some(cond) = cond else {
                    bail!(
                        "Did not find 'scheduled' condition for pod {}/{}",
                        pod.namespace().unwrap_or_default(),
                        pod.name_any()
                    );
                };
                ensure!(
                    cond.status == "True",
                    "PodStatus isn't 'true' for pod {}/{}",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any()
                );
                scheduled.push(pod);
            }
            Some(_) => {}
            None => not_scheduled.push(pod),
        }
    }
    Ok((scheduled, not_scheduled))
}

/// WaitForStableCluster: every pod of the cluster that has not ended is scheduled; the number
/// scheduled onto the worker nodes.
async fn wait_for_stable_cluster(ctx: &Ctx, workers: &BTreeSet<String>) -> anyhow::Result<usize> {
    let api: Api<Pod> = ctx.all();
    eventually_every(
        Duration::from_secs(2),
        EVENT_WAIT,
        "stable cluster (every pod scheduled)",
        || async {
            let pods = api.list(&ListParams::default()).await?.items;
            let live = pods.into_iter().filter(|p| !terminated(p));
            let (scheduled, not_scheduled) = pods_scheduled(workers, live)?;
            Ok(not_scheduled.is_empty().then_some(scheduled.len()))
        },
    )
    .await
}

/// scheduleFailureEvent: a FailedScheduling warning about the pod.
fn failed_scheduling(e: &Event, pod: &str) -> bool {
    e.metadata.name.as_deref().unwrap_or("").starts_with(pod)
        && e.type_.as_deref() == Some("Warning")
        && e.reason.as_deref() == Some("FailedScheduling")
}

/// WaitForSchedulerAfterAction(…, expectSuccess=false), the action (the pod's creation) done:
/// the scheduler reports it cannot place the pod.
async fn wait_failed_scheduling(ctx: &Ctx, pod: &str) -> anyhow::Result<()> {
    let events: Api<Event> = ctx.namespaced();
    eventually_every(
        Duration::from_secs(1),
        EVENT_WAIT,
        &format!("a FailedScheduling event for pod {pod}"),
        || async {
            let list = events.list(&ListParams::default()).await?.items;
            Ok(list.iter().any(|e| failed_scheduling(e, pod)).then_some(()))
        },
    )
    .await
    .with_context(|| {
        format!("Did not observe failed event after performing the supplied action for pod {pod}")
    })
}

/// verifyResult: the namespace's pods, so many scheduled onto worker nodes and so many not.
async fn verify_result(
    ctx: &Ctx,
    workers: &BTreeSet<String>,
    expected_scheduled: usize,
    expected_not_scheduled: usize,
) -> anyhow::Result<()> {
    let api: Api<Pod> = ctx.namespaced();
    let pods = api.list(&ListParams::default()).await?.items;
    let (scheduled, not_scheduled) = pods_scheduled(workers, pods)?;
    let listed = |ps: &[Pod]| ps.iter().map(|p| p.name_any()).collect::<Vec<_>>();
    ensure!(
        not_scheduled.len() == expected_not_scheduled,
        "Not scheduled Pods: {:?} (expected {expected_not_scheduled})",
        listed(not_scheduled.as_slice())
    );
    ensure!(
        scheduled.len() == expected_scheduled,
        "Scheduled Pods: {:?} (expected {expected_scheduled})",
        listed(scheduled.as_slice())
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SchedulerPredicates
// ---------------------------------------------------------------------------------------------

/// The SchedulerPredicates BeforeEach: nodes given a minute to be Ready, then the Ready
/// schedulable ones (the worker nodes).
async fn predicates_before_each(ctx: &Ctx) -> anyhow::Result<Vec<Node>> {
    wait_nodes_ready(ctx).await;
    ready_schedulable_nodes(ctx).await
}

/// predicates.go: "validates resource limits of pods that are allowed to run". Each node gets a
/// filler pod taking 70% of its remaining CPU; a pod asking half the largest node's CPU then
/// fits nowhere.
async fn resource_limits(ctx: Ctx) -> anyhow::Result<()> {
    let nodes = predicates_before_each(&ctx).await?;
    let workers = names(&nodes);
    wait_for_stable_cluster(&ctx, &workers).await?;
    let ready: Vec<String> = nodes
        .iter()
        .filter(|n| condition(n, "Ready").as_deref() == Some("True"))
        .map(|n| n.name_any())
        .collect();
    let result = async {
        let mut allocatable: BTreeMap<String, i64> = BTreeMap::new();
        let mut max_allocatable = 0;
        for node in nodes
            .iter()
            .filter(|n| ready.contains(&n.name_any()))
        {
            let name = node.name_any();
            // The label each filler pod's affinity selects.
            add_label(&ctx, &name, "node", &name).await?;
            let all = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
            let cpu = all.and_then(|a| a.get("cpu")).with_context(|| {
                format!("node.Status.Allocatable {all:?} does not contain entry cpu")
            })?;
            let cpu = milli_value(&cpu.0)?;
            allocatable.insert(name, cpu);
            max_allocatable = max_allocatable.max(cpu);
        }
        let everywhere: Api<Pod> = ctx.all();
        for pod in everywhere.list(&ListParams::default()).await?.items {
            let on = node_of(&pod).unwrap_or("").to_string();
            if let Some(left) = allocatable.get_mut(&on)
                && !terminated(&pod)
            {
                *left -= requested_cpu(&pod)?;
            }
        }

        // One pod per node taking 70% of the node's remaining CPU.
        let pods: Api<Pod> = ctx.namespaced();
        let mut fillers = Vec::new();
        for (node, cpu) in &allocatable {
            let requested = format!("{}m", cpu * 7 / 10);
            let name = format!("filler-pod-{}", uuid());
            create_pause_pod(
                &pods,
                &PausePod {
                    name: &name,
                    resources: limits_and_requests("cpu", &requested),
                    affinity: json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "node", "operator": "In", "values": [node]}]}]
                    }}}),
                    ..Default::default()
                },
            )
            .await?;
            fillers.push(name);
        }
        for name in &fillers {
            wait_running(&pods, name).await?;
        }

        // Half the largest node's CPU: at least 70% of every node's is taken.
        let requested = format!("{}m", max_allocatable * 5 / 10);
        create_pause_pod(
            &pods,
            &PausePod {
                name: "additional-pod",
                labels: json!({"name": "additional"}),
                resources: limits_and_requests("cpu", &requested),
                ..Default::default()
            },
        )
        .await?;
        wait_failed_scheduling(&ctx, "additional-pod").await?;
        verify_result(&ctx, &workers, fillers.len(), 1).await
    }
    .await;
    let mut cleanup = Ok(());
    for node in &ready {
        if let Err(e) = remove_label(&ctx, node, "node").await {
            cleanup = Err(e);
        }
    }
    result.and(cleanup)
}

/// predicates.go's createHostPortPodOnNode: an agnhost pod taking `port` on `host_ip`, kept to
/// the labelled node. Expected scheduled, it must leave Pending; expected not, it must stay
/// unscheduled (upstream waits out its five minutes and checks nothing; the test's
/// description, "MUST NOT schedule to the same node", is what is checked here).
async fn create_host_port_pod(
    ctx: &Ctx,
    name: &str,
    host_ip: &str,
    port: i32,
    protocol: &str,
    node_selector: &Value,
    expect_scheduled: bool,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    let mut container_port = json!({"hostPort": port, "containerPort": 8080, "protocol": protocol});
    // An empty hostIP is left out, as Go's omitempty leaves it: 0.0.0.0.
    if !host_ip.is_empty() {
        container_port["hostIP"] = json!(host_ip);
    }
    let pod: Pod = from(json!({
        "metadata": {"name": name},
        "spec": {
            "containers": [{
                "name": "agnhost",
                "image": AGNHOST,
                "args": ["netexec", "--http-port=8080", "--udp-port=8080"],
                "ports": [container_port],
                "readinessProbe": {"httpGet": {"path": "/hostname", "port": 8080, "scheme": "HTTP"}},
            }],
            "nodeSelector": node_selector,
        }
    }))?;
    pods.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {name}"))?;
    if expect_scheduled {
        return wait_not_pending(&pods, name).await;
    }
    let conflict = |node: &str| {
        format!(
            "pod {name} ({host_ip}:{port}/{protocol}) was scheduled to {node}, where another pod \
             holds 0.0.0.0:{port}/{protocol}"
        )
    };
    let events: Api<Event> = ctx.namespaced();
    eventually_every(
        Duration::from_secs(1),
        EVENT_WAIT,
        &format!("pod {name} to be found unschedulable"),
        || async {
            let p = pods.get(name).await?;
            if let Some(node) = node_of(&p) {
                bail!("{}", conflict(node));
            }
            let list = events.list(&ListParams::default()).await?.items;
            Ok(list
                .iter()
                .any(|e| failed_scheduling(e, name))
                .then_some(()))
        },
    )
    .await?;
    let p = pods.get(name).await?;
    if let Some(node) = node_of(&p) {
        bail!("{}", conflict(node));
    }
    Ok(())
}

/// predicates.go: "validates that there exists conflict between pods with same hostPort and
/// protocol but one using 0.0.0.0 hostIP". pod4 takes 54322/TCP on every address of a node;
/// pod5, asking the same port and protocol on the node's own IP there, must not be placed.
async fn host_port_conflict(ctx: Ctx) -> anyhow::Result<()> {
    predicates_before_each(&ctx).await?;
    let node = node_that_can_run_pod(&ctx).await?;
    let host_ip = node_host_ip(&ctx, &node).await?;
    // The pods keep to the node through a label of their own.
    let key = format!("kubernetes.io/e2e-{}", uuid());
    let value = "95";
    let selector = json!({&key: value});
    let labelled = add_label(&ctx, &node, &key, value).await;
    let result = async {
        labelled?;
        let port = 54322;
        create_host_port_pod(&ctx, "pod4", "", port, "TCP", &selector, true).await?;
        create_host_port_pod(&ctx, "pod5", &host_ip, port, "TCP", &selector, false).await
    }
    .await;
    result.and(remove_label(&ctx, &node, &key).await)
}

// ---------------------------------------------------------------------------------------------
// SchedulerPreemption
// ---------------------------------------------------------------------------------------------

/// The SchedulerPreemption BeforeEach: the three priority classes (one already there is
/// fine), nodes given a minute to be healthy, then the Ready schedulable ones.
async fn preemption_before_each(ctx: &Ctx) -> anyhow::Result<Vec<Node>> {
    create_priority_classes(ctx, &PRIORITIES).await?;
    wait_nodes_ready(ctx).await;
    ready_schedulable_nodes(ctx).await
}

/// Creates the classes; AlreadyExists is no failure.
async fn create_priority_classes(ctx: &Ctx, classes: &[(&str, i32)]) -> anyhow::Result<()> {
    let api: Api<PriorityClass> = ctx.cluster();
    for (name, value) in classes {
        let pc: PriorityClass = from(json!({"metadata": {"name": name}, "value": value}))?;
        match api.create(&PostParams::default(), &pc).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => bail!("expected 'alreadyExists' as error, got instead: {e}"),
        }
    }
    Ok(())
}

/// Deletes the classes, at once; failures are passed over, as upstream's.
async fn delete_priority_classes(ctx: &Ctx, classes: &[(&str, i32)]) {
    let api: Api<PriorityClass> = ctx.cluster();
    for (name, _) in classes {
        let _ = api.delete(name, &now()).await;
    }
}

/// The SchedulerPreemption AfterEach: the classes deleted, the fake resource taken off the
/// nodes again.
async fn preemption_after_each(ctx: &Ctx, nodes: &[Node]) -> anyhow::Result<()> {
    delete_priority_classes(ctx, &PRIORITIES).await;
    let mut result = Ok(());
    for node in nodes {
        if let Err(e) = remove_extended_resource(ctx, &node.name_any(), FOO).await {
            result = Err(e);
        }
    }
    result
}

/// Whether the pod was preempted: gone, or being deleted.
async fn preempted(api: &Api<Pod>, name: &str) -> anyhow::Result<bool> {
    match api.get(name).await {
        Ok(p) => Ok(p.metadata.deletion_timestamp.is_some()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// The first half of both preemption tests: each node advertises 5 of the fake resource and
/// gets two pods of 2 each; the very first pod is of low priority, the others of medium. All
/// must run.
async fn fill_nodes_with_victims(ctx: &Ctx, nodes: &[Node]) -> anyhow::Result<Vec<Pod>> {
    let api: Api<Pod> = ctx.namespaced();
    let mut pods: Vec<Pod> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let node = node.name_any();
        add_extended_resource(ctx, &node, FOO, "5").await?;
        for j in 0..2 {
            let priority = if pods.is_empty() { LOW } else { MEDIUM };
            let name = format!("pod{i}-{j}-{priority}");
            let pod = create_pause_pod(
                &api,
                &PausePod {
                    name: &name,
                    priority_class: priority,
                    resources: limits_and_requests(FOO, "2"),
                    affinity: affinity_to_node(&node),
                    ..Default::default()
                },
            )
            .await?;
            pods.push(pod);
        }
    }
    ensure!(
        pods.len() >= 2,
        "We need at least two pods to be created but all nodes are already heavily utilized, \
         so preemption tests cannot be run"
    );
    for pod in &pods {
        wait_running(&api, &pod.name_any()).await?;
    }
    Ok(pods)
}

/// The requests of the pod's first container, as requests and limits.
fn same_resources_as(pod: &Pod) -> Value {
    let requests = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.resources.as_ref())
        .and_then(|r| r.requests.clone())
        .unwrap_or_default();
    json!({"requests": requests, "limits": requests})
}

/// preemption.go: "validates basic preemption works". A high-priority pod asking what the
/// low-priority pod holds preempts it, and only it.
async fn basic_preemption(ctx: Ctx) -> anyhow::Result<()> {
    let nodes = preemption_before_each(&ctx).await?;
    let result = async {
        let pods = fill_nodes_with_victims(&ctx, &nodes).await?;
        let api: Api<Pod> = ctx.namespaced();
        run_pause_pod(
            &api,
            &PausePod {
                name: "preemptor-pod",
                priority_class: HIGH,
                resources: same_resources_as(&pods[0]),
                ..Default::default()
            },
        )
        .await?;
        let victim = pods[0].name_any();
        ensure!(
            preempted(&api, &victim).await?,
            "expected pod {victim} to be preempted, instead it is still running"
        );
        for pod in &pods[1..] {
            let live = api.get(&pod.name_any()).await?;
            ensure!(
                live.metadata.deletion_timestamp.is_none(),
                "pod {} was preempted too",
                pod.name_any()
            );
        }
        Ok(())
    }
    .await;
    result.and(preemption_after_each(&ctx, &nodes).await)
}

/// preemption.go: "validates lower priority pod preemption by critical pod". As the basic
/// test, the preemptor a system-cluster-critical pod in kube-system.
async fn critical_pod_preemption(ctx: Ctx) -> anyhow::Result<()> {
    let nodes = preemption_before_each(&ctx).await?;
    let system: Api<Pod> = Api::namespaced(ctx.client.clone(), "kube-system");
    let result = async {
        let pods = fill_nodes_with_victims(&ctx, &nodes).await?;
        let api: Api<Pod> = ctx.namespaced();
        run_pause_pod(
            &system,
            &PausePod {
                name: "critical-pod",
                priority_class: SYSTEM_CLUSTER_CRITICAL,
                resources: same_resources_as(&pods[0]),
                ..Default::default()
            },
        )
        .await?;
        let victim = pods[0].name_any();
        let was_preempted = preempted(&api, &victim).await?;
        for pod in &pods[1..] {
            let live = api.get(&pod.name_any()).await?;
            ensure!(
                live.metadata.deletion_timestamp.is_none(),
                "pod {} was preempted too",
                pod.name_any()
            );
        }
        ensure!(
            was_preempted,
            "expected pod {victim} to be preempted, instead it is still running"
        );
        Ok(())
    }
    .await;
    // The critical pod is in kube-system: the namespace's deletion does not take it.
    let cleanup = match system.delete("critical-pod", &now()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "Error cleanup pod `kube-system/critical-pod`: {e}"
        )),
    };
    result
        .and(cleanup)
        .and(preemption_after_each(&ctx, &nodes).await)
}

/// The pods of the namespace seen created, by ReplicaSet (the pod informer of
/// PreemptionExecutionPath): the names of pods whose name starts "rs-pod1", "rs-pod2",
/// "rs-pod3". Stops with the test.
struct PodsSeen {
    seen: Arc<Mutex<[BTreeSet<String>; 3]>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodsSeen {
    async fn start(ctx: &Ctx) -> anyhow::Result<PodsSeen> {
        let api: Api<Pod> = ctx.namespaced();
        let seen: Arc<Mutex<[BTreeSet<String>; 3]>> = Arc::default();
        let (synced, on_sync) = tokio::sync::oneshot::channel();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut synced = Some(synced);
            let mut events =
                std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        let name = p.name_any();
                        let prefixes = ["rs-pod1", "rs-pod2", "rs-pod3"];
                        for (i, prefix) in prefixes.into_iter().enumerate() {
                            if name.starts_with(prefix) {
                                record.lock().expect("not poisoned")[i].insert(name.clone());
                            }
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = synced.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
        let seen = PodsSeen { seen, task };
        tokio::time::timeout(Duration::from_secs(30), on_sync)
            .await
            .map_err(|_| anyhow::anyhow!("the pod watch did not sync within 30s"))?
            .map_err(|_| anyhow::anyhow!("the pod watch ended before it synced"))?;
        Ok(seen)
    }

    fn counts(&self) -> [usize; 3] {
        let seen = self.seen.lock().expect("not poisoned");
        [seen[0].len(), seen[1].len(), seen[2].len()]
    }
}

impl Drop for PodsSeen {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// preemption.go's runPauseRS: a ReplicaSet "rs-<pod name>" of the pause pod, its replicas
/// available.
async fn run_pause_rs(ctx: &Ctx, replicas: i32, conf: &PausePod<'_>) -> anyhow::Result<()> {
    let pod = conf.object();
    let name = format!("rs-{}", conf.name);
    let rs: ReplicaSet = from(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pod["metadata"]["labels"]},
            "template": {"metadata": {"labels": pod["metadata"]["labels"]}, "spec": pod["spec"]},
        }
    }))?;
    let api: Api<ReplicaSet> = ctx.namespaced();
    api.create(&PostParams::default(), &rs)
        .await
        .with_context(|| format!("creating replica set {name}"))?;
    eventually(
        WAIT,
        &format!("replica set {name} to have {replicas} available replicas"),
        || async {
            let rs = api.get(&name).await?;
            let status = rs.status.clone().unwrap_or_default();
            let observed =
                status.observed_generation.unwrap_or(0) >= rs.metadata.generation.unwrap_or(0);
            Ok((observed && status.available_replicas.unwrap_or(0) == replicas).then_some(()))
        },
    )
    .await
}

/// PreemptionExecutionPath's classes p1..p4.
const PATH_PRIORITIES: [(&str, i32); 4] = [("p1", 1), ("p2", 2), ("p3", 3), ("p4", 4)];

/// preemption.go: "PreemptionExecutionPath runs ReplicaSets to verify preemption running
/// path". Three ReplicaSets of priorities 1..3 take 200, 300 and 450 of a node's 1000 fake
/// CPU; a pod of priority 4 asking 500 preempts the pods of the first two, each exactly once,
/// and never the third's.
async fn preemption_execution_path(ctx: Ctx) -> anyhow::Result<()> {
    // The outer Describe's BeforeEach runs first.
    let nodes = preemption_before_each(&ctx).await?;
    let mut node: Option<String> = None;
    let result = async {
        let name = node_that_can_run_pod(&ctx).await?;
        let api: Api<Node> = ctx.cluster();
        let object = api.get(&name).await?;
        let hostname = object
            .labels()
            .get("kubernetes.io/hostname")
            .cloned()
            .with_context(|| {
                format!("error getting kubernetes.io/hostname label on node {name}")
            })?;
        node = Some(name.clone());
        add_extended_resource(&ctx, &name, FAKE_CPU, "1000").await?;
        create_priority_classes(&ctx, &PATH_PRIORITIES).await?;

        let seen = PodsSeen::start(&ctx).await?;
        let selector = json!({"kubernetes.io/hostname": hostname});
        let replica_sets = [
            ("pod1", "p1", "200"),
            ("pod2", "p2", "300"),
            ("pod3", "p3", "450"),
        ];
        for (pod, class, amount) in replica_sets {
            run_pause_rs(
                &ctx,
                1,
                &PausePod {
                    name: pod,
                    labels: json!({"name": pod}),
                    priority_class: class,
                    node_selector: selector.clone(),
                    resources: limits_and_requests(FAKE_CPU, amount),
                    ..Default::default()
                },
            )
            .await?;
        }

        let pods: Api<Pod> = ctx.namespaced();
        create_pause_pod(
            &pods,
            &PausePod {
                name: "pod4",
                labels: json!({"name": "pod4"}),
                priority_class: "p4",
                node_selector: selector.clone(),
                resources: limits_and_requests(FAKE_CPU, "500"),
                ..Default::default()
            },
        )
        .await?;
        // waitForPreemptingWithTimeout: the preemptor gets a node.
        eventually_every(
            Duration::from_secs(2),
            WAIT,
            "pod4 to preempt other pods (spec.nodeName set)",
            || async {
                let p = pods.get("pod4").await?;
                Ok(node_of(&p).is_some().then_some(()))
            },
        )
        .await?;

        // The pods of ReplicaSets 1 and 2 are preempted once each (so two pods seen of each),
        // ReplicaSet 3's never.
        let expected = [2usize, 2, 1];
        eventually_every(
            Duration::from_secs(2),
            Duration::from_secs(60),
            &format!("pod creations of rs1..rs3 to be {expected:?}"),
            || async {
                let got = seen.counts();
                for (i, (n, want)) in got.iter().zip(expected).enumerate() {
                    if *n > want {
                        bail!(
                            "rs{} had more than {want} pods created: {n} (pods created so far: \
                             {got:?})",
                            i + 1
                        );
                    }
                }
                Ok((got == expected).then_some(()))
            },
        )
        .await
        .with_context(|| {
            format!(
                "failed pod observation expectations (pods created so far: {:?})",
                seen.counts()
            )
        })?;
        // And it stays so: no over-preemption.
        tokio::time::sleep(Duration::from_secs(5)).await;
        for (i, (n, want)) in seen.counts().into_iter().zip(expected).enumerate() {
            ensure!(
                n >= want,
                "pods of ReplicaSet{} have been under-preempted: expect {want} pod names, but \
                 got {n}",
                i + 1
            );
            ensure!(
                n <= want,
                "pods of ReplicaSet{} have been over-preempted: expect {want} pod names, but \
                 got {n}",
                i + 1
            );
        }
        Ok(())
    }
    .await;
    let mut cleanup = Ok(());
    if let Some(node) = &node
        && let Err(e) = remove_extended_resource(&ctx, node, FAKE_CPU).await
    {
        cleanup = Err(e);
    }
    delete_priority_classes(&ctx, &PATH_PRIORITIES).await;
    result
        .and(cleanup)
        .and(preemption_after_each(&ctx, &nodes).await)
}

/// e2epod.PodClient's RemoveFinalizer: the pod updated without the finalizer.
async fn remove_finalizer(api: &Api<Pod>, name: &str, finalizer: &str) -> anyhow::Result<()> {
    retry_on_conflict(|| async {
        let mut pod = api.get(name).await?;
        if let Some(list) = pod.metadata.finalizers.as_mut() {
            list.retain(|f| f != finalizer);
        }
        api.replace(name, &PostParams::default(), &pod).await
    })
    .await
    .with_context(|| format!("removing finalizer {finalizer} from pod {name}"))?;
    Ok(())
}

/// preemption.go: "validates pod disruption condition is added to the preempted pod". A
/// low-priority pod (kept by a finalizer) takes the node's one fake resource; the
/// high-priority pod asking it preempts it, and the victim carries DisruptionTarget.
async fn preempted_pod_disruption_condition(ctx: Ctx) -> anyhow::Result<()> {
    let nodes = preemption_before_each(&ctx).await?;
    let api: Api<Pod> = ctx.namespaced();
    let mut victim_created = false;
    let result = async {
        let node = nodes
            .first()
            .context("We need at least one node for the test to run")?
            .name_any();
        add_extended_resource(&ctx, &node, FOO, "1").await?;
        let affinity = affinity_to_node(&node);
        create_pause_pod(
            &api,
            &PausePod {
                name: "victim-pod",
                priority_class: LOW,
                resources: limits_and_requests(FOO, "1"),
                finalizers: json!([TEST_FINALIZER]),
                affinity: affinity.clone(),
                ..Default::default()
            },
        )
        .await?;
        victim_created = true;
        wait_running(&api, "victim-pod").await?;

        create_pause_pod(
            &api,
            &PausePod {
                name: "preemptor-pod",
                priority_class: HIGH,
                resources: limits_and_requests(FOO, "1"),
                affinity,
                ..Default::default()
            },
        )
        .await?;

        // WaitForPodTerminatingInNamespaceTimeout: the victim is being deleted.
        eventually(WAIT, "the victim pod to be terminating", || async {
            let p = api.get("victim-pod").await?;
            Ok(p.metadata.deletion_timestamp.is_some().then_some(()))
        })
        .await?;
        // VerifyPodHasConditionWithType.
        let victim = api.get("victim-pod").await?;
        let has = victim
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "DisruptionTarget"));
        ensure!(
            has,
            "pod \"victim-pod\" should have the condition: \"DisruptionTarget\", pod status: {:?}",
            victim.status
        );
        Ok(())
    }
    .await;
    // So the victim can go (upstream defers this once the victim runs; here whenever it was
    // made, lest its namespace be kept by it).
    let cleanup = if victim_created {
        remove_finalizer(&api, "victim-pod", TEST_FINALIZER).await
    } else {
        Ok(())
    };
    result
        .and(cleanup)
        .and(preemption_after_each(&ctx, &nodes).await)
}

// ---------------------------------------------------------------------------------------------
// [sig-architecture] Conformance Tests
// ---------------------------------------------------------------------------------------------

/// framework.TestContext.NonblockingTaints' default: nodes so tainted need only be Ready.
const NONBLOCKING_TAINTS: [&str; 1] = ["node-role.kubernetes.io/control-plane"];

/// e2enode.WaitForAllNodesSchedulable: every node not cordoned is ready for tests (upstream
/// polls every 30s for ten minutes; here every 2s within the harness's limit).
async fn wait_all_nodes_schedulable(ctx: &Ctx) -> anyhow::Result<()> {
    let api: Api<Node> = ctx.cluster();
    eventually_every(
        Duration::from_secs(2),
        WAIT,
        "all nodes to be schedulable",
        || async {
            let nodes = api.list(&ListParams::default()).await?.items;
            let not_ready: Vec<String> = nodes
                .iter()
                .filter(|n| {
                    !n.spec
                        .as_ref()
                        .and_then(|s| s.unschedulable)
                        .unwrap_or(false)
                })
                .filter(|n| {
                    let nonblocking = taints(n)
                        .iter()
                        .any(|t| NONBLOCKING_TAINTS.contains(&t.key.as_str()));
                    // readyForTests
                    if nonblocking {
                        !node_ready(n)
                    } else {
                        !(node_schedulable(n) && node_untainted(n))
                    }
                })
                .map(|n| n.name_any())
                .collect();
            Ok(not_ready.is_empty().then_some(()))
        },
    )
    .await
}

/// architecture/conformance.go: "should have at least two untainted nodes".
async fn two_untainted_nodes(ctx: Ctx) -> anyhow::Result<()> {
    wait_all_nodes_schedulable(&ctx).await?;
    let nodes = ready_schedulable_nodes(&ctx).await?;
    ensure!(
        nodes.len() >= 2,
        "Conformance requires at least two nodes (found {}: {:?})",
        nodes.len(),
        names(&nodes)
    );
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::milli_value;

    #[test]
    fn milli_values_round_up() {
        assert_eq!(milli_value("32").unwrap(), 32_000);
        assert_eq!(milli_value("22400m").unwrap(), 22_400);
        assert_eq!(milli_value("1.5").unwrap(), 1_500);
        assert_eq!(milli_value("100n").unwrap(), 1);
        assert_eq!(milli_value("1k").unwrap(), 1_000_000);
        assert_eq!(milli_value("1Ki").unwrap(), 1_024_000);
        assert_eq!(milli_value("2e3").unwrap(), 2_000_000);
        assert!(milli_value("abc").is_err());
    }
}
