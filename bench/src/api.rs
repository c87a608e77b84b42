//! `kelp-bench api`: `kelp server` (release build, SQLite) over HTTPS with kube-rs clients:
//! start-up to ready, idle RSS, creates/gets at 64 clients, and lists of 10k pods, with the
//! storage layer's creates/s in the same run as the reference (target: API ≥ 0.6 of it).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kelp_storage::{Backend, Endpoint, Options, Txn};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rand::Rng;
use serde_json::json;

use crate::stats::Samples;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds each closed-loop workload runs.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Pods the list workload reads.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Idle watches held open at once (over connections of at most 100 streams each).
    #[arg(long, default_value_t = 10_000)]
    watches: usize,
    /// The kelp binary (default: target/release/kelp beside this one).
    #[arg(long)]
    kelp: Option<PathBuf>,
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

pub(crate) async fn closed_loop<F, Fut>(
    clients: usize,
    duration: Duration,
    op: F,
) -> anyhow::Result<(f64, Samples)>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now();
    let tasks = (0..clients).map(|c| {
        let op = op.clone();
        tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut i = 0;
            while start.elapsed() < duration {
                let t = Instant::now();
                op(c, i).await?;
                samples.record(t.elapsed());
                i += 1;
            }
            anyhow::Ok(samples)
        })
    });
    let mut all = Samples::default();
    for t in futures::future::join_all(tasks).await {
        all.extend(t??);
    }
    Ok((all.len() as f64 / start.elapsed().as_secs_f64(), all))
}

fn configmap(name: String) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"key": "x".repeat(200)}}))
        .unwrap_or_default()
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kelp = crate::control::kelp_binary(&args.kelp)?;
    let duration = Duration::from_secs_f64(args.duration);
    let dir = tempfile::Builder::new()
        .prefix("kelp-bench-api-")
        .tempdir()?;
    let started = Instant::now();
    let mut child = Command::new(&kelp)
        .args(["server", "--https-listen-port", "0", "--data-dir"])
        .arg(dir.path().join("server"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start kelp server")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        child.stdout.take().context("stdout")?,
    ));
    let ready_line = lines.next().context("kelp server printed nothing")??;
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    eprintln!("[api] {ready_line} after {ready_ms:.0} ms");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_mib(child.id());

    let kubeconfig = Kubeconfig::read_from(dir.path().join("server/admin.kubeconfig"))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let (creates, mut create_lat) = closed_loop(args.clients, duration, {
        let cms = cms.clone();
        move |c, i| {
            let cms = cms.clone();
            async move {
                cms.create(&PostParams::default(), &configmap(format!("c{c}-{i}")))
                    .await?;
                Ok(())
            }
        }
    })
    .await?;
    eprintln!(
        "[api] create {creates:.0}/s p50 {:.2} ms p99 {:.2} ms",
        create_lat.quantile_ms(0.5),
        create_lat.quantile_ms(0.99)
    );

    // Every client created at least its first 20 ConfigMaps above.
    let (gets, mut get_lat) = closed_loop(args.clients, duration, {
        let cms = cms.clone();
        move |c, _| {
            let cms = cms.clone();
            async move {
                let i = rand::rng().random_range(0..20);
                cms.get(&format!("c{c}-{i}")).await?;
                Ok(())
            }
        }
    })
    .await?;
    eprintln!(
        "[api] get {gets:.0}/s p50 {:.2} ms p99 {:.2} ms",
        get_lat.quantile_ms(0.5),
        get_lat.quantile_ms(0.99)
    );

    // 10k pods in their own namespace, then whole and paged lists.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let next = Arc::new(AtomicU64::new(0));
    let total = args.pods as u64;
    let fill = (0..args.clients).map(|_| {
        let (pods, next) = (pods.clone(), next.clone());
        tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= total {
                    return anyhow::Ok(());
                }
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{n:05}"), "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]},
                }))?;
                pods.create(&PostParams::default(), &pod).await?;
            }
        })
    });
    for t in futures::future::join_all(fill).await {
        t??;
    }
    let mut list_all = Samples::default();
    let mut page = Samples::default();
    for _ in 0..5 {
        let t = Instant::now();
        let l = pods.list(&ListParams::default()).await?;
        list_all.record(t.elapsed());
        if l.items.len() != args.pods {
            bail!("listed {} pods, expected {}", l.items.len(), args.pods);
        }
        let t = Instant::now();
        pods.list(&ListParams::default().limit(500)).await?;
        page.record(t.elapsed());
    }
    let (list_ms, page_ms) = (list_all.quantile_ms(0.5), page.quantile_ms(0.5));
    let rss_loaded = rss_mib(child.id());
    eprintln!(
        "[api] list {} pods {list_ms:.1} ms, page of 500 {page_ms:.1} ms, RSS {rss_loaded:.0} MiB",
        args.pods
    );

    // Idle watches: each its own stream, from the current revision (no initial events),
    // spread over connections as many clients would open them; the server's RSS growth.
    let (watch_config, rv) = {
        let kubeconfig = Kubeconfig::read_from(dir.path().join("server/admin.kubeconfig"))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let list = cms.list(&ListParams::default().limit(1)).await?;
        (config, list.metadata.resource_version.unwrap_or_default())
    };
    let before_watches = rss_mib(child.id());
    let mut watches = Vec::with_capacity(args.watches);
    let per_connection = 100;
    for chunk in 0..args.watches.div_ceil(per_connection) {
        let client = kube::Client::try_from(watch_config.clone())?;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let n = per_connection.min(args.watches - chunk * per_connection);
        let opened = futures::future::try_join_all((0..n).map(|_| {
            let api = api.clone();
            let rv = rv.clone();
            async move {
                api.watch(&kube::api::WatchParams::default().timeout(290), &rv)
                    .await
            }
        }))
        .await?;
        watches.extend(opened);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_watches_mib = rss_mib(child.id()) - before_watches;
    eprintln!(
        "[api] {} idle watches: +{idle_watches_mib:.1} MiB RSS",
        watches.len()
    );
    drop(watches);
    let _ = child.kill();
    let _ = child.wait();

    // The reference: the storage layer's creates on the same backend, in this process.
    let storage_dir = tempfile::Builder::new()
        .prefix("kelp-bench-api-storage-")
        .tempdir()?;
    let backend = Backend::open(
        &Endpoint::default_for(storage_dir.path()),
        Options {
            compact_interval: None,
            ..Options::default()
        },
    )
    .await?;
    let value = serde_json::to_vec(&configmap("x".into()))?;
    let (storage_creates, _) = closed_loop(args.clients, duration, {
        let (backend, value) = (backend.clone(), value.clone());
        move |c, i| {
            let (backend, value) = (backend.clone(), value.clone());
            async move {
                backend
                    .txn(Txn::create(
                        format!("/registry/configmaps/default/c{c}-{i}"),
                        value,
                    ))
                    .await?;
                Ok(())
            }
        }
    })
    .await?;
    backend.close().await;
    let ratio = creates / storage_creates;
    eprintln!("[api] storage create {storage_creates:.0}/s; API/storage {ratio:.2}");

    println!("metric                      value");
    println!("ready_ms                    {ready_ms:.0}");
    println!("rss_idle_mib                {rss_idle:.1}");
    println!("api_creates_per_s           {creates:.0}");
    println!("storage_creates_per_s       {storage_creates:.0}");
    println!("api_vs_storage_creates      {ratio:.2}");
    println!("get_per_s                   {gets:.0}");
    println!("list_{}_ms               {list_ms:.1}", args.pods);
    println!("page_500_ms                 {page_ms:.1}");
    println!("rss_after_{}_pods_mib    {rss_loaded:.1}", args.pods);
    println!(
        "idle_watches_{}_mib     {idle_watches_mib:.1}",
        args.watches
    );
    println!(
        "{}",
        json!({
            "suite": "api", "clients": args.clients,
            "api_vs_storage_creates": (ratio * 100.0).round() / 100.0,
            "api_creates_per_s": creates.round(), "storage_creates_per_s": storage_creates.round(),
            "create_p99_ms": create_lat.quantile_ms(0.99), "get_per_s": gets.round(), "get_p99_ms": get_lat.quantile_ms(0.99),
            "list_10k_ms": list_ms, "page_500_ms": page_ms,
            "idle_watches_10k_mib": (idle_watches_mib * 10.0).round() / 10.0,
            "rss_idle_mib": (rss_idle * 10.0).round() / 10.0, "ready_ms": ready_ms.round(),
        })
    );
    Ok(())
}
