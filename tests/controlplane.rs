//! The control loops end to end: `kelp server` (API server, controller-manager, scheduler in
//! one process, talking over HTTPS), `kelp simulate` nodes, and the real kubectl — what a
//! user sees when they create deployments and pods on a cluster.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kelp_testkit::PgCluster;
use support::KelpServer;

const V: &str = "1.33";

/// `kelp simulate` nodes, stopped on drop.
struct Simulated(Child);

impl Simulated {
    fn start(kubeconfig: &Path, nodes: usize) -> Simulated {
        let child = Command::new(env!("CARGO_BIN_EXE_kelp"))
            .args(["simulate", "--nodes", &nodes.to_string(), "--kubeconfig"])
            .arg(kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kelp simulate");
        Simulated(child)
    }
}

impl Drop for Simulated {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 200 ms until it returns Some, or panics after `secs` with the last state.
fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out waiting for {what}: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

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
    let anti = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {matchLabels: {app: db}}\n        topologyKey: kubernetes.io/hostname\n";
    for i in 0..4 {
        k.apply(&pod_yaml(&format!("db-{i}"), "app: db", anti));
    }
    wait_for("three db pods running", 60, || {
        let pods = k.pods("app=db");
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
        .pods("app=db")
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
        .pods("app=db")
        .into_iter()
        .filter(|p| p.1 == "Running")
        .map(|p| p.0)
        .collect();
    k.ok(&["delete", "pod", &running[0]]);
    wait_for("the waiting db pod scheduled", 60, || {
        let pods = k.pods("app=db");
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
    garbage_collection(&k);
    namespaces(&k);
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
