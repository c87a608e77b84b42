//! Watch streams: the events of a key range from a start revision, each exactly once and in
//! revision order. A watch first replays the log up to what the hub has published, then
//! follows the hub. A watcher that falls too far behind the hub re-reads the log from where
//! it was instead of being dropped; only compaction past its position ends it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::{broadcast, mpsc, watch};

use crate::Shared;
use crate::error::{Result, StorageError};
use crate::hub::{Hub, HubMessage, LOG_PAGE};
use crate::sql;
use crate::types::{Event, KeyRange, Revision};

/// A stream of event batches. Each item holds one or more events in revision order; an error
/// ends the stream (`Compacted` when the watcher's position was compacted, `Closed` at
/// shutdown). Dropping it cancels the watch.
pub struct WatchStream {
    rx: mpsc::Receiver<Result<Vec<Event>>>,
    task: tokio::task::JoinHandle<()>,
    progress: watch::Receiver<Revision>,
}

impl WatchStream {
    /// The revision this watch has got through, matching events or not (etcd's progress
    /// notifications): every event at or below it has been put on the stream. Read it before
    /// draining the stream to know that what was drained covers it.
    pub fn progress(&self) -> watch::Receiver<Revision> {
        self.progress.clone()
    }
}

impl Stream for WatchStream {
    type Item = Result<Vec<Event>>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn spawn(
    shared: Arc<Shared>,
    hub: Arc<Hub>,
    range: KeyRange,
    start: Revision,
) -> WatchStream {
    let (tx, rx) = mpsc::channel(64);
    let (progress_tx, progress) = watch::channel(start - 1);
    let task = tokio::spawn(async move {
        if let Err(e) = follow(&shared, &hub, &range, start, &tx, &progress_tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    WatchStream { rx, task, progress }
}

/// Events with their values in plain form (the storage transformer undone).
fn plain(shared: &Shared, events: Vec<Event>) -> Result<Vec<Event>> {
    let Some(t) = shared.options.transformer.as_deref() else {
        return Ok(events);
    };
    events
        .into_iter()
        .map(|mut e| {
            e.kv = crate::plain(t, e.kv)?;
            e.prev_kv = e.prev_kv.map(|kv| crate::plain(t, kv)).transpose()?;
            Ok(e)
        })
        .collect()
}

/// Runs until the receiver is dropped (Ok) or the watch fails (Err).
async fn follow(
    shared: &Shared,
    hub: &Hub,
    range: &KeyRange,
    start: Revision,
    tx: &mpsc::Sender<Result<Vec<Event>>>,
    progress: &watch::Sender<Revision>,
) -> Result<()> {
    let mut next = start;
    loop {
        let (mut rx, published) = hub.subscribe();
        while next <= published {
            let events = replay_page(shared, range, next, published).await?;
            next = match &events.last_scanned {
                Some(r) => r + 1,
                None => published + 1,
            };
            if !events.events.is_empty() && tx.send(plain(shared, events.events)).await.is_err() {
                return Ok(());
            }
            progress.send_replace(next - 1);
        }
        loop {
            match rx.recv().await {
                Ok(msg) => match &*msg {
                    HubMessage::Events { last, events } => {
                        if *last < next {
                            continue;
                        }
                        let mine: Vec<Event> = events
                            .iter()
                            .filter(|e| e.revision() >= next && range.contains(&e.kv.key))
                            .cloned()
                            .collect();
                        next = last + 1;
                        if !mine.is_empty() && tx.send(plain(shared, mine)).await.is_err() {
                            return Ok(());
                        }
                        progress.send_replace(next - 1);
                    }
                    HubMessage::Compacted { to } => {
                        if next <= *to {
                            return Err(StorageError::Compacted {
                                requested: next,
                                compact_revision: to + 1,
                            });
                        }
                    }
                },
                // Fell behind: re-read the log from `next` with a fresh subscription.
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return Err(StorageError::Closed),
            }
        }
    }
}

struct ReplayPage {
    events: Vec<Event>,
    /// Highest revision this page covered (None: nothing left up to the bound).
    last_scanned: Option<Revision>,
}

/// Events of the range in `[from, to]`, at most one page, read in one snapshot together with
/// the compact revision so that a concurrent compaction cannot hide rows silently.
async fn replay_page(
    shared: &Shared,
    range: &KeyRange,
    from: Revision,
    to: Revision,
) -> Result<ReplayPage> {
    let mut conn = shared.read.acquire().await?;
    let mut tx = conn.begin_with(shared.dialect.begin_read()).await?;
    let (_, compact): (Revision, Revision) = sqlx::query_as(sql::HEAD_AND_COMPACT)
        .fetch_one(&mut *tx)
        .await?;
    if from < compact {
        return Err(StorageError::Compacted {
            requested: from,
            compact_revision: compact,
        });
    }
    let stmt = sql::events_in_range();
    let rows = sqlx::query(AssertSqlSafe(stmt))
        .bind(from)
        .bind(to)
        .bind(range.start.clone())
        .bind(range.sql_end())
        .bind(LOG_PAGE)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        events.push(sql::decode_event(row)?);
    }
    let last_scanned = if (rows.len() as i64) < LOG_PAGE {
        None
    } else {
        events.last().map(Event::revision)
    };
    Ok(ReplayPage {
        events,
        last_scanned,
    })
}
