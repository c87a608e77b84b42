//! Simulated nodes (kwok-style): N nodes registered with capacity, their Leases kept fresh,
//! and the pods bound to them driven as a kubelet would report them, though no container runs.
//!
//! A pod starts at once: Running, its init containers Completed. A container is Ready at once
//! unless it has a readiness probe: then only once the probe's `initialDelaySeconds` have passed
//! since it started, and never when the probe cannot succeed (an exec of `false`, or an HTTP GET
//! or TCP connection to a port the container does not declare, when it declares any); the pod's
//! Ready and ContainersReady conditions follow, worded as upstream's status manager words them.
//! No readiness probe restarts a container. Pods that do not restart finish after a moment (the
//! N seconds of a `sleep N` command, or of the `kelp.dev/simulate-duration` annotation; never,
//! when a container is one that serves or pauses until stopped, such as agnhost or pause
//! without a command), Succeeded, or Failed when their command is `false` or the
//! `kelp.dev/simulate-exit-code` annotation says so. A restartPolicy OnFailure pod that fails is
//! not finished: its containers are restarted in place and counted in restartCount. Deleted
//! pods are removed once "stopped".
//!
//! An init container whose command fails (as a regular container's would) holds the pod back:
//! the app containers wait, PodInitializing, and the pod is not Initialized. With restartPolicy
//! Never the pod has Failed; else the init container is restarted, after a back-off, for as long
//! as the pod lives, and the pod stays Pending. A pod active longer than its
//! `activeDeadlineSeconds` (from its start time; the field may be lowered on a running pod) is
//! failed as upstream's kubelet fails it: DeadlineExceeded, its containers killed.
//!
//! So that one Job template can give its indexes different fates, the
//! `kelp.dev/simulate-exit-code-by-index` and `kelp.dev/simulate-duration-by-index` annotations
//! (`"1=1,3=42"`: completion index `=` value, comma-separated) set the exit code and the run
//! time of a pod whose `batch.kubernetes.io/job-completion-index` annotation is a listed index,
//! before the rules above; a pod of an unlisted index (or of no index) follows those rules.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Node, Pod, PodCondition, PodIP, PodSpec, Probe,
    Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use crate::node::{self, Capacity};

/// The annotation whose value is a finished pod's exit code.
pub const EXIT_CODE: &str = "kelp.dev/simulate-exit-code";
/// The annotation whose value is how long (seconds) a pod that does not restart runs.
pub const DURATION: &str = "kelp.dev/simulate-duration";
/// The annotation giving exit codes by completion index (`"1=1,3=42"`).
pub const EXIT_CODE_BY_INDEX: &str = "kelp.dev/simulate-exit-code-by-index";
/// The annotation giving run times (seconds) by completion index (`"0=1"`).
pub const DURATION_BY_INDEX: &str = "kelp.dev/simulate-duration-by-index";
/// The completion index the job controller gives each pod of an Indexed job.
const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The label every simulated node carries.
pub const SIMULATED: &str = "kelp.dev/simulated";

#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    pub prefix: String,
    pub capacity: Capacity,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

/// What the pod reconciler knows: the simulated nodes by name (with their index, which
/// places their pod addresses).
struct Ctx {
    client: kube::Client,
    nodes: HashMap<String, usize>,
}

fn node_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i}")
}

fn node_ip(i: usize) -> String {
    format!(
        "172.{}.{}.{}",
        16 + (i >> 16) % 16,
        (i >> 8) & 255,
        (i & 255).max(1)
    )
}

/// Runs the simulated nodes until the process ends.
pub async fn run(client: kube::Client, options: Options) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    let mut labels = options.labels.clone();
    labels.insert(SIMULATED.into(), "true".into());
    let objects: Vec<Node> = (0..options.nodes)
        .map(|i| {
            let mut n = node::node_object(
                &node_name(&options.prefix, i),
                &node_ip(i),
                &options.capacity,
                &labels,
            );
            if !options.taints.is_empty() {
                n.spec.get_or_insert_default().taints = Some(options.taints.clone());
            }
            n
        })
        .collect();
    let registered: Vec<anyhow::Result<Node>> = futures::stream::iter(objects.iter())
        .map(|n| node::register(&client, n))
        .buffered(32)
        .collect()
        .await;
    for r in registered {
        nodes.push(r?);
    }
    tracing::info!(nodes = nodes.len(), "simulated nodes registered");
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        nodes: (0..options.nodes)
            .map(|i| (node_name(&options.prefix, i), i))
            .collect(),
    });
    let heartbeats = heartbeat(client.clone(), nodes);
    let pods =
        kelp_client::Informer::<Pod>::spawn(Api::all(client.clone()), watcher::Config::default());
    let controller = Controller::for_stream(pods.changes(), pods.store())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            ctx,
        )
        .for_each(|_| async {});
    tokio::select! {
        r = heartbeats => r,
        _ = controller => Err(anyhow::anyhow!("the pod watch ended")),
    }
}

/// Renews every node's Lease each 10 s, and its Ready condition's heartbeat every 5 min
/// (upstream's nodeStatusReportFrequency when leases carry the heartbeat).
async fn heartbeat(client: kube::Client, nodes: Vec<Node>) -> anyhow::Result<()> {
    let mut tick = 0u64;
    loop {
        let renewed: Vec<anyhow::Result<()>> = futures::stream::iter(nodes.iter())
            .map(|n| node::renew_lease(&client, n))
            .buffer_unordered(32)
            .collect()
            .await;
        for r in renewed {
            if let Err(e) = r {
                tracing::debug!(error = %e, "cannot renew a node lease");
            }
        }
        if tick % 30 == 29 {
            let api: Api<Node> = Api::all(client.clone());
            let now = Time(jiff::Timestamp::now());
            for n in &nodes {
                let patch = json!({"status": {"conditions": node::conditions(&now)}});
                let _ = api
                    .patch_status(
                        &n.name_any(),
                        &PatchParams::default(),
                        &Patch::Strategic(&patch),
                    )
                    .await;
            }
        }
        tick += 1;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

#[derive(Debug)]
struct Failed(kube::Error);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Failed {}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, Failed> {
    let spec = pod.spec.clone().unwrap_or_default();
    let Some(&index) = spec.node_name.as_ref().and_then(|n| ctx.nodes.get(n)) else {
        return Ok(Action::await_change());
    };
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let name = pod.name_any();
    if pod.metadata.deletion_timestamp.is_some() {
        // Stopped at once: the kubelet's last word is the deletion with no grace left.
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        return match api.delete(&name, &params).await {
            Ok(_) => Ok(Action::await_change()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                Ok(Action::await_change())
            }
            Err(e) => Err(Failed(e)),
        };
    }
    let patch = match next_step(&pod, index, Timestamp::now()) {
        Step::Wait(after) => return Ok(wait(after)),
        Step::Report(patch) => patch,
    };
    let reported = match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(p) => p,
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
            return Ok(Action::await_change());
        }
        Err(e) => return Err(Failed(e)),
    };
    // The report comes back through the watch as well; this sets the timer of what is next
    // should that event be merged with another.
    Ok(match next_step(&reported, index, Timestamp::now()) {
        Step::Wait(after) => wait(after),
        Step::Report(_) => Action::requeue(Duration::from_secs(1)),
    })
}

/// What the simulated kubelet does next with a pod bound to one of its nodes.
#[derive(Debug)]
enum Step {
    /// Report this status (a merge patch of the pod's status).
    Report(serde_json::Value),
    /// Nothing for this many seconds, or (None) until the pod changes.
    Wait(Option<f64>),
}

/// The requeue of a [`Step::Wait`]: never sooner than 50 ms, nor later than a day (a look
/// then costs nothing and keeps absurd annotations from overflowing the timer).
fn wait(after: Option<f64>) -> Action {
    match after {
        Some(s) if s.is_nan() => Action::requeue(Duration::from_millis(50)),
        Some(s) => Action::requeue(Duration::from_secs_f64(s.clamp(0.05, 86_400.0))),
        None => Action::await_change(),
    }
}

/// The sooner of a wait and `seconds` (a NaN, from an odd annotation, is no wait).
fn sooner(wait: Option<f64>, seconds: f64) -> Option<f64> {
    if seconds.is_nan() {
        return wait;
    }
    Some(wait.map_or(seconds, |w| w.min(seconds)))
}

fn secs_since(then: Timestamp, now: Timestamp) -> f64 {
    now.duration_since(then).as_secs_f64()
}

/// What is next for the pod as of `now`: started (or held back by a failing init container)
/// when Pending; when Running, failed once past its active deadline, finished (or restarted)
/// once its run time is up if it does not restart, and its containers' readiness brought up to
/// date; nothing once it has ended.
fn next_step(pod: &Pod, index: usize, now: Timestamp) -> Step {
    let spec = pod.spec.clone().unwrap_or_default();
    let at = Time(now);
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    if phase != "Pending" && phase != "Running" {
        return Step::Wait(None);
    }
    let mut wake = None;
    if let Some(left) = deadline_left(pod, now) {
        if left <= 0.0 {
            return Step::Report(deadline_exceeded(pod, &at));
        }
        wake = sooner(wake, left);
    }
    if phase == "Pending" {
        return match failing_init(&spec) {
            None => Step::Report(running(pod, index, &at)),
            Some((failing, code)) => init_step(pod, index, failing, code, now, wake),
        };
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if policy != "Always" {
        let runs_for = run_time(pod);
        if runs_for.is_finite() {
            let ran = secs_since(last_started(pod).unwrap_or(now), now);
            if ran >= runs_for {
                let failed = exit_code(pod) != 0;
                return Step::Report(if policy == "OnFailure" && failed {
                    restarted(pod, &at)
                } else {
                    finished(pod, &at)
                });
            }
            wake = sooner(wake, runs_for - ran);
        }
    }
    match readiness(pod, now) {
        Step::Wait(Some(due)) => Step::Wait(sooner(wake, due)),
        Step::Wait(None) => Step::Wait(wake),
        report => report,
    }
}

/// When the pod's containers last (re)started, else its start time.
fn last_started(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
        .map(|t| t.0)
        .max()
        .or(status.start_time.as_ref().map(|t| t.0))
}

// ---------------------------------------------------------------------------------------------
// Statuses and conditions
// ---------------------------------------------------------------------------------------------

/// The waiting reason of the containers an init container holds back.
const POD_INITIALIZING: &str = "PodInitializing";

fn condition(type_: &str, status: &str, now: &Time) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    }
}

/// A False condition with its reason and message (none when empty).
fn condition_false(type_: &str, reason: &str, message: String, now: &Time) -> PodCondition {
    PodCondition {
        reason: Some(reason.into()),
        message: (!message.is_empty()).then_some(message),
        ..condition(type_, "False", now)
    }
}

/// The Ready and ContainersReady conditions of a pod whose app containers have these
/// statuses, worded as upstream's status manager words them (pkg/kubelet/status/generate.go:
/// Go prints the names as `[a b]`).
fn ready_conditions(containers: &[ContainerStatus], now: &Time) -> Vec<PodCondition> {
    let unready: Vec<&str> = containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    ["Ready", "ContainersReady"]
        .into_iter()
        .map(|t| {
            if unready.is_empty() {
                condition(t, "True", now)
            } else {
                let message = format!("containers with unready status: [{}]", unready.join(" "));
                condition_false(t, "ContainersNotReady", message, now)
            }
        })
        .collect()
}

/// The Ready and ContainersReady conditions of a pod that has ended (`PodCompleted` or
/// `PodFailed`).
fn ended_conditions(reason: &str, now: &Time) -> Vec<PodCondition> {
    ["Ready", "ContainersReady"]
        .into_iter()
        .map(|t| condition_false(t, reason, String::new(), now))
        .collect()
}

/// `updates` laid over the pod's present conditions, as the kubelet's status manager lays its
/// own: a condition whose status is unchanged keeps its lastTransitionTime, and conditions of
/// other types (the scheduler's, readiness gates') are kept.
fn merged_conditions(pod: &Pod, updates: Vec<PodCondition>) -> Vec<PodCondition> {
    let present = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut merged: Vec<PodCondition> = updates
        .into_iter()
        .map(|mut update| {
            let same = present
                .iter()
                .find(|p| p.type_ == update.type_ && p.status == update.status);
            if let Some(same) = same {
                update.last_transition_time = same.last_transition_time.clone();
            }
            update
        })
        .collect();
    let others: Vec<PodCondition> = present
        .into_iter()
        .filter(|p| !merged.iter().any(|m| m.type_ == p.type_))
        .collect();
    merged.extend(others);
    merged
}

fn container_id(uid: &str, name: &str) -> String {
    format!("kelp-simulated://{uid}/{name}")
}

fn pod_ip(pod: &Pod, index: usize) -> String {
    // The uid spreads a node's pods over its /24.
    let spread = pod
        .metadata
        .uid
        .as_deref()
        .unwrap_or("")
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    format!(
        "10.{}.{}.{}",
        100 + (index >> 8) % 100,
        index & 255,
        2 + spread % 250
    )
}

/// A container's status in `state`: one that was created has its image and container IDs, one
/// still waiting has neither; Started while it runs.
fn container_status(c: &Container, uid: &str, state: ContainerState) -> ContainerStatus {
    let image = c.image.clone().unwrap_or_default();
    let created = state.waiting.is_none();
    ContainerStatus {
        name: c.name.clone(),
        image_id: if created {
            format!("kelp-simulated://{image}")
        } else {
            String::new()
        },
        image,
        container_id: created.then(|| container_id(uid, &c.name)),
        started: Some(state.running.is_some()),
        state: Some(state),
        ..Default::default()
    }
}

fn running_state(now: &Time) -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(now.clone()),
        }),
        ..Default::default()
    }
}

/// A container's end: `Completed` when it exited 0, else `Error`.
fn terminated_state(code: i32, started: Time, now: &Time, id: Option<String>) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
            started_at: Some(started),
            finished_at: Some(now.clone()),
            container_id: id,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiting_state(reason: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: None,
        }),
        ..Default::default()
    }
}

/// The status of a pod whose containers all started (its init containers Completed), each
/// Ready as [`ready_after`] says.
fn running(pod: &Pod, index: usize, now: &Time) -> serde_json::Value {
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let containers: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| ContainerStatus {
            ready: ready_after(c).is_some_and(|delay| delay <= 0.0),
            ..container_status(c, &uid, running_state(now))
        })
        .collect();
    let inits: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            let done = terminated_state(0, now.clone(), now, Some(container_id(&uid, &c.name)));
            ContainerStatus {
                ready: true,
                ..container_status(c, &uid, done)
            }
        })
        .collect();
    let mut conditions = vec![
        condition("PodReadyToStartContainers", "True", now),
        condition("Initialized", "True", now),
    ];
    conditions.extend(ready_conditions(&containers, now));
    conditions.push(condition("PodScheduled", "True", now));
    let host_ip = node_ip(index);
    let ip = pod_ip(pod, index);
    json!({"status": {
        "phase": "Running",
        "conditions": merged_conditions(pod, conditions),
        "hostIP": host_ip,
        "hostIPs": [HostIP { ip: host_ip.clone() }],
        "podIP": ip,
        "podIPs": [PodIP { ip: ip.clone() }],
        "startTime": start_time(pod, now),
        "containerStatuses": containers,
        "initContainerStatuses": if inits.is_empty() { serde_json::Value::Null } else { json!(inits) },
    }})
}

/// The pod's start time: the one it has (the kubelet never moves it), else now.
fn start_time(pod: &Pod, now: &Time) -> Time {
    pod.status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(|| now.clone())
}

// ---------------------------------------------------------------------------------------------
// Readiness probes
// ---------------------------------------------------------------------------------------------

/// How long (seconds) after it starts a container is Ready: at once without a readiness probe;
/// with one, once its `initialDelaySeconds` have passed (the first probe is taken to succeed);
/// never (None) when the probe cannot succeed ([`probe_can_succeed`]).
fn ready_after(c: &Container) -> Option<f64> {
    let Some(probe) = &c.readiness_probe else {
        return Some(0.0);
    };
    if !probe_can_succeed(c, probe) {
        return None;
    }
    Some(f64::from(probe.initial_delay_seconds.unwrap_or(0).max(0)))
}

/// Whether a probe could ever succeed: not an exec of `false`, nor an HTTP GET or TCP
/// connection to a port the container does not declare. A port is found as the kubelet's prober
/// finds it (extractPort in pkg/kubelet/prober/prober.go): a name among the container's named
/// ports, else a name that is a number is that number. A numeric port is taken on trust when the
/// container declares no ports at all, as many images serve ports their pods never list.
fn probe_can_succeed(c: &Container, probe: &Probe) -> bool {
    let command = probe.exec.as_ref().and_then(|e| e.command.as_deref());
    if let Some(first) = command.and_then(|c| c.first())
        && (first == "false" || first == "/bin/false")
    {
        return false;
    }
    let port = probe
        .http_get
        .as_ref()
        .map(|h| &h.port)
        .or(probe.tcp_socket.as_ref().map(|t| &t.port));
    let declared = c.ports.as_deref().unwrap_or_default();
    let number = match port {
        None => return true,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => {
            if declared
                .iter()
                .any(|p| p.name.as_deref() == Some(name.as_str()))
            {
                return true;
            }
            match name.parse::<i32>() {
                Ok(n) => n,
                Err(_) => return false,
            }
        }
    };
    declared.is_empty() || declared.iter().any(|p| p.container_port == number)
}

/// The running containers' readiness brought up to date as of `now`: the status to report when
/// a container's changed, else how long until the next one turns Ready.
fn readiness(pod: &Pod, now: Timestamp) -> Step {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let mut changed = false;
    let mut due = None;
    for status in &mut statuses {
        let Some(c) = spec.containers.iter().find(|c| c.name == status.name) else {
            continue;
        };
        let started = status
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.as_ref());
        let Some(started) = started else {
            continue;
        };
        let ready = match ready_after(c) {
            None => false,
            Some(delay) => {
                let left = delay - secs_since(started.0, now);
                if left > 0.0 {
                    due = sooner(due, left);
                }
                left <= 0.0
            }
        };
        if status.ready != ready {
            status.ready = ready;
            changed = true;
        }
    }
    if !changed {
        return Step::Wait(due);
    }
    let at = Time(now);
    Step::Report(json!({"status": {
        "conditions": merged_conditions(pod, ready_conditions(&statuses, &at)),
        "containerStatuses": statuses,
    }}))
}

// ---------------------------------------------------------------------------------------------
// Active deadline
// ---------------------------------------------------------------------------------------------

/// The reason and message of upstream's active deadline handler
/// (pkg/kubelet/active_deadline.go).
const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";
/// The exit code of a container the runtime kills: 128 + SIGKILL.
const KILLED: i32 = 137;

/// Seconds left before the pod has been active longer than its spec.activeDeadlineSeconds,
/// counted from its status.startTime as upstream's activeDeadlineHandler counts them; None
/// without a deadline or before the pod started.
fn deadline_left(pod: &Pod, now: Timestamp) -> Option<f64> {
    let deadline = pod.spec.as_ref()?.active_deadline_seconds?;
    let start = pod.status.as_ref()?.start_time.as_ref()?.0;
    Some(deadline as f64 - secs_since(start, now))
}

/// The status of a pod past its active deadline: Failed, DeadlineExceeded, as the kubelet's
/// generateAPIPodStatus sets it when a sync handler evicts the pod; its running containers
/// killed (at once: the grace period is not simulated), those that never ran left waiting.
fn deadline_exceeded(pod: &Pod, now: &Time) -> serde_json::Value {
    let status = pod.status.clone().unwrap_or_default();
    let killed = |statuses: Option<Vec<ContainerStatus>>| {
        statuses.map(|statuses| {
            statuses
                .into_iter()
                .map(|mut c| {
                    let started = c
                        .state
                        .as_ref()
                        .and_then(|s| s.running.as_ref())
                        .map(|r| r.started_at.clone().unwrap_or_else(|| now.clone()));
                    if let Some(started) = started {
                        c.state = Some(terminated_state(
                            KILLED,
                            started,
                            now,
                            c.container_id.clone(),
                        ));
                        c.started = Some(false);
                    }
                    c.ready = false;
                    c
                })
                .collect::<Vec<_>>()
        })
    };
    let mut conditions = vec![condition("PodReadyToStartContainers", "False", now)];
    conditions.extend(ended_conditions("PodFailed", now));
    json!({"status": {
        "phase": "Failed",
        "reason": DEADLINE_EXCEEDED,
        "message": DEADLINE_MESSAGE,
        "conditions": merged_conditions(pod, conditions),
        "containerStatuses": killed(status.container_statuses),
        "initContainerStatuses": killed(status.init_container_statuses),
    }})
}

// ---------------------------------------------------------------------------------------------
// Init containers that fail
// ---------------------------------------------------------------------------------------------

/// The first init container whose command fails ([`command_exit_code`]), and its exit code. A
/// sidecar (an init container that restarts Always) runs beside the others and is not waited
/// on.
fn failing_init(spec: &PodSpec) -> Option<(usize, i32)> {
    spec.init_containers
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| c.restart_policy.as_deref() != Some("Always"))
        .map(|(i, c)| (i, command_exit_code(c)))
        .find(|(_, code)| *code != 0)
}

/// How long (seconds) the kubelet waits before restarting a container that has been restarted
/// `restarts` times: upstream's back-off (10 s, doubling, at most 5 min) at a tenth, so that a
/// crash loop shows in seconds.
fn restart_backoff(restarts: i32) -> f64 {
    2f64.powi(restarts.clamp(0, 5)).min(30.0)
}

/// A Pending pod whose init container `failing` fails with `code`: its first run reported;
/// then, unless the pod never restarts, that container run again once its back-off is over.
fn init_step(
    pod: &Pod,
    index: usize,
    failing: usize,
    code: i32,
    now: Timestamp,
    wake: Option<f64>,
) -> Step {
    let spec = pod.spec.clone().unwrap_or_default();
    let Some(c) = spec.init_containers.as_ref().and_then(|i| i.get(failing)) else {
        return Step::Wait(wake);
    };
    let last_run = pod
        .status
        .iter()
        .flat_map(|s| s.init_container_statuses.iter().flatten())
        .find(|s| s.name == c.name)
        .and_then(|s| {
            let finished = s
                .state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()?;
            Some((s.restart_count, finished.0))
        });
    let Some((restarts, finished)) = last_run else {
        return Step::Report(init_failed(pod, index, failing, code, &Time(now)));
    };
    if spec.restart_policy.as_deref() == Some("Never") {
        return Step::Wait(wake);
    }
    let left = restart_backoff(restarts) - secs_since(finished, now);
    if left > 0.0 {
        return Step::Wait(sooner(wake, left));
    }
    Step::Report(init_restarted(pod, c, code, &Time(now)))
}

/// The status of a pod whose init container `failing` exited with `code` on its first run, as
/// upstream's kubelet reports it: the init containers before it Completed, those after it and
/// the app containers waiting (PodInitializing), the pod not Initialized
/// (ContainersNotInitialized, naming the init containers not done). With restartPolicy Never
/// the pod has Failed; else it stays Pending while that container is restarted
/// ([`init_restarted`]).
fn init_failed(
    pod: &Pod,
    index: usize,
    failing: usize,
    code: i32,
    now: &Time,
) -> serde_json::Value {
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let never = spec.restart_policy.as_deref() == Some("Never");
    let ran = |c: &Container, code: i32| {
        let id = Some(container_id(&uid, &c.name));
        container_status(c, &uid, terminated_state(code, now.clone(), now, id))
    };
    let inits: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| match i.cmp(&failing) {
            Ordering::Less => ContainerStatus {
                ready: true,
                ..ran(c, 0)
            },
            Ordering::Equal => ran(c, code),
            Ordering::Greater => container_status(c, &uid, waiting_state(POD_INITIALIZING)),
        })
        .collect();
    let containers: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, &uid, waiting_state(POD_INITIALIZING)))
        .collect();
    let incomplete: Vec<&str> = inits
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            if never { "False" } else { "True" },
            now,
        ),
        condition_false(
            "Initialized",
            "ContainersNotInitialized",
            format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            ),
            now,
        ),
    ];
    if never {
        conditions.extend(ended_conditions("PodFailed", now));
    } else {
        conditions.extend(ready_conditions(&containers, now));
    }
    conditions.push(condition("PodScheduled", "True", now));
    let host_ip = node_ip(index);
    let ip = pod_ip(pod, index);
    json!({"status": {
        "phase": if never { "Failed" } else { "Pending" },
        "conditions": merged_conditions(pod, conditions),
        "hostIP": host_ip,
        "hostIPs": [HostIP { ip: host_ip.clone() }],
        "podIP": ip,
        "podIPs": [PodIP { ip: ip.clone() }],
        "startTime": start_time(pod, now),
        "containerStatuses": containers,
        "initContainerStatuses": inits,
    }})
}

/// The init container statuses once the failing init container `c` has run again and failed
/// again: its restart counted, its last run as its last state.
fn init_restarted(pod: &Pod, c: &Container, code: i32, now: &Time) -> serde_json::Value {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let statuses: Vec<ContainerStatus> = pod
        .status
        .iter()
        .flat_map(|s| s.init_container_statuses.iter().flatten())
        .map(|s| {
            if s.name != c.name {
                return s.clone();
            }
            let id = Some(container_id(&uid, &c.name));
            ContainerStatus {
                restart_count: s.restart_count + 1,
                last_state: s.state.clone(),
                ..container_status(c, &uid, terminated_state(code, now.clone(), now, id))
            }
        })
        .collect();
    json!({"status": {"initContainerStatuses": statuses}})
}

// ---------------------------------------------------------------------------------------------
// Run times and exit codes
// ---------------------------------------------------------------------------------------------

/// How long (seconds) a pod that does not restart runs: the figure the annotations give its
/// completion index or the pod; else forever (until deleted) when a container runs until
/// stopped ([`runs_until_stopped`]); else the longest `sleep N` among its containers' commands
/// (`sleep N` or `sh -c "sleep N"`), else a second.
fn run_time(pod: &Pod) -> f64 {
    if let Some(d) = by_index::<f64>(pod, DURATION_BY_INDEX).or_else(|| {
        pod.annotations()
            .get(DURATION)
            .and_then(|d| d.parse::<f64>().ok())
    }) {
        return d;
    }
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.containers.iter().any(runs_until_stopped) {
        return f64::INFINITY;
    }
    spec.containers
        .iter()
        .filter_map(|c| {
            command_words(c)
                .windows(2)
                .filter(|w| w[0] == "sleep" || w[0].ends_with("/sleep"))
                .filter_map(|w| w[1].trim_end_matches([';', 's']).parse::<f64>().ok())
                .reduce(f64::max)
        })
        .reduce(f64::max)
        .unwrap_or(1.0)
}

/// The words of a container's command and arguments (`sh -c "sleep 5"` is `sh -c sleep 5`).
fn command_words(c: &Container) -> Vec<&str> {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .flat_map(|w| w.split_whitespace())
        .collect()
}

/// The agnhost subcommands that serve until stopped.
const AGNHOST_SERVERS: &[&str] = &[
    "pause",
    "netexec",
    "serve-hostname",
    "test-webserver",
    "porter",
    "liveness",
    "webhook",
    "crd-conversion-webhook",
    "guestbook",
];

/// Whether a container runs until it is stopped, as its image would on a real node: `sleep
/// infinity`; the images that serve or pause when given no command (pause, httpd, nginx,
/// redis; agnhost, whose default is `pause`); agnhost told to run one of its servers.
fn runs_until_stopped(c: &Container) -> bool {
    if command_words(c)
        .windows(2)
        .any(|w| (w[0] == "sleep" || w[0].ends_with("/sleep")) && w[1].starts_with("inf"))
    {
        return true;
    }
    // `registry.k8s.io/e2e-test-images/agnhost:2.53` → `agnhost`.
    let image = c.image.as_deref().unwrap_or_default();
    let image = image.split('@').next().unwrap_or_default();
    let base = image.rsplit('/').next().unwrap_or_default();
    let base = base.split(':').next().unwrap_or_default();
    if c.command.as_ref().is_some_and(|c| !c.is_empty()) {
        return false;
    }
    let args = c.args.as_deref().unwrap_or_default();
    match base {
        "pause" | "httpd" | "nginx" | "redis" => args.is_empty(),
        "agnhost" => args
            .first()
            .is_none_or(|a| AGNHOST_SERVERS.contains(&a.as_str())),
        _ => false,
    }
}

/// The value the by-index annotation `key` (`"1=1,3=42"`) gives the pod's completion index.
fn by_index<T: std::str::FromStr>(pod: &Pod, key: &str) -> Option<T> {
    let index: i64 = pod
        .annotations()
        .get(COMPLETION_INDEX)?
        .trim()
        .parse()
        .ok()?;
    pod.annotations().get(key)?.split(',').find_map(|pair| {
        let (i, value) = pair.split_once('=')?;
        if i.trim().parse::<i64>().ok()? != index {
            return None;
        }
        value.trim().parse().ok()
    })
}

/// The exit code a simulated pod finishes with: the one the annotations give its completion
/// index or the pod, else the first failing one of its containers' commands
/// ([`command_exit_code`]).
fn exit_code(pod: &Pod) -> i32 {
    if let Some(code) = by_index::<i32>(pod, EXIT_CODE_BY_INDEX).or_else(|| {
        pod.annotations()
            .get(EXIT_CODE)
            .and_then(|c| c.parse().ok())
    }) {
        return code;
    }
    let spec = pod.spec.clone().unwrap_or_default();
    spec.containers
        .iter()
        .map(command_exit_code)
        .find(|code| *code != 0)
        .unwrap_or(0)
}

/// The exit code of a container's command: `false` fails, `sh -c "exit N"` exits N, anything
/// else succeeds.
fn command_exit_code(c: &Container) -> i32 {
    let words: Vec<&str> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(String::as_str)
        .collect();
    if matches!(words.first(), Some(&"false") | Some(&"/bin/false")) {
        return 1;
    }
    // `sh -c "exit N"`: N (a script that is not a plain exit succeeds).
    words
        .windows(2)
        .filter(|w| w[0] == "-c")
        .find_map(|w| w[1].trim().strip_prefix("exit "))
        .map(|n| n.trim().parse::<i32>().unwrap_or(1))
        .unwrap_or(0)
}

/// The status of a restartPolicy OnFailure pod whose containers failed: restarted in place,
/// each with its restart counted, its last run's end as its last state and its readiness
/// starting over (the kubelet's back-off between restarts is not simulated).
fn restarted(pod: &Pod, now: &Time) -> serde_json::Value {
    let code = exit_code(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let statuses: Vec<ContainerStatus> = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| {
            let started = c
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.clone());
            let ready = spec
                .containers
                .iter()
                .find(|s| s.name == c.name)
                .and_then(ready_after)
                .is_some_and(|delay| delay <= 0.0);
            ContainerStatus {
                restart_count: c.restart_count + 1,
                ready,
                last_state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        reason: Some("Error".into()),
                        started_at: started,
                        finished_at: Some(now.clone()),
                        container_id: c.container_id.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                state: Some(running_state(now)),
                ..c.clone()
            }
        })
        .collect();
    json!({"status": {
        "conditions": merged_conditions(pod, ready_conditions(&statuses, now)),
        "containerStatuses": statuses,
    }})
}

/// The status of a pod whose containers exited.
fn finished(pod: &Pod, now: &Time) -> serde_json::Value {
    let code = exit_code(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let started = start_time(pod, now);
    let containers: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| {
            let id = Some(container_id(&uid, &c.name));
            container_status(c, &uid, terminated_state(code, started.clone(), now, id))
        })
        .collect();
    let (phase, reason) = if code == 0 {
        ("Succeeded", "PodCompleted")
    } else {
        ("Failed", "PodFailed")
    };
    let mut conditions = vec![
        condition("PodReadyToStartContainers", "False", now),
        condition("Initialized", "True", now),
    ];
    conditions.extend(ended_conditions(reason, now));
    conditions.push(condition("PodScheduled", "True", now));
    json!({"status": {
        "phase": phase,
        "conditions": merged_conditions(pod, conditions),
        "containerStatuses": containers,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: serde_json::Value, commands: serde_json::Value) -> Pod {
        let containers: Vec<serde_json::Value> = commands
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"name": format!("c{i}"), "image": "busybox", "command": c}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": annotations},
            "spec": {"containers": containers},
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_runs_as_long_as_its_sleep() {
        assert_eq!(run_time(&pod(json!({}), json!([["sleep", "300"]]))), 300.0);
        assert_eq!(
            run_time(&pod(
                json!({}),
                json!([["sh", "-c", "echo hi; sleep 5; exit 0"]])
            )),
            5.0
        );
        assert_eq!(
            run_time(&pod(
                json!({}),
                json!([["sleep", "2"], ["/bin/sleep", "7"]])
            )),
            7.0
        );
        assert_eq!(run_time(&pod(json!({}), json!([["true"]]))), 1.0);
        assert_eq!(
            run_time(&pod(json!({DURATION: "0.5"}), json!([["sleep", "300"]]))),
            0.5
        );
        assert_eq!(
            exit_code(&pod(json!({}), json!([["sh", "-c", "exit 3"]]))),
            3
        );
    }

    #[test]
    fn servers_and_pausers_run_until_deleted() {
        let with = |image: &str, command: serde_json::Value, args: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [
                    {"name": "a", "image": "busybox", "command": ["sleep", "3"]},
                    {"name": "b", "image": image, "command": command, "args": args},
                ]},
            }))
            .unwrap()
        };
        let agnhost = "registry.k8s.io/e2e-test-images/agnhost:2.53";
        assert!(run_time(&with(agnhost, json!(null), json!(null))).is_infinite());
        assert!(
            run_time(&with(
                agnhost,
                json!(null),
                json!(["netexec", "--http-port=8080"])
            ))
            .is_infinite()
        );
        assert!(
            run_time(&with(
                "registry.k8s.io/pause:3.10",
                json!(null),
                json!(null)
            ))
            .is_infinite()
        );
        assert!(run_time(&with("httpd:2.4", json!([]), json!(null))).is_infinite());
        assert!(
            run_time(&with("busybox", json!(["sleep", "infinity"]), json!(null))).is_infinite()
        );
        // A command of its own, or an agnhost tool that exits, finishes.
        assert_eq!(
            run_time(&with(agnhost, json!(null), json!(["dns-suffix"]))),
            3.0
        );
        assert_eq!(
            run_time(&with("httpd:2.4", json!(["true"]), json!(null))),
            3.0
        );
        assert_eq!(run_time(&with("busybox", json!(null), json!(null))), 3.0);
        // The duration annotation still decides first.
        let mut timed = with(agnhost, json!(null), json!(null));
        timed.metadata.annotations = Some([(DURATION.to_string(), "2".to_string())].into());
        assert_eq!(run_time(&timed), 2.0);
    }

    #[test]
    fn a_listed_completion_index_finishes_as_its_annotations_say() {
        let fates = json!({EXIT_CODE_BY_INDEX: "1=1, 3=42", DURATION_BY_INDEX: "0=0.5"});
        let of_index = |i: &str| {
            let mut annotations = fates.clone();
            annotations[COMPLETION_INDEX] = json!(i);
            pod(annotations, json!([["sleep", "300"]]))
        };
        assert_eq!(exit_code(&of_index("1")), 1);
        assert_eq!(exit_code(&of_index("3")), 42);
        assert_eq!(exit_code(&of_index("2")), 0);
        assert_eq!(run_time(&of_index("0")), 0.5);
        assert_eq!(run_time(&of_index("1")), 300.0);
        // No index: the command decides.
        assert_eq!(exit_code(&pod(fates.clone(), json!([["false"]]))), 1);
        assert_eq!(exit_code(&pod(fates, json!([["true"]]))), 0);
        // An unlisted index falls through to the pod's own annotation.
        let unlisted = json!({EXIT_CODE_BY_INDEX: "1=1", EXIT_CODE: "7", COMPLETION_INDEX: "2"});
        assert_eq!(exit_code(&pod(unlisted, json!([["true"]]))), 7);
    }

    /// A whole second after an arbitrary epoch: reported times keep whole seconds only.
    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    /// RFC 7386: how the API server applies the simulator's reports.
    fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        let Some(fields) = patch.as_object() else {
            *target = patch.clone();
            return;
        };
        if !target.is_object() {
            *target = json!({});
        }
        let object = target.as_object_mut().unwrap();
        for (key, value) in fields {
            if value.is_null() {
                object.remove(key);
            } else {
                merge(object.entry(key.clone()).or_insert(json!(null)), value);
            }
        }
    }

    /// The pod once `step`, which must be a report, is applied to it.
    fn reported(pod: &Pod, step: Step) -> Pod {
        let Step::Report(patch) = step else {
            panic!("expected a report, got {step:?}");
        };
        let mut value = serde_json::to_value(pod).unwrap();
        merge(&mut value, &patch);
        serde_json::from_value(value).unwrap()
    }

    fn waits(step: Step) -> Option<f64> {
        match step {
            Step::Wait(after) => after,
            Step::Report(patch) => panic!("expected a wait, got the report {patch}"),
        }
    }

    fn spec_pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn status(pod: &Pod) -> k8s_openapi::api::core::v1::PodStatus {
        pod.status.clone().unwrap_or_default()
    }

    fn get_condition(pod: &Pod, type_: &str) -> PodCondition {
        status(pod)
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"))
    }

    fn state_of(status: &ContainerStatus) -> &ContainerState {
        status.state.as_ref().unwrap()
    }

    #[test]
    fn a_readiness_probe_holds_readiness_for_its_initial_delay_or_forever_if_it_cannot_succeed() {
        let container = |probe: serde_json::Value, ports: serde_json::Value| -> Container {
            serde_json::from_value(json!({
                "name": "c", "image": "agnhost", "readinessProbe": probe, "ports": ports,
            }))
            .unwrap()
        };
        let eighty = json!([{"containerPort": 80, "name": "http"}]);
        assert_eq!(ready_after(&container(json!(null), json!(null))), Some(0.0));
        let delayed = json!({"httpGet": {"path": "/", "port": 80}, "initialDelaySeconds": 15});
        assert_eq!(ready_after(&container(delayed, eighty.clone())), Some(15.0));
        // A port the container does not serve, by number or by name.
        let http = |port: serde_json::Value| json!({"httpGet": {"path": "/", "port": port}});
        assert_eq!(
            ready_after(&container(http(json!(81)), eighty.clone())),
            None
        );
        assert_eq!(
            ready_after(&container(http(json!("http")), eighty.clone())),
            Some(0.0)
        );
        let tcp = |port: serde_json::Value| json!({"tcpSocket": {"port": port}});
        assert_eq!(
            ready_after(&container(tcp(json!("metrics")), eighty.clone())),
            None
        );
        // A name that is a number is that number.
        assert_eq!(
            ready_after(&container(tcp(json!("80")), eighty.clone())),
            Some(0.0)
        );
        assert_eq!(ready_after(&container(tcp(json!("81")), eighty)), None);
        // No ports declared: a number is taken on trust, a name cannot be found.
        assert_eq!(
            ready_after(&container(http(json!(8080)), json!(null))),
            Some(0.0)
        );
        assert_eq!(
            ready_after(&container(http(json!("http")), json!(null))),
            None
        );
        // An exec of `false` never succeeds.
        let exec = |command: serde_json::Value| json!({"exec": {"command": command}});
        assert_eq!(
            ready_after(&container(exec(json!(["/bin/false"])), json!(null))),
            None
        );
        assert_eq!(
            ready_after(&container(exec(json!(["false"])), json!(null))),
            None
        );
        let cat = exec(json!(["cat", "/tmp/health"]));
        assert_eq!(ready_after(&container(cat, json!(null))), Some(0.0));
    }

    #[test]
    fn a_pod_without_probes_is_running_and_ready_at_once() {
        let pending = spec_pod(json!({"containers": [
            {"name": "a", "image": "registry.k8s.io/pause:3.10"},
        ]}));
        let started = reported(&pending, next_step(&pending, 0, at(0)));
        assert_eq!(status(&started).phase.as_deref(), Some("Running"));
        assert_eq!(get_condition(&started, "Ready").status, "True");
        assert_eq!(get_condition(&started, "ContainersReady").status, "True");
        assert!(status(&started).container_statuses.unwrap()[0].ready);
        assert_eq!(waits(next_step(&started, 0, at(1))), None);
    }

    #[test]
    fn a_container_turns_ready_once_its_probe_s_initial_delay_has_passed() {
        let probe = json!({"httpGet": {"path": "/", "port": 80}, "initialDelaySeconds": 15});
        let pending = spec_pod(json!({"containers": [
            {"name": "web", "image": "registry.k8s.io/pause:3.10",
             "ports": [{"containerPort": 80}], "readinessProbe": probe},
            {"name": "never", "image": "registry.k8s.io/pause:3.10",
             "ports": [{"containerPort": 80}],
             "readinessProbe": {"tcpSocket": {"port": 81}}},
            {"name": "plain", "image": "registry.k8s.io/pause:3.10"},
        ]}));
        let started = reported(&pending, next_step(&pending, 0, at(0)));
        assert_eq!(status(&started).phase.as_deref(), Some("Running"));
        let ready = get_condition(&started, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [web never]")
        );
        assert_eq!(
            get_condition(&started, "ContainersReady").message,
            ready.message
        );
        // Nothing until the delay is over, counted from the container's start.
        assert_eq!(waits(next_step(&started, 0, at(5))), Some(10.0));
        let web_ready = reported(&started, next_step(&started, 0, at(15)));
        let statuses = status(&web_ready).container_statuses.unwrap();
        let ready: Vec<bool> = statuses.iter().map(|s| s.ready).collect();
        assert_eq!(ready, [true, false, true]);
        assert!(statuses.iter().all(|s| s.restart_count == 0));
        let still = get_condition(&web_ready, "Ready");
        assert_eq!(
            still.message.as_deref(),
            Some("containers with unready status: [never]")
        );
        // Its status did not change: it keeps the time it turned False.
        assert_eq!(still.last_transition_time, Some(Time(at(0))));
        // And the container whose probe cannot succeed is never Ready.
        assert_eq!(waits(next_step(&web_ready, 0, at(3600))), None);
    }

    #[test]
    fn the_ready_condition_turns_true_when_the_last_container_does() {
        let probe = json!({"exec": {"command": ["cat", "/tmp/ready"]}, "initialDelaySeconds": 5});
        let pending = spec_pod(json!({"containers": [
            {"name": "c", "image": "busybox", "command": ["sleep", "600"],
             "readinessProbe": probe},
        ]}));
        let started = reported(&pending, next_step(&pending, 0, at(0)));
        let ready = reported(&started, next_step(&started, 0, at(5)));
        let condition = get_condition(&ready, "Ready");
        assert_eq!(condition.status, "True");
        assert_eq!(condition.reason, None);
        assert_eq!(condition.last_transition_time, Some(Time(at(5))));
        assert_eq!(get_condition(&ready, "ContainersReady").status, "True");
    }

    #[test]
    fn a_pod_past_its_active_deadline_fails_with_deadline_exceeded() {
        let pending = spec_pod(json!({
            "activeDeadlineSeconds": 30,
            "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}],
        }));
        let started = reported(&pending, next_step(&pending, 0, at(0)));
        // A pod that runs until stopped still wakes for its deadline.
        assert_eq!(waits(next_step(&started, 0, at(10))), Some(20.0));
        // Lowered on the running pod: past it already.
        let mut lowered = started.clone();
        lowered.spec.as_mut().unwrap().active_deadline_seconds = Some(5);
        let failed = reported(&lowered, next_step(&lowered, 0, at(10)));
        let s = status(&failed);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some(DEADLINE_EXCEEDED));
        assert_eq!(
            s.message.as_deref(),
            Some("Pod was active on the node longer than the specified deadline")
        );
        let statuses = s.container_statuses.unwrap();
        let container = &statuses[0];
        assert!(!container.ready);
        let terminated = state_of(container).terminated.clone().unwrap();
        assert_eq!(terminated.exit_code, KILLED);
        assert_eq!(terminated.started_at, Some(Time(at(0))));
        assert_eq!(terminated.finished_at, Some(Time(at(10))));
        let ready = get_condition(&failed, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("PodFailed"))
        );
        assert_eq!(waits(next_step(&failed, 0, at(60))), None);
    }

    #[test]
    fn a_pod_that_finishes_first_is_not_failed_by_its_deadline() {
        let pending = spec_pod(json!({
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 60,
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "5"]}],
        }));
        let started = reported(&pending, next_step(&pending, 0, at(0)));
        assert_eq!(waits(next_step(&started, 0, at(0))), Some(5.0));
        let done = reported(&started, next_step(&started, 0, at(5)));
        assert_eq!(status(&done).phase.as_deref(), Some("Succeeded"));
        assert_eq!(status(&done).reason, None);
        assert_eq!(waits(next_step(&done, 0, at(120))), None);
    }

    fn init_pod(restart_policy: &str, init1: &str, init2: &str) -> Pod {
        spec_pod(json!({
            "restartPolicy": restart_policy,
            "initContainers": [
                {"name": "init1", "image": "busybox", "command": [init1]},
                {"name": "init2", "image": "busybox", "command": [init2]},
            ],
            "containers": [{"name": "run1", "image": "busybox", "command": ["/bin/true"]}],
        }))
    }

    fn waiting_reason(status: &ContainerStatus) -> Option<String> {
        state_of(status).waiting.as_ref()?.reason.clone()
    }

    #[test]
    fn the_first_failing_init_container_is_found_as_a_command_exit_code() {
        let spec = |inits: serde_json::Value| -> PodSpec {
            serde_json::from_value(json!({"containers": [], "initContainers": inits})).unwrap()
        };
        let init = |name: &str, command: serde_json::Value| json!({"name": name, "image": "busybox", "command": command});
        assert_eq!(
            failing_init(&spec(json!([
                init("a", json!(["/bin/true"])),
                init("b", json!(["sh", "-c", "exit 3"])),
                init("c", json!(["false"])),
            ]))),
            Some((1, 3))
        );
        assert_eq!(
            failing_init(&spec(json!([init("a", json!(["true"]))]))),
            None
        );
        // A sidecar is not waited on.
        let mut sidecar = init("s", json!(["false"]));
        sidecar["restartPolicy"] = json!("Always");
        assert_eq!(failing_init(&spec(json!([sidecar]))), None);
    }

    #[test]
    fn a_failing_init_container_fails_a_pod_that_never_restarts() {
        let pending = init_pod("Never", "/bin/true", "/bin/false");
        let failed = reported(&pending, next_step(&pending, 0, at(0)));
        let s = status(&failed);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let inits = s.init_container_statuses.unwrap();
        let init1 = state_of(&inits[0]).terminated.clone().unwrap();
        assert_eq!(
            (init1.exit_code, init1.reason.as_deref()),
            (0, Some("Completed"))
        );
        assert!(inits[0].ready);
        let init2 = state_of(&inits[1]).terminated.clone().unwrap();
        assert_eq!(
            (init2.exit_code, init2.reason.as_deref()),
            (1, Some("Error"))
        );
        assert!(!inits[1].ready);
        let statuses = s.container_statuses.unwrap();
        let app = &statuses[0];
        assert_eq!(waiting_reason(app).as_deref(), Some(POD_INITIALIZING));
        assert_eq!(app.restart_count, 0);
        let initialized = get_condition(&failed, "Initialized");
        assert_eq!(initialized.status, "False");
        assert_eq!(
            initialized.reason.as_deref(),
            Some("ContainersNotInitialized")
        );
        assert_eq!(
            initialized.message.as_deref(),
            Some("containers with incomplete status: [init2]")
        );
        assert_eq!(
            get_condition(&failed, "Ready").reason.as_deref(),
            Some("PodFailed")
        );
        assert_eq!(waits(next_step(&failed, 0, at(60))), None);
    }

    #[test]
    fn a_failing_init_container_is_restarted_with_back_off_while_the_pod_stays_pending() {
        let pending = init_pod("Always", "/bin/false", "/bin/true");
        let mut pod = reported(&pending, next_step(&pending, 0, at(0)));
        let s = status(&pod);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let inits = s.init_container_statuses.unwrap();
        let init1 = state_of(&inits[0]).terminated.clone().unwrap();
        assert_eq!((init1.exit_code, inits[0].restart_count), (1, 0));
        assert_eq!(inits[0].last_state, None);
        assert_eq!(waiting_reason(&inits[1]).as_deref(), Some(POD_INITIALIZING));
        let statuses = s.container_statuses.unwrap();
        let app = &statuses[0];
        assert_eq!(waiting_reason(app).as_deref(), Some(POD_INITIALIZING));
        let initialized = get_condition(&pod, "Initialized");
        assert_eq!(
            initialized.message.as_deref(),
            Some("containers with incomplete status: [init1 init2]")
        );
        assert_eq!(
            get_condition(&pod, "Ready").message.as_deref(),
            Some("containers with unready status: [run1]")
        );
        // Restarted after 1 s, 2 s, 4 s: each run fails again and becomes the last state.
        let mut clock = 0;
        for (restarts, backoff) in [(1, 1), (2, 2), (3, 4)] {
            assert_eq!(waits(next_step(&pod, 0, at(clock))), Some(backoff as f64));
            clock += backoff;
            pod = reported(&pod, next_step(&pod, 0, at(clock)));
            let s = status(&pod);
            assert_eq!(s.phase.as_deref(), Some("Pending"));
            let inits = s.init_container_statuses.unwrap();
            assert_eq!(inits[0].restart_count, restarts);
            let last = inits[0].last_state.clone().unwrap().terminated.unwrap();
            assert_eq!(last.exit_code, 1);
            let now = state_of(&inits[0]).terminated.clone().unwrap();
            assert_eq!((now.exit_code, now.finished_at), (1, Some(Time(at(clock)))));
            assert_eq!(waiting_reason(&inits[1]).as_deref(), Some(POD_INITIALIZING));
            assert_eq!(get_condition(&pod, "Initialized").status, "False");
        }
        assert_eq!(restart_backoff(0), 1.0);
        assert_eq!(restart_backoff(10), 30.0);
    }

    #[test]
    fn a_crash_looping_init_container_still_meets_the_pod_s_deadline() {
        let mut pending = init_pod("OnFailure", "false", "true");
        pending.spec.as_mut().unwrap().active_deadline_seconds = Some(3);
        let pod = reported(&pending, next_step(&pending, 0, at(0)));
        let pod = reported(&pod, next_step(&pod, 0, at(1)));
        // The next restart (2 s on) would come after the deadline (3 s from the start).
        assert_eq!(waits(next_step(&pod, 0, at(1))), Some(2.0));
        let failed = reported(&pod, next_step(&pod, 0, at(3)));
        let s = status(&failed);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some(DEADLINE_EXCEEDED));
        let statuses = s.container_statuses.unwrap();
        let app = &statuses[0];
        assert_eq!(waiting_reason(app).as_deref(), Some(POD_INITIALIZING));
    }
}
