//! The control loops end to end: `kelp server` (API server, controller-manager, scheduler in
//! one process, talking over HTTPS), `kelp simulate` nodes, and the real kubectl — what a
//! user sees when they create deployments and pods on a cluster.

mod support;

use std::time::{Duration, Instant};

use kelp_testkit::PgCluster;
use support::{KelpServer, Simulated, wait_for};

const V: &str = "1.33";

struct Kubectl<'a> {
    server: &'a KelpServer,
}

impl Kubectl<'_> {
    fn ok(&self, args: &[&str]) -> String {
        let out = self.server.kubectl(V, args);
        assert!(out.ok, "kubectl {args:?} failed: {}", out.stderr);
        out.stdout
    }

    fn apply(&self, yaml: &str) -> String {
        let out = self
            .server
            .kubectl_with_stdin(V, &["apply", "-f", "-"], Some(yaml));
        assert!(out.ok, "kubectl apply failed: {}\n{yaml}", out.stderr);
        out.stdout
    }

    /// Waits until `kubectl describe <what>` shows each of `wants` (with runs of whitespace
    /// as one space): the controllers' events are written a moment after what they report.
    fn describes(&self, what: &[&str], wants: &[&str]) {
        let mut args = vec!["describe"];
        args.extend_from_slice(what);
        wait_for(&format!("describe {what:?} to show {wants:?}"), 30, || {
            let out = self.ok(&args);
            let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
            if wants.iter().all(|w| flat.contains(w)) {
                Ok(())
            } else {
                Err(flat)
            }
        });
    }

    /// `phase node` of each pod the selector picks, sorted by name.
    fn pods(&self, selector: &str) -> Vec<(String, String, String)> {
        let out = self.ok(&[
            "get",
            "pods",
            "-l",
            selector,
            "--sort-by=.metadata.name",
            "--no-headers",
            "-o",
            "custom-columns=NAME:.metadata.name,PHASE:.status.phase,NODE:.spec.nodeName",
        ]);
        out.lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_string(), f[1].to_string(), f[2].to_string())
            })
            .collect()
    }

    /// Waits until `n` pods of the selector are Running (and no others exist); their nodes.
    fn running(&self, selector: &str, n: usize) -> Vec<String> {
        wait_for(&format!("{n} running pods {selector}"), 60, || {
            let pods = self.pods(selector);
            if pods.len() == n && pods.iter().all(|p| p.1 == "Running") {
                Ok(pods.into_iter().map(|p| p.2).collect())
            } else {
                Err(format!("{pods:?}"))
            }
        })
    }

    /// Waits for the pod's scheduling failure and returns the message `describe` shows.
    fn failed_scheduling(&self, pod: &str, expected: &str) {
        wait_for(&format!("FailedScheduling of {pod}"), 30, || {
            let out = self.ok(&["describe", "pod", pod]);
            let line = out
                .lines()
                .find(|l| l.contains("FailedScheduling"))
                .map(str::to_string)
                .unwrap_or_default();
            if line.contains("default-scheduler") && line.ends_with(expected) {
                Ok(())
            } else {
                Err(out)
            }
        });
        let condition = self.ok(&[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}: {.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ]);
        assert_eq!(condition, format!("Unschedulable: {expected}"));
    }
}

fn pod_yaml(name: &str, labels: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n{spec}  containers:\n  - name: c\n    image: nginx\n"
    )
}

fn deployments(k: &Kubectl) {
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=5",
    ]);
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );
    let mut nodes = k.running("app=web", 5);
    nodes.sort();
    nodes.dedup();
    assert_eq!(
        nodes.len(),
        3,
        "least-allocated scoring spreads the replicas: {nodes:?}"
    );
    let row = k.ok(&["get", "deployment", "web", "--no-headers"]);
    assert_eq!(
        row.split_whitespace().take(4).collect::<Vec<_>>(),
        ["web", "5/5", "5", "5"]
    );
    // The controllers say what they did, as upstream's do.
    let rs = k.ok(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let scaled = format!("deployment-controller Scaled up replica set {rs} from 0 to 5");
    k.describes(
        &["deployment", "web"],
        &["Normal ScalingReplicaSet", &scaled],
    );
    k.describes(
        &["rs", &rs],
        &[
            "Normal SuccessfulCreate",
            "replicaset-controller Created pod: web-",
        ],
    );
    // A service of an unnamed port: kubectl reads its EndpointSlices' port names unchecked.
    k.ok(&["expose", "deployment", "web", "--port=80"]);
    k.describes(
        &["service", "web"],
        &[
            "Selector: app=web",
            "Port: <unset> 80/TCP",
            ":80,",
            "+ 2 more...",
        ],
    );

    // A rolling update never takes more than maxUnavailable (25% of 5: 1) away.
    k.ok(&["set", "image", "deployment/web", "nginx=nginx:1.27"]);
    let mut lowest = 5;
    wait_for("the rollout to nginx:1.27", 60, || {
        let status = k.ok(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.availableReplicas} {.status.updatedReplicas} {.status.replicas} {.status.observedGeneration}",
        ]);
        let f: Vec<i64> = status
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        lowest = lowest.min(f[0]);
        if f == [5, 5, 5, 2] {
            Ok(())
        } else {
            Err(status)
        }
    });
    assert!(lowest >= 4, "available replicas fell to {lowest}");
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.ends_with("successfully rolled out\n"), "{out}");
    let images = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert_eq!(images, ["nginx:1.27"; 5].join(" "));
    let history = k.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");

    // Undo brings revision 1's ReplicaSet back as revision 3.
    let out = k.ok(&["rollout", "undo", "deployment/web"]);
    assert_eq!(out, "deployment.apps/web rolled back\n");
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let history = k.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    let rs = k.ok(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "--no-headers",
        "-o",
        "custom-columns=N:.metadata.name,D:.spec.replicas",
    ]);
    assert_eq!(
        rs.lines().count(),
        2,
        "the undo reused the first ReplicaSet: {rs}"
    );
    let images = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert_eq!(images, ["nginx"; 5].join(" "));

    let out = k.ok(&["scale", "deployment/web", "--replicas=2"]);
    assert_eq!(out, "deployment.apps/web scaled\n");
    k.running("app=web", 2);

    // Pause: a template change waits for resume.
    k.ok(&["rollout", "pause", "deployment/web"]);
    k.ok(&["set", "image", "deployment/web", "nginx=nginx:1.28"]);
    std::thread::sleep(Duration::from_secs(2));
    let images = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert_eq!(images, "nginx nginx");
    k.ok(&["rollout", "resume", "deployment/web"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    wait_for("paused change rolled out", 30, || {
        let images = k.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ]);
        if images == "nginx:1.28 nginx:1.28" {
            Ok(())
        } else {
            Err(images)
        }
    });
}

/// `kubectl autoscale`: the autoscaler keeps its deployment within minReplicas..maxReplicas,
/// and, no metrics API being served, says it cannot read cpu (upstream's answer without a
/// metrics-server).
fn autoscaling(k: &Kubectl) {
    k.ok(&[
        "create",
        "deployment",
        "scaled",
        "--image=nginx",
        "--replicas=1",
    ]);
    k.ok(&[
        "autoscale",
        "deployment",
        "scaled",
        "--min=2",
        "--max=3",
        "--cpu-percent=50",
    ]);
    let replicas = |want: &str| {
        wait_for(
            &format!("the autoscaler to set {want} replicas"),
            60,
            || {
                let r = k.ok(&[
                    "get",
                    "deployment",
                    "scaled",
                    "-o",
                    "jsonpath={.spec.replicas}",
                ]);
                if r == want { Ok(()) } else { Err(r) }
            },
        )
    };
    replicas("2");
    k.ok(&["scale", "deployment", "scaled", "--replicas=6"]);
    replicas("3");
    wait_for("the autoscaler's status", 60, || {
        let row = k.ok(&["get", "hpa", "scaled", "--no-headers"]);
        let cells: Vec<&str> = row.split_whitespace().take(7).collect();
        if cells
            == [
                "scaled",
                "Deployment/scaled",
                "cpu:",
                "<unknown>/50%",
                "2",
                "3",
                "3",
            ]
        {
            Ok(())
        } else {
            Err(row)
        }
    });
    // Columns padded to their widths: compared word by word.
    let described = k.ok(&["describe", "hpa", "scaled"]);
    let described = described.split_whitespace().collect::<Vec<_>>().join(" ");
    for line in [
        "AbleToScale True SucceededGetScale",
        "ScalingActive False FailedGetResourceMetric",
        "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: unable to fetch metrics from resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)",
        "SuccessfulRescale",
        "New size: 3; reason: Current number of replicas above Spec.MaxReplicas",
    ] {
        assert!(described.contains(line), "no {line:?} in: {described}");
    }
    k.ok(&["delete", "hpa", "scaled"]);
    k.ok(&["delete", "deployment", "scaled"]);
}

fn garbage_collection(k: &Kubectl) {
    for name in ["gc-bg", "gc-fg", "gc-orphan"] {
        k.ok(&[
            "create",
            "deployment",
            name,
            "--image=nginx",
            "--replicas=2",
        ]);
    }
    for name in ["gc-bg", "gc-fg", "gc-orphan"] {
        k.running(&format!("app={name}"), 2);
    }
    let rs_of = |app: &str| {
        k.ok(&[
            "get",
            "rs",
            "-l",
            &format!("app={app}"),
            "--no-headers",
            "-o",
            "custom-columns=N:.metadata.name,OWNERS:.metadata.ownerReferences[*].kind",
        ])
    };
    // Foreground: the deployment is gone only once its ReplicaSet and pods are.
    let out = k.ok(&["delete", "deployment", "gc-fg", "--cascade=foreground"]);
    assert_eq!(out, "deployment.apps \"gc-fg\" deleted\n");
    assert_eq!(rs_of("gc-fg"), "");
    wait_for("gc-fg pods gone", 30, || {
        let p = k.pods("app=gc-fg");
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    });
    // Background: the deployment goes at once, its dependents after.
    k.ok(&["delete", "deployment", "gc-bg"]);
    wait_for("gc-bg dependents gone", 30, || {
        let (rs, pods) = (rs_of("gc-bg"), k.pods("app=gc-bg"));
        if rs.is_empty() && pods.is_empty() {
            Ok(())
        } else {
            Err(format!("{rs} {pods:?}"))
        }
    });
    // Orphan: the ReplicaSet stays, without its owner, and keeps its pods.
    k.ok(&["delete", "deployment", "gc-orphan", "--cascade=orphan"]);
    wait_for("gc-orphan's ReplicaSet orphaned", 30, || {
        let rs = rs_of("gc-orphan");
        if rs.split_whitespace().nth(1) == Some("<none>") {
            Ok(())
        } else {
            Err(rs)
        }
    });
    assert_eq!(k.running("app=gc-orphan", 2).len(), 2);
}

fn namespaces(k: &Kubectl) {
    k.ok(&["create", "namespace", "scratch"]);
    k.ok(&[
        "create",
        "deployment",
        "tmp",
        "--image=nginx",
        "--replicas=2",
        "-n",
        "scratch",
    ]);
    k.ok(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=b",
        "-n",
        "scratch",
    ]);
    wait_for("scratch pods", 60, || {
        let out = k.ok(&["get", "pods", "-n", "scratch", "--no-headers"]);
        if out.lines().filter(|l| l.contains("Running")).count() == 2 {
            Ok(())
        } else {
            Err(out)
        }
    });
    let out = k.ok(&["delete", "namespace", "scratch", "--timeout=60s"]);
    assert_eq!(out, "namespace \"scratch\" deleted\n");
    let out = k.server.kubectl(V, &["get", "namespace", "scratch"]);
    assert!(!out.ok);
    assert_eq!(
        out.stderr.trim(),
        "Error from server (NotFound): namespaces \"scratch\" not found"
    );
}

fn scheduling(k: &Kubectl) {
    for (i, zone) in ["a", "b", "c"].iter().enumerate() {
        k.ok(&[
            "label",
            "node",
            &format!("kelp-sim-{i}"),
            &format!("zone={zone}"),
        ]);
    }
    // nodeSelector
    k.apply(&pod_yaml("in-b", "app: sel", "  nodeSelector: {zone: b}\n"));
    assert_eq!(k.running("app=sel", 1), ["kelp-sim-1"]);

    // Taints: kept off until the taint goes (the node update requeues the pod).
    k.ok(&["taint", "node", "kelp-sim-2", "dedicated=gpu:NoSchedule"]);
    k.apply(&pod_yaml(
        "in-c",
        "app: taint",
        "  nodeSelector: {zone: c}\n",
    ));
    k.failed_scheduling(
        "in-c",
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling..",
    );
    k.apply(&pod_yaml(
        "tolerant",
        "app: tolerant",
        "  nodeSelector: {zone: c}\n  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]\n",
    ));
    assert_eq!(k.running("app=tolerant", 1), ["kelp-sim-2"]);
    k.ok(&["taint", "node", "kelp-sim-2", "dedicated-"]);
    assert_eq!(k.running("app=taint", 1), ["kelp-sim-2"]);

    // Required anti-affinity: one per node, the fourth waits.
    let anti = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {matchLabels: {app: anti}}\n        topologyKey: kubernetes.io/hostname\n";
    for i in 0..4 {
        k.apply(&pod_yaml(&format!("anti-{i}"), "app: anti", anti));
    }
    wait_for("three anti pods running", 60, || {
        let pods = k.pods("app=anti");
        let mut nodes: Vec<&str> = pods
            .iter()
            .filter(|p| p.1 == "Running")
            .map(|p| p.2.as_str())
            .collect();
        nodes.sort();
        if nodes == ["kelp-sim-0", "kelp-sim-1", "kelp-sim-2"] {
            Ok(())
        } else {
            Err(format!("{pods:?}"))
        }
    });
    let pending: Vec<String> = k
        .pods("app=anti")
        .into_iter()
        .filter(|p| p.1 == "Pending")
        .map(|p| p.0)
        .collect();
    assert_eq!(pending.len(), 1);
    k.failed_scheduling(
        &pending[0],
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod..",
    );
    // Deleting one makes room for it (a pod deletion requeues the pending).
    let running: Vec<String> = k
        .pods("app=anti")
        .into_iter()
        .filter(|p| p.1 == "Running")
        .map(|p| p.0)
        .collect();
    k.ok(&["delete", "pod", &running[0]]);
    wait_for("the waiting anti pod scheduled", 60, || {
        let pods = k.pods("app=anti");
        if pods.len() == 3 && pods.iter().all(|p| p.1 == "Running") {
            Ok(())
        } else {
            Err(format!("{pods:?}"))
        }
    });

    // Required affinity: next to the pod it names, in its zone.
    let near = "  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {matchLabels: {app: sel}}\n        topologyKey: zone\n";
    k.apply(&pod_yaml("near-sel", "app: near", near));
    assert_eq!(k.running("app=near", 1), ["kelp-sim-1"]);

    // Topology spread over zones, maxSkew 1: six pods, two per zone.
    let spread = "  topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: zone\n    whenUnsatisfiable: DoNotSchedule\n    labelSelector: {matchLabels: {app: spread}}\n";
    for i in 0..6 {
        k.apply(&pod_yaml(&format!("spread-{i}"), "app: spread", spread));
    }
    let mut nodes = k.running("app=spread", 6);
    nodes.sort();
    assert_eq!(
        nodes,
        [
            "kelp-sim-0",
            "kelp-sim-0",
            "kelp-sim-1",
            "kelp-sim-1",
            "kelp-sim-2",
            "kelp-sim-2"
        ]
    );

    // Resources: more CPU than any node has.
    let big =
        "  containers:\n  - name: c\n    image: nginx\n    resources: {requests: {cpu: \"64\"}}\n";
    k.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: big, labels: {{app: big}}}}\nspec:\n{big}"
    ));
    k.failed_scheduling(
        "big",
        "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod..",
    );
    k.ok(&["delete", "pod", "big", "--wait=false"]);

    // Preemption: low-priority pods fill each node; a high-priority pod evicts one of them.
    k.ok(&["create", "priorityclass", "low", "--value=10"]);
    k.ok(&["create", "priorityclass", "high", "--value=1000"]);
    let filler = |name: &str, class: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {class}}}}}\nspec:\n  priorityClassName: {class}\n  containers:\n  - name: c\n    image: nginx\n    resources: {{requests: {{cpu: \"20\"}}}}\n"
        )
    };
    for i in 0..3 {
        k.apply(&filler(&format!("low-{i}"), "low"));
    }
    k.running("app=low", 3);
    k.apply(&filler("urgent", "high"));
    let node = k.running("app=high", 1).remove(0);
    let preempted = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=Preempted",
        "--no-headers",
        "-o",
        "custom-columns=OBJ:.involvedObject.name,MSG:.message",
    ]);
    let uid = k.ok(&["get", "pod", "urgent", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(preempted.lines().count(), 1, "{preempted}");
    assert!(
        preempted
            .trim_end()
            .ends_with(&format!("Preempted by pod {uid} on node {node}")),
        "{preempted}"
    );
    let low = k.pods("app=low");
    assert_eq!(low.len(), 2, "one low pod was evicted: {low:?}");
    assert!(low.iter().all(|p| p.2 != node));
    let nominated = k.ok(&[
        "get",
        "pod",
        "urgent",
        "-o",
        "jsonpath={.status.nominatedNodeName}",
    ]);
    assert_eq!(nominated, node);
}

fn jobs(k: &Kubectl) {
    k.ok(&[
        "create",
        "job",
        "once",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "exit 0",
    ]);
    k.apply(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: idx}\nspec:\n  completions: 4\n  parallelism: 2\n  completionMode: Indexed\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox, command: [sh, -c, exit 0]}]\n",
    );
    k.apply(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: fails}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox, command: [\"false\"]}]\n",
    );
    k.apply(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: policy}\nspec:\n  podFailurePolicy:\n    rules:\n    - action: FailJob\n      onExitCodes: {containerName: c, operator: In, values: [42]}\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox, command: [sh, -c, exit 42]}]\n",
    );
    // OnFailure: the failing container is restarted in its pod, and the restarts count
    // against backoffLimit (upstream's pastBackoffLimitOnFailure).
    k.apply(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: restarts}\nspec:\n  backoffLimit: 2\n  template:\n    spec:\n      restartPolicy: OnFailure\n      containers: [{name: c, image: busybox, command: [\"false\"]}]\n",
    );
    let out = k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/once",
        "job/idx",
        "--timeout=60s",
    ]);
    assert_eq!(
        out,
        "job.batch/once condition met\njob.batch/idx condition met\n"
    );
    k.describes(
        &["job", "once"],
        &[
            "Normal SuccessfulCreate",
            "job-controller Created pod: once-",
            "Normal Completed",
            "job-controller Job completed",
        ],
    );
    let row = k.ok(&["get", "job", "idx", "--no-headers"]);
    assert_eq!(
        row.split_whitespace().take(3).collect::<Vec<_>>(),
        ["idx", "Complete", "4/4"]
    );
    let status = k.ok(&["get", "job", "idx", "-o", "jsonpath={.status.completedIndexes} {.status.succeeded} {.status.conditions[?(@.type==\"Complete\")].reason}"]);
    assert_eq!(status, "0-3 4 CompletionsReached");
    let pods = k.ok(&["get", "pods", "-l", "job-name=idx", "--sort-by=.spec.hostname", "-o", "jsonpath={range .items[*]}{.spec.hostname}={.metadata.labels.batch\\.kubernetes\\.io/job-completion-index} {end}"]);
    assert_eq!(pods, "idx-0=0 idx-1=1 idx-2=2 idx-3=3 ");
    // Finished pods keep no tracking finalizer.
    let finalizers = k.ok(&[
        "get",
        "pods",
        "-l",
        "job-name=idx",
        "-o",
        "jsonpath={.items[*].metadata.finalizers}",
    ]);
    assert_eq!(finalizers, "");
    k.ok(&[
        "wait",
        "--for=condition=failed",
        "job/fails",
        "job/policy",
        "job/restarts",
        "--timeout=60s",
    ]);
    let why = |job: &str| {
        k.ok(&["get", "job", job, "-o", "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}: {.status.conditions[?(@.type==\"Failed\")].message}"])
    };
    assert_eq!(
        why("fails"),
        "BackoffLimitExceeded: Job has reached the specified backoff limit"
    );
    assert_eq!(
        why("restarts"),
        "BackoffLimitExceeded: Job has reached the specified backoff limit"
    );
    k.describes(
        &["job", "restarts"],
        &[
            "Warning BackoffLimitExceeded",
            "job-controller Job has reached the specified backoff limit",
        ],
    );
    // One pod, restarted in place, never replaced.
    let made = k.ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=restarts,reason=SuccessfulCreate",
        "-o",
        "name",
    ]);
    assert_eq!(made.lines().count(), 1, "{made}");
    let policy = why("policy");
    assert!(
        policy.starts_with("PodFailurePolicy: Container c for pod default/policy-")
            && policy.ends_with(" failed with exit code 42 matching FailJob rule at index 0"),
        "{policy}"
    );
    // ttlSecondsAfterFinished: the finished job and its pods go.
    k.apply(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: brief}\nspec:\n  ttlSecondsAfterFinished: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox}]\n",
    );
    k.ok(&["wait", "--for=delete", "job/brief", "--timeout=60s"]);
    wait_for("brief's pods collected", 30, || {
        let p = k.pods("job-name=brief");
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    });
    indexed_job_policies(k);
    pod_replacement(k);
}

/// podReplacementPolicy: by default a job replaces a pod as soon as it is terminating; with
/// `Failed` only once it has failed. The pods cannot be scheduled, so nothing but the pod
/// garbage collector (which marks an unscheduled terminating pod Failed, every 20 s) ends them.
fn pod_replacement(k: &Kubectl) {
    for (name, policy) in [
        ("at-once", "TerminatingOrFailed"),
        ("when-failed", "Failed"),
    ] {
        k.apply(&format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  podReplacementPolicy: {policy}\n  template:\n    spec:\n      restartPolicy: Never\n      nodeSelector: {{kelp.dev/nowhere: \"true\"}}\n      containers: [{{name: c, image: busybox, command: [sleep, \"300\"]}}]\n"
        ));
    }
    let names = |job: &str| -> Vec<String> {
        k.pods(&format!("job-name={job}"))
            .into_iter()
            .map(|(name, _, _)| name)
            .collect()
    };
    let first = |job: &str| {
        wait_for(&format!("job {job}'s pod"), 30, || match names(job)[..] {
            [ref one] => Ok(one.clone()),
            ref other => Err(format!("{other:?}")),
        })
    };
    let (at_once, when_failed) = (first("at-once"), first("when-failed"));
    k.ok(&["delete", "pod", &at_once, &when_failed, "--wait=false"]);
    wait_for("at-once's replacement", 30, || {
        let now = names("at-once");
        if now.iter().any(|n| *n != at_once) {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    });
    // Meanwhile the other still waits for its terminating pod.
    std::thread::sleep(std::time::Duration::from_secs(2));
    // (active, terminating, failed); an absent count is 0.
    let status = |job: &str| -> Vec<u32> {
        k.ok(&[
            "get",
            "job",
            job,
            "-o",
            "jsonpath={.status.active}/{.status.terminating}/{.status.failed}",
        ])
        .split('/')
        .map(|n| n.parse().unwrap_or(0))
        .collect()
    };
    let pods = names("when-failed");
    if pods == [when_failed.clone()] {
        assert_eq!(status("when-failed"), [0, 1, 0], "{pods:?}");
    } else {
        // The collector's 20 s came first: then the pod is Failed already.
        let phase = k.ok(&[
            "get",
            "job",
            "when-failed",
            "-o",
            "jsonpath={.status.failed}",
        ]);
        assert_eq!(phase, "1", "{pods:?}");
    }
    // Once the collector has marked it Failed, it is counted and replaced.
    wait_for("when-failed's replacement after the failure", 60, || {
        let s = status("when-failed");
        let now = names("when-failed");
        if s == [1, 0, 1] && now.iter().any(|n| *n != when_failed) {
            Ok(())
        } else {
            Err(format!("{s:?} {now:?}"))
        }
    });
    for job in ["at-once", "when-failed"] {
        k.ok(&["delete", "job", job]);
    }
}

/// backoffLimitPerIndex and successPolicy: an index that keeps failing fails alone (its
/// retries carry its failure count) and the job fails with it once the other indexes are done;
/// a met success policy completes a job early, its other pods terminated first.
fn indexed_job_policies(k: &Kubectl) {
    k.apply(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: per-index}\nspec:\n  completions: 4\n  parallelism: 4\n  completionMode: Indexed\n  backoffLimitPerIndex: 1\n  maxFailedIndexes: 2\n  template:\n    metadata:\n      annotations: {kelp.dev/simulate-exit-code-by-index: \"1=1\"}\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox, command: [sh, -c, exit 0]}]\n",
    );
    k.apply(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: early}\nspec:\n  completions: 5\n  parallelism: 5\n  completionMode: Indexed\n  successPolicy:\n    rules: [{succeededIndexes: \"0\", succeededCount: 1}]\n  template:\n    metadata:\n      annotations: {kelp.dev/simulate-duration-by-index: \"0=1\"}\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox, command: [sleep, \"300\"]}]\n",
    );

    // Index 0 ends at once; the others would sleep 300 s.
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/early",
        "--timeout=60s",
    ]);
    let early = k.ok(&[
        "get",
        "job",
        "early",
        "-o",
        "jsonpath={.status.conditions[*].type}|{.status.conditions[?(@.type==\"SuccessCriteriaMet\")].reason}|{.status.conditions[?(@.type==\"Complete\")].reason}: {.status.conditions[?(@.type==\"Complete\")].message}|completed {.status.completedIndexes}, succeeded {.status.succeeded}",
    ]);
    let expected = "SuccessCriteriaMet Complete|SuccessPolicy|SuccessPolicy: Matched rules at index 0|completed 0, succeeded 1";
    assert_eq!(
        early, expected,
        "job early: expected {expected:?}, saw {early:?}"
    );
    // Complete only once the other indexes' pods are gone.
    let left = k.ok(&[
        "get",
        "pods",
        "-l",
        "job-name=early",
        "-o",
        "jsonpath={range .items[*]}{.metadata.labels.batch\\.kubernetes\\.io/job-completion-index}={.status.phase} {end}",
    ]);
    assert_eq!(
        left, "0=Succeeded ",
        "job early's pods once Complete: expected index 0's alone, Succeeded; saw {left:?}"
    );

    // Index 1 fails, waits out its 10 s back-off, fails again and is done for; the job fails
    // once indexes 0, 2 and 3 have succeeded.
    k.ok(&[
        "wait",
        "--for=condition=failed",
        "job/per-index",
        "--timeout=60s",
    ]);
    let status = k.ok(&[
        "get",
        "job",
        "per-index",
        "-o",
        "jsonpath={.status.conditions[*].type}|{.status.conditions[?(@.type==\"Failed\")].reason}: {.status.conditions[?(@.type==\"Failed\")].message}|failed indexes {.status.failedIndexes}, completed {.status.completedIndexes}, succeeded {.status.succeeded}, failed {.status.failed}",
    ]);
    let expected = "FailureTarget Failed|FailedIndexes: Job has failed indexes|failed indexes 1, completed 0,2,3, succeeded 3, failed 2";
    assert_eq!(
        status, expected,
        "job per-index: expected {expected:?}, saw {status:?}"
    );
    let tries = k.ok(&[
        "get",
        "pods",
        "-l",
        "job-name=per-index,batch.kubernetes.io/job-completion-index=1",
        "--sort-by=.metadata.creationTimestamp",
        "-o",
        "jsonpath={range .items[*]}{.status.phase}/{.metadata.annotations.batch\\.kubernetes\\.io/job-index-failure-count} {end}",
    ]);
    assert_eq!(
        tries, "Failed/0 Failed/1 ",
        "index 1 of per-index: expected two failed tries with failure counts 0 and 1, saw {tries:?}"
    );
    let indexes = k.ok(&[
        "get",
        "pods",
        "-l",
        "job-name=per-index",
        "-o",
        "jsonpath={range .items[*]}{.metadata.labels.batch\\.kubernetes\\.io/job-completion-index} {end}",
    ]);
    let mut indexes: Vec<&str> = indexes.split_whitespace().collect();
    indexes.sort();
    assert_eq!(
        indexes,
        ["0", "1", "1", "2", "3"],
        "per-index's pods by index: expected one try of each index but 1, two of 1; saw {indexes:?}"
    );
}

fn cronjobs(k: &Kubectl) {
    k.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=* * * * *",
        "--",
        "sh",
        "-c",
        "exit 0",
    ]);
    // The next minute's run.
    let job = wait_for("tick's first job", 75, || {
        let out = k.ok(&[
            "get",
            "jobs",
            "--no-headers",
            "-o",
            "custom-columns=N:.metadata.name,O:.metadata.ownerReferences[0].name",
        ]);
        out.lines()
            .find(|l| l.ends_with(" tick"))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .ok_or(out)
    });
    let minutes: i64 = job.strip_prefix("tick-").unwrap().parse().unwrap();
    k.ok(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{job}"),
        "--timeout=60s",
    ]);
    wait_for("tick's status", 30, || {
        let s = k.ok(&[
            "get",
            "cronjob",
            "tick",
            "-o",
            "jsonpath={.status.lastScheduleTime} {.status.lastSuccessfulTime}",
        ]);
        let last: jiff::Timestamp = s
            .split_whitespace()
            .next()
            .unwrap_or("")
            .parse()
            .map_err(|_| s.clone())?;
        if last.as_second() == minutes * 60 && s.split_whitespace().count() == 2 {
            Ok(())
        } else {
            Err(s)
        }
    });
    let scheduled = k.ok(&[
        "get",
        "job",
        &job,
        "-o",
        "jsonpath={.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}",
    ]);
    assert_eq!(
        scheduled.parse::<jiff::Timestamp>().unwrap().as_second(),
        minutes * 60
    );
    // A job made from it by hand.
    let out = k.ok(&["create", "job", "manual", "--from=cronjob/tick"]);
    assert_eq!(out, "job.batch/manual created\n");
    k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/manual",
        "--timeout=60s",
    ]);
    k.ok(&[
        "patch",
        "cronjob",
        "tick",
        "-p",
        "{\"spec\":{\"suspend\":true}}",
    ]);
}

fn daemonsets_and_statefulsets(k: &Kubectl, server: &KelpServer) {
    k.apply(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      containers: [{name: c, image: busybox}]\n",
    );
    let out = k.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert_eq!(
        out.lines().last(),
        Some("daemon set \"agent\" successfully rolled out")
    );
    let mut nodes = k.running("app=agent", 3);
    nodes.sort();
    assert_eq!(nodes, ["kelp-sim-0", "kelp-sim-1", "kelp-sim-2"]);
    k.describes(
        &["daemonset", "agent"],
        &[
            "Normal SuccessfulCreate",
            "daemonset-controller Created pod: agent-",
        ],
    );
    // A new node gets one; rolling to a new image keeps one per node.
    let extra = Simulated::start_named(&server.kubeconfig, 1, "extra-");
    wait_for("the agent on the new node", 60, || {
        let nodes: Vec<String> = k
            .pods("app=agent")
            .into_iter()
            .filter(|p| p.1 == "Running")
            .map(|p| p.2)
            .collect();
        if nodes.len() == 4 && nodes.contains(&"extra-0".to_string()) {
            Ok(())
        } else {
            Err(format!("{nodes:?}"))
        }
    });
    k.ok(&["set", "image", "daemonset/agent", "c=busybox:2"]);
    k.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    let images = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=agent",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert_eq!(images, ["busybox:2"; 4].join(" "));
    let history = k.ok(&["rollout", "history", "daemonset/agent"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    // The node goes: its pod is collected, the set is back to three.
    drop(extra);
    k.ok(&["delete", "node", "extra-0"]);
    k.running("app=agent", 3);

    // StatefulSet: ordinals in order, each after the one before is Ready; claims per pod.
    k.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  clusterIP: None\n  selector: {app: db}\n  ports: [{name: pg, port: 5432, targetPort: pg}]\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 3\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec:\n      containers: [{name: c, image: busybox, ports: [{name: pg, containerPort: 5432}]}]\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    k.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    k.describes(
        &["statefulset", "db"],
        &[
            "statefulset-controller create Claim data-db-0 Pod db-0 in StatefulSet db success",
            "statefulset-controller create Pod db-2 in StatefulSet db successful",
        ],
    );
    k.running("app=db", 3);
    let created = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=db",
        "--sort-by=.metadata.creationTimestamp",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}/{.spec.hostname}.{.spec.subdomain} {end}",
    ]);
    assert_eq!(created, "db-0/db-0.db db-1/db-1.db db-2/db-2.db ");
    let ready_order = k.ok(&["get", "pods", "-l", "app=db", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].lastTransitionTime} {end}"]);
    let mut times: Vec<(String, String)> = ready_order
        .split_whitespace()
        .map(|p| {
            let (n, t) = p.split_once('=').unwrap();
            (n.to_string(), t.to_string())
        })
        .collect();
    times.sort();
    assert!(
        times.windows(2).all(|w| w[0].1 <= w[1].1),
        "db-0 was Ready before db-1 before db-2: {times:?}"
    );
    let claims = k.ok(&["get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(claims, "data-db-0 data-db-1 data-db-2");
    // The headless service's endpoints: every pod, by hostname.
    // (Addresses in IP order, as upstream sorts them.)
    let hostnames = |k: &Kubectl| {
        let e = k.ok(&[
            "get",
            "endpoints",
            "db",
            "-o",
            "jsonpath={range .subsets[*].addresses[*]}{.hostname} {end}",
        ]);
        let mut names: Vec<String> = e.split_whitespace().map(str::to_string).collect();
        names.sort();
        names.join(" ")
    };
    wait_for("db endpoints", 30, || {
        let e = hostnames(k);
        if e == "db-0 db-1 db-2" {
            Ok(())
        } else {
            Err(e)
        }
    });
    let port = k.ok(&[
        "get",
        "endpoints",
        "db",
        "-o",
        "jsonpath={.subsets[0].ports[0].name}={.subsets[0].ports[0].port}",
    ]);
    assert_eq!(port, "pg=5432");
    let slices = k.ok(&["get", "endpointslices", "-l", "kubernetes.io/service-name=db", "-o", "jsonpath={.items[*].endpoints[*].conditions.ready} {.items[0].ports[0].port} {.items[0].metadata.labels.endpointslice\\.kubernetes\\.io/managed-by}"]);
    assert_eq!(
        slices,
        "true true true 5432 endpointslice-controller.k8s.io"
    );
    // Scale down removes the highest ordinal; a rolling update replaces from the top.
    k.ok(&["scale", "statefulset/db", "--replicas=2"]);
    wait_for("db-2 removed", 60, || {
        let p: Vec<String> = k.pods("app=db").into_iter().map(|p| p.0).collect();
        if p == ["db-0", "db-1"] {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    });
    k.ok(&["set", "image", "statefulset/db", "c=busybox:2"]);
    let out = k.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    assert!(
        out.ends_with("partitioned roll out complete: 2 new pods have been updated...\n"),
        "{out}"
    );
    let images = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=db",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert_eq!(images, "busybox:2 busybox:2");
    wait_for("db endpoints after the scale-down", 30, || {
        let e = hostnames(k);
        if e == "db-0 db-1" { Ok(()) } else { Err(e) }
    });
    // The service goes: its endpoints and slices go with it.
    k.ok(&["delete", "service", "db"]);
    wait_for("db's endpoints and slices gone", 30, || {
        let e = k.server.kubectl(V, &["get", "endpoints", "db"]);
        let s = k.ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=db",
            "--no-headers",
        ]);
        if !e.ok && s.is_empty() {
            Ok(())
        } else {
            Err(format!("{} {s}", e.stdout))
        }
    });
    k.ok(&["delete", "statefulset", "db"]);
    wait_for("db's pods gone", 60, || {
        let p = k.pods("app=db");
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    });
}

fn cluster(server: &KelpServer) {
    let k = Kubectl { server };
    let _nodes = Simulated::start(&server.kubeconfig, 3);
    wait_for("three Ready nodes", 30, || {
        let out = k.ok(&["get", "nodes", "--no-headers"]);
        if out
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .count()
            == 3
        {
            Ok(())
        } else {
            Err(out)
        }
    });
    deployments(&k);
    autoscaling(&k);
    garbage_collection(&k);
    namespaces(&k);
    jobs(&k);
    cronjobs(&k);
    daemonsets_and_statefulsets(&k, server);
    scheduling(&k);
}

#[test]
fn deployments_scheduling_and_collection_on_simulated_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(dir.path(), &[]);
    cluster(&server);
}

fn holder(server: &KelpServer, lease: &str) -> String {
    let out = server.kubectl(
        V,
        &[
            "get",
            "lease",
            lease,
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    if out.ok { out.stdout } else { String::new() }
}

#[test]
fn a_second_server_takes_over_leadership_on_postgres() {
    let pg = PgCluster::start();
    let url = pg.url();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = KelpServer::start(dir_a.path(), &["--datastore-endpoint", &url]);
    let leases = ["kube-scheduler", "kube-controller-manager"];
    let first: Vec<String> = leases
        .iter()
        .map(|l| {
            wait_for(&format!("{l} lease"), 30, || {
                let h = holder(&a, l);
                if h.is_empty() { Err(h) } else { Ok(h) }
            })
        })
        .collect();
    // B shares the cluster's CA and service-account key.
    std::fs::create_dir_all(dir_b.path().join("pki")).unwrap();
    for f in ["ca.crt", "ca.key", "sa.key"] {
        std::fs::copy(
            dir_a.path().join("pki").join(f),
            dir_b.path().join("pki").join(f),
        )
        .unwrap();
    }
    let b = KelpServer::start(dir_b.path(), &["--datastore-endpoint", &url]);
    let k = Kubectl { server: &b };
    // Each server's front-proxy CA is trusted by extension servers: the published bundle
    // holds both.
    let bundle = k.ok(&[
        "get",
        "configmap",
        "-n",
        "kube-system",
        "extension-apiserver-authentication",
        "-o",
        "jsonpath={.data.requestheader-client-ca-file}",
    ]);
    for dir in [&dir_a, &dir_b] {
        let ca = std::fs::read_to_string(dir.path().join("pki/front-proxy/ca.crt")).unwrap();
        assert!(bundle.contains(ca.trim()), "{bundle}");
    }
    let _nodes = Simulated::start(&b.kubeconfig, 2);
    std::thread::sleep(Duration::from_secs(3));
    for (l, h) in leases.iter().zip(&first) {
        assert_eq!(&holder(&b, l), h, "the first server still leads {l}");
    }
    // SIGKILL: no release of the leases; B waits them out.
    let killed = Instant::now();
    drop(a);
    for (l, h) in leases.iter().zip(&first) {
        wait_for(&format!("{l} taken over"), 20, || {
            let now = holder(&b, l);
            if !now.is_empty() && &now != h {
                Ok(())
            } else {
                Err(now)
            }
        });
    }
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(16), "takeover took {took:?}");
    eprintln!("leadership taken over {took:?} after kill -9");
    // The new leader's controllers and scheduler act, once: exactly the replicas asked for.
    k.ok(&[
        "create",
        "deployment",
        "after",
        "--image=nginx",
        "--replicas=3",
    ]);
    k.running("app=after", 3);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(k.pods("app=after").len(), 3);
    let rs = k.ok(&["get", "rs", "-l", "app=after", "--no-headers"]);
    assert_eq!(rs.lines().count(), 1, "{rs}");
}

#[test]
fn silent_nodes_are_tainted_budgets_hold_and_quotas_recount() {
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(dir.path(), &[]);
    let k = Kubectl { server: &server };
    let _nodes = Simulated::start(&server.kubeconfig, 2);
    // Tainted, so that only the pods meant for it go there.
    let doomed = Simulated::start_with(
        &server.kubeconfig,
        1,
        "doomed-",
        &["--node-taint", "dedicated=doomed:NoSchedule"],
    );
    wait_for("three Ready nodes", 30, || {
        let out = k.ok(&["get", "nodes", "--no-headers"]);
        if out
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .count()
            == 3
        {
            Ok(())
        } else {
            Err(out)
        }
    });
    let pinned = |name: &str, toleration: &str| {
        pod_yaml(
            name,
            "app: pinned",
            &format!(
                "  nodeSelector: {{kubernetes.io/hostname: doomed-0}}\n  tolerations: [{toleration}, {{key: dedicated, operator: Exists}}]\n"
            ),
        )
    };
    k.apply(&pinned("brief", "{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 5}"));
    k.apply(&pinned(
        "forever",
        "{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute}",
    ));
    k.running("app=pinned", 2);
    // The node stops renewing its Lease.
    let silent = Instant::now();
    drop(doomed);

    // Meanwhile: a budget that allows one disruption of three pods.
    for i in 0..3 {
        k.apply(&pod_yaml(
            &format!("guarded-{i}"),
            "app: guarded",
            "  nodeSelector: {kubernetes.io/hostname: kelp-sim-0}\n",
        ));
    }
    k.running("app=guarded", 3);
    k.ok(&[
        "create",
        "pdb",
        "guard",
        "--selector=app=guarded",
        "--min-available=2",
    ]);
    wait_for("the budget's status", 30, || {
        let s = k.ok(&["get", "pdb", "guard", "-o", "jsonpath={.status.expectedPods} {.status.currentHealthy} {.status.desiredHealthy} {.status.disruptionsAllowed}"]);
        if s == "3 3 2 1" { Ok(()) } else { Err(s) }
    });
    let row = k.ok(&["get", "pdb", "guard", "--no-headers"]);
    assert_eq!(
        row.split_whitespace().take(4).collect::<Vec<_>>(),
        ["guard", "2", "N/A", "1"]
    );
    let evict = |pod: &str| {
        let body = format!(
            r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"default"}}}}"#
        );
        server.kubectl_with_stdin(
            V,
            &[
                "create",
                "--raw",
                &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
                "-f",
                "-",
            ],
            Some(&body),
        )
    };
    let first = evict("guarded-0");
    assert!(first.ok, "{}", first.stderr);
    let second = evict("guarded-1");
    assert!(!second.ok);
    assert_eq!(
        second.stderr.trim(),
        "Error from server (TooManyRequests): Cannot evict pod as it would violate the pod's disruption budget."
    );
    wait_for("the budget spent", 30, || {
        let s = k.ok(&["get", "pdb", "guard", "-o", "jsonpath={.status.currentHealthy} {.status.disruptionsAllowed} {.status.conditions[0].reason}"]);
        if s == "2 0 InsufficientPods" {
            Ok(())
        } else {
            Err(s)
        }
    });

    // A quota's usage is recounted when objects go.
    k.ok(&["create", "namespace", "limited"]);
    k.ok(&[
        "create",
        "quota",
        "q",
        "-n",
        "limited",
        "--hard=pods=5,configmaps=5,count/deployments.apps=2",
    ]);
    // Until the controller has counted, admission refuses what the quota tracks (upstream's
    // "status unknown for quota").
    wait_for("the quota counted", 30, || {
        let h = k.ok(&[
            "get",
            "quota",
            "q",
            "-n",
            "limited",
            "-o",
            "jsonpath={.status.hard.pods}",
        ]);
        if h == "5" { Ok(()) } else { Err(h) }
    });
    k.ok(&["create", "configmap", "a", "-n", "limited"]);
    k.ok(&["create", "configmap", "b", "-n", "limited"]);
    k.ok(&[
        "create",
        "deployment",
        "d",
        "-n",
        "limited",
        "--image=nginx",
        "--replicas=2",
    ]);
    let used = |k: &Kubectl| {
        k.ok(&["get", "quota", "q", "-n", "limited", "-o", "jsonpath={.status.used.configmaps} {.status.used.pods} {.status.used.count/deployments\\.apps}"])
    };
    // kube-root-ca.crt is a configmap too.
    wait_for("the quota's usage", 30, || {
        let u = used(&k);
        if u == "3 2 1" { Ok(()) } else { Err(u) }
    });
    k.ok(&["delete", "configmap", "a", "-n", "limited"]);
    k.ok(&["scale", "deployment", "d", "-n", "limited", "--replicas=0"]);
    wait_for("the usage recounted", 30, || {
        let u = used(&k);
        if u == "2 0 1" { Ok(()) } else { Err(u) }
    });

    // 50 s without a renewal: NotReady (Unknown), tainted unreachable.
    wait_for("doomed-0 NotReady", 80, || {
        let out = k.ok(&["get", "node", "doomed-0", "--no-headers"]);
        if out.split_whitespace().nth(1) == Some("NotReady") {
            Ok(())
        } else {
            Err(out)
        }
    });
    let after = silent.elapsed();
    assert!(
        after >= Duration::from_secs(45),
        "NotReady after only {after:?}"
    );
    let ready = k.ok(&["get", "node", "doomed-0", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].message}"]);
    assert_eq!(ready, "Unknown Kubelet stopped posting node status.");
    let taints = wait_for("the unreachable taints", 15, || {
        let t = k.ok(&[
            "get",
            "node",
            "doomed-0",
            "-o",
            "jsonpath={range .spec.taints[*]}{.key}:{.effect} {end}",
        ]);
        if t.contains("NoExecute") {
            Ok(t)
        } else {
            Err(t)
        }
    });
    assert_eq!(
        taints,
        "dedicated:NoSchedule node.kubernetes.io/unreachable:NoSchedule node.kubernetes.io/unreachable:NoExecute "
    );
    // The pod tolerating it for 5 s is evicted; the one tolerating it forever stays.
    wait_for("brief evicted", 30, || {
        let d = k.ok(&["get", "pod", "brief", "-o", "jsonpath={.metadata.deletionTimestamp} {.status.conditions[?(@.type==\"DisruptionTarget\")].reason}"]);
        if d.ends_with(" DeletionByTaintManager") {
            Ok(())
        } else {
            Err(d)
        }
    });
    let forever = k.ok(&[
        "get",
        "pod",
        "forever",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert_eq!(forever, "");
}

/// A PEM certificate request for CN=`cn`, O=`org`, and its key.
fn certificate_request(cn: &str, org: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    let csr = params.serialize_request(&key).unwrap();
    (csr.pem().unwrap(), key.serialize_pem())
}

fn csr_yaml(name: &str, pem: &str, signer: &str, usages: &str) -> String {
    use base64::Engine;
    let request = base64::engine::general_purpose::STANDARD.encode(pem);
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec:\n  request: {request}\n  signerName: {signer}\n  expirationSeconds: 86400\n  usages: [{usages}]\n"
    )
}

#[test]
fn certificate_requests_are_approved_and_signed_by_the_cluster_ca() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(dir.path(), &[]);
    let k = Kubectl { server: &server };
    // A user's client certificate: pending until approved, then issued by the cluster CA.
    let (pem, key) = certificate_request("carol", "dev");
    k.apply(&csr_yaml(
        "carol",
        &pem,
        "kubernetes.io/kube-apiserver-client",
        "client auth",
    ));
    let row = k.ok(&["get", "csr", "carol", "--no-headers"]);
    assert_eq!(
        row.split_whitespace().skip(2).collect::<Vec<_>>(),
        [
            "kubernetes.io/kube-apiserver-client",
            "system:admin",
            "24h",
            "Pending"
        ]
    );
    let out = k.ok(&["certificate", "approve", "carol"]);
    assert_eq!(
        out,
        "certificatesigningrequest.certificates.k8s.io/carol approved\n"
    );
    let cert = wait_for("carol's certificate", 30, || {
        let c = k.ok(&[
            "get",
            "csr",
            "carol",
            "-o",
            "jsonpath={.status.certificate}",
        ]);
        if c.is_empty() { Err(c) } else { Ok(c) }
    });
    let row = k.ok(&["get", "csr", "carol", "--no-headers"]);
    assert_eq!(row.split_whitespace().last(), Some("Approved,Issued"));
    let cert = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(cert)
            .unwrap(),
    )
    .unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let kubeconfig = dir.path().join("carol.kubeconfig");
    server.write_kubeconfig(
        &kubeconfig,
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}",
            b64(&cert),
            b64(&key)
        ),
    );
    let who = server.kubectl_as(&kubeconfig, V, &["auth", "whoami"]);
    assert!(who.ok, "{}", who.stderr);
    let who: Vec<String> = who
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        who,
        [
            "ATTRIBUTE VALUE",
            "Username carol",
            "Groups [dev system:authenticated]"
        ]
    );

    // A kubelet's client certificate requested with a bootstrap token: approved by the
    // controller (the requestor may create nodeclient requests), then signed.
    k.ok(&[
        "create",
        "secret",
        "generic",
        "bootstrap-token-abcdef",
        "-n",
        "kube-system",
        "--type=bootstrap.kubernetes.io/token",
        "--from-literal=token-id=abcdef",
        "--from-literal=token-secret=0123456789abcdef",
        "--from-literal=usage-bootstrap-authentication=true",
    ]);
    k.ok(&[
        "create",
        "clusterrolebinding",
        "kubelet-bootstrap",
        "--clusterrole=system:node-bootstrapper",
        "--group=system:bootstrappers",
    ]);
    k.ok(&[
        "create",
        "clusterrolebinding",
        "node-autoapprove",
        "--clusterrole=system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "--group=system:bootstrappers",
    ]);
    let joiner = dir.path().join("joiner.kubeconfig");
    server.write_kubeconfig(&joiner, "    token: abcdef.0123456789abcdef");
    let (pem, _) = certificate_request("system:node:worker-1", "system:nodes");
    let out = server.run_kubectl_stdin(
        &joiner,
        &["apply", "-f", "-"],
        &csr_yaml(
            "node-csr",
            &pem,
            "kubernetes.io/kube-apiserver-client-kubelet",
            "digital signature, client auth",
        ),
    );
    assert!(out.ok, "{}", out.stderr);
    wait_for("the node's certificate", 30, || {
        let s = k.ok(&[
            "get",
            "csr",
            "node-csr",
            "-o",
            "jsonpath={.spec.username} {.status.conditions[0].reason} {.status.certificate}",
        ]);
        if s.starts_with("system:bootstrap:abcdef AutoApproved ") && s.len() > 40 {
            Ok(())
        } else {
            Err(s)
        }
    });
    // A user may not get a kubelet's certificate under another identity: the signer refuses.
    let (pem, _) = certificate_request("mallory", "system:masters");
    k.apply(&csr_yaml(
        "bad",
        &pem,
        "kubernetes.io/kube-apiserver-client-kubelet",
        "client auth",
    ));
    k.ok(&["certificate", "approve", "bad"]);
    wait_for("the request failed", 30, || {
        let s = k.ok(&["get", "csr", "bad", "-o", "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}: {.status.conditions[?(@.type==\"Failed\")].message}"]);
        if s == "SignerValidationFailure: subject organization is not system:nodes" {
            Ok(())
        } else {
            Err(s)
        }
    });

    // CertificateSubjectRestriction: no system:masters through the client signer.
    let out = server.kubectl_with_stdin(
        V,
        &["create", "-f", "-"],
        Some(&csr_yaml(
            "masters",
            &pem,
            "kubernetes.io/kube-apiserver-client",
            "client auth",
        )),
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("certificatesigningrequests.certificates.k8s.io \"masters\" is forbidden: use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"),
        "{}",
        out.stderr
    );
    // CertificateApproval: updating the approval subresource is not enough, approving takes
    // the approve verb on the signer (by name or by its domain's wildcard).
    k.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: csr-updater}\nrules:\n- {apiGroups: [certificates.k8s.io], resources: [certificatesigningrequests], verbs: [get, list, watch]}\n- {apiGroups: [certificates.k8s.io], resources: [certificatesigningrequests/approval], verbs: [update]}\n",
    );
    k.ok(&[
        "create",
        "clusterrolebinding",
        "dave-csr",
        "--clusterrole=csr-updater",
        "--user=dave",
    ]);
    let (pem, _) = certificate_request("erin", "dev");
    k.apply(&csr_yaml(
        "erin",
        &pem,
        "kubernetes.io/kube-apiserver-client",
        "client auth",
    ));
    let out = server.kubectl(V, &["certificate", "approve", "erin", "--as=dave"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""),
        "{}",
        out.stderr
    );
    k.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: kubernetes-signers-approver}\nrules:\n- {apiGroups: [certificates.k8s.io], resources: [signers], resourceNames: [kubernetes.io/*], verbs: [approve]}\n",
    );
    k.ok(&[
        "create",
        "clusterrolebinding",
        "dave-approve",
        "--clusterrole=kubernetes-signers-approver",
        "--user=dave",
    ]);
    wait_for("dave to approve", 10, || {
        let out = server.kubectl(V, &["certificate", "approve", "erin", "--as=dave"]);
        if out.ok { Ok(()) } else { Err(out.stderr) }
    });
}

/// The ServiceCIDR a user adds widens where ClusterIPs come from once the controller-manager
/// marks it Ready; deleting it waits while a Service's ClusterIP lies only in it.
#[test]
fn service_cidrs_widen_cluster_ips_and_are_kept_while_their_ips_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(dir.path(), &[]);
    let k = Kubectl { server: &server };
    let refused = |args: &[&str]| {
        let out = server.kubectl(V, args);
        assert!(!out.ok, "kubectl {args:?} succeeded: {}", out.stdout);
        out.stderr
    };
    let outside = refused(&[
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80",
        "--clusterip=10.200.0.5",
    ]);
    assert!(
        outside.contains("failed to allocate IP 10.200.0.5: the provided network does not match the current range"),
        "{outside}"
    );

    let cidr = "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata:\n  name: extra\nspec:\n  cidrs: [10.200.0.0/28]\n";
    assert_eq!(
        k.apply(cidr),
        "servicecidr.networking.k8s.io/extra created\n"
    );
    let state = |name: &str| {
        k.ok(&[
            "get",
            "servicecidr",
            name,
            "-o",
            "jsonpath={.metadata.finalizers} {.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].reason}",
        ])
    };
    let reaches = |what: &str, wanted: &str| {
        wait_for(what, 30, || {
            let s = state("extra");
            if s == wanted { Ok(()) } else { Err(s) }
        })
    };
    reaches(
        "the ServiceCIDR to be Ready and protected",
        "[\"networking.k8s.io/service-cidr-finalizer\"] True ",
    );
    assert_eq!(
        k.ok(&[
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80",
            "--clusterip=10.200.0.5"
        ]),
        "service/web created\n"
    );
    assert_eq!(
        k.ok(&["get", "ipaddress", "10.200.0.5", "--no-headers"])
            .split_whitespace()
            .nth(1),
        Some("services/default/web")
    );
    let broadcast = refused(&[
        "create",
        "service",
        "clusterip",
        "edge",
        "--tcp=80",
        "--clusterip=10.200.0.15",
    ]);
    assert!(
        broadcast.contains("the provided IP (10.200.0.15) is not in the valid range. The range of valid IPs is 10.200.0.0/28"),
        "{broadcast}"
    );

    // Deleting it waits for web's IP; meanwhile nothing more is allocated from it.
    assert_eq!(
        k.ok(&["delete", "servicecidr", "extra", "--wait=false"]),
        "servicecidr.networking.k8s.io \"extra\" deleted\n"
    );
    reaches(
        "the deletion to be blocked",
        "[\"networking.k8s.io/service-cidr-finalizer\"] False Terminating",
    );
    let going = refused(&[
        "create",
        "service",
        "clusterip",
        "late",
        "--tcp=80",
        "--clusterip=10.200.0.6",
    ]);
    assert!(
        going.contains("does not match the current range"),
        "{going}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(state("extra").contains("Terminating"));
    k.ok(&["delete", "service", "web"]);
    wait_for("the ServiceCIDR to go once its IP is free", 40, || {
        let out = server.kubectl(V, &["get", "servicecidr", "extra"]);
        if !out.ok && out.stderr.contains("NotFound") {
            Ok(())
        } else {
            Err(out.stdout)
        }
    });
    // The default ServiceCIDR carries the finalizer too.
    assert_eq!(
        state("kubernetes"),
        "[\"networking.k8s.io/service-cidr-finalizer\"] True "
    );
}
