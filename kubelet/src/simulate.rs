//! Simulated nodes (kwok-style): N nodes registered with capacity, their Leases kept fresh,
//! and the pods bound to them driven as a kubelet would report them: Running and Ready at
//! once; pods that do not restart finish after a moment (the N seconds of a `sleep N`
//! command, or of the `kelp.dev/simulate-duration` annotation; never, when a container is one
//! that serves or pauses until stopped, such as agnhost or pause without a command),
//! Succeeded, or Failed when their command is `false` or the `kelp.dev/simulate-exit-code`
//! annotation says so. A restartPolicy OnFailure pod that fails is not finished: its
//! containers are restarted in place and counted in restartCount. Deleted pods are removed
//! once "stopped". No containers run.
//!
//! So that one Job template can give its indexes different fates, the
//! `kelp.dev/simulate-exit-code-by-index` and `kelp.dev/simulate-duration-by-index` annotations
//! (`"1=1,3=42"`: completion index `=` value, comma-separated) set the exit code and the run
//! time of a pod whose `batch.kubernetes.io/job-completion-index` annotation is a listed index,
//! before the rules above; a pod of an unlisted index (or of no index) follows those rules.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, HostIP, Node,
    Pod, PodCondition, PodIP, Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
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
    let status = pod.status.clone().unwrap_or_default();
    let restarts = spec.restart_policy.as_deref().unwrap_or("Always") == "Always";
    let runs_for = run_time(&pod);
    let patch = match status.phase.as_deref() {
        None | Some("Pending") => running(&pod, index),
        Some("Running") if !restarts => {
            // Since the containers last (re)started.
            let started = status
                .container_statuses
                .iter()
                .flatten()
                .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                .map(|t| t.0)
                .max()
                .or(status.start_time.as_ref().map(|t| t.0))
                .unwrap_or_else(jiff::Timestamp::now);
            let ran = jiff::Timestamp::now().duration_since(started).as_secs_f64();
            if runs_for.is_infinite() {
                return Ok(Action::await_change());
            }
            if ran < runs_for {
                return Ok(Action::requeue(Duration::from_secs_f64(
                    (runs_for - ran).max(0.05),
                )));
            }
            let on_failure = spec.restart_policy.as_deref() == Some("OnFailure");
            if on_failure && exit_code(&pod) != 0 {
                restarted(&pod)
            } else {
                finished(&pod)
            }
        }
        _ => return Ok(Action::await_change()),
    };
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
            return Ok(Action::await_change());
        }
        Err(e) => return Err(Failed(e)),
    }
    if restarts || runs_for.is_infinite() {
        Ok(Action::await_change())
    } else {
        Ok(Action::requeue(Duration::from_secs_f64(runs_for.max(0.05))))
    }
}

fn condition(type_: &str, status: &str, now: &Time) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    }
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

/// The status of a pod whose containers all started.
fn running(pod: &Pod, index: usize) -> serde_json::Value {
    let now = Time(jiff::Timestamp::now());
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let containers: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: format!("kelp-simulated://{}", c.image.clone().unwrap_or_default()),
            container_id: Some(format!("kelp-simulated://{uid}/{}", c.name)),
            ready: true,
            started: Some(true),
            restart_count: 0,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(now.clone()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let inits: Vec<ContainerStatus> = spec
        .init_containers
        .unwrap_or_default()
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: format!("kelp-simulated://{}", c.image.clone().unwrap_or_default()),
            container_id: Some(format!("kelp-simulated://{uid}/{}", c.name)),
            ready: true,
            started: Some(false),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 0,
                    reason: Some("Completed".into()),
                    started_at: Some(now.clone()),
                    finished_at: Some(now.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let host_ip = node_ip(index);
    let ip = pod_ip(pod, index);
    json!({"status": {
        "phase": "Running",
        "conditions": [
            condition("PodReadyToStartContainers", "True", &now),
            condition("Initialized", "True", &now),
            condition("Ready", "True", &now),
            condition("ContainersReady", "True", &now),
            condition("PodScheduled", "True", &now),
        ],
        "hostIP": host_ip,
        "hostIPs": [HostIP { ip: host_ip.clone() }],
        "podIP": ip,
        "podIPs": [PodIP { ip: ip.clone() }],
        "startTime": now,
        "containerStatuses": containers,
        "initContainerStatuses": if inits.is_empty() { serde_json::Value::Null } else { json!(inits) },
    }})
}

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
            let words: Vec<&str> = c
                .command
                .iter()
                .flatten()
                .chain(c.args.iter().flatten())
                .flat_map(|w| w.split_whitespace())
                .collect();
            words
                .windows(2)
                .filter(|w| w[0] == "sleep" || w[0].ends_with("/sleep"))
                .filter_map(|w| w[1].trim_end_matches([';', 's']).parse::<f64>().ok())
                .reduce(f64::max)
        })
        .reduce(f64::max)
        .unwrap_or(1.0)
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
fn runs_until_stopped(c: &k8s_openapi::api::core::v1::Container) -> bool {
    let words: Vec<&str> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .flat_map(|w| w.split_whitespace())
        .collect();
    if words
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
/// index or the pod, else `false` fails and `sh -c "exit N"` exits N.
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
        .map(|c| {
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
        })
        .find(|code| *code != 0)
        .unwrap_or(0)
}

/// The status of a restartPolicy OnFailure pod whose containers failed: restarted in place,
/// each with its restart counted and its last run's end as its last state (the kubelet's
/// back-off between restarts is not simulated).
fn restarted(pod: &Pod) -> serde_json::Value {
    let now = Time(jiff::Timestamp::now());
    let code = exit_code(pod);
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
            ContainerStatus {
                restart_count: c.restart_count + 1,
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
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(now.clone()),
                    }),
                    ..Default::default()
                }),
                ..c.clone()
            }
        })
        .collect();
    json!({"status": {"containerStatuses": statuses}})
}

/// The status of a pod whose containers exited.
fn finished(pod: &Pod) -> serde_json::Value {
    let now = Time(jiff::Timestamp::now());
    let code = exit_code(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or(now.clone());
    let containers: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: format!("kelp-simulated://{}", c.image.clone().unwrap_or_default()),
            container_id: Some(format!("kelp-simulated://{uid}/{}", c.name)),
            ready: false,
            started: Some(false),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                    started_at: Some(started.clone()),
                    finished_at: Some(now.clone()),
                    container_id: Some(format!("kelp-simulated://{uid}/{}", c.name)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let reason = if code == 0 {
        "PodCompleted"
    } else {
        "PodFailed"
    };
    let not_ready = |t: &str| {
        let mut c = condition(t, "False", &now);
        c.reason = Some(reason.into());
        c
    };
    json!({"status": {
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [
            condition("PodReadyToStartContainers", "False", &now),
            condition("Initialized", "True", &now),
            not_ready("Ready"),
            not_ready("ContainersReady"),
            condition("PodScheduled", "True", &now),
        ],
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
}
