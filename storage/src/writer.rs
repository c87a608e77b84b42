//! Group commit: one writer task per process drains the queue of pending transactions into a
//! single database transaction. Each transaction's compare is evaluated on its own against
//! the state at the head (including earlier writes of the same batch); a failed compare
//! does not abort the batch. Successful writes get consecutive revisions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::{AnyConnection, AssertSqlSafe, Connection, Row};
use tokio::sync::{mpsc, oneshot};

use crate::Shared;
use crate::error::{Result, StorageError};
use crate::sql::{self, Dialect, chunks, in_list, padded, values_list};
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
        // The connection may be broken or mid-transaction: do not return it to the pool.
        conn.detach();
    }
    result
}

async fn commit_batch_on(
    dialect: Dialect,
    conn: &mut AnyConnection,
    txns: &[&Txn],
) -> Result<BatchResult> {
    let mut tx = conn.begin_with(dialect.begin_write()).await?;
    let head: Revision = sqlx::query_scalar(sql::LOCK_HEAD)
        .fetch_one(&mut *tx)
        .await?;

    let keys: Vec<&[u8]> = {
        let mut seen = HashSet::new();
        txns.iter()
            .map(|t| t.key.as_slice())
            .filter(|k| seen.insert(*k))
            .collect()
    };
    let mut state: HashMap<Vec<u8>, KeyValue> = fetch_current(&mut tx, &keys).await?;
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
    let live_leases = fetch_leases(&mut tx, &leases).await?;

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

    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(BatchResult { outcomes, events });
    }
    insert_log(&mut tx, &rows).await?;
    let touched: Vec<&[u8]> = {
        let mut seen = HashSet::new();
        rows.iter()
            .map(|r| r.key.as_slice())
            .filter(|k| seen.insert(*k))
            .collect()
    };
    write_current(&mut tx, &touched, &state).await?;
    sqlx::query(sql::SET_HEAD)
        .bind(rev)
        .execute(&mut *tx)
        .await?;
    if dialect == Dialect::Postgres {
        // Delivered at commit, in commit order, to every process's LISTEN connection.
        sqlx::query("SELECT pg_notify('kelp_kv', $1)")
            .bind(rev.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(BatchResult { outcomes, events })
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

async fn fetch_current(
    conn: &mut AnyConnection,
    keys: &[&[u8]],
) -> Result<HashMap<Vec<u8>, KeyValue>> {
    let mut out = HashMap::with_capacity(keys.len());
    if keys.is_empty() {
        return Ok(out);
    }
    let stmt = format!(
        "SELECT {} FROM kv_current WHERE key IN ({})",
        sql::KV_COLUMNS,
        in_list(keys.len().next_power_of_two())
    );
    let mut q = sqlx::query(AssertSqlSafe(stmt));
    for k in padded(keys) {
        q = q.bind(k.to_vec());
    }
    for row in q.fetch_all(&mut *conn).await? {
        let kv = sql::decode_kv(&row, 0)?;
        out.insert(kv.key.clone(), kv);
    }
    Ok(out)
}

async fn fetch_leases(conn: &mut AnyConnection, ids: &[i64]) -> Result<HashSet<i64>> {
    let mut out = HashSet::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let n = ids.len().next_power_of_two();
    let stmt = format!("SELECT id FROM kv_lease WHERE id IN ({})", in_list(n));
    let mut q = sqlx::query(AssertSqlSafe(stmt));
    for id in padded(ids) {
        q = q.bind(*id);
    }
    for row in q.fetch_all(&mut *conn).await? {
        out.insert(row.try_get::<i64, _>(0)?);
    }
    Ok(out)
}

async fn insert_log(conn: &mut AnyConnection, rows: &[LogRow]) -> Result<()> {
    for chunk in chunks(rows) {
        let stmt = format!(
            "INSERT INTO kv_log (rev, key, create_rev, prev_rev, version, lease, deleted, value) VALUES {}",
            values_list(chunk.len(), 8)
        );
        let mut q = sqlx::query(AssertSqlSafe(stmt));
        for r in chunk {
            q = q
                .bind(r.rev)
                .bind(r.key.clone())
                .bind(r.create_rev)
                .bind(r.prev_rev)
                .bind(r.version)
                .bind(r.lease)
                .bind(r.deleted)
                .bind(r.value.clone());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Brings `kv_current` to the batch's final state of every key it touched.
async fn write_current(
    conn: &mut AnyConnection,
    keys: &[&[u8]],
    state: &HashMap<Vec<u8>, KeyValue>,
) -> Result<()> {
    let (live, gone): (Vec<&[u8]>, Vec<&[u8]>) = keys.iter().partition(|k| state.contains_key(**k));
    for chunk in chunks(&live) {
        let stmt = format!(
            "INSERT INTO kv_current ({}) VALUES {} ON CONFLICT (key) DO UPDATE SET create_rev = excluded.create_rev, \
             mod_rev = excluded.mod_rev, version = excluded.version, lease = excluded.lease, value = excluded.value",
            sql::KV_COLUMNS,
            values_list(chunk.len(), 6)
        );
        let mut q = sqlx::query(AssertSqlSafe(stmt));
        for k in chunk {
            let kv = &state[*k];
            q = q
                .bind(kv.key.clone())
                .bind(kv.create_revision)
                .bind(kv.mod_revision)
                .bind(kv.version)
                .bind(kv.lease)
                .bind(kv.value.clone());
        }
        q.execute(&mut *conn).await?;
    }
    if !gone.is_empty() {
        let stmt = format!(
            "DELETE FROM kv_current WHERE key IN ({})",
            in_list(gone.len().next_power_of_two())
        );
        let mut q = sqlx::query(AssertSqlSafe(stmt));
        for k in padded(&gone) {
            q = q.bind(k.to_vec());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}
