//! `kelp-bench scheduler` and `kelp-bench churn`: the control loops under load, against a
//! release `kelp server` on SQLite.
//!
//! scheduler: N nodes registered through the API (as a kubelet registers them, with no
//! heartbeats, like upstream's scheduler_perf), then 10,000 pods created by 64 clients;
//! pods/s from the first creation to the last binding, and the API's own pod creation rate
//! in the same run (the peer here: a scheduler cannot bind faster than pods arrive).
//!
//! churn: `kelp simulate` nodes, deployments scaled up and down all the while (pod creations
//! and deletions per second), with a probe measuring API latency meanwhile; then the server's
//! RSS with 10,000 pods placed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::Mutex;

use crate::api::rss_mib;
use crate::stats::Samples;

#[derive(clap::Args)]
pub struct SchedulerArgs {
    /// Node counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "5000,500")]
    nodes: Vec<usize>,
    /// Pods scheduled at each node count.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent clients creating pods and nodes.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// The kelp binary (default: target/release/kelp beside this one).
    #[arg(long)]
    kelp: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ChurnArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Pods per node at the peak of the churn.
    #[arg(long, default_value_t = 30)]
    pods_per_node: usize,
    /// Seconds of churn.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Pods placed for the RSS measurement.
    #[arg(long, default_value_t = 10_000)]
    rss_pods: usize,
    /// The kelp binary (default: target/release/kelp beside this one).
    #[arg(long)]
    kelp: Option<PathBuf>,
}

/// The kelp binary to run: the one given, else target/release/kelp beside this one.
pub(crate) fn kelp_binary(given: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let kelp = given.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("kelp")))
            .unwrap_or_default()
    });
    if !kelp.exists() {
        bail!(
            "{} not found: build it with cargo build --release",
            kelp.display()
        );
    }
    Ok(kelp)
}

/// A child process killed on drop, so that a bench failing midway leaves no server behind.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `kelp server` child, killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) client: kube::Client,
    pub(crate) kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn start_server(kelp: &Path, extra: &[&str]) -> anyhow::Result<Server> {
    let dir = tempfile::Builder::new()
        .prefix("kelp-bench-control-")
        .tempdir()?;
    let mut child = Command::new(kelp)
        .args(["server", "--https-listen-port", "0", "--data-dir"])
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start kelp server")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        child.stdout.take().context("stdout")?,
    ));
    let ready = lines.next().context("kelp server printed nothing")??;
    eprintln!("[control] {ready}");
    // Whatever else it prints is read (a closed pipe would fail the server's next print).
    std::thread::spawn(move || lines.for_each(drop));
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    if extra.contains(&"--disable-controller-manager") {
        default_service_account(&client).await?;
    }
    Ok(Server {
        child,
        client,
        kubeconfig,
        _dir: dir,
    })
}

/// The `default` ServiceAccount of the `default` namespace, which pods there run as (the
/// ServiceAccount admission plugin refuses them without it), made as the controller-manager's
/// serviceaccount controller would when it is not running.
pub(crate) async fn default_service_account(client: &kube::Client) -> anyhow::Result<()> {
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "default");
    let sa = serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}}))?;
    match sas.create(&PostParams::default(), &sa).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Runs `work(i)` for i in 0..n with `clients` at a time.
async fn fan_out<F, Fut>(n: usize, clients: usize, work: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    futures::stream::iter(0..n)
        .map(work)
        .buffer_unordered(clients)
        .try_collect::<()>()
        .await
}

fn pod(name: &str, labels: serde_json::Value) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
    }))?)
}

/// Counts pods as they are bound, until `n` are; returns when the last was seen bound.
fn watch_bound(pods: Api<Pod>, n: usize) -> tokio::task::JoinHandle<anyhow::Result<Instant>> {
    tokio::spawn(async move {
        let mut bound: HashSet<String> = HashSet::new();
        let mut events = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
        while let Some(event) = events.next().await {
            let pods = match event? {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => vec![p],
                _ => vec![],
            };
            for p in pods {
                if p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some_and(|n| !n.is_empty())
                {
                    bound.insert(p.metadata.name.unwrap_or_default());
                }
            }
            if bound.len() >= n {
                return Ok(Instant::now());
            }
        }
        bail!("the pod watch ended with {} bound", bound.len())
    })
}

pub async fn scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kelp = kelp_binary(&args.kelp)?;
    let mut results = vec![];
    for &nodes in &args.nodes {
        // The scheduler alone: no controller-manager (no node lifecycle to mark these
        // heartbeat-less nodes NotReady).
        let server = start_server(&kelp, &["--disable-controller-manager"]).await?;
        let capacity = kelp_kubelet::node::Capacity {
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: "110".into(),
        };
        let t = Instant::now();
        let client = server.client.clone();
        fan_out(nodes, args.clients, |i| {
            let (client, capacity) = (client.clone(), capacity.clone());
            async move {
                let zone = format!("zone-{}", i % 3);
                let labels = [("topology.kubernetes.io/zone".to_string(), zone)]
                    .into_iter()
                    .collect();
                let node = kelp_kubelet::node::node_object(
                    &format!("node-{i:05}"),
                    &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                    &capacity,
                    &labels,
                );
                kelp_kubelet::node::register(&client, &node).await?;
                Ok(())
            }
        })
        .await?;
        eprintln!(
            "[scheduler] {nodes} nodes registered in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");
        let done = watch_bound(pods.clone(), args.pods);
        let first = Instant::now();
        fan_out(args.pods, args.clients, |i| {
            let pods = pods.clone();
            async move {
                pods.create(
                    &PostParams::default(),
                    &pod(&format!("p-{i:05}"), json!({"app": "bench"}))?,
                )
                .await?;
                Ok(())
            }
        })
        .await?;
        let created = first.elapsed().as_secs_f64();
        let last_bound = tokio::time::timeout(Duration::from_secs(900), done)
            .await
            .context("pods not all bound within 15 minutes")???;
        let bound = last_bound.duration_since(first).as_secs_f64();
        let rss = rss_mib(server.child.id());
        let per_s = args.pods as f64 / bound;
        let create_per_s = args.pods as f64 / created;
        eprintln!(
            "[scheduler] {nodes} nodes: {} pods created in {created:.1} s ({create_per_s:.0}/s), all bound after {bound:.1} s: {per_s:.0} pods/s; server RSS {rss:.0} MiB",
            args.pods
        );
        results.push((nodes, per_s, create_per_s, rss));
    }
    println!("nodes   pods/s bound   pods/s created   server RSS MiB");
    for (nodes, per_s, create, rss) in &results {
        println!("{nodes:<7} {per_s:<14.0} {create:<16.0} {rss:.0}");
    }
    let mut line = json!({"suite": "scheduler", "pods": args.pods});
    for (nodes, per_s, create, rss) in &results {
        line[format!("pods_per_s_{nodes}_nodes")] = json!(per_s.round());
        line[format!("creates_per_s_{nodes}_nodes")] = json!(create.round());
        line[format!("rss_mib_{nodes}_nodes")] = json!(rss.round());
    }
    println!("{line}");
    Ok(())
}

/// Counts pod creations and deletions as the watch sees them.
fn count_changes(pods: Api<Pod>, changes: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(list) = pods.list(&ListParams::default().limit(1)).await else {
            return;
        };
        let rv = list.metadata.resource_version.unwrap_or_default();
        let Ok(stream) = pods
            .watch(&kube::api::WatchParams::default().timeout(290), &rv)
            .await
        else {
            return;
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(event)) = stream.next().await {
            if matches!(
                event,
                kube::api::WatchEvent::Added(_) | kube::api::WatchEvent::Deleted(_)
            ) {
                changes.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

async fn running(pods: &Api<Pod>, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = pods
            .list(&ListParams::default().labels("bench=churn"))
            .await?;
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{running} of {n} pods running after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn churn(args: ChurnArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kelp = kelp_binary(&args.kelp)?;
    let server = start_server(&kelp, &[]).await?;
    let mut simulate = Command::new(&kelp)
        .args([
            "simulate",
            "--nodes",
            &args.nodes.to_string(),
            "--max-pods",
            "110",
            "--kubeconfig",
        ])
        .arg(&server.kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start kelp simulate")?;
    let client = server.client.clone();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let groups = 10;
    let peak = args.nodes * args.pods_per_node / groups;
    let low = peak / 2;
    for g in 0..groups {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": format!("churn-{g}")},
            "spec": {
                "replicas": low,
                "selector": {"matchLabels": {"app": format!("churn-{g}")}},
                "strategy": {"rollingUpdate": {"maxSurge": "100%"}},
                "template": {
                    "metadata": {"labels": {"app": format!("churn-{g}"), "bench": "churn"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
                }
            }
        }))?;
        deployments.create(&PostParams::default(), &d).await?;
    }
    running(&pods, groups * low, Duration::from_secs(300)).await?;
    eprintln!(
        "[churn] {} pods running on {} nodes",
        groups * low,
        args.nodes
    );

    // The probe: a GET and a small LIST every 20 ms, timed, all through the churn.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "probe"}}))?,
    )
    .await?;
    let samples = Arc::new(Mutex::new(Samples::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (samples, stop, cms, pods) = (samples.clone(), stop.clone(), cms.clone(), pods.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let _ = cms.get("probe").await;
                samples.lock().await.record(t.elapsed());
                let t = Instant::now();
                let _ = pods.list(&ListParams::default().limit(50)).await;
                samples.lock().await.record(t.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let changes = Arc::new(AtomicU64::new(0));
    let counter = count_changes(pods.clone(), changes.clone());
    let start = Instant::now();
    let mut up = true;
    while start.elapsed().as_secs_f64() < args.duration {
        let replicas = if up { peak } else { low };
        for g in 0..groups {
            let patch = json!({"spec": {"replicas": replicas}});
            deployments
                .patch(
                    &format!("churn-{g}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        up = !up;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let changed = changes.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = probe.await;
    counter.abort();
    let mut samples = std::mem::take(&mut *samples.lock().await);
    let (p50, p99) = (samples.quantile_ms(0.5), samples.quantile_ms(0.99));
    let per_s = changed as f64 / elapsed;
    eprintln!(
        "[churn] {changed} pod creations and deletions in {elapsed:.1} s: {per_s:.0}/s; API p50 {p50:.1} ms p99 {p99:.1} ms"
    );

    // RSS with many pods placed.
    let each = args.rss_pods / groups;
    for g in 0..groups {
        let patch = json!({"spec": {"replicas": each}});
        deployments
            .patch(
                &format!("churn-{g}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    running(&pods, each * groups, Duration::from_secs(900)).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = rss_mib(server.child.id());
    eprintln!(
        "[churn] server RSS with {} pods running: {rss:.0} MiB",
        each * groups
    );
    let _ = simulate.kill();
    let _ = simulate.wait();
    println!("metric                  value");
    println!("changes_per_s           {per_s:.0}");
    println!("api_p50_ms              {p50:.1}");
    println!("api_p99_ms              {p99:.1}");
    println!("rss_{}_pods_mib      {rss:.0}", each * groups);
    println!(
        "{}",
        json!({"suite": "churn", "nodes": args.nodes, "changes_per_s": per_s.round(),
            "api_p50_ms": p50, "api_p99_ms": p99, "rss_10k_pods_mib": rss.round()})
    );
    Ok(())
}
