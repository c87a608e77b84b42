//! Leases: a TTL that keys can be attached to (Kubernetes uses them for Events). When a lease
//! expires or is revoked, its keys are deleted through the ordinary write path, so watchers
//! see the deletes.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Row;

use crate::error::{Result, StorageError};
use crate::types::{Compare, Op, Txn};
use crate::{Backend, Shared};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) async fn grant(shared: &Shared, ttl: i64) -> Result<i64> {
    if ttl <= 0 {
        return Err(StorageError::InvalidTtl(ttl));
    }
    loop {
        // Random positive ids, as etcd's lessor picks them; a collision just picks again.
        let id = (rand::random::<u64>() >> 2) as i64 + 1;
        let inserted = sqlx::query(
            "INSERT INTO kv_lease (id, ttl, expires_at_ms) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(ttl)
        .bind(now_ms() + ttl * 1000)
        .execute(&shared.read)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(id);
        }
    }
}

pub(crate) async fn keep_alive(shared: &Shared, id: i64) -> Result<i64> {
    let row = sqlx::query(
        "UPDATE kv_lease SET expires_at_ms = $1 + ttl * 1000 WHERE id = $2 RETURNING ttl",
    )
    .bind(now_ms())
    .bind(id)
    .fetch_optional(&shared.read)
    .await?;
    match row {
        Some(row) => Ok(row.try_get(0)?),
        None => Err(StorageError::LeaseNotFound(id)),
    }
}

pub(crate) async fn time_to_live(shared: &Shared, id: i64) -> Result<i64> {
    let expires: Option<i64> =
        sqlx::query_scalar("SELECT expires_at_ms FROM kv_lease WHERE id = $1")
            .bind(id)
            .fetch_optional(&shared.read)
            .await?;
    match expires {
        Some(at) => Ok(((at - now_ms()).max(0) + 999) / 1000),
        None => Err(StorageError::LeaseNotFound(id)),
    }
}

/// Deletes the lease, then its keys. A put racing with the revoke may still attach a key to
/// the vanished lease; the reaper's orphan sweep deletes such keys.
pub(crate) async fn revoke(backend: &Backend, id: i64) -> Result<()> {
    let shared = backend.shared();
    let removed = sqlx::query("DELETE FROM kv_lease WHERE id = $1")
        .bind(id)
        .execute(&shared.read)
        .await?
        .rows_affected();
    delete_keys(
        backend,
        "SELECT key, mod_rev FROM kv_current WHERE lease = $1",
        Some(id),
    )
    .await?;
    if removed == 0 {
        return Err(StorageError::LeaseNotFound(id));
    }
    Ok(())
}

/// Deletes the keys a query selects, each guarded by the mod revision it was read at (a key
/// rewritten meanwhile is left alone: the rewrite decides its lease).
async fn delete_keys(backend: &Backend, query: &'static str, lease: Option<i64>) -> Result<()> {
    let mut q = sqlx::query(query);
    if let Some(id) = lease {
        q = q.bind(id);
    }
    let rows = q.fetch_all(&backend.shared().read).await?;
    for row in rows {
        let key: Vec<u8> = row.try_get(0)?;
        let rev: i64 = row.try_get(1)?;
        backend
            .txn(Txn {
                key,
                compare: Compare::ModRevision(rev),
                op: Op::Delete,
            })
            .await?;
    }
    Ok(())
}

/// One tick of the lease reaper: revokes expired leases, then deletes keys whose lease is
/// gone (a put that raced with a revoke).
pub(crate) async fn tick(backend: Backend) -> Result<()> {
    let expired: Vec<i64> = sqlx::query_scalar("SELECT id FROM kv_lease WHERE expires_at_ms <= $1")
        .bind(now_ms())
        .fetch_all(&backend.shared().read)
        .await?;
    for id in expired {
        match revoke(&backend, id).await {
            // Another process revoked it first.
            Ok(()) | Err(StorageError::LeaseNotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    delete_keys(
        &backend,
        "SELECT key, mod_rev FROM kv_current WHERE lease <> 0 AND lease NOT IN (SELECT id FROM kv_lease)",
        None,
    )
    .await
}
