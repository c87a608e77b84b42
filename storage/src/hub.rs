//! The watch hub: every committed write reaches the process's watchers exactly once and in
//! revision order. One follower task per process is the only publisher. It takes batches
//! committed by this process's writer straight from memory when they continue the sequence,
//! and otherwise (writes of other processes sharing a PostgreSQL database, or anything
//! missed) reads the log above the last published revision. PostgreSQL NOTIFY wakes it; a
//! slow timer catches whatever a lost notification would have missed. A hole in the log is
//! never skipped: revisions are gapless by construction.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::AssertSqlSafe;
use tokio::sync::{Notify, broadcast, mpsc, watch};

use crate::Shared;
use crate::error::Result;
use crate::sql::{self, corrupt};
use crate::types::{Event, Revision};
use crate::writer::CommittedBatch;

/// Batches a watcher may fall behind by before it re-reads the log instead.
const CHANNEL_CAPACITY: usize = 1024;
/// Rows per log read.
pub(crate) const LOG_PAGE: i64 = 1000;

#[derive(Debug)]
pub(crate) enum HubMessage {
    /// Consecutive events `first..=last` (all keys).
    Events { last: Revision, events: Vec<Event> },
    /// The follower found revisions up to `to` compacted before it could read them: watchers
    /// that had not yet passed `to` can no longer be served.
    Compacted { to: Revision },
}

pub(crate) struct Hub {
    state: Mutex<HubState>,
}

struct HubState {
    last: Revision,
    tx: broadcast::Sender<Arc<HubMessage>>,
}

impl Hub {
    pub(crate) fn new(last: Revision) -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Hub {
            state: Mutex::new(HubState { last, tx }),
        }
    }

    /// A receiver of everything published after the returned revision.
    pub(crate) fn subscribe(&self) -> (broadcast::Receiver<Arc<HubMessage>>, Revision) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.tx.subscribe(), s.last)
    }

    pub(crate) fn last(&self) -> Revision {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).last
    }

    fn publish(&self, last: Revision, msg: HubMessage) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.last = last;
        // No receivers is fine: nobody watches.
        let _ = s.tx.send(Arc::new(msg));
    }
}

pub(crate) async fn run_follower(
    shared: Arc<Shared>,
    hub: Arc<Hub>,
    mut committed: mpsc::UnboundedReceiver<CommittedBatch>,
    wake: Arc<Notify>,
    poll_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let result = tokio::select! {
            batch = committed.recv() => match batch {
                Some(batch) => take_local(&shared, &hub, batch).await,
                None => return,
            },
            _ = wake.notified() => catch_up(&shared, &hub).await,
            _ = tick.tick() => catch_up(&shared, &hub).await,
            _ = shutdown.changed() => return,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, last = hub.last(), "watch follower could not read the log; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn take_local(shared: &Shared, hub: &Hub, batch: CommittedBatch) -> Result<()> {
    let last = hub.last();
    if batch.first == last + 1 {
        let end = batch.events.last().map_or(last, Event::revision);
        hub.publish(
            end,
            HubMessage::Events {
                last: end,
                events: batch.events,
            },
        );
        Ok(())
    } else if batch.first > last + 1 {
        // Another process committed in between: the log has both, in order.
        catch_up(shared, hub).await
    } else {
        // Already read from the log.
        Ok(())
    }
}

async fn catch_up(shared: &Shared, hub: &Hub) -> Result<()> {
    let stmt = sql::events_after();
    loop {
        let last = hub.last();
        let rows = sqlx::query(AssertSqlSafe(stmt.as_str()))
            .bind(last)
            .bind(LOG_PAGE)
            .fetch_all(&shared.read)
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            events.push(sql::decode_event(row)?);
        }
        let Some(first) = events.first().map(Event::revision) else {
            return Ok(());
        };
        if first != last + 1 {
            let (_, compact): (Revision, Revision) = sqlx::query_as(sql::HEAD_AND_COMPACT)
                .fetch_one(&shared.read)
                .await?;
            if first <= compact {
                tracing::warn!(last, compact, "watch follower fell behind compaction");
                hub.publish(first - 1, HubMessage::Compacted { to: first - 1 });
            } else {
                return Err(corrupt(format!(
                    "revision {} missing from the log (next is {first})",
                    last + 1
                )));
            }
        }
        for (i, e) in events.iter().enumerate().skip(1) {
            if e.revision() != first + i as i64 {
                return Err(corrupt(format!(
                    "revision {} missing from the log",
                    first + i as i64
                )));
            }
        }
        let end = first + events.len() as i64 - 1;
        hub.publish(end, HubMessage::Events { last: end, events });
        if (rows.len() as i64) < LOG_PAGE {
            return Ok(());
        }
    }
}

/// Wakes the follower on every NOTIFY from a PostgreSQL writer (any process), and after
/// every reconnect, since notifications sent while disconnected are lost.
pub(crate) async fn run_pg_listener(
    url: String,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    use sqlx::postgres::PgListener;
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut listener = match PgListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = listener.listen("kelp_kv").await {
            tracing::warn!(error = %e, "LISTEN failed; reconnecting");
            continue;
        }
        backoff = Duration::from_millis(100);
        wake.notify_one();
        loop {
            tokio::select! {
                msg = listener.try_recv() => match msg {
                    Ok(Some(_)) => wake.notify_one(),
                    Ok(None) => {
                        // Reconnect explicitly, so the catch-up wake comes after LISTEN.
                        tracing::info!("LISTEN connection lost; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}
