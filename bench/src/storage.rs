//! `kelp-bench storage`: the same operation mix against kelp-storage (SQLite, PostgreSQL) and
//! a single-member etcd, with every write durable (fsync on) everywhere.
//!
//! etcd is driven over gRPC with the transaction shapes kube-apiserver sends; kelp-storage is
//! driven in-process, the way Kelp's API server uses it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use futures::stream::BoxStream;
use kelp_storage::{Backend, Endpoint, KeyRange, Options, RangeRequest, Txn, TxnOutcome};
use rand::Rng;
use serde_json::json;

use crate::etcd::Etcd;
use crate::stats::Samples;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds each workload runs at each client count.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Concurrent clients, comma-separated.
    #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Keys the get and list workloads read.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Watchers of the watch workload.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Aggregate write rate of the watch workload (writes/s).
    #[arg(long, default_value_t = 500)]
    watch_rate: u64,
    /// Workloads to run, comma-separated.
    #[arg(
        long,
        default_value = "create,update,get,list,watch",
        value_delimiter = ','
    )]
    workloads: Vec<String>,
    /// Backends to run, comma-separated (etcd is the reference for ratios).
    #[arg(long, default_value = "etcd,sqlite,postgres", value_delimiter = ',')]
    backends: Vec<String>,
}

const VALUE_BYTES: usize = 256;
const LIST_LIMIT: i64 = 500;

/// What every backend offers the workloads.
pub trait Store: Clone + Send + Sync + 'static {
    /// Creates a key that must not exist; returns its revision.
    fn create(
        &self,
        key: String,
        value: Vec<u8>,
    ) -> impl Future<Output = anyhow::Result<i64>> + Send;
    /// Compare-and-swap on the mod revision; returns the new revision.
    fn update(
        &self,
        key: String,
        expected: i64,
        value: Vec<u8>,
    ) -> impl Future<Output = anyhow::Result<i64>> + Send;
    /// Linearizable read of one key; returns whether it exists.
    fn get(&self, key: String) -> impl Future<Output = anyhow::Result<bool>> + Send;
    /// The first `limit` keys under a prefix; returns how many came back.
    fn list(
        &self,
        prefix: String,
        limit: i64,
    ) -> impl Future<Output = anyhow::Result<usize>> + Send;
    /// Values of the puts under a prefix from now on; the watch is established on return.
    fn watch(
        &self,
        prefix: String,
    ) -> impl Future<Output = anyhow::Result<BoxStream<'static, anyhow::Result<Vec<Vec<u8>>>>>> + Send;
}

#[derive(Clone)]
struct KelpStore(Backend);

impl Store for KelpStore {
    async fn create(&self, key: String, value: Vec<u8>) -> anyhow::Result<i64> {
        match self.0.txn(Txn::create(key.clone(), value)).await? {
            TxnOutcome::Succeeded { revision, .. } => Ok(revision),
            TxnOutcome::Failed { .. } => bail!("{key} exists"),
        }
    }
    async fn update(&self, key: String, expected: i64, value: Vec<u8>) -> anyhow::Result<i64> {
        match self
            .0
            .txn(Txn::update(key.clone(), expected, value))
            .await?
        {
            TxnOutcome::Succeeded { revision, .. } => Ok(revision),
            TxnOutcome::Failed { .. } => bail!("{key} changed"),
        }
    }
    async fn get(&self, key: String) -> anyhow::Result<bool> {
        Ok(self.0.get(key).await?.0.is_some())
    }
    async fn list(&self, prefix: String, limit: i64) -> anyhow::Result<usize> {
        Ok(self
            .0
            .range(RangeRequest::new(KeyRange::prefix(prefix)).limit(limit))
            .await?
            .kvs
            .len())
    }
    async fn watch(
        &self,
        prefix: String,
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<Vec<Vec<u8>>>>> {
        let w = self.0.watch(KeyRange::prefix(prefix), 0).await?;
        Ok(
            w.map(|batch| Ok(batch?.into_iter().map(|e| e.kv.value).collect()))
                .boxed(),
        )
    }
}

#[derive(Clone)]
struct EtcdStore(etcd_client::Client);

impl EtcdStore {
    /// `If(ModRevision(key) = expected) Then(Put) Else(Get)`, kube-apiserver's write shape
    /// (expected 0: the key must not exist).
    async fn put_if(&self, key: String, expected: i64, value: Vec<u8>) -> anyhow::Result<i64> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                expected,
            )])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.0.clone().txn(txn).await?;
        if !resp.succeeded() {
            bail!("{key} is not at revision {expected}");
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }
}

impl Store for EtcdStore {
    async fn create(&self, key: String, value: Vec<u8>) -> anyhow::Result<i64> {
        self.put_if(key, 0, value).await
    }
    async fn update(&self, key: String, expected: i64, value: Vec<u8>) -> anyhow::Result<i64> {
        self.put_if(key, expected, value).await
    }
    async fn get(&self, key: String) -> anyhow::Result<bool> {
        Ok(!self.0.clone().get(key, None).await?.kvs().is_empty())
    }
    async fn list(&self, prefix: String, limit: i64) -> anyhow::Result<usize> {
        let opts = etcd_client::GetOptions::new()
            .with_prefix()
            .with_limit(limit);
        Ok(self.0.clone().get(prefix, Some(opts)).await?.kvs().len())
    }
    async fn watch(
        &self,
        prefix: String,
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<Vec<Vec<u8>>>>> {
        let opts = etcd_client::WatchOptions::new()
            .with_prefix()
            .with_prev_key();
        let mut stream = self.0.clone().watch(prefix, Some(opts)).await?;
        // The first response confirms the watch exists.
        let created = stream
            .message()
            .await?
            .ok_or_else(|| anyhow!("watch closed"))?;
        if !created.created() {
            bail!("watch not created");
        }
        Ok(futures::stream::unfold(stream, |mut s| async move {
            match s.message().await {
                Ok(Some(resp)) => {
                    let values = resp
                        .events()
                        .iter()
                        .filter_map(|e| e.kv().map(|kv| kv.value().to_vec()))
                        .collect();
                    Some((Ok(values), s))
                }
                Ok(None) => None,
                Err(e) => Some((Err(anyhow::Error::from(e)), s)),
            }
        })
        .boxed())
    }
}

/// One measured cell of the table.
struct Row {
    workload: &'static str,
    clients: usize,
    backend: String,
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn value(n: u64) -> Vec<u8> {
    let mut v = format!("{n}:").into_bytes();
    v.resize(VALUE_BYTES, b'x');
    v
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Runs `op` in `clients` concurrent loops for `duration`; returns ops/s and latencies.
async fn closed_loop<S, F, Fut>(
    store: &S,
    clients: usize,
    duration: Duration,
    op: F,
) -> anyhow::Result<(f64, Samples)>
where
    S: Store,
    F: Fn(S, usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now();
    let tasks = (0..clients).map(|client| {
        let (store, op) = (store.clone(), op.clone());
        tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut i = 0u64;
            while start.elapsed() < duration {
                let t = Instant::now();
                op(store.clone(), client, i).await?;
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
    let elapsed = start.elapsed().as_secs_f64();
    Ok((all.len() as f64 / elapsed, all))
}

async fn prefill<S: Store>(store: &S, keys: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let tasks = (0..64).map(|_| {
        let (store, next) = (store.clone(), next.clone());
        tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= keys as u64 {
                    return anyhow::Ok(());
                }
                store
                    .create(format!("/bench/list/{n:06}"), value(n))
                    .await?;
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t??;
    }
    Ok(())
}

/// Write-to-delivery latency: `watchers` watches on one prefix, writers paced to `rate`
/// writes/s in total; each watcher measures now minus the time stamped in the value.
async fn watch_delivery<S: Store>(
    store: &S,
    tag: &str,
    clients: usize,
    watchers: usize,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<(f64, Samples)> {
    let prefix = format!("/bench/watch/{tag}/");
    let mut streams = Vec::new();
    for _ in 0..watchers {
        streams.push(store.watch(prefix.clone()).await?);
    }
    let writes_done = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let watcher_tasks: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let (writes_done, written) = (writes_done.clone(), written.clone());
            tokio::spawn(async move {
                let mut samples = Samples::default();
                let mut seen = 0u64;
                loop {
                    if writes_done.load(Ordering::SeqCst) && seen >= written.load(Ordering::SeqCst)
                    {
                        return anyhow::Ok(samples);
                    }
                    let next = tokio::time::timeout(Duration::from_millis(200), s.next()).await;
                    let Ok(item) = next else { continue };
                    let values = item.ok_or_else(|| anyhow!("watch ended"))??;
                    let now = now_micros();
                    for v in values {
                        let stamp: u64 = std::str::from_utf8(&v)?
                            .split(':')
                            .next()
                            .unwrap_or("0")
                            .parse()?;
                        samples.record(Duration::from_micros(now.saturating_sub(stamp)));
                        seen += 1;
                    }
                }
            })
        })
        .collect();
    let interval = Duration::from_secs_f64(clients as f64 / rate as f64);
    let start = Instant::now();
    let writers = (0..clients).map(|client| {
        let (store, prefix, written) = (store.clone(), prefix.clone(), written.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0u64;
            while start.elapsed() < duration {
                tick.tick().await;
                store
                    .create(format!("{prefix}{client}/{i}"), value(now_micros()))
                    .await?;
                written.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            anyhow::Ok(())
        })
    });
    for w in futures::future::join_all(writers).await {
        w??;
    }
    let writes = written.load(Ordering::SeqCst);
    let write_rate = writes as f64 / start.elapsed().as_secs_f64();
    writes_done.store(true, Ordering::SeqCst);
    let mut all = Samples::default();
    let collected = tokio::time::timeout(
        Duration::from_secs(60),
        futures::future::join_all(watcher_tasks),
    )
    .await
    .context("watchers did not receive every write within 60 s")?;
    for t in collected {
        all.extend(t??);
    }
    if all.len() as u64 != writes * watchers as u64 {
        bail!(
            "watchers received {} events, expected {}",
            all.len(),
            writes * watchers as u64
        );
    }
    Ok((write_rate, all))
}

async fn run_backend<S: Store>(
    name: &str,
    store: S,
    args: &Args,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs_f64(args.duration);
    eprintln!("[{name}] prefilling {} keys", args.keys);
    prefill(&store, args.keys).await?;
    let runs = |w: &str| args.workloads.iter().any(|x| x == w);
    for &clients in &args.clients {
        let mut push = |workload: &'static str, (ops, mut samples): (f64, Samples)| {
            let row = Row {
                workload,
                clients,
                backend: name.to_string(),
                ops_per_s: ops,
                p50_ms: samples.quantile_ms(0.5),
                p99_ms: samples.quantile_ms(0.99),
            };
            eprintln!(
                "[{name}] {workload:<8} clients={clients:<3} {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
                row.ops_per_s, row.p50_ms, row.p99_ms
            );
            rows.push(row);
        };
        if runs("create") {
            let create = closed_loop(&store, clients, duration, move |s, client, i| async move {
                s.create(format!("/bench/create/{clients}/{client}/{i}"), value(i))
                    .await
                    .map(drop)
            })
            .await?;
            push("create", create);
        }

        if runs("update") {
            // Each client updates its own key, comparing against the revision it last wrote.
            let revs: Arc<Vec<AtomicU64>> =
                Arc::new((0..clients).map(|_| AtomicU64::new(0)).collect());
            for (client, rev) in revs.iter().enumerate() {
                let r = store
                    .create(format!("/bench/update/{clients}/{client}"), value(0))
                    .await?;
                rev.store(r as u64, Ordering::SeqCst);
            }
            let update = closed_loop(&store, clients, duration, move |s, client, i| {
                let revs = revs.clone();
                async move {
                    let expected = revs[client].load(Ordering::SeqCst) as i64;
                    let r = s
                        .update(
                            format!("/bench/update/{clients}/{client}"),
                            expected,
                            value(i),
                        )
                        .await?;
                    revs[client].store(r as u64, Ordering::SeqCst);
                    Ok(())
                }
            })
            .await?;
            push("update", update);
        }

        if runs("get") {
            let keys = args.keys as u64;
            let get = closed_loop(&store, clients, duration, move |s, _, _| async move {
                let n = rand::rng().random_range(0..keys);
                if !s.get(format!("/bench/list/{n:06}")).await? {
                    bail!("prefilled key {n} missing");
                }
                Ok(())
            })
            .await?;
            push("get", get);
        }

        if runs("list") {
            let expect = (LIST_LIMIT as usize).min(args.keys);
            let list = closed_loop(&store, clients, duration, move |s, _, _| async move {
                let n = s.list("/bench/list/".to_string(), LIST_LIMIT).await?;
                if n != expect {
                    bail!("listed {n} keys, expected {expect}");
                }
                Ok(())
            })
            .await?;
            push("list", list);
        }

        if runs("watch") {
            let watch = watch_delivery(
                &store,
                &clients.to_string(),
                clients,
                args.watchers,
                args.watch_rate,
                duration,
            )
            .await?;
            push("watch", watch);
        }
    }
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut peers = serde_json::Map::new();
    for backend in &args.backends {
        match backend.as_str() {
            "etcd" => {
                let etcd = Etcd::start().await?;
                peers.insert("etcd".into(), json!(etcd.version));
                let client = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await?;
                run_backend("etcd", EtcdStore(client), &args, &mut rows).await?;
            }
            "sqlite" => {
                let dir = tempfile::Builder::new()
                    .prefix("kelp-bench-sqlite-")
                    .tempdir()?;
                let endpoint = Endpoint::default_for(dir.path());
                let b = Backend::open(
                    &endpoint,
                    Options {
                        compact_interval: None,
                        ..Options::default()
                    },
                )
                .await?;
                run_backend("sqlite", KelpStore(b.clone()), &args, &mut rows).await?;
                b.close().await;
            }
            "postgres" => {
                let pg = tokio::task::spawn_blocking(kelp_testkit::PgCluster::start).await?;
                let endpoint = Endpoint::parse(&pg.url())?;
                let b = Backend::open(
                    &endpoint,
                    Options {
                        compact_interval: None,
                        ..Options::default()
                    },
                )
                .await?;
                run_backend("postgres", KelpStore(b.clone()), &args, &mut rows).await?;
                b.close().await;
            }
            other => bail!("unknown backend {other:?} (etcd, sqlite, postgres)"),
        }
    }
    print_table(&rows);
    let pick = |workload: &str, clients: usize, f: fn(&Row) -> f64| {
        let mut m = serde_json::Map::new();
        for r in rows
            .iter()
            .filter(|r| r.workload == workload && r.clients == clients)
        {
            m.insert(r.backend.clone(), json!((f(r) * 100.0).round() / 100.0));
        }
        serde_json::Value::Object(m)
    };
    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let summary = json!({
        "suite": "storage",
        "creates_per_s_64": pick("create", max_clients, |r| r.ops_per_s),
        "watch_p99_ms": pick("watch", max_clients, |r| r.p99_ms),
        "clients": max_clients,
        "peers": peers,
        "rows": rows.iter().map(|r| json!({
            "workload": r.workload, "clients": r.clients, "backend": r.backend,
            "ops_per_s": (r.ops_per_s * 10.0).round() / 10.0, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
        })).collect::<Vec<_>>(),
    });
    println!("{summary}");
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<8} {:>7} {:<9} {:>10} {:>9} {:>9} {:>14}",
        "workload", "clients", "backend", "ops/s", "p50 ms", "p99 ms", "vs etcd"
    );
    for r in rows {
        let etcd = rows
            .iter()
            .find(|e| e.backend == "etcd" && e.workload == r.workload && e.clients == r.clients);
        // Throughput ratios for the closed loops; latency ratios for watch delivery, whose
        // write rate is fixed.
        let ratio = match etcd {
            Some(e) if r.workload == "watch" => format!("p99 x{:.2}", r.p99_ms / e.p99_ms),
            Some(e) => format!("x{:.2}", r.ops_per_s / e.ops_per_s),
            None => "-".into(),
        };
        println!(
            "{:<8} {:>7} {:<9} {:>10.0} {:>9.2} {:>9.2} {:>14}",
            r.workload, r.clients, r.backend, r.ops_per_s, r.p50_ms, r.p99_ms, ratio
        );
    }
}
