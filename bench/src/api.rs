//! `kelp-bench api`: `kelp server` (release build, SQLite) over HTTPS with kube-rs clients:
//! start-up to ready, idle RSS, creates/gets at 64 clients, and lists of 10k pods, with the
//! storage layer's creates/s in the same run as the reference (target: API ≥ 0.6 of it; the
//! reference writes the object as the API server stored it, and the bare ConfigMap besides),
//! and idle watches (HTTP/2 streams as Go clients hold them, and HTTP/1.1 connections as
//! kube-rs does). The server runs without its in-process scheduler and controller-manager;
//! the whole control plane's idle RSS is read separately.

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

/// The server's committed (batches, writes), from `/metrics`.
async fn write_stats(client: &kube::Client) -> anyhow::Result<(u64, u64)> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let figure = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .with_context(|| format!("no {name} in /metrics"))
    };
    Ok((
        figure("kelp_storage_write_batches_total ")?,
        figure("kelp_storage_writes_total ")?,
    ))
}

fn per_batch(before: (u64, u64), after: (u64, u64)) -> f64 {
    (after.1 - before.1) as f64 / (after.0 - before.0).max(1) as f64
}

fn configmap_value(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"key": "x".repeat(200)}})
}

fn configmap(name: String) -> ConfigMap {
    serde_json::from_value(configmap_value(&name)).unwrap_or_default()
}

fn configmap_json(name: &str) -> Vec<u8> {
    serde_json::to_vec(&configmap_value(name)).unwrap_or_default()
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kelp = crate::control::kelp_binary(&args.kelp)?;
    let duration = Duration::from_secs_f64(args.duration);
    let dir = tempfile::Builder::new()
        .prefix("kelp-bench-api-")
        .tempdir()?;
    let started = Instant::now();
    let mut child = crate::control::Reaped(
        Command::new(&kelp)
            .args(["server", "--https-listen-port", "0", "--data-dir"])
            .arg(dir.path().join("server"))
            // The API server alone, as upstream's kube-apiserver is measured: the in-process
            // scheduler would otherwise be scheduling (and writing events for) the 10k pods of
            // the list workload, which have no nodes, while the lists and watches are timed.
            .args(["--disable-controller-manager", "--disable-scheduler"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start kelp server")?,
    );
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        child.0.stdout.take().context("stdout")?,
    ));
    let ready_line = lines.next().context("kelp server printed nothing")??;
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    eprintln!("[api] {ready_line} after {ready_ms:.0} ms");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_mib(child.0.id());

    let kubeconfig = Kubeconfig::read_from(dir.path().join("server/admin.kubeconfig"))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    crate::control::default_service_account(&client).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let before = write_stats(&client).await?;
    // Creates as the server sustains them: each client POSTs a ConfigMap's JSON and reads the
    // whole 201 answer (kube-rs checks the status), without typed encoding and decoding on
    // the client, which on two cores takes CPU from the server (the ratio's figure).
    let (creates, mut create_lat) = closed_loop(args.clients, duration, {
        let client = client.clone();
        move |c, i| {
            let client = client.clone();
            async move {
                let body = configmap_json(&format!("c{c}-{i}"));
                let req = http::Request::post("/api/v1/namespaces/default/configmaps")
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::ACCEPT, "application/json")
                    .body(body)?;
                client.request_text(req).await?;
                Ok(())
            }
        }
    })
    .await?;
    let after = write_stats(&client).await?;
    let api_batch = per_batch(before, after);
    // One of them as stored: what the API server wrote for each create.
    let stored_value = {
        let req = http::Request::get("/api/v1/namespaces/default/configmaps/c0-0")
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())?;
        let mut obj: serde_json::Value = serde_json::from_str(&client.request_text(req).await?)?;
        if let Some(meta) = obj.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("resourceVersion");
        }
        serde_json::to_vec(&obj)?
    };
    eprintln!(
        "[api] create {creates:.0}/s p50 {:.2} ms p99 {:.2} ms, {api_batch:.1} writes per commit",
        create_lat.quantile_ms(0.5),
        create_lat.quantile_ms(0.99)
    );
    // The same through kube-rs's typed API, as a controller creates.
    let (creates_typed, _) = closed_loop(args.clients, duration, {
        let cms = cms.clone();
        move |c, i| {
            let cms = cms.clone();
            async move {
                cms.create(&PostParams::default(), &configmap(format!("t{c}-{i}")))
                    .await?;
                Ok(())
            }
        }
    })
    .await?;
    eprintln!("[api] create through kube-rs (typed) {creates_typed:.0}/s");

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
    // The list as the server answers it (the whole body received), and as a kube-rs client
    // sees it, the body decoded into typed pods as well.
    let (mut list_all, mut page) = (Samples::default(), Samples::default());
    let (mut list_typed, mut page_typed) = (Samples::default(), Samples::default());
    let raw_list = |path: &str| {
        let client = client.clone();
        let req = http::Request::get(path)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new());
        async move { anyhow::Ok(client.request_text(req?).await?) }
    };
    for _ in 0..5 {
        let t = Instant::now();
        let body = raw_list("/api/v1/namespaces/default/pods").await?;
        list_all.record(t.elapsed());
        let t = Instant::now();
        let page_body = raw_list("/api/v1/namespaces/default/pods?limit=500").await?;
        page.record(t.elapsed());
        if body.len() * 10 < page_body.len() * (args.pods / 500) * 9 {
            bail!("a list of {} bytes for {} pods", body.len(), args.pods);
        }
        let t = Instant::now();
        let l = pods.list(&ListParams::default()).await?;
        list_typed.record(t.elapsed());
        if l.items.len() != args.pods {
            bail!("listed {} pods, expected {}", l.items.len(), args.pods);
        }
        let t = Instant::now();
        pods.list(&ListParams::default().limit(500)).await?;
        page_typed.record(t.elapsed());
    }
    let (list_ms, page_ms) = (list_all.quantile_ms(0.5), page.quantile_ms(0.5));
    let (list_typed_ms, page_typed_ms) = (list_typed.quantile_ms(0.5), page_typed.quantile_ms(0.5));
    let rss_loaded = rss_mib(child.0.id());
    eprintln!(
        "[api] list {} pods {list_ms:.1} ms ({list_typed_ms:.1} ms decoded by kube-rs), page of 500 {page_ms:.1} ms ({page_typed_ms:.1} ms decoded), RSS {rss_loaded:.0} MiB",
        args.pods
    );

    drop(child);

    // Idle watches, each from the current revision (no initial events), on a fresh API server
    // each time (an allocator reuses what earlier workloads freed, which would hide growth):
    // first as client-go's informers hold them, HTTP/2 streams over few connections (100
    // streams each); then as kube-rs holds them, HTTP/1.1, a TLS connection per watch.
    let idle_watches_mib = idle_watches(&kelp, args.watches, Transport::Http2).await?;
    let idle_watches_http1_mib = idle_watches(&kelp, args.watches, Transport::Http1).await?;

    // The whole control plane idle (API server, scheduler and controller-manager in one
    // process, as `kelp server` runs by default), once its loops have synced.
    let rss_idle_control_plane = {
        let server = crate::control::start_server(&kelp, &[]).await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss_mib(server.child.id())
    };
    eprintln!("[api] kelp server with its control loops idle: {rss_idle_control_plane:.1} MiB RSS");

    // The reference: the storage layer's creates on the same backend, in this process, of
    // the object as the API server stored it (its served form without the resourceVersion),
    // so that both sides write values of one size: the storage layer is bound by the bytes
    // its commits write. Also, as before, of the bare ConfigMap the clients sent, which is
    // about half that size.
    let (storage_creates, storage_batch) =
        storage_create_rate(args.clients, duration, stored_value.clone()).await?;
    let ratio = creates / storage_creates;
    let bare = serde_json::to_vec(&configmap("x".into()))?;
    let bare_len = bare.len();
    let (bare_creates, _) = storage_create_rate(args.clients, duration, bare).await?;
    let bare_ratio = creates / bare_creates;
    eprintln!(
        "[api] storage create {storage_creates:.0}/s ({} bytes each), {storage_batch:.1} writes per commit; API/storage {ratio:.2}; \
         of the bare ConfigMap ({} bytes) {bare_creates:.0}/s, API/that {bare_ratio:.2}",
        stored_value.len(),
        bare_len
    );

    println!("metric                      value");
    println!("ready_ms                    {ready_ms:.0}");
    println!("rss_idle_mib                {rss_idle:.1}");
    println!("rss_idle_control_plane_mib  {rss_idle_control_plane:.1}");
    println!("api_creates_per_s           {creates:.0}");
    println!("api_creates_typed_per_s     {creates_typed:.0}");
    println!("storage_creates_per_s       {storage_creates:.0}");
    println!("api_vs_storage_creates      {ratio:.2}");
    println!("storage_creates_bare_per_s  {bare_creates:.0}");
    println!("api_vs_storage_bare         {bare_ratio:.2}");
    println!("get_per_s                   {gets:.0}");
    println!("list_{}_ms               {list_ms:.1}", args.pods);
    println!("page_500_ms                 {page_ms:.1}");
    println!("list_typed_ms               {list_typed_ms:.1}");
    println!("page_500_typed_ms           {page_typed_ms:.1}");
    println!("rss_after_{}_pods_mib    {rss_loaded:.1}", args.pods);
    println!(
        "idle_watches_{}_mib     {idle_watches_mib:.1}",
        args.watches
    );
    println!(
        "idle_watches_{}_http1_mib {idle_watches_http1_mib:.1}",
        args.watches
    );
    println!(
        "{}",
        json!({
            "suite": "api", "clients": args.clients,
            "api_vs_storage_creates": (ratio * 100.0).round() / 100.0,
            "api_creates_per_s": creates.round(), "api_creates_typed_per_s": creates_typed.round(),
            "api_writes_per_commit": (api_batch * 10.0).round() / 10.0, "storage_writes_per_commit": (storage_batch * 10.0).round() / 10.0, "storage_creates_per_s": storage_creates.round(),
            "storage_creates_bare_per_s": bare_creates.round(), "api_vs_storage_bare": (bare_ratio * 100.0).round() / 100.0,
            "stored_value_bytes": stored_value.len(),
            "create_p99_ms": create_lat.quantile_ms(0.99), "get_per_s": gets.round(), "get_p99_ms": get_lat.quantile_ms(0.99),
            "list_10k_ms": list_ms, "page_500_ms": page_ms,
            "list_10k_typed_ms": list_typed_ms, "page_500_typed_ms": page_typed_ms,
            "idle_watches_10k_mib": (idle_watches_mib * 10.0).round() / 10.0,
            "idle_watches_10k_http1_mib": (idle_watches_http1_mib * 10.0).round() / 10.0,
            "rss_idle_mib": (rss_idle * 10.0).round() / 10.0,
            "rss_idle_control_plane_mib": (rss_idle_control_plane * 10.0).round() / 10.0, "ready_ms": ready_ms.round(),
        })
    );
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Http2,
    Http1,
}

/// The RSS a fresh API server gains holding `n` idle watches on configmaps.
async fn idle_watches(
    kelp: &std::path::Path,
    n: usize,
    transport: Transport,
) -> anyhow::Result<f64> {
    let server = crate::control::start_server(
        kelp,
        &["--disable-controller-manager", "--disable-scheduler"],
    )
    .await?;
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&server.kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let rv = configmaps_revision(&server.client).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_mib(server.child.id());
    let mut h2 = None;
    let mut http1 = Vec::with_capacity(n);
    match transport {
        Transport::Http2 => h2 = Some(h2_watches(&config, &rv, n, 100).await?),
        Transport::Http1 => {
            let per_batch = 100;
            for chunk in 0..n.div_ceil(per_batch) {
                let client = kube::Client::try_from(config.clone())?;
                let api: Api<ConfigMap> = Api::namespaced(client, "default");
                let batch = per_batch.min(n - chunk * per_batch);
                let opened = futures::future::try_join_all((0..batch).map(|_| {
                    let (api, rv) = (api.clone(), rv.clone());
                    async move {
                        api.watch(&kube::api::WatchParams::default().timeout(290), &rv)
                            .await
                    }
                }))
                .await?;
                http1.extend(opened);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = rss_mib(server.child.id()) - before;
    eprintln!("[api] {n} idle watches over {transport:?}: +{grown:.1} MiB RSS");
    drop((h2, http1));
    Ok(grown)
}

#[derive(clap::Args)]
pub struct WatchesArgs {
    /// The server's kubeconfig.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Watches to open (HTTP/2, 100 streams per connection).
    #[arg(long, default_value_t = 10_000)]
    watches: usize,
    /// Seconds to hold them.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
}

/// Opens idle watches on a running server and holds them (no measurement of its own: for
/// a profiler attached to the server).
pub async fn hold_watches(args: WatchesArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let rv = configmaps_revision(&kube::Client::try_from(config.clone())?).await?;
    let held = h2_watches(&config, &rv, args.watches, 100).await?;
    eprintln!("holding {} watches", held.streams.len());
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    Ok(())
}

/// The revision a watch of default's configmaps starts from to see no initial events.
async fn configmaps_revision(client: &kube::Client) -> anyhow::Result<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let listed = cms.list(&ListParams::default().limit(1)).await?;
    Ok(listed.metadata.resource_version.unwrap_or_default())
}

/// Watches held open as HTTP/2 streams, and the connections that carry them.
struct H2Watches {
    connections: Vec<hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>>,
    streams: Vec<hyper::Response<hyper::body::Incoming>>,
}

/// Opens `n` watches of configmaps in default from `rv`, `per_connection` streams on each
/// HTTP/2 connection (what Go clients do: one connection, many streams), with the
/// kubeconfig's TLS identity.
async fn h2_watches(
    config: &kube::Config,
    rv: &str,
    n: usize,
    per_connection: usize,
) -> anyhow::Result<H2Watches> {
    use kube::client::ConfigExt;
    let mut tls = config.rustls_client_config()?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let authority = config
        .cluster_url
        .authority()
        .context("server URL has no host")?
        .clone();
    let host = authority.host().trim_matches(['[', ']']).to_string();
    let addr = format!("{host}:{}", authority.port_u16().unwrap_or(443));
    let server_name = rustls::pki_types::ServerName::try_from(host)?;
    let mut out = H2Watches {
        connections: Vec::new(),
        streams: Vec::with_capacity(n),
    };
    while out.streams.len() < n {
        let tcp = tokio::net::TcpStream::connect(&addr).await?;
        let stream = connector.connect(server_name.clone(), tcp).await?;
        let (sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(hyper_util::rt::TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        let authority = &authority;
        let batch = per_connection.min(n - out.streams.len());
        let opened = futures::future::try_join_all((0..batch).map(|_| {
            let mut sender = sender.clone();
            let uri = format!(
                "https://{authority}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=290"
            );
            async move {
                sender.ready().await?;
                let req = hyper::Request::get(uri).body(http_body_util::Empty::new())?;
                let resp = sender.send_request(req).await?;
                anyhow::ensure!(resp.status() == 200, "watch answered {}", resp.status());
                anyhow::Ok(resp)
            }
        }))
        .await?;
        out.streams.extend(opened);
        out.connections.push(sender);
    }
    Ok(out)
}

/// The storage layer's creates/s (and writes per commit) at `clients`, each create writing
/// `value`, on a fresh SQLite database.
async fn storage_create_rate(
    clients: usize,
    duration: Duration,
    value: Vec<u8>,
) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::Builder::new()
        .prefix("kelp-bench-api-storage-")
        .tempdir()?;
    let backend = Backend::open(
        &Endpoint::default_for(dir.path()),
        Options {
            compact_interval: None,
            ..Options::default()
        },
    )
    .await?;
    let (creates, _) = closed_loop(clients, duration, {
        let backend = backend.clone();
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
    let w = backend.write_stats();
    backend.close().await;
    Ok((creates, per_batch((0, 0), (w.batches, w.writes))))
}
