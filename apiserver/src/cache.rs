//! The watch cache (upstream's cacher): every object under `/registry/`, kept in memory from one
//! storage watch per process. Lists and the initial state of watches at the head are served
//! from it, consistently: a read first learns the storage's head revision and waits until the
//! cache has got that far (upstream's consistent reads from cache, with the watch's progress
//! standing in for etcd's progress notifications). Reads at older revisions, and pages after
//! the first, go to storage.
//!
//! Watches are fanned out from here too: the cache keeps the last events, so a watch from a
//! recent revision replays them and then follows the cache's broadcast, one receiver per
//! watch instead of a storage watch each. A watch that falls behind the broadcast is closed,
//! as upstream's cacher closes unresponsive watchers; its client watches again from the last
//! revision it saw.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use std::collections::VecDeque;

use futures::{FutureExt, StreamExt};
use kelp_storage::{Backend, EventKind, KeyRange, KeyValue, RangeRequest, Revision};
use tokio::sync::{broadcast, watch};

const PREFIX: &str = "/registry/";

/// How long a read waits for the cache to reach the head before it reads storage instead.
const CATCH_UP: Duration = Duration::from_secs(3);

/// Events kept for watches that start from a recent revision.
const HISTORY: usize = 10_000;

/// Batches a watch may fall behind the broadcast by before it is closed.
const BROADCAST: usize = 1024;

pub struct WatchCache {
    state: RwLock<State>,
    /// Indexes built from the cache, told when what they index changes.
    trackers: RwLock<Vec<Arc<Tracker>>>,
    /// The revision the cache reflects (-1 until it is loaded), for readers to wait on.
    revision: watch::Sender<Revision>,
    /// Objects admission reads on every write (namespaces), parsed once per revision.
    parsed: std::sync::Mutex<ParsedMemo>,
}

/// Parsed objects by key, with the revision each was parsed at.
type ParsedMemo = std::collections::HashMap<Vec<u8>, (Revision, Arc<serde_json::Value>)>;

/// Parsed objects kept at most; beyond, the memo starts again.
const PARSED: usize = 4096;

struct State {
    objects: BTreeMap<Vec<u8>, Arc<KeyValue>>,
    revision: Revision,
    /// The last events, in order; every event after `complete_after` is here.
    history: VecDeque<Change>,
    complete_after: Revision,
    /// Every batch applied, for the watches the cache serves. A reload replaces it, which
    /// ends those watches: what happened between the two loads was never broadcast.
    events: broadcast::Sender<Arc<Vec<Change>>>,
}

impl State {
    fn loaded(objects: BTreeMap<Vec<u8>, Arc<KeyValue>>, revision: Revision) -> State {
        State {
            objects,
            revision,
            history: VecDeque::new(),
            complete_after: revision,
            events: broadcast::channel(BROADCAST).0,
        }
    }
}

/// How many times the objects under some prefixes changed.
pub struct Tracker {
    prefixes: &'static [&'static str],
    changes: AtomicU64,
}

impl Tracker {
    /// A number that moves whenever the tracked objects change.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }
}

/// An index built from the cache's objects under some prefixes (the RBAC policy, the
/// webhook and admission policy configurations), rebuilt on first use after one changes.
pub struct Derived<T> {
    cache: Arc<WatchCache>,
    tracker: Arc<Tracker>,
    build: fn(&WatchCache) -> T,
    /// The index and the tracker's count it was built at.
    built: std::sync::Mutex<(u64, Arc<T>)>,
}

impl<T: Default> Derived<T> {
    pub fn new(
        cache: Arc<WatchCache>,
        prefixes: &'static [&'static str],
        build: fn(&WatchCache) -> T,
    ) -> Derived<T> {
        Derived {
            tracker: cache.track(prefixes),
            cache,
            build,
            built: std::sync::Mutex::new((0, Arc::new(T::default()))),
        }
    }

    /// The index as of the cache's current state.
    pub fn current(&self) -> Arc<T> {
        let changes = self.tracker.changes();
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if built.0 != changes {
            // Counted before reading: a change made while building is seen next time.
            *built = (changes, Arc::new((self.build)(&self.cache)));
        }
        built.1.clone()
    }
}

/// The objects under a prefix, parsed (unreadable ones are skipped).
pub fn parsed<T: serde::de::DeserializeOwned>(cache: &WatchCache, prefix: &str) -> Vec<T> {
    cache
        .objects(prefix)
        .iter()
        .filter_map(|kv| match serde_json::from_slice(&kv.value) {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(key = %String::from_utf8_lossy(&kv.key), error = %e, "unreadable cached object");
                None
            }
        })
        .collect()
}

/// The batches the cache applies, as a watch receives them.
pub type Batches = broadcast::Receiver<Arc<Vec<Change>>>;

/// A write as the cache keeps it: a storage event whose objects are the cache's own (the
/// history and the broadcast hold no copies).
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: EventKind,
    /// For a put, the new state; for a delete, the key at the delete's revision.
    pub kv: Arc<KeyValue>,
    /// The key's state before this write (None for a create).
    pub prev_kv: Option<Arc<KeyValue>>,
}

impl Change {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
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
            state: RwLock::new(State::loaded(BTreeMap::new(), -1)),
            trackers: RwLock::new(Vec::new()),
            revision: watch::channel(-1).0,
            parsed: Default::default(),
        });
        keep_following(backend, Arc::downgrade(&cache), "watch cache", follow);
        cache
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the changes under `prefixes` from now on (a reload counts as one), for an index
    /// of those objects to know when to rebuild.
    pub fn track(&self, prefixes: &'static [&'static str]) -> Arc<Tracker> {
        let tracker = Arc::new(Tracker {
            prefixes,
            changes: AtomicU64::new(1),
        });
        self.trackers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(tracker.clone());
        tracker
    }

    fn touch(&self, key: Option<&[u8]>) {
        for t in self
            .trackers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if key.is_none_or(|k| t.prefixes.iter().any(|p| k.starts_with(p.as_bytes()))) {
                t.changes.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// The objects whose keys start with `prefix`, as the cache holds them now.
    pub fn objects(&self, prefix: &str) -> Vec<Arc<KeyValue>> {
        let state = self.read();
        state
            .objects
            .range(prefix.as_bytes().to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
            .map(|(_, kv)| kv.clone())
            .collect()
    }

    /// One object as the cache holds it now.
    pub fn get(&self, key: &str) -> Option<Arc<KeyValue>> {
        self.read().objects.get(key.as_bytes()).cloned()
    }

    /// One object as the cache holds it now, parsed; each revision of it is parsed once.
    pub fn parsed(&self, key: &str) -> Option<Arc<serde_json::Value>> {
        let kv = self.get(key);
        let mut memo = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        let Some(kv) = kv else {
            memo.remove(key.as_bytes());
            return None;
        };
        if let Some((revision, value)) = memo.get(key.as_bytes())
            && *revision == kv.mod_revision
        {
            return Some(value.clone());
        }
        let value: Arc<serde_json::Value> = Arc::new(serde_json::from_slice(&kv.value).ok()?);
        if memo.len() >= PARSED {
            memo.clear();
        }
        memo.insert(kv.key.clone(), (kv.mod_revision, value.clone()));
        Some(value)
    }

    /// The revision the cache reflects, and a receiver that sees it move.
    pub fn revision(&self) -> watch::Receiver<Revision> {
        self.revision.subscribe()
    }

    /// Whether the key exists as far as the cache knows (it may lag a write just made).
    pub fn contains(&self, key: &str) -> bool {
        self.read().objects.contains_key(key.as_bytes())
    }

    /// Whether the cache reaches `at_least` in time.
    pub async fn reach(&self, at_least: Revision) -> bool {
        if *self.revision.borrow() >= at_least {
            return true;
        }
        let mut rx = self.revision.subscribe();
        let reached = tokio::time::timeout(CATCH_UP, rx.wait_for(|r| *r >= at_least.max(0)));
        matches!(reached.await, Ok(Ok(_)))
    }

    /// One object (None: there is none) once the cache has reached `at_least`; None if it
    /// does not get there in time (the caller reads storage).
    pub async fn get_at(&self, key: &[u8], at_least: Revision) -> Option<Option<Arc<KeyValue>>> {
        if !self.reach(at_least).await {
            return None;
        }
        Some(self.read().objects.get(key).cloned())
    }

    /// The objects in `[start, end)` once the cache has reached `at_least`; None if it does
    /// not get there in time (the caller reads storage).
    pub async fn snapshot(&self, start: &[u8], end: &[u8], at_least: Revision) -> Option<Snapshot> {
        if !self.reach(at_least).await {
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

    /// The events of `[start, end)` after revision `after`, and a receiver of every batch
    /// applied from then on; None when the cache no longer holds (or does not yet have) all
    /// events after `after` (the caller watches storage).
    pub fn watch_from(
        &self,
        after: Revision,
        start: &[u8],
        end: &[u8],
    ) -> Option<(Vec<Change>, Batches)> {
        // Under the state lock: a batch is either in the history read here or sent to the
        // receiver made here, never neither or both.
        let state = self.read();
        if after < state.complete_after || after > state.revision {
            return None;
        }
        let replay = state
            .history
            .iter()
            .filter(|e| {
                e.revision() > after && e.kv.key.as_slice() >= start && e.kv.key.as_slice() < end
            })
            .cloned()
            .collect();
        Some((replay, state.events.subscribe()))
    }

    fn replace(&self, objects: BTreeMap<Vec<u8>, Arc<KeyValue>>, revision: Revision) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        *state = State::loaded(objects, revision);
        drop(state);
        self.touch(None);
        self.revision.send_replace(revision);
    }

    fn apply(&self, events: Vec<kelp_storage::Event>) {
        let Some(last) = events.last().map(kelp_storage::Event::revision) else {
            return;
        };
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut changes = Vec::with_capacity(events.len());
        for e in events {
            let kv = Arc::new(e.kv);
            let held = match e.kind {
                EventKind::Put => state.objects.insert(kv.key.clone(), kv.clone()),
                EventKind::Delete => state.objects.remove(&kv.key),
            };
            // The state before is the one the cache held; storage's copy only if they differ.
            let prev_kv = match (held, e.prev_kv) {
                (Some(held), Some(prev)) if held.mod_revision == prev.mod_revision => Some(held),
                (_, prev) => prev.map(Arc::new),
            };
            let change = Change {
                kind: e.kind,
                kv,
                prev_kv,
            };
            self.touch(Some(&change.kv.key));
            state.history.push_back(change.clone());
            changes.push(change);
        }
        while state.history.len() > HISTORY {
            if let Some(old) = state.history.pop_front() {
                state.complete_after = old.revision();
            }
        }
        state.revision = state.revision.max(last);
        // Sent under the lock, so watch_from sees each batch once (no receivers is fine).
        let _ = state.events.send(Arc::new(changes));
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

/// Runs a list-and-watch follower again whenever it ends (its watch failed, or was compacted
/// away: it relists), until what it keeps is dropped.
pub fn keep_following<T, Fut>(
    backend: Backend,
    kept: Weak<T>,
    what: &'static str,
    follow: fn(Backend, Weak<T>) -> Fut,
) where
    T: Send + Sync + 'static,
    Fut: std::future::Future<Output = kelp_storage::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            if let Err(e) = follow(backend.clone(), kept.clone()).await {
                tracing::debug!(error = %e, "{what} relisting");
            }
            if kept.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// Lists, then follows the watch until it fails (compaction) or the cache is gone.
async fn follow(backend: Backend, cache: Weak<WatchCache>) -> kelp_storage::Result<()> {
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
