//! Group commit: one writer task per process drains the queue of pending transactions into a
//! single database transaction. Each transaction's compare is evaluated on its own against
//! the state at the head (including earlier writes of the same batch); a failed compare
//! does not abort the batch. Successful writes get consecutive revisions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::{AnyConnection, AssertSqlSafe, Row};
use tokio::sync::{mpsc, oneshot};

use crate::Shared;
use crate::error::{Result, StorageError};
use crate::sql::{self, Dialect, chunks, padded};
use crate::types::{Compare, Event, EventKind, KeyValue, Op, Revision, Txn, TxnOutcome};

/// Most transactions committed in one database transaction.
pub(crate) const MAX_BATCH: usize = 256;

pub(crate) struct PendingWrite {
    pub(crate) txn: Txn,
    pub(crate) reply: oneshot::Sender<Result<TxnOutcome>>,
}

/// Writes committed together: published to watchers in one piece.
pub(crate) struct CommittedBatch {
    pub(crate) first: Revision,
    pub(crate) events: Vec<Event>,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<PendingWrite>,
    committed: mpsc::UnboundedSender<CommittedBatch>,
) {
    let mut pending = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut pending, MAX_BATCH).await > 0 {
        let txns: Vec<&Txn> = pending.iter().map(|p| &p.txn).collect();
        let result = commit_batch(&shared, &txns).await;
        match result {
            Ok(batch) => {
                shared
                    .batches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                shared
                    .writes
                    .fetch_add(pending.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if let (Some(c), Some(last)) =
                    (&shared.committed, batch.events.last().map(Event::revision))
                {
                    // Before any reply: a write acknowledged is at or below the head.
                    c.fetch_max(last, std::sync::atomic::Ordering::AcqRel);
                }
                if let Some(first) = batch.events.first().map(Event::revision) {
                    // The follower publishes it to watchers; a closed follower means shutdown.
                    let _ = committed.send(CommittedBatch {
                        first,
                        events: batch.events,
                    });
                }
                for (p, outcome) in pending.drain(..).zip(batch.outcomes) {
                    let _ = p.reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, writes = pending.len(), "write batch failed");
                for p in pending.drain(..) {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

struct BatchResult {
    outcomes: Vec<Result<TxnOutcome>>,
    events: Vec<Event>,
}

async fn commit_batch(shared: &Shared, txns: &[&Txn]) -> Result<BatchResult> {
    let mut conn = shared.write.acquire().await?;
    let result = commit_batch_on(shared.dialect, &mut conn, txns).await;
    if result.is_err() {
        // The connection may be broken or mid-transaction: closing it rolls back.
        conn.detach();
    }
    result
}

/// One write transaction in two steps: take the writer lock and read the batch's keys, then
/// write and commit. Each step is one [`Script`], which SQLite runs in one round trip.
async fn commit_batch_on(
    dialect: Dialect,
    conn: &mut AnyConnection,
    txns: &[&Txn],
) -> Result<BatchResult> {
    let keys: Vec<&[u8]> = {
        let mut seen = HashSet::new();
        txns.iter()
            .map(|t| t.key.as_slice())
            .filter(|k| seen.insert(*k))
            .collect()
    };
    let mut read = Script::new(dialect);
    read.push(dialect.begin_write(), vec![]);
    if dialect == Dialect::Postgres {
        // The kv_meta row lock serializes writers of every process; what follows reads the
        // state committed before it was granted.
        read.push("UPDATE kv_meta SET rev = rev WHERE id = 1", vec![]);
    }
    read.push(
        format!(
            "SELECT m.rev, c.key, c.create_rev, c.mod_rev, c.version, c.lease, c.value FROM kv_meta m \
             LEFT JOIN kv_current c ON c.key IN ({}) WHERE m.id = 1",
            dialect.in_list(keys.len().next_power_of_two())
        ),
        padded(&keys).map(|k| Arg::Bytes(k.to_vec())).collect(),
    );
    let rows = read.fetch_all(conn).await?;
    let head: Revision = match rows.first() {
        Some(row) => row.try_get(0)?,
        None => return Err(sql::corrupt("kv_meta has no row")),
    };
    let mut state: HashMap<Vec<u8>, KeyValue> = HashMap::with_capacity(keys.len());
    for row in &rows {
        if row.try_get::<Option<Vec<u8>>, _>(1)?.is_some() {
            let kv = sql::decode_kv(row, 1)?;
            state.insert(kv.key.clone(), kv);
        }
    }
    let leases: Vec<i64> = {
        let mut seen = HashSet::new();
        txns.iter()
            .filter_map(|t| match t.op {
                Op::Put { lease, .. } if lease != 0 => Some(lease),
                _ => None,
            })
            .filter(|l| seen.insert(*l))
            .collect()
    };
    let live_leases = fetch_leases(dialect, conn, &leases).await?;

    let mut rev = head;
    let mut outcomes: Vec<Option<Result<TxnOutcome>>> = Vec::with_capacity(txns.len());
    let mut failed_current: Vec<(usize, Option<KeyValue>)> = Vec::new();
    let mut events = Vec::new();
    let mut rows: Vec<LogRow> = Vec::new();
    for (i, txn) in txns.iter().enumerate() {
        let current = state.get(&txn.key);
        let holds = match txn.compare {
            Compare::Any => true,
            Compare::Absent => current.is_none(),
            Compare::ModRevision(r) => current.map(|c| c.mod_revision) == Some(r),
        } && (current.is_some() || matches!(txn.op, Op::Put { .. }));
        if !holds {
            failed_current.push((i, current.cloned()));
            outcomes.push(None);
            continue;
        }
        if let Op::Put { lease, .. } = txn.op
            && lease != 0
            && !live_leases.contains(&lease)
        {
            outcomes.push(Some(Err(StorageError::LeaseNotFound(lease))));
            continue;
        }
        rev += 1;
        let prev = current.cloned();
        let (event, row) = match &txn.op {
            Op::Put { value, lease } => {
                let kv = KeyValue {
                    key: txn.key.clone(),
                    value: value.clone(),
                    create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                    mod_revision: rev,
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                    lease: *lease,
                };
                state.insert(txn.key.clone(), kv.clone());
                let row = LogRow::from_kv(&kv, prev.as_ref(), false);
                (
                    Event {
                        kind: EventKind::Put,
                        kv,
                        prev_kv: prev.clone(),
                    },
                    row,
                )
            }
            Op::Delete => {
                let Some(p) = prev.as_ref() else {
                    unreachable!("a delete's compare holds only on an existing key")
                };
                let kv = KeyValue {
                    key: txn.key.clone(),
                    value: Vec::new(),
                    create_revision: p.create_revision,
                    mod_revision: rev,
                    version: 0,
                    lease: 0,
                };
                state.remove(&txn.key);
                let row = LogRow::from_kv(&kv, Some(p), true);
                (
                    Event {
                        kind: EventKind::Delete,
                        kv,
                        prev_kv: prev.clone(),
                    },
                    row,
                )
            }
        };
        rows.push(row);
        events.push(event);
        outcomes.push(Some(Ok(TxnOutcome::Succeeded {
            revision: rev,
            prev_kv: prev,
        })));
    }
    // A failed compare reports the head as of the whole batch, so that the current value it
    // returns is never newer than the revision it comes with.
    for (i, current) in failed_current {
        outcomes[i] = Some(Ok(TxnOutcome::Failed {
            current,
            revision: rev,
        }));
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.expect("every outcome set"))
        .collect();

    let mut write = Script::new(dialect);
    if rows.is_empty() {
        write.push("ROLLBACK", vec![]);
        write.execute(conn).await?;
        return Ok(BatchResult { outcomes, events });
    }
    insert_log(&mut write, rows);
    let touched: Vec<&[u8]> = {
        let mut seen = HashSet::new();
        events
            .iter()
            .map(|e| e.kv.key.as_slice())
            .filter(|k| seen.insert(*k))
            .collect()
    };
    write_current(&mut write, &touched, &state);
    write.push(
        format!(
            "UPDATE kv_meta SET rev = {} WHERE id = 1",
            dialect.in_list(1)
        ),
        vec![Arg::Int(rev)],
    );
    if dialect == Dialect::Postgres {
        // Delivered at commit, in commit order, to every process's LISTEN connection.
        write.push(
            "SELECT pg_notify('kelp_kv', $1)",
            vec![Arg::Text(rev.to_string())],
        );
    }
    write.push("COMMIT", vec![]);
    write.execute(conn).await?;
    Ok(BatchResult { outcomes, events })
}

/// A bound parameter of a [`Script`] statement.
enum Arg {
    Int(i64),
    Bytes(Vec<u8>),
    Text(String),
}

/// Statements run in order on one connection. SQLite gets them as one multi-statement query:
/// sqlx runs SQLite on a worker thread, and each round trip to it costs two thread wake-ups,
/// which dominated the commit time of a batch. PostgreSQL, whose extended protocol takes one
/// statement per query, gets them one by one. Statements number their parameters from 1
/// (`Dialect::in_list`), which SQLite sees as anonymous `?` bound in order.
struct Script {
    dialect: Dialect,
    statements: Vec<(String, Vec<Arg>)>,
}

impl Script {
    fn new(dialect: Dialect) -> Self {
        Script {
            dialect,
            statements: Vec::new(),
        }
    }

    fn push(&mut self, sql: impl Into<String>, args: Vec<Arg>) {
        self.statements.push((sql.into(), args));
    }

    fn queries(self) -> Vec<sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>> {
        let bind = |mut q: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>,
                    args: Vec<Arg>| {
            for a in args {
                q = match a {
                    Arg::Int(i) => q.bind(i),
                    Arg::Bytes(b) => q.bind(b),
                    Arg::Text(t) => q.bind(t),
                };
            }
            q
        };
        match self.dialect {
            Dialect::Sqlite => {
                let (sql, args): (Vec<String>, Vec<Vec<Arg>>) = self.statements.into_iter().unzip();
                let q = sqlx::query(AssertSqlSafe(sql.join(";\n")));
                vec![bind(q, args.into_iter().flatten().collect())]
            }
            Dialect::Postgres => self
                .statements
                .into_iter()
                .map(|(sql, args)| bind(sqlx::query(AssertSqlSafe(sql)), args))
                .collect(),
        }
    }

    async fn execute(self, conn: &mut AnyConnection) -> Result<()> {
        for q in self.queries() {
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// The rows of every statement, in order.
    async fn fetch_all(self, conn: &mut AnyConnection) -> Result<Vec<sqlx::any::AnyRow>> {
        let mut rows = Vec::new();
        for q in self.queries() {
            rows.extend(q.fetch_all(&mut *conn).await?);
        }
        Ok(rows)
    }
}

struct LogRow {
    rev: Revision,
    key: Vec<u8>,
    create_rev: Revision,
    prev_rev: Revision,
    version: i64,
    lease: i64,
    deleted: i64,
    value: Vec<u8>,
}

impl LogRow {
    fn from_kv(kv: &KeyValue, prev: Option<&KeyValue>, deleted: bool) -> Self {
        LogRow {
            rev: kv.mod_revision,
            key: kv.key.clone(),
            create_rev: kv.create_revision,
            prev_rev: prev.map_or(0, |p| p.mod_revision),
            version: kv.version,
            lease: kv.lease,
            deleted: deleted as i64,
            value: kv.value.clone(),
        }
    }
}

async fn fetch_leases(
    dialect: Dialect,
    conn: &mut AnyConnection,
    ids: &[i64],
) -> Result<HashSet<i64>> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let mut script = Script::new(dialect);
    script.push(
        format!(
            "SELECT id FROM kv_lease WHERE id IN ({})",
            dialect.in_list(ids.len().next_power_of_two())
        ),
        padded(ids).map(|id| Arg::Int(*id)).collect(),
    );
    script
        .fetch_all(conn)
        .await?
        .iter()
        .map(|row| Ok(row.try_get::<i64, _>(0)?))
        .collect()
}

fn insert_log(script: &mut Script, rows: Vec<LogRow>) {
    let dialect = script.dialect;
    for chunk in chunks(&rows) {
        let sql = format!(
            "INSERT INTO kv_log (rev, key, create_rev, prev_rev, version, lease, deleted, value) VALUES {}",
            dialect.values_list(chunk.len(), 8)
        );
        let mut args = Vec::with_capacity(chunk.len() * 8);
        for r in chunk {
            args.extend([
                Arg::Int(r.rev),
                Arg::Bytes(r.key.clone()),
                Arg::Int(r.create_rev),
                Arg::Int(r.prev_rev),
                Arg::Int(r.version),
                Arg::Int(r.lease),
                Arg::Int(r.deleted),
                Arg::Bytes(r.value.clone()),
            ]);
        }
        script.push(sql, args);
    }
}

/// Brings `kv_current` to the batch's final state of every key it touched.
fn write_current(script: &mut Script, keys: &[&[u8]], state: &HashMap<Vec<u8>, KeyValue>) {
    let dialect = script.dialect;
    let (live, gone): (Vec<&[u8]>, Vec<&[u8]>) = keys.iter().partition(|k| state.contains_key(**k));
    for chunk in chunks(&live) {
        let sql = format!(
            "INSERT INTO kv_current ({}) VALUES {} ON CONFLICT (key) DO UPDATE SET create_rev = excluded.create_rev, \
             mod_rev = excluded.mod_rev, version = excluded.version, lease = excluded.lease, value = excluded.value",
            sql::KV_COLUMNS,
            dialect.values_list(chunk.len(), 6)
        );
        let mut args = Vec::with_capacity(chunk.len() * 6);
        for k in chunk {
            let kv = &state[*k];
            args.extend([
                Arg::Bytes(kv.key.clone()),
                Arg::Int(kv.create_revision),
                Arg::Int(kv.mod_revision),
                Arg::Int(kv.version),
                Arg::Int(kv.lease),
                Arg::Bytes(kv.value.clone()),
            ]);
        }
        script.push(sql, args);
    }
    if !gone.is_empty() {
        script.push(
            format!(
                "DELETE FROM kv_current WHERE key IN ({})",
                dialect.in_list(gone.len().next_power_of_two())
            ),
            padded(&gone).map(|k| Arg::Bytes(k.to_vec())).collect(),
        );
    }
}
