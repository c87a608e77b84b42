//! Shared informers: one list+watch per resource (kube-rs' watcher and reflector), a cache
//! every controller reads, and a feed of the objects that changed, deleted ones included
//! (with their last state), which drives the controllers' work queues. Cached objects carry
//! no managedFields.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

/// One resource's shared cache and change feed. Dropping the last handle stops its watch.
pub struct Informer<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    changes: broadcast::Sender<Arc<K>>,
    task: tokio::task::AbortHandle,
}

impl<K: kube::Resource<DynamicType = ()> + Clone + 'static> Drop for Informer<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K> Informer<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Starts listing and watching what `api` reaches (with `config`'s selectors).
    pub fn spawn(api: Api<K>, config: watcher::Config) -> Arc<Self> {
        Self::spawn_trimmed(api, config, |_| {})
    }

    /// As `spawn`, with `trim` applied to every object before it is cached or told (as
    /// client-go's transform functions are): it drops what this informer's readers never
    /// read, so the cache holds less. A trimmed object is never written back whole.
    pub fn spawn_trimmed(api: Api<K>, config: watcher::Config, trim: fn(&mut K)) -> Arc<Self> {
        let writer = Writer::default();
        let store = writer.as_reader();
        let (changes, _) = broadcast::channel(8192);
        let task = tokio::spawn(feed(api, config, trim, writer, changes.clone())).abort_handle();
        Arc::new(Informer {
            store,
            changes,
            task,
        })
    }

    /// The cache (empty until the first list arrived; see `ready`).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Waits for the first complete list.
    pub async fn ready(&self) {
        let _ = self.store.wait_until_ready().await;
    }

    /// Objects as they change from now on, after every object cached now: the trigger of a
    /// controller. A reader that falls behind is given the whole cache again, so no change is
    /// ever lost, only merged.
    pub fn changes(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let receiver = self.changes.subscribe();
        let store = self.store.clone();
        let initial: Vec<Arc<K>> = store.state();
        futures::stream::iter(initial.into_iter().map(|o| Ok((*o).clone()))).chain(
            futures::stream::unfold((receiver, store), |(mut rx, store)| async move {
                let batch: Vec<Result<K, watcher::Error>> = match rx.recv().await {
                    Ok(o) => vec![Ok((*o).clone())],
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        store.state().iter().map(|o| Ok((**o).clone())).collect()
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                Some((futures::stream::iter(batch), (rx, store)))
            })
            .flatten(),
        )
    }
}

/// The watch loop: applies events to the cache, then tells subscribers. A relist's objects
/// are told once the relist is complete (the cache holds them from then on), with the objects
/// that disappeared while the watch was down.
async fn feed<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
    mut writer: Writer<K>,
    changes: broadcast::Sender<Arc<K>>,
) where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let store = writer.as_reader();
    let mut before: HashMap<ObjectRef<K>, Arc<K>> = HashMap::new();
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        let mut event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, kind = %K::kind(&()), "watch failed, retrying");
                continue;
            }
        };
        // No controller reads managedFields: the caches go without them (a large part of an
        // object that several writers touched).
        match &mut event {
            Event::Apply(o) | Event::Delete(o) | Event::InitApply(o) => {
                o.meta_mut().managed_fields = None;
                trim(o);
            }
            Event::Init | Event::InitDone => {}
        }
        if let Event::Init = event {
            before = store
                .state()
                .into_iter()
                .map(|o| (ObjectRef::from_obj(&*o), o))
                .collect();
        }
        writer.apply_watcher_event(&event);
        match event {
            // The cache's own copy, where it has one: subscribers share it.
            Event::Apply(o) => {
                let cached = store.get(&ObjectRef::from_obj(&o));
                let _ = changes.send(cached.unwrap_or_else(|| Arc::new(o)));
            }
            Event::Delete(o) => {
                let _ = changes.send(Arc::new(o));
            }
            Event::InitDone => {
                for o in store.state() {
                    let _ = changes.send(o);
                }
                for (key, o) in std::mem::take(&mut before) {
                    if store.get(&key).is_none() {
                        let _ = changes.send(o);
                    }
                }
            }
            Event::Init | Event::InitApply(_) => {}
        }
    }
}

/// The trim of the control loops' pod caches (scheduler and controller-manager): the volumes
/// and the containers' volume mounts, a third of a typed pod (`Volume` alone is 3 KiB of
/// mostly empty sources). None of their plugins or controllers reads them; the kubelet, which
/// mounts them, reads its pods through its own watch. A scheduler plugin or controller that
/// comes to read volumes (volume binding, PVC protection) takes this out of its informer.
pub fn trim_pod(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    spec.volumes = None;
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        c.volume_mounts = None;
    }
    for c in spec.ephemeral_containers.iter_mut().flatten() {
        c.volume_mounts = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_pods_keep_all_but_volumes() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {
                "nodeName": "n1",
                "volumes": [{"name": "data", "emptyDir": {}}],
                "initContainers": [{"name": "init", "image": "busybox",
                    "volumeMounts": [{"name": "data", "mountPath": "/d"}]}],
                "containers": [{"name": "c", "image": "nginx",
                    "resources": {"requests": {"cpu": "100m"}},
                    "ports": [{"containerPort": 80, "hostPort": 8080}],
                    "volumeMounts": [{"name": "data", "mountPath": "/d"}]}],
                "tolerations": [{"key": "k", "operator": "Exists"}]
            },
            "status": {"phase": "Running", "podIP": "10.0.0.1"}
        }))
        .unwrap();
        trim_pod(&mut pod);
        let trimmed = serde_json::to_value(&pod).unwrap();
        assert_eq!(
            trimmed,
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
                "spec": {
                    "nodeName": "n1",
                    "initContainers": [{"name": "init", "image": "busybox"}],
                    "containers": [{"name": "c", "image": "nginx",
                        "resources": {"requests": {"cpu": "100m"}},
                        "ports": [{"containerPort": 80, "hostPort": 8080}]}],
                    "tolerations": [{"key": "k", "operator": "Exists"}]
                },
                "status": {"phase": "Running", "podIP": "10.0.0.1"}
            })
        );
    }
}
