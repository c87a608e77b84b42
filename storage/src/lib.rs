//! kelp-storage: etcd's semantics over SQL, the ground the Kelp API server stands on.
//!
//! A [`Backend`] offers what kube-apiserver asks of etcd: a global gapless revision; get and
//! list at the head or at a past revision with limit and count; single-key transactions
//! (create, compare-and-swap update and delete) whose failed compare returns the current
//! value; watches of a key range from a revision; compaction; and leases.
//!
//! The SQL logic is written once ([`sql`], [`writer`]) for SQLite (embedded, one process)
//! and PostgreSQL (shared by several processes, LISTEN/NOTIFY wake-ups). Concurrent writes
//! are group-committed: one database transaction, one fsync, many writes.

mod compact;
mod endpoint;
mod error;
mod hub;
mod lease;
mod sql;
mod types;
mod watch;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor};
use tokio::sync::{Notify, mpsc, oneshot, watch as tokio_watch};

pub use endpoint::{Endpoint, Synchronous};
pub use error::{Result, StorageError};
pub use types::{
    Compare, Event, EventKind, KeyRange, KeyValue, MAX_KEY_BYTES, MAX_VALUE_BYTES, Op,
    RangeRequest, RangeResponse, Revision, Txn, TxnOutcome, prefix_end,
};
pub use watch::WatchStream;

use hub::Hub;
use sql::Dialect;

/// Tuning of a [`Backend`]. The defaults are what `kelp server` runs with.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long to keep retrying to reach the database at start-up (None: forever, as a
    /// server should).
    pub connect_timeout: Option<Duration>,
    /// Compact every interval to the head seen one interval earlier (None: only on demand).
    pub compact_interval: Option<Duration>,
    /// Never compact the newest revisions.
    pub compact_min_retain: i64,
    /// Revisions removed per compaction transaction, so writers wait at most one small batch.
    pub compact_batch: i64,
    /// Fallback log poll for watches (PostgreSQL NOTIFY makes it rarely needed).
    pub poll_interval: Duration,
    /// How often expired leases are looked for.
    pub lease_check_interval: Duration,
    /// Read connections per process.
    pub read_connections: u32,
    /// Changes values on their way to and from the database (encryption at rest).
    pub transformer: Option<Arc<dyn Transformer>>,
    /// SQLite only: hold the datastore's lock (`<file>.lock`), so that this backend is the
    /// file's only writer and knows the head without reading it ([`Backend::head`]); an open
    /// fails while another backend holds it. Off, several backends may share one file
    /// (SQLite's own locking) and the head is read from the database.
    pub exclusive: bool,
}

/// Turns values into their stored form and back, by key (upstream's storage value
/// transformers: encryption of Secrets at rest). Everything above the storage layer sees the
/// plain value; the database holds what `write_stored` returns.
pub trait Transformer: Send + Sync + std::fmt::Debug {
    fn write_stored(&self, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>>;
    fn read_stored(&self, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>>;
    /// Whether values of this key are transformed (a rewrite may change what is stored even
    /// when the value is the same: a new key).
    fn covers(&self, key: &[u8]) -> bool;
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: None,
            compact_interval: Some(Duration::from_secs(300)),
            compact_min_retain: 1000,
            compact_batch: 1000,
            poll_interval: Duration::from_secs(1),
            lease_check_interval: Duration::from_millis(500),
            read_connections: 8,
            exclusive: true,
            transformer: None,
        }
    }
}

/// A stored value in its plain form (deletes carry no value).
pub(crate) fn plain(t: &dyn Transformer, mut kv: KeyValue) -> Result<KeyValue> {
    if !kv.value.is_empty() {
        kv.value = t.read_stored(&kv.key, std::mem::take(&mut kv.value))?;
    }
    Ok(kv)
}

/// State shared by the handle and the background tasks.
pub(crate) struct Shared {
    pub(crate) dialect: Dialect,
    pub(crate) read: AnyPool,
    /// One connection: this process's writer (group commit) and compactor.
    pub(crate) write: AnyPool,
    pub(crate) options: Options,
    /// The newest revision this process's writer has committed, kept only where that is
    /// the head of the database: an SQLite file this process holds the lock of.
    pub(crate) committed: Option<std::sync::atomic::AtomicI64>,
    /// Write transactions (batches) this process's writer committed, and the writes in them.
    pub(crate) batches: std::sync::atomic::AtomicU64,
    pub(crate) writes: std::sync::atomic::AtomicU64,
}

/// What this process's writer has committed: group commit's batches and the writes in them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub batches: u64,
    pub writes: u64,
}

/// A handle on the store. Cheap to clone; the background tasks stop when the last handle
/// is dropped or [`Backend::close`] is called.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    hub: Arc<Hub>,
    queue: mpsc::Sender<writer::PendingWrite>,
    shutdown: tokio_watch::Sender<bool>,
    endpoint: Endpoint,
    /// An SQLite datastore's lock file, held while the backend is open.
    lock: std::sync::Mutex<Option<std::fs::File>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl Backend {
    /// Opens (creating if needed) the datastore, applies the schema, and starts the writer,
    /// the watch follower, the compactor and the lease reaper. While the database cannot be
    /// reached it logs why and retries, up to `options.connect_timeout`.
    pub async fn open(endpoint: &Endpoint, options: Options) -> Result<Backend> {
        sqlx::any::install_default_drivers();
        let lock = match endpoint {
            Endpoint::Sqlite { path, .. } if options.exclusive => Some(lock_sqlite(path).await?),
            Endpoint::Sqlite { .. } | Endpoint::Postgres { .. } => None,
        };
        let (dialect, url, synchronous) = match endpoint {
            Endpoint::Sqlite { path, synchronous } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StorageError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                let encoded: String = path
                    .to_string_lossy()
                    .chars()
                    .map(|c| match c {
                        '?' => "%3F".to_string(),
                        '#' => "%23".to_string(),
                        '%' => "%25".to_string(),
                        ' ' => "%20".to_string(),
                        c => c.to_string(),
                    })
                    .collect();
                (
                    Dialect::Sqlite,
                    format!("sqlite://{encoded}?mode=rwc"),
                    Some(*synchronous),
                )
            }
            Endpoint::Postgres { url } => (Dialect::Postgres, url.clone(), None),
        };
        let connect_options: AnyConnectOptions = url
            .parse::<AnyConnectOptions>()
            .map_err(|e| StorageError::InvalidEndpoint(format!("{}: {e}", endpoint.redacted())))?
            .disable_statement_logging();
        let pool = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(0)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if let Some(sync) = synchronous {
                            let sync = match sync {
                                Synchronous::Full => "FULL",
                                Synchronous::Normal => "NORMAL",
                            };
                            conn.execute(sqlx::AssertSqlSafe(format!(
                                "PRAGMA busy_timeout = 30000; PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}"
                            )))
                            .await?;
                        }
                        Ok(())
                    })
                })
                .connect_lazy_with(connect_options.clone())
        };
        let write = pool(1);
        let read = pool(options.read_connections.max(1));

        let deadline = options
            .connect_timeout
            .map(|t| tokio::time::Instant::now() + t);
        let mut backoff = Duration::from_millis(100);
        loop {
            match prepare(dialect, &write).await {
                Ok(()) => break,
                Err(e @ StorageError::Corrupt(_)) => return Err(e),
                Err(e) => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() + backoff > d) {
                        return Err(StorageError::Unavailable(format!(
                            "datastore {} unreachable: {e}",
                            endpoint.redacted()
                        )));
                    }
                    tracing::warn!(datastore = %endpoint.redacted(), error = %e, retry_in = ?backoff,
                        "cannot open the datastore; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let head: Revision = sqlx::query_scalar(sql::HEAD).fetch_one(&read).await?;

        let shared = Arc::new(Shared {
            dialect,
            read,
            write,
            options: options.clone(),
            committed: lock
                .is_some()
                .then(|| std::sync::atomic::AtomicI64::new(head)),
            batches: Default::default(),
            writes: Default::default(),
        });
        let hub = Arc::new(Hub::new(head));
        let (shutdown, shutdown_rx) = tokio_watch::channel(false);
        let (queue, queue_rx) = mpsc::channel(writer::MAX_BATCH * 4);
        let (committed_tx, committed_rx) = mpsc::unbounded_channel();
        let wake = Arc::new(Notify::new());

        tokio::spawn(writer::run(shared.clone(), queue_rx, committed_tx));
        tokio::spawn(hub::run_follower(
            shared.clone(),
            hub.clone(),
            committed_rx,
            wake.clone(),
            options.poll_interval,
            shutdown_rx.clone(),
        ));
        if dialect == Dialect::Postgres {
            tokio::spawn(hub::run_pg_listener(url, wake, shutdown_rx.clone()));
        }
        let backend = Backend {
            inner: Arc::new(Inner {
                shared,
                hub,
                queue,
                shutdown,
                endpoint: endpoint.clone(),
                lock: std::sync::Mutex::new(lock),
            }),
        };
        if let Some(interval) = options.compact_interval {
            let previous_head = Arc::new(std::sync::atomic::AtomicI64::new(-1));
            tokio::spawn(every(
                backend.downgrade(),
                interval,
                shutdown_rx.clone(),
                "compaction",
                move |b| compact::tick(b, previous_head.clone()),
            ));
        }
        tokio::spawn(every(
            backend.downgrade(),
            options.lease_check_interval,
            shutdown_rx,
            "lease expiry",
            lease::tick,
        ));
        tracing::info!(datastore = %endpoint.redacted(), revision = head, "datastore open");
        Ok(backend)
    }

    /// The datastore this backend was opened on (password hidden).
    pub fn endpoint(&self) -> String {
        self.inner.endpoint.redacted()
    }

    /// Stops the background tasks; pending watches end with [`StorageError::Closed`].
    pub async fn close(&self) {
        let _ = self.inner.shutdown.send(true);
        self.inner.shared.read.close().await;
        self.inner.shared.write.close().await;
        drop(
            self.inner
                .lock
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }

    fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The head revision: from memory where this process is the database's only writer (an
    /// SQLite file it holds the lock of), else read from the database. Every write
    /// acknowledged before the call is at or below it.
    pub async fn head(&self) -> Result<Revision> {
        match &self.shared().committed {
            Some(c) => Ok(c.load(std::sync::atomic::Ordering::Acquire)),
            None => Ok(self.revisions().await?.0),
        }
    }

    /// The batches and writes this process's writer has committed.
    pub fn write_stats(&self) -> WriteStats {
        let s = self.shared();
        WriteStats {
            batches: s.batches.load(std::sync::atomic::Ordering::Relaxed),
            writes: s.writes.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The head revision and the compact revision, read from the database.
    pub async fn revisions(&self) -> Result<(Revision, Revision)> {
        Ok(sqlx::query_as(sql::HEAD_AND_COMPACT)
            .fetch_one(&self.shared().read)
            .await?)
    }

    /// Runs a single-key transaction. Concurrent calls are committed together.
    pub async fn txn(&self, mut txn: Txn) -> Result<TxnOutcome> {
        txn.validate()?;
        let transformer = self.shared().options.transformer.clone();
        if let (Some(t), Op::Put { value, .. }) = (&transformer, &mut txn.op) {
            *value = t.write_stored(&txn.key, std::mem::take(value))?;
        }
        let (reply, rx) = oneshot::channel();
        self.inner
            .queue
            .send(writer::PendingWrite { txn, reply })
            .await
            .map_err(|_| StorageError::Closed)?;
        let outcome = rx.await.map_err(|_| StorageError::Closed)??;
        let Some(t) = transformer else {
            return Ok(outcome);
        };
        Ok(match outcome {
            TxnOutcome::Succeeded { revision, prev_kv } => TxnOutcome::Succeeded {
                revision,
                prev_kv: prev_kv.map(|kv| plain(t.as_ref(), kv)).transpose()?,
            },
            TxnOutcome::Failed { current, revision } => TxnOutcome::Failed {
                current: current.map(|kv| plain(t.as_ref(), kv)).transpose()?,
                revision,
            },
        })
    }

    /// Reads one key at the head.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<(Option<KeyValue>, Revision)> {
        let key = key.into();
        types::validate_key(&key)?;
        let row = sqlx::query(sql::GET_AT_HEAD)
            .bind(key)
            .fetch_one(&self.shared().read)
            .await?;
        use sqlx::Row;
        let head: Revision = row.try_get(0)?;
        let found: Option<Vec<u8>> = row.try_get(2)?;
        let kv = match found {
            Some(_) => Some(self.plain(sql::decode_kv(&row, 2)?)?),
            None => None,
        };
        Ok((kv, head))
    }

    /// Reads a key or a range, at the head or at a past revision.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        req.range.validate()?;
        if req.revision < 0 {
            return Err(StorageError::InvalidRevision(req.revision));
        }
        let shared = self.shared();
        let mut conn = shared.read.acquire().await?;
        let mut tx = conn.begin_with(shared.dialect.begin_read()).await?;
        let (head, compact): (Revision, Revision) = sqlx::query_as(sql::HEAD_AND_COMPACT)
            .fetch_one(&mut *tx)
            .await?;
        let at = if req.revision == 0 {
            head
        } else {
            req.revision
        };
        if at > head {
            return Err(StorageError::FutureRevision {
                requested: at,
                current: head,
            });
        }
        if at < compact {
            return Err(StorageError::Compacted {
                requested: at,
                compact_revision: compact,
            });
        }
        let (start, end) = (req.range.start.clone(), req.range.sql_end());
        let at_head = at == head;
        let count = CountQuery {
            start: &start,
            end: &end,
            at,
            at_head,
        };
        if req.count_only {
            let n = count.run(&mut tx).await?;
            tx.commit().await?;
            return Ok(RangeResponse {
                header_revision: head,
                read_revision: at,
                kvs: vec![],
                more: false,
                count: n,
            });
        }
        let fetch = if req.limit > 0 {
            req.limit + 1
        } else {
            i64::MAX
        };
        let rows = if at_head {
            sqlx::query(sql::RANGE_AT_HEAD)
                .bind(start.clone())
                .bind(end.clone())
                .bind(fetch)
                .fetch_all(&mut *tx)
                .await?
        } else {
            sqlx::query(sql::RANGE_AT_REV)
                .bind(start.clone())
                .bind(end.clone())
                .bind(at)
                .bind(fetch)
                .fetch_all(&mut *tx)
                .await?
        };
        let mut kvs = rows
            .iter()
            .map(|r| self.plain(sql::decode_kv(r, 0)?))
            .collect::<Result<Vec<_>>>()?;
        let more = req.limit > 0 && kvs.len() as i64 > req.limit;
        let n = if more {
            kvs.truncate(req.limit as usize);
            count.run(&mut tx).await?
        } else {
            kvs.len() as i64
        };
        tx.commit().await?;
        Ok(RangeResponse {
            header_revision: head,
            read_revision: at,
            kvs,
            more,
            count: n,
        })
    }

    /// Watches a key range from `start` (0: from the next write). Fails at once with
    /// `Compacted` if `start` is below the compact revision and with `FutureRevision` if it
    /// is beyond the next revision.
    pub async fn watch(&self, range: KeyRange, start: Revision) -> Result<WatchStream> {
        range.validate()?;
        if start < 0 {
            return Err(StorageError::InvalidRevision(start));
        }
        let (head, compact) = self.revisions().await?;
        let start = if start == 0 { head + 1 } else { start };
        if start < compact {
            return Err(StorageError::Compacted {
                requested: start,
                compact_revision: compact,
            });
        }
        if start > head + 1 {
            return Err(StorageError::FutureRevision {
                requested: start,
                current: head,
            });
        }
        Ok(watch::spawn(
            self.inner.shared.clone(),
            self.inner.hub.clone(),
            range,
            start,
        ))
    }

    /// Whether values of `key` are transformed before they are stored (rewriting one stores
    /// it anew, under the current key, even when it did not change).
    pub fn transforms(&self, key: &[u8]) -> bool {
        self.shared()
            .options
            .transformer
            .as_ref()
            .is_some_and(|t| t.covers(key))
    }

    /// A value as read from the database, in its plain form.
    fn plain(&self, kv: KeyValue) -> Result<KeyValue> {
        match &self.shared().options.transformer {
            Some(t) => plain(t.as_ref(), kv),
            None => Ok(kv),
        }
    }

    /// Removes the history below `revision`: reads below it and watches starting below it
    /// fail as compacted afterwards. Works in small batches so writers are not stalled.
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        compact::compact(self.shared(), revision).await
    }

    /// Grants a lease of `ttl` seconds; keys put with it are deleted when it expires or is
    /// revoked.
    pub async fn lease_grant(&self, ttl: i64) -> Result<i64> {
        lease::grant(self.shared(), ttl).await
    }

    /// Renews a lease for its TTL; returns the TTL.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        lease::keep_alive(self.shared(), id).await
    }

    /// Revokes a lease and deletes its keys.
    pub async fn lease_revoke(&self, id: i64) -> Result<()> {
        lease::revoke(self, id).await
    }

    /// Seconds left before the lease expires.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<i64> {
        lease::time_to_live(self.shared(), id).await
    }
}

/// Runs `tick` every `interval` until shutdown or until the last handle is dropped; a failed
/// tick is logged and tried again at the next one.
async fn every<F, Fut>(
    backend: std::sync::Weak<Inner>,
    interval: Duration,
    mut shutdown: tokio_watch::Receiver<bool>,
    what: &'static str,
    mut tick: F,
) where
    F: FnMut(Backend) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let Some(inner) = backend.upgrade() else {
            return;
        };
        if let Err(e) = tick(Backend { inner }).await {
            tracing::warn!(error = %e, "{what} failed; will retry");
        }
    }
}

/// Counts the keys of a range at a revision, within the caller's read transaction.
struct CountQuery<'a> {
    start: &'a [u8],
    end: &'a [u8],
    at: Revision,
    at_head: bool,
}

impl CountQuery<'_> {
    async fn run(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<i64> {
        let q = if self.at_head {
            sqlx::query_scalar(sql::COUNT_AT_HEAD)
                .bind(self.start.to_vec())
                .bind(self.end.to_vec())
        } else {
            sqlx::query_scalar(sql::COUNT_AT_REV)
                .bind(self.start.to_vec())
                .bind(self.end.to_vec())
                .bind(self.at)
        };
        Ok(q.fetch_one(&mut **tx).await?)
    }
}

/// Applies the schema and checks the database answers.
async fn prepare(dialect: Dialect, pool: &AnyPool) -> Result<()> {
    pool.acquire().await?.ping().await?;
    let migrator = dialect.migrator();
    migrator.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => StorageError::from(e),
        other => StorageError::Corrupt(format!("schema migration: {other}")),
    })?;
    Ok(())
}

/// Takes the exclusive lock of an SQLite datastore (`<file>.lock` beside it), so that this
/// process is its only writer and knows its head without reading it. A lock still held
/// by a backend being shut down is waited for, briefly; one held by another process is an
/// error naming the file.
async fn lock_sqlite(path: &std::path::Path) -> Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            StorageError::Unavailable(format!("cannot open {}: {e}", lock_path.display()))
        })?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Unavailable(format!(
                    "{} is in use by another process (its lock {} is held)",
                    path.display(),
                    lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StorageError::Unavailable(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )));
            }
        }
    }
}
