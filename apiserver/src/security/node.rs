//! The Node authorizer (upstream's `plugin/pkg/auth/authorizer/node`) and NodeRestriction
//! (`plugin/pkg/admission/noderestriction`): a kubelet (`system:node:<name>` in `system:nodes`)
//! may read the secrets, config maps and claims of the pods bound to its node, request
//! tokens for their service accounts, keep its own Lease and CSINode, and otherwise do what
//! the `system:node` role's rules allow; it may write only its own Node and the status of
//! its own pods, and create only mirror pods.

use k8s_openapi::api::rbac::v1::RoleRef;
use kelp_auth::UserInfo;
use kelp_auth::rbac::{self, Attributes};
use serde_json::Value;

use super::Security;
use crate::error::ApiError;

/// The node a user is the kubelet of.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (user.in_group("system:nodes") && !name.is_empty()).then_some(name)
}

/// The names of the objects of a kind a pod refers to.
fn references(pod: &Value, resource: &str) -> Vec<String> {
    let spec = &pod["spec"];
    let mut out: Vec<String> = Vec::new();
    let mut add = |v: Option<&Value>| {
        if let Some(n) = v.and_then(Value::as_str) {
            out.push(n.to_string());
        }
    };
    let volumes = spec
        .get("volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let containers: Vec<Value> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| {
            spec.get(*k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    match resource {
        "secrets" => {
            for v in &volumes {
                add(v.pointer("/secret/secretName"));
                for s in v
                    .pointer("/projected/sources")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    add(s.pointer("/secret/name"));
                }
                for p in [
                    "/csi/nodePublishSecretRef/name",
                    "/rbd/secretRef/name",
                    "/cephfs/secretRef/name",
                    "/azureFile/secretName",
                ] {
                    add(v.pointer(p));
                }
            }
            for s in spec
                .get("imagePullSecrets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                add(s.get("name"));
            }
            for c in &containers {
                for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                    add(e.pointer("/valueFrom/secretKeyRef/name"));
                }
                for e in c
                    .get("envFrom")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    add(e.pointer("/secretRef/name"));
                }
            }
        }
        "configmaps" => {
            for v in &volumes {
                add(v.pointer("/configMap/name"));
                for s in v
                    .pointer("/projected/sources")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    add(s.pointer("/configMap/name"));
                }
            }
            for c in &containers {
                for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                    add(e.pointer("/valueFrom/configMapKeyRef/name"));
                }
                for e in c
                    .get("envFrom")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    add(e.pointer("/configMapRef/name"));
                }
            }
        }
        "persistentvolumeclaims" => {
            let pod_name = pod
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            for v in &volumes {
                add(v.pointer("/persistentVolumeClaim/claimName"));
                if v.get("ephemeral").is_some() {
                    let vol = v.get("name").and_then(Value::as_str).unwrap_or("");
                    add(Some(&Value::String(format!("{pod_name}-{vol}"))));
                }
            }
        }
        "serviceaccounts" => {
            let sa = spec
                .get("serviceAccountName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("default");
            add(Some(&Value::String(sa.to_string())));
        }
        _ => {}
    }
    out
}

impl Security {
    /// The pods of a namespace bound to a node, as the cache holds them.
    fn pods_on(&self, namespace: &str, node: &str) -> Vec<Value> {
        self.cache
            .objects(&format!("/registry/pods/{namespace}/"))
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
            .collect()
    }

    /// Whether the Node authorizer allows the request (false: no opinion, RBAC decides).
    pub(super) fn node_allows(&self, node: &str, a: &Attributes) -> bool {
        if a.resource_request {
            match (
                a.api_group.as_str(),
                a.resource.as_str(),
                a.subresource.as_str(),
            ) {
                ("", "secrets" | "configmaps" | "persistentvolumeclaims", "") => {
                    let read = a.verb == "get"
                        || (matches!(a.verb.as_str(), "list" | "watch") && !a.name.is_empty());
                    return read
                        && self
                            .pods_on(&a.namespace, node)
                            .iter()
                            .any(|p| references(p, &a.resource).contains(&a.name));
                }
                ("", "serviceaccounts", "token") => {
                    return a.verb == "create"
                        && self
                            .pods_on(&a.namespace, node)
                            .iter()
                            .any(|p| references(p, "serviceaccounts").contains(&a.name));
                }
                ("coordination.k8s.io", "leases", "") => {
                    return a.namespace == "kube-node-lease"
                        && (a.name == node || (a.verb == "create" && a.name.is_empty()))
                        && matches!(
                            a.verb.as_str(),
                            "get" | "create" | "update" | "patch" | "delete"
                        );
                }
                ("storage.k8s.io", "csinodes", "") => {
                    return (a.name == node || (a.verb == "create" && a.name.is_empty()))
                        && matches!(
                            a.verb.as_str(),
                            "get" | "create" | "update" | "patch" | "delete"
                        );
                }
                _ => {}
            }
        }
        let policy = self.policy();
        let role = RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "system:node".into(),
        };
        policy
            .role_rules(&role, "")
            .is_ok_and(|rules| rules.iter().any(|r| rbac::rule_allows(r, a)))
    }
}

fn refuse(group: &str, plural: &str, name: &str, why: String) -> ApiError {
    ApiError::forbidden(group, plural, name, &why)
}

/// NodeRestriction: what a kubelet may write. `old` is None for creates.
pub fn restrict(
    user: &UserInfo,
    group: &str,
    plural: &str,
    subresource: &str,
    ns: Option<&str>,
    old: Option<&Value>,
    obj: &Value,
) -> Result<(), ApiError> {
    let Some(node) = node_of(user) else {
        return Ok(());
    };
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let bound = |o: &Value| o.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node);
    match (group, plural) {
        ("", "nodes") => {
            if name != node {
                return Err(refuse(
                    "",
                    "nodes",
                    name,
                    format!("node {node:?} is not allowed to modify node {name:?}"),
                ));
            }
            if let Some(old) = old
                && old.pointer("/spec/taints") != obj.pointer("/spec/taints")
            {
                return Err(refuse(
                    "",
                    "nodes",
                    name,
                    format!("node {node:?} is not allowed to modify taints"),
                ));
            }
        }
        ("", "pods") => match (old, subresource) {
            (None, "") => {
                let mirror = obj
                    .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
                    .is_some();
                if !mirror {
                    return Err(refuse(
                        "",
                        "pods",
                        name,
                        format!(
                            "pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods"
                        ),
                    ));
                }
                if !bound(obj) {
                    return Err(refuse(
                        "",
                        "pods",
                        name,
                        format!(
                            "node {node:?} can only create pods with spec.nodeName set to itself"
                        ),
                    ));
                }
            }
            (Some(old), "status") if !bound(old) => {
                return Err(refuse(
                    "",
                    "pods",
                    name,
                    format!(
                        "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                    ),
                ));
            }
            (Some(_), "") => {
                return Err(refuse(
                    "",
                    "pods",
                    name,
                    format!("node {node:?} can only update pod status"),
                ));
            }
            _ => {}
        },
        ("coordination.k8s.io", "leases") if ns != Some("kube-node-lease") || name != node => {
            return Err(refuse(
                "coordination.k8s.io",
                "leases",
                name,
                "can only access node lease with the same name as the requesting node".into(),
            ));
        }
        ("storage.k8s.io", "csinodes") if name != node => {
            return Err(refuse(
                "storage.k8s.io",
                "csinodes",
                name,
                "can only access CSINode with the same name as the requesting node".into(),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// NodeRestriction on token requests: a kubelet's tokens are bound to its own pods.
pub fn restrict_token(user: &UserInfo, bound_pod: Option<&Value>) -> Result<(), String> {
    let Some(node) = node_of(user) else {
        return Ok(());
    };
    match bound_pod {
        None => Err("node requested token not bound to a pod".into()),
        Some(p) if p.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) => {
            Err("node requested token bound to a pod scheduled on a different node".into())
        }
        Some(_) => Ok(()),
    }
}
