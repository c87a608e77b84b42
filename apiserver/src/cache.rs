//! The watch cache (upstream's cacher): every object under `/registry/`, kept in memory from one
//! storage watch per process. Lists and the initial state of watches at the head are served
//! from it, consistently: a read first learns the storage's head revision and waits until the
//! cache has got that far (upstream's consistent reads from cache, with the watch's progress
//! standing in for etcd's progress notifications). Reads at older revisions, and pages after
//! the first, go to storage.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kelp_storage::{Backend, EventKind, KeyRange, KeyValue, RangeRequest, Revision};
use tokio::sync::watch;

const PREFIX: &str = "/registry/";

/// How long a read waits for the cache to reach the head before it reads storage instead.
const CATCH_UP: Duration = Duration::from_secs(3);

pub struct WatchCache {
    state: RwLock<State>,
    /// The revision the cache reflects (-1 until it is loaded), for readers to wait on.
    revision: watch::Sender<Revision>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Vec<u8>, Arc<KeyValue>>,
    revision: Revision,
}

/// The objects of a range at one revision.
pub struct Snapshot {
    pub kvs: Vec<Arc<KeyValue>>,
    pub revision: Revision,
}

impl WatchCache {
    /// Loads the registry and follows it; the task ends when the cache is dropped.
    pub fn start(backend: Backend) -> Arc<WatchCache> {
        let cache = Arc::new(WatchCache {
            state: RwLock::new(State::default()),
            revision: watch::channel(-1).0,
        });
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                if let Err(e) = follow(&backend, &weak).await {
                    tracing::debug!(error = %e, "watch cache relisting");
                }
                if weak.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        cache
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the key exists as far as the cache knows (it may lag a write just made).
    pub fn contains(&self, key: &str) -> bool {
        self.read().objects.contains_key(key.as_bytes())
    }

    /// The objects in `[start, end)` once the cache has reached `at_least`; None if it does
    /// not get there in time (the caller reads storage).
    pub async fn snapshot(&self, start: &[u8], end: &[u8], at_least: Revision) -> Option<Snapshot> {
        let mut rx = self.revision.subscribe();
        let reached = tokio::time::timeout(CATCH_UP, rx.wait_for(|r| *r >= at_least.max(0)));
        if !matches!(reached.await, Ok(Ok(_))) {
            return None;
        }
        let state = self.read();
        let kvs = state
            .objects
            .range(start.to_vec()..end.to_vec())
            .map(|(_, kv)| kv.clone())
            .collect();
        Some(Snapshot {
            kvs,
            revision: state.revision,
        })
    }

    fn replace(&self, objects: BTreeMap<Vec<u8>, Arc<KeyValue>>, revision: Revision) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        *state = State { objects, revision };
        drop(state);
        self.revision.send_replace(revision);
    }

    fn apply(&self, events: Vec<kelp_storage::Event>) {
        let Some(last) = events.last().map(kelp_storage::Event::revision) else {
            return;
        };
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for e in events {
            match e.kind {
                EventKind::Put => {
                    state.objects.insert(e.kv.key.clone(), Arc::new(e.kv));
                }
                EventKind::Delete => {
                    state.objects.remove(&e.kv.key);
                }
            }
        }
        state.revision = state.revision.max(last);
        drop(state);
        self.revision.send_replace(last);
    }

    /// Moves the cache's revision past writes outside the registry (nothing to apply).
    fn advance(&self, to: Revision) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if to > state.revision {
            state.revision = to;
            drop(state);
            self.revision.send_replace(to);
        }
    }
}

/// Lists, then follows the watch until it fails (compaction) or the cache is gone.
async fn follow(backend: &Backend, cache: &Weak<WatchCache>) -> kelp_storage::Result<()> {
    let listed = backend
        .range(RangeRequest::new(KeyRange::prefix(PREFIX)))
        .await?;
    let mut watch = backend
        .watch(KeyRange::prefix(PREFIX), listed.read_revision + 1)
        .await?;
    let mut progress = watch.progress();
    match cache.upgrade() {
        Some(c) => c.replace(
            listed
                .kvs
                .into_iter()
                .map(|kv| (kv.key.clone(), Arc::new(kv)))
                .collect(),
            listed.read_revision,
        ),
        None => return Ok(()),
    }
    loop {
        // Progress read before draining covers what was drained.
        let through = *progress.borrow_and_update();
        while let Some(item) = watch.next().now_or_never() {
            let Some(c) = cache.upgrade() else {
                return Ok(());
            };
            match item {
                Some(batch) => c.apply(batch?),
                None => return Ok(()),
            }
        }
        let Some(c) = cache.upgrade() else {
            return Ok(());
        };
        c.advance(through);
        drop(c);
        tokio::select! {
            item = watch.next() => {
                let Some(c) = cache.upgrade() else { return Ok(()) };
                match item {
                    Some(batch) => c.apply(batch?),
                    None => return Ok(()),
                }
            }
            changed = progress.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            // The cache may be dropped while nothing happens.
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                if cache.strong_count() == 0 {
                    return Ok(());
                }
            }
        }
    }
}
