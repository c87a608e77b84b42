//! ResourceQuota admission (upstream's `plugin/pkg/admission/resourcequota` and the quota
//! evaluators): what a new object counts for, and whether a quota leaves room for it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::quantity::Quantity;

/// Amounts by resource name (`pods`, `requests.cpu`, `count/deployments.apps`).
pub type Usage = BTreeMap<String, Quantity>;

const POD_COMPUTE: &[&str] = &["cpu", "memory", "ephemeral-storage"];

fn quantity(v: Option<&Value>) -> Option<Quantity> {
    match v? {
        Value::String(s) => Quantity::parse(s),
        Value::Number(n) => Quantity::parse(&n.to_string()),
        _ => None,
    }
}

/// A pod's requests or limits of a resource: the sum over its containers, or the largest
/// init container's if that is more (upstream's PodRequests).
fn pod_amount(spec: &Value, kind: &str, resource: &str) -> Option<Quantity> {
    // A JSON pointer token: `example.com/dongle` is one key.
    let token = resource.replace('~', "~0").replace('/', "~1");
    let of = |c: &Value| quantity(c.pointer(&format!("/resources/{kind}/{token}")));
    let containers: Vec<&Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let mut any = false;
    let mut sum = Quantity::zero();
    for c in &containers {
        if let Some(q) = of(c) {
            sum = sum + q;
            any = true;
        }
    }
    for c in spec
        .get("initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(q) = of(c) {
            sum = sum.max(q);
            any = true;
        }
    }
    any.then_some(sum)
}

/// What an object counts for.
pub fn usage(group: &str, plural: &str, obj: &Value) -> Usage {
    let mut out = Usage::new();
    let one = Quantity::count(1);
    let terminal = plural == "pods"
        && group.is_empty()
        && matches!(
            obj.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
    if terminal {
        return out;
    }
    let counted = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    out.insert(counted, one);
    if group.is_empty()
        && matches!(
            plural,
            "pods"
                | "services"
                | "configmaps"
                | "secrets"
                | "persistentvolumeclaims"
                | "replicationcontrollers"
                | "resourcequotas"
        )
    {
        out.insert(plural.to_string(), one);
    }
    match (group, plural) {
        ("", "pods") => {
            let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
            for r in POD_COMPUTE {
                if let Some(q) = pod_amount(&spec, "requests", r) {
                    out.insert(format!("requests.{r}"), q);
                    out.insert(r.to_string(), q);
                }
                if let Some(q) = pod_amount(&spec, "limits", r) {
                    out.insert(format!("limits.{r}"), q);
                }
            }
            // Huge pages count as themselves and as requests; extended resources (which
            // cannot be overcommitted) as requests only.
            for r in requested_names(&spec) {
                let Some(q) = pod_amount(&spec, "requests", &r) else {
                    continue;
                };
                if r.starts_with("hugepages-") {
                    out.insert(r.clone(), q);
                    out.insert(format!("requests.{r}"), q);
                } else if extended(&r) {
                    out.insert(format!("requests.{r}"), q);
                }
            }
        }
        ("", "services") => {
            let kind = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            if kind == "LoadBalancer" {
                out.insert("services.loadbalancers".into(), one);
            }
            if matches!(kind, "NodePort" | "LoadBalancer") {
                let ports = obj
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                out.insert("services.nodeports".into(), Quantity::count(ports as i64));
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(q) = quantity(obj.pointer("/spec/resources/requests/storage")) {
                out.insert("requests.storage".into(), q);
            }
        }
        _ => {}
    }
    out
}

/// Whether a quota's scopes select a pod (Terminating, NotTerminating, BestEffort,
/// NotBestEffort); quotas with other scopes are left to later work and select nothing.
pub fn in_scope(quota: &Value, plural: &str, obj: &Value) -> bool {
    let scopes: Vec<&str> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if scopes.is_empty() {
        return true;
    }
    if plural != "pods" {
        return false;
    }
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let best_effort = POD_COMPUTE.iter().all(|r| {
        pod_amount(&spec, "requests", r).is_none() && pod_amount(&spec, "limits", r).is_none()
    });
    let terminating = spec
        .get("activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null());
    scopes.iter().all(|s| match *s {
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        _ => false,
    })
}

fn names(map: Option<&Value>) -> BTreeSet<String> {
    map.and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn pretty(usage: &Usage) -> String {
    usage
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether a pod names the requests and limits a quota tracks (upstream requires an explicit
/// cpu and memory request or limit from every container when those are quota'd).
fn constraints(tracked: &BTreeSet<String>, obj: &Value) -> Result<(), String> {
    let mut missing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let containers = ["containers", "initContainers"].iter().flat_map(|k| {
        obj.pointer(&format!("/spec/{k}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    });
    for c in containers {
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        for r in ["cpu", "memory"] {
            let has = |kind: &str| c.pointer(&format!("/resources/{kind}/{r}")).is_some();
            for (resource, present) in [
                (format!("requests.{r}"), has("requests")),
                (r.to_string(), has("requests")),
                (format!("limits.{r}"), has("limits")),
            ] {
                if tracked.contains(&resource) && !present {
                    missing.entry(resource).or_default().insert(name.clone());
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, names)| {
            format!(
                "{r} for: {}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

/// Checks an object against one quota. Ok(None): the quota does not track it. Ok(Some(used)):
/// the quota's new `status.used`, to be written before the object is. Err: why it is refused.
pub fn admit(
    quota: &Value,
    group: &str,
    plural: &str,
    obj: &Value,
    usage: &Usage,
) -> Result<Option<Value>, String> {
    let name = quota
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !in_scope(quota, plural, obj) {
        return Ok(None);
    }
    let tracked: BTreeSet<String> = names(quota.pointer("/spec/hard"))
        .into_iter()
        .filter(|r| {
            usage.contains_key(r) || (group.is_empty() && plural == "pods" && pod_resource(r))
        })
        .collect();
    if tracked.is_empty() {
        return Ok(None);
    }
    let hard = quota.pointer("/status/hard");
    let used = quota.pointer("/status/used");
    let used_names = names(used);
    let unknown = names(hard)
        .iter()
        .any(|r| tracked.contains(r) && !used_names.contains(r));
    if hard.is_none() || unknown {
        return Err(format!(
            "status unknown for quota: {name}, resources: {}",
            tracked.iter().cloned().collect::<Vec<_>>().join(",")
        ));
    }
    if group.is_empty() && plural == "pods" {
        constraints(&tracked, obj).map_err(|e| format!("failed quota: {name}: {e}"))?;
    }
    let amount = |m: Option<&Value>, r: &str| {
        quantity(m.and_then(|m| m.get(r))).unwrap_or_else(Quantity::zero)
    };
    let mut new_used: Map<String, Value> =
        used.and_then(Value::as_object).cloned().unwrap_or_default();
    let (mut requested, mut was, mut limited) = (Usage::new(), Usage::new(), Usage::new());
    for r in names(hard).intersection(&tracked) {
        let Some(delta) = usage.get(r) else { continue };
        let before = amount(used, r);
        let after = before + *delta;
        let limit = amount(hard, r);
        if after > limit {
            requested.insert(r.clone(), *delta);
            was.insert(r.clone(), before);
            limited.insert(r.clone(), limit);
        }
        new_used.insert(r.clone(), json!(after.to_string()));
    }
    if !requested.is_empty() {
        return Err(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            pretty(&requested),
            pretty(&was),
            pretty(&limited)
        ));
    }
    Ok(Some(Value::Object(new_used)))
}

fn pod_resource(r: &str) -> bool {
    let requested = r.strip_prefix("requests.");
    POD_COMPUTE
        .iter()
        .any(|c| r == *c || requested == Some(c) || r == format!("limits.{c}"))
        || r == "pods"
        || r == "count/pods"
        || r.starts_with("hugepages-")
        || requested.is_some_and(|n| n.starts_with("hugepages-") || extended(n))
}

/// Upstream's IsExtendedResourceName: a domain-qualified name outside `kubernetes.io`.
fn extended(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// The resource names any container of a pod requests.
fn requested_names(spec: &Value) -> BTreeSet<String> {
    ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.pointer("/resources/requests").and_then(Value::as_object))
        .flat_map(|r| r.keys().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(hard: Value, used: Option<Value>) -> Value {
        let mut q = json!({"metadata": {"name": "q"}, "spec": {"hard": hard.clone()}, "status": {"hard": hard}});
        if let Some(u) = used {
            q["status"]["used"] = u;
        }
        q
    }

    fn pod(cpu: Option<&str>) -> Value {
        let mut c = json!({"name": "app", "image": "nginx"});
        if let Some(cpu) = cpu {
            c["resources"] = json!({"requests": {"cpu": cpu, "memory": "64Mi"}});
        }
        json!({"metadata": {"name": "p"}, "spec": {"containers": [c]}})
    }

    #[test]
    fn counts_and_compute_are_added_until_the_hard_limit() {
        let q = quota(
            json!({"pods": "2", "requests.cpu": "1"}),
            Some(json!({"pods": "1", "requests.cpu": "500m"})),
        );
        let p = pod(Some("250m"));
        let used = admit(&q, "", "pods", &p, &usage("", "pods", &p))
            .unwrap()
            .unwrap();
        assert_eq!(used, json!({"pods": "2", "requests.cpu": "750m"}));
        let big = pod(Some("600m"));
        assert_eq!(
            admit(&q, "", "pods", &big, &usage("", "pods", &big)).unwrap_err(),
            "exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=500m, limited: requests.cpu=1"
        );
        let bare = pod(None);
        assert_eq!(
            admit(&q, "", "pods", &bare, &usage("", "pods", &bare)).unwrap_err(),
            "failed quota: q: must specify requests.cpu for: app"
        );
        let cm = json!({"metadata": {"name": "c"}});
        assert_eq!(
            admit(&q, "", "configmaps", &cm, &usage("", "configmaps", &cm)).unwrap(),
            None
        );
    }

    #[test]
    fn a_quota_without_usage_yet_refuses_what_it_tracks() {
        let q = quota(json!({"configmaps": "5"}), None);
        let cm = json!({"metadata": {"name": "c"}});
        assert_eq!(
            admit(&q, "", "configmaps", &cm, &usage("", "configmaps", &cm)).unwrap_err(),
            "status unknown for quota: q, resources: configmaps"
        );
        let q = quota(
            json!({"count/deployments.apps": "1"}),
            Some(json!({"count/deployments.apps": "1"})),
        );
        let d = json!({"metadata": {"name": "d"}});
        assert!(
            admit(
                &q,
                "apps",
                "deployments",
                &d,
                &usage("apps", "deployments", &d)
            )
            .unwrap_err()
            .starts_with("exceeded quota: q, requested: count/deployments.apps=1")
        );
    }

    #[test]
    fn extended_resources_and_huge_pages_count_as_requests() {
        let pod = json!({"spec": {"containers": [
            {"resources": {"requests": {"cpu": "100m", "example.com/dongle": "3", "hugepages-2Mi": "4Mi"},
                "limits": {"example.com/dongle": "3"}}},
            {"resources": {"requests": {"example.com/dongle": "2", "kubernetes.io/native": "1"}}},
        ]}});
        let usage = usage("", "pods", &pod);
        assert_eq!(
            usage["requests.example.com/dongle"],
            Quantity::parse("5").unwrap()
        );
        assert!(!usage.contains_key("limits.example.com/dongle"));
        assert!(!usage.contains_key("requests.kubernetes.io/native"));
        assert_eq!(usage["hugepages-2Mi"], Quantity::parse("4Mi").unwrap());
        assert_eq!(
            usage["requests.hugepages-2Mi"],
            Quantity::parse("4Mi").unwrap()
        );
        assert!(pod_resource("requests.example.com/dongle"));
        assert!(!pod_resource("limits.example.com/dongle"));
    }
}
