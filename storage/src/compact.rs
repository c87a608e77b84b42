//! Compaction: removes history no read or watch at or above the compact revision needs.
//!
//! Compacting at C keeps, for every key, its latest row below C (what a read at C sees) and
//! every row from C on together with the row each of them replaced (a watch from C reports
//! previous values). So it deletes rows replaced by a row below C, and tombstones below C.
//! It advances in transactions of `compact_batch` revisions; each moves the compact revision
//! with a compare, so several processes sharing a database may compact without harm.

use std::sync::Weak;
use std::time::Duration;

use sqlx::Connection;
use tokio::sync::watch;

use crate::error::{Result, StorageError};
use crate::sql;
use crate::types::Revision;
use crate::{Inner, Shared};

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

/// Every interval, compacts to the head seen one interval earlier (as kube-apiserver does
/// with `--etcd-compaction-interval`), keeping at least `compact_min_retain` revisions.
pub(crate) async fn run_periodic(
    backend: Weak<Inner>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut previous_head: Option<Revision> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let Some(inner) = backend.upgrade() else {
            return;
        };
        let shared = &inner.shared;
        let result: Result<()> = async {
            let (head, current): (Revision, Revision) = sqlx::query_as(sql::HEAD_AND_COMPACT)
                .fetch_one(&shared.read)
                .await?;
            if let Some(prev) = previous_head {
                let target = prev.min(head - shared.options.compact_min_retain);
                if target > current {
                    compact(shared, target).await?;
                    tracing::info!(revision = target, "compacted");
                }
            }
            previous_head = Some(head);
            Ok(())
        }
        .await;
        match result {
            Ok(()) | Err(StorageError::Compacted { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "compaction failed; will retry"),
        }
    }
}
