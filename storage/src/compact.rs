//! Compaction: removes history no read or watch at or above the compact revision needs.
//!
//! Compacting at C keeps, for every key, its latest row below C (what a read at C sees) and
//! every row from C on together with the row each of them replaced (a watch from C reports
//! previous values). So it deletes rows replaced by a row below C, and tombstones below C.
//! It advances in transactions of `compact_batch` revisions; each moves the compact revision
//! with a compare, so several processes sharing a database may compact without harm.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::Connection;

use crate::error::{Result, StorageError};
use crate::sql;
use crate::types::Revision;
use crate::{Backend, Shared};

pub(crate) async fn compact(shared: &Shared, target: Revision) -> Result<()> {
    let (head, compact): (Revision, Revision) = sqlx::query_as(sql::HEAD_AND_COMPACT)
        .fetch_one(&shared.read)
        .await?;
    if target > head {
        return Err(StorageError::FutureRevision {
            requested: target,
            current: head,
        });
    }
    if target <= compact {
        return Err(StorageError::Compacted {
            requested: target,
            compact_revision: compact,
        });
    }
    let mut from = compact;
    while from < target {
        let to = (from + shared.options.compact_batch.max(1)).min(target);
        from = compact_step(shared, from, to).await?;
    }
    Ok(())
}

/// Moves the compact revision from `from` to `to`; returns the compact revision after the
/// step (another process may have moved it first).
async fn compact_step(shared: &Shared, from: Revision, to: Revision) -> Result<Revision> {
    let mut conn = shared.write.acquire().await?;
    let mut tx = conn.begin_with(shared.dialect.begin_write()).await?;
    let moved = sqlx::query("UPDATE kv_compaction SET rev = $1 WHERE id = 1 AND rev = $2")
        .bind(to)
        .bind(from)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if moved == 0 {
        tx.rollback().await?;
        let (_, now): (Revision, Revision) = sqlx::query_as(sql::HEAD_AND_COMPACT)
            .fetch_one(&shared.read)
            .await?;
        return Ok(now);
    }
    // Replaced rows first: the second statement removes tombstones the first one reads.
    sqlx::query(
        "DELETE FROM kv_log WHERE rev IN \
         (SELECT prev_rev FROM kv_log WHERE rev >= $1 AND rev < $2 AND prev_rev > 0)",
    )
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM kv_log WHERE rev >= $1 AND rev < $2 AND deleted = 1")
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(to)
}

/// One tick of the periodic compactor: compacts to the head seen at the previous tick (as
/// kube-apiserver does with `--etcd-compaction-interval`), keeping at least
/// `compact_min_retain` revisions. `previous_head` carries the head between ticks (-1: none).
pub(crate) async fn tick(backend: Backend, previous_head: Arc<AtomicI64>) -> Result<()> {
    let shared = backend.shared();
    let (head, current): (Revision, Revision) = sqlx::query_as(sql::HEAD_AND_COMPACT)
        .fetch_one(&shared.read)
        .await?;
    let prev = previous_head.swap(head, Ordering::SeqCst);
    let target = prev.min(head - shared.options.compact_min_retain);
    if prev >= 0 && target > current {
        match compact(shared, target).await {
            // Another process compacted further meanwhile.
            Ok(()) | Err(StorageError::Compacted { .. }) => {
                tracing::info!(revision = target, "compacted")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
