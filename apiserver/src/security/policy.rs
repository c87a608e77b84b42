//! The RBAC policy as the watch cache holds it, rebuilt when a role or binding changes.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kelp_auth::rbac::Policy;

use crate::cache::{Tracker, WatchCache};

const CLUSTER_ROLES: &str = "/registry/clusterroles/";
const ROLES: &str = "/registry/roles/";
const CLUSTER_BINDINGS: &str = "/registry/clusterrolebindings/";
const BINDINGS: &str = "/registry/rolebindings/";
const PREFIXES: &[&str] = &[CLUSTER_ROLES, ROLES, CLUSTER_BINDINGS, BINDINGS];

pub struct PolicyCache {
    cache: Arc<WatchCache>,
    tracker: Arc<Tracker>,
    /// The policy and the tracker's count it was built at.
    built: Mutex<(u64, Arc<Policy>)>,
}

impl PolicyCache {
    pub fn new(cache: Arc<WatchCache>) -> PolicyCache {
        PolicyCache {
            tracker: cache.track(PREFIXES),
            cache,
            built: Mutex::new((0, Arc::new(Policy::default()))),
        }
    }

    /// The policy as of the cache's current state.
    pub fn current(&self) -> Arc<Policy> {
        let changes = self.tracker.changes();
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if built.0 != changes {
            // Counted before reading: a change made while building is seen next time.
            *built = (changes, Arc::new(self.build()));
        }
        built.1.clone()
    }

    fn build(&self) -> Policy {
        let mut policy = Policy::default();
        fn each<T: serde::de::DeserializeOwned>(
            cache: &WatchCache,
            prefix: &str,
            mut f: impl FnMut(T),
        ) {
            for kv in cache.objects(prefix) {
                match serde_json::from_slice::<T>(&kv.value) {
                    Ok(o) => f(o),
                    Err(e) => {
                        tracing::warn!(key = %String::from_utf8_lossy(&kv.key), error = %e, "unreadable RBAC object")
                    }
                }
            }
        }
        each::<ClusterRole>(&self.cache, CLUSTER_ROLES, |o| policy.add_cluster_role(o));
        each::<Role>(&self.cache, ROLES, |o| policy.add_role(o));
        each::<ClusterRoleBinding>(&self.cache, CLUSTER_BINDINGS, |o| {
            policy.add_cluster_role_binding(o)
        });
        each::<RoleBinding>(&self.cache, BINDINGS, |o| policy.add_role_binding(o));
        policy
    }
}
