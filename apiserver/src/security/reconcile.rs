//! Upstream's RBAC bootstrap at start (`rbac/rest/storage_rbac.go`): missing bootstrap roles
//! and bindings are created; existing ones gain the rules and subjects the policy adds, unless
//! annotated `rbac.authorization.kubernetes.io/autoupdate: "false"`; what users added stays.
//! And the cluster-role aggregation (upstream's clusterrole-aggregation controller), which
//! fills an aggregated role's rules from the roles its selectors match.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, Method, header};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kelp_auth::bootstrap::{self, AUTOUPDATE};
use serde_json::{Value, json};

use crate::cache::WatchCache;
use crate::handlers::{self, Ctx};
use crate::registry::{self, Resource};
use crate::request::Target;
use crate::selector::LabelSelector;

fn resource(kind: &str) -> &'static Resource {
    let plural = match kind {
        "ClusterRole" => "clusterroles",
        "Role" => "roles",
        "ClusterRoleBinding" => "clusterrolebindings",
        _ => "rolebindings",
    };
    registry::lookup("rbac.authorization.k8s.io", "v1", plural).expect("RBAC kinds are served")
}

async fn write(
    ctx: &Ctx,
    r: &'static Resource,
    obj: &Value,
    method: Method,
    manager: &str,
) -> Result<(), String> {
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let target = Target {
        resource: r,
        namespace: ns.map(str::to_string),
        name: (method != Method::POST).then(|| name.to_string()),
        subresource: None,
    };
    let query = HashMap::from([("fieldManager".to_string(), manager.to_string())]);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    handlers::serve(
        ctx,
        &method,
        target,
        &query,
        &headers,
        obj.to_string().into(),
    )
    .await
    .map(|_| ())
    .map_err(|e| e.message)
}

async fn current(ctx: &Ctx, r: &Resource, obj: &Value) -> Option<Value> {
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
    let name = obj.pointer("/metadata/name").and_then(Value::as_str)?;
    let (kv, _) = ctx.backend.get(r.key(ns, name)).await.ok()?;
    serde_json::from_slice(&kv?.value).ok()
}

fn rules(v: &Value) -> Vec<PolicyRule> {
    v.get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

/// Adds `expected`'s labels and annotations that `existing` lacks.
fn merge_metadata(existing: &mut Value, expected: &Value) -> bool {
    let mut changed = false;
    for field in ["labels", "annotations"] {
        let Some(wanted) = expected["metadata"][field].as_object() else {
            continue;
        };
        if !existing["metadata"][field].is_object() {
            existing["metadata"][field] = json!({});
        }
        for (k, v) in wanted {
            if existing["metadata"][field].get(k).is_none() {
                existing["metadata"][field][k] = v.clone();
                changed = true;
            }
        }
    }
    changed
}

/// The existing object brought up to the policy, or None when it already is.
fn reconciled(existing: &Value, expected: &Value) -> Option<Value> {
    let mut out = existing.clone();
    let mut changed = merge_metadata(&mut out, expected);
    match expected["kind"].as_str().unwrap_or("") {
        "ClusterRole" | "Role" => {
            if let Some(wanted) = expected
                .pointer("/aggregationRule/clusterRoleSelectors")
                .and_then(Value::as_array)
            {
                if !out["aggregationRule"].is_object() {
                    out["aggregationRule"] = json!({"clusterRoleSelectors": []});
                }
                let selectors = &mut out["aggregationRule"]["clusterRoleSelectors"];
                if !selectors.is_array() {
                    *selectors = json!([]);
                }
                if let Some(list) = selectors.as_array_mut() {
                    for s in wanted {
                        if !list.contains(s) {
                            list.push(s.clone());
                            changed = true;
                        }
                    }
                }
            } else if let Err(missing) = kelp_auth::rbac::covers(&rules(existing), &rules(expected))
            {
                let mut all = rules(existing);
                all.extend(missing);
                out["rules"] = serde_json::to_value(all).unwrap_or_default();
                changed = true;
            }
        }
        _ => {
            let wanted = expected["subjects"].as_array().cloned().unwrap_or_default();
            if !out["subjects"].is_array() {
                out["subjects"] = json!([]);
            }
            if let Some(list) = out["subjects"].as_array_mut() {
                for s in wanted {
                    if !list.contains(&s) {
                        list.push(s);
                        changed = true;
                    }
                }
            }
        }
    }
    changed.then_some(out)
}

/// Creates or brings up to date every bootstrap role and binding.
pub async fn reconcile(ctx: &Ctx) {
    const MANAGER: &str = "kube-apiserver";
    let (mut created, mut updated) = (0, 0);
    for expected in bootstrap::objects() {
        let r = resource(expected["kind"].as_str().unwrap_or(""));
        let name = expected["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let outcome = match current(ctx, r, &expected).await {
            None => write(ctx, r, &expected, Method::POST, MANAGER)
                .await
                .map(|_| created += 1),
            Some(existing)
                if existing.pointer(&format!(
                    "/metadata/annotations/{}",
                    AUTOUPDATE.replace('/', "~1")
                )) == Some(&json!("false")) =>
            {
                Ok(())
            }
            Some(existing) => {
                let binding = r.kind.ends_with("Binding");
                if binding && existing.get("roleRef") != expected.get("roleRef") {
                    // A binding's roleRef cannot change: it is made again.
                    let ns = existing
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str);
                    let deleted =
                        handlers::delete_object(&ctx.backend, r, ns, &name, &HashMap::new()).await;
                    match deleted {
                        Ok(_) => write(ctx, r, &expected, Method::POST, MANAGER)
                            .await
                            .map(|_| updated += 1),
                        Err(e) => Err(e.message),
                    }
                } else {
                    match reconciled(&existing, &expected) {
                        Some(obj) => write(ctx, r, &obj, Method::PUT, MANAGER)
                            .await
                            .map(|_| updated += 1),
                        None => Ok(()),
                    }
                }
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(kind = r.kind, %name, error = %e, "cannot reconcile the bootstrap policy");
        }
    }
    tracing::info!(created, updated, "RBAC bootstrap policy reconciled");
}

/// The rules an aggregated cluster role gets: those of every other cluster role its selectors
/// match, in name order, each once.
fn aggregated_rules(role: &Value, all: &[Value]) -> Option<Vec<Value>> {
    let selectors = role
        .pointer("/aggregationRule/clusterRoleSelectors")?
        .as_array()?;
    let selectors: Vec<LabelSelector> = selectors
        .iter()
        .filter_map(|s| LabelSelector::from_object(s).ok())
        .collect();
    let own = role.pointer("/metadata/name");
    let mut out: Vec<Value> = Vec::new();
    for other in all {
        if other.pointer("/metadata/name") == own {
            continue;
        }
        if selectors.iter().any(|s| !s.is_empty() && s.matches(other)) {
            for rule in other["rules"].as_array().into_iter().flatten() {
                if !out.contains(rule) {
                    out.push(rule.clone());
                }
            }
        }
    }
    Some(out)
}

/// Aggregates once: writes each aggregated role whose rules differ from what it should hold.
async fn aggregate(ctx: &Ctx, cache: &WatchCache) {
    let r = resource("ClusterRole");
    let all: Vec<Value> = cache
        .objects("/registry/clusterroles/")
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    for role in &all {
        let Some(rules) = aggregated_rules(role, &all) else {
            continue;
        };
        if role
            .get("rules")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            == rules.as_slice()
        {
            continue;
        }
        let mut updated = role.clone();
        updated["rules"] = Value::Array(rules);
        if let Err(e) = write(
            ctx,
            r,
            &updated,
            Method::PUT,
            "clusterrole-aggregation-controller",
        )
        .await
        {
            tracing::debug!(role = %role["metadata"]["name"], error = %e, "aggregation write failed; retried on the next change");
        }
    }
}

/// Keeps aggregated cluster roles filled while the cache lives.
pub fn run_aggregation(ctx: Arc<Ctx>, cache: Arc<WatchCache>) {
    let tracker = cache.track(&["/registry/clusterroles/"]);
    let mut revision = cache.revision();
    let cache = Arc::downgrade(&cache);
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let Some(c) = cache.upgrade() else { return };
            if *revision.borrow() >= 0 && tracker.changes() != seen {
                seen = tracker.changes();
                aggregate(&ctx, &c).await;
            }
            drop(c);
            if revision.changed().await.is_err() {
                return;
            }
        }
    });
}
