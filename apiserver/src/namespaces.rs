//! The namespaces that exist, kept in memory from a storage watch, so that creating an object
//! in an existing namespace (the common case) costs no read. As upstream's NamespaceLifecycle
//! does with its informer, a namespace missing from the cache is looked up in storage before
//! a create is refused: the cache may lag a namespace created a moment ago.

use std::collections::HashSet;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use kelp_storage::{Backend, EventKind, KeyRange, RangeRequest};

const PREFIX: &str = "/registry/namespaces/";

#[derive(Default)]
pub struct NamespaceCache {
    names: RwLock<HashSet<String>>,
}

impl NamespaceCache {
    /// Starts following the namespaces; the task ends when the cache is dropped.
    pub fn start(backend: Backend) -> Arc<NamespaceCache> {
        let cache = Arc::new(NamespaceCache::default());
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                if let Err(e) = follow(&backend, &weak).await {
                    tracing::debug!(error = %e, "namespace cache relisting");
                }
                if weak.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        cache
    }

    /// True when the namespace is known to exist.
    pub fn contains(&self, ns: &str) -> bool {
        self.names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(ns)
    }
}

fn name(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[PREFIX.len()..]).into_owned()
}

/// Lists, then watches until the watch fails (compaction) or the cache is gone.
async fn follow(backend: &Backend, cache: &Weak<NamespaceCache>) -> kelp_storage::Result<()> {
    let listed = backend
        .range(RangeRequest::new(KeyRange::prefix(PREFIX)))
        .await?;
    let mut watch = backend
        .watch(KeyRange::prefix(PREFIX), listed.read_revision + 1)
        .await?;
    match cache.upgrade() {
        Some(c) => {
            *c.names.write().unwrap_or_else(|e| e.into_inner()) =
                listed.kvs.iter().map(|kv| name(&kv.key)).collect()
        }
        None => return Ok(()),
    }
    while let Some(batch) = watch.next().await {
        let Some(c) = cache.upgrade() else {
            return Ok(());
        };
        let mut names = c.names.write().unwrap_or_else(|e| e.into_inner());
        for e in batch? {
            match e.kind {
                EventKind::Put => names.insert(name(&e.kv.key)),
                EventKind::Delete => names.remove(&name(&e.kv.key)),
            };
        }
    }
    Ok(())
}
