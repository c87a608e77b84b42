//! The RBAC policy as the watch cache holds it, rebuilt when a role or binding changes.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kelp_auth::rbac::Policy;

use crate::cache::{Derived, WatchCache, parsed};

const CLUSTER_ROLES: &str = "/registry/clusterroles/";
const ROLES: &str = "/registry/roles/";
const CLUSTER_BINDINGS: &str = "/registry/clusterrolebindings/";
const BINDINGS: &str = "/registry/rolebindings/";
const PREFIXES: &[&str] = &[CLUSTER_ROLES, ROLES, CLUSTER_BINDINGS, BINDINGS];

pub type PolicyCache = Derived<Policy>;

pub fn cache(cache: Arc<WatchCache>) -> PolicyCache {
    Derived::new(cache, PREFIXES, build)
}

fn build(cache: &WatchCache) -> Policy {
    let mut policy = Policy::default();
    for o in parsed::<ClusterRole>(cache, CLUSTER_ROLES) {
        policy.add_cluster_role(o);
    }
    for o in parsed::<Role>(cache, ROLES) {
        policy.add_role(o);
    }
    for o in parsed::<ClusterRoleBinding>(cache, CLUSTER_BINDINGS) {
        policy.add_cluster_role_binding(o);
    }
    for o in parsed::<RoleBinding>(cache, BINDINGS) {
        policy.add_role_binding(o);
    }
    policy
}
