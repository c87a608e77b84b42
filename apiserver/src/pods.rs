//! The pod-only subresources (upstream's BindingREST and EvictionREST in
//! pkg/registry/core/pod/storage): `binding`, which the scheduler posts to assign a pod to a
//! node (also served as the `bindings` collection, upstream's LegacyBindingREST), and
//! `eviction`, which deletes a pod unless a PodDisruptionBudget forbids it.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use kelp_storage::{Backend, KeyRange, RangeRequest, Txn, TxnOutcome};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::handlers::json_response;
use crate::object;
use crate::registry::{self, Resource};
use crate::selector::LabelSelector;

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })
}

/// Assigns the pod to the node the Binding names, once: a pod bound elsewhere is a conflict.
/// The pod is the one the Binding names; `name_in_path` is the pod `pods/{name}/binding` names,
/// which must be the same (None for the `bindings` collection, upstream's LegacyBindingREST).
/// A dry run checks all that and stores nothing (upstream's assignPod with dryRun: the
/// pod's GuaranteedUpdate runs but does not write).
pub async fn bind(
    backend: &Backend,
    pods: &Resource,
    ns: &str,
    name_in_path: Option<&str>,
    body: &Bytes,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let binding = match body.first() {
        Some(b'k') => crate::protobuf::decode(body)?,
        _ => body_json(body)?,
    };
    let name = object::name(&binding);
    if name_in_path.is_some_and(|path| path != name) {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Binding object",
        ));
    }
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            name,
            vec![("target.name".into(), "Required value".into())],
        ));
    }
    if name.is_empty() {
        // What upstream's store answers for a key without a name.
        return Err(ApiError::bad_request("Name parameter required."));
    }
    let key = pods.key(Some(ns), name);
    loop {
        let (kv, _) = backend.get(key.clone()).await?;
        let kv = kv.ok_or_else(|| ApiError::not_found("", "pods", name))?;
        let mut pod: Value =
            serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))?;
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict_message(
                "",
                "pods",
                name,
                format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let current = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !current.is_empty() {
            return Err(ApiError::conflict_message(
                "",
                "pods",
                name,
                format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        if dry_run {
            return Ok(json_response(StatusCode::CREATED, &success()));
        }
        pod["spec"]["nodeName"] = json!(node);
        set_scheduled(&mut pod);
        match backend
            .txn(Txn::update(
                key.clone(),
                kv.mod_revision,
                serde_json::to_vec(&pod).unwrap_or_default(),
            ))
            .await?
        {
            TxnOutcome::Succeeded { .. } => {
                return Ok(json_response(StatusCode::CREATED, &success()));
            }
            TxnOutcome::Failed { .. } => continue,
        }
    }
}

/// The PodScheduled=True condition the binding records.
fn set_scheduled(pod: &mut Value) {
    let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": object::now()});
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let conditions = pod["status"].as_object_mut().and_then(|s| {
        s.entry("conditions").or_insert_with(|| json!([]));
        s.get_mut("conditions").and_then(Value::as_array_mut)
    });
    if let Some(list) = conditions {
        list.retain(|c| c.get("type") != Some(&json!("PodScheduled")));
        list.push(condition);
    }
}

fn too_many_requests(pdb: &str, message: String) -> ApiError {
    let mut e = ApiError::too_many_requests(
        "Cannot evict pod as it would violate the pod's disruption budget.",
    );
    e.details = Some(
        json!({"causes": [{"reason": "DisruptionBudget", "message": format!("The disruption budget {pdb} {message}")}]}),
    );
    e
}

/// Deletes the pod unless the one PodDisruptionBudget selecting it allows no disruption now.
pub async fn evict(
    backend: &Backend,
    pods: &Resource,
    ns: &str,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let (kv, _) = backend.get(pods.key(Some(ns), name)).await?;
    let kv = kv.ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let pod: Value =
        serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    // Terminal pods disrupt nothing.
    if !matches!(phase, "Succeeded" | "Failed") {
        let pdbs = registry::lookup("policy", "v1", "poddisruptionbudgets")
            .ok_or_else(|| ApiError::internal("no PDBs"))?;
        let listed = backend
            .range(RangeRequest::new(KeyRange::prefix(
                pdbs.key_prefix(Some(ns)),
            )))
            .await?;
        let mut matching = Vec::new();
        for kv in &listed.kvs {
            let pdb: Value =
                serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))?;
            if selects(&pdb, &pod) {
                matching.push((kv.mod_revision, kv.key.clone(), pdb));
            }
        }
        if matching.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        if let Some((rev, key, mut pdb)) = matching.pop() {
            let pdb_name = object::name(&pdb).to_string();
            let observed = pdb
                .pointer("/status/observedGeneration")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let generation = pdb
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            if observed < generation {
                return Err(too_many_requests(
                    &pdb_name,
                    "is still being processed by the server.".into(),
                ));
            }
            let allowed = pdb
                .pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if allowed <= 0 {
                let healthy = pdb
                    .pointer("/status/currentHealthy")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let desired = pdb
                    .pointer("/status/desiredHealthy")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                return Err(too_many_requests(
                    &pdb_name,
                    format!("needs {desired} healthy pods and has {healthy} currently"),
                ));
            }
            if query.get("dryRun").is_none_or(|v| v != "All") {
                pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
                pdb["status"]["disruptedPods"][name] = json!(object::now());
                let updated = backend
                    .txn(Txn::update(
                        key,
                        rev,
                        serde_json::to_vec(&pdb).unwrap_or_default(),
                    ))
                    .await?;
                if !updated.succeeded() {
                    return Err(ApiError::conflict(
                        "policy",
                        "poddisruptionbudgets",
                        &pdb_name,
                    ));
                }
            }
        }
    }
    crate::handlers::delete_object(backend, pods, Some(ns), name, query).await?;
    Ok(json_response(StatusCode::CREATED, &success()))
}

fn selects(pdb: &Value, pod: &Value) -> bool {
    if object::namespace_of(pdb) != object::namespace_of(pod) {
        return false;
    }
    // A PDB with an empty selector selects every pod of its namespace (policy/v1).
    let Some(selector) = pdb.pointer("/spec/selector") else {
        return false;
    };
    let mut terms: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        terms.push(
            match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.to_string(),
                _ => format!("!{key}"),
            },
        );
    }
    LabelSelector::parse(&terms.join(",")).is_ok_and(|s| s.matches(pod))
}
