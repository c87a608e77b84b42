//! Mutations upstream's admission makes to new pods: DefaultTolerationSeconds and Priority.

use serde_json::{Value, json};

/// Seconds a pod tolerates a not-ready or unreachable node before it is evicted.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// DefaultTolerationSeconds: a pod that does not tolerate `node.kubernetes.io/not-ready` or
/// `node.kubernetes.io/unreachable` NoExecute taints gets a 300 s toleration of each.
pub fn default_toleration_seconds(pod: &mut Value) {
    let tolerates = |pod: &Value, key: &str| {
        pod.pointer("/spec/tolerations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|t| {
                let k = t.get("key").and_then(Value::as_str).unwrap_or("");
                let e = t.get("effect").and_then(Value::as_str).unwrap_or("");
                (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
            })
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if tolerates(pod, key) {
            continue;
        }
        let toleration = json!({
            "key": key,
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
        });
        match pod
            .pointer_mut("/spec/tolerations")
            .and_then(Value::as_array_mut)
        {
            Some(list) => list.push(toleration),
            None => {
                if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("tolerations".into(), json!([toleration]));
                }
            }
        }
    }
}

/// The two PriorityClasses every cluster has (upstream creates them at start).
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// Priority: sets `spec.priority` (and the preemption policy) from the pod's PriorityClass,
/// or from the global default class (`default`: its name, value and policy) when it names none.
/// `class` is the named class's (value, preemptionPolicy), None when there is no such class.
pub fn priority(
    pod: &mut Value,
    class: Option<(i64, Option<String>)>,
    default: Option<(String, i64, Option<String>)>,
) -> Result<(), String> {
    let named = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let (value, policy) = match (&named, class, default) {
        (Some(name), None, _) => {
            return Err(format!("no PriorityClass with name {name} was found"));
        }
        (Some(_), Some((value, policy)), _) => (value, policy),
        (None, _, Some((name, value, policy))) => {
            pod["spec"]["priorityClassName"] = json!(name);
            (value, policy)
        }
        (None, _, None) => (0, None),
    };
    if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64)
        && given != value
    {
        return Err(
            "the integer value of priority must not be provided in pod spec; priority admission controller computed the value from the given PriorityClass name"
                .to_string(),
        );
    }
    pod["spec"]["priority"] = json!(value);
    if pod.pointer("/spec/preemptionPolicy").is_none() {
        pod["spec"]["preemptionPolicy"] =
            json!(policy.unwrap_or_else(|| "PreemptLowerPriority".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_the_two_default_tolerations_unless_they_tolerate_the_taints() {
        let mut pod = json!({"spec": {"containers": []}});
        default_toleration_seconds(&mut pod);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(pod["spec"]["tolerations"][0]["tolerationSeconds"], 300);
        let mut pod = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut pod);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn priority_comes_from_the_class_or_the_default() {
        let mut pod = json!({"spec": {"priorityClassName": "high"}});
        priority(&mut pod, Some((1000, None)), None).unwrap();
        assert_eq!(pod["spec"]["priority"], 1000);
        assert_eq!(pod["spec"]["preemptionPolicy"], "PreemptLowerPriority");
        let mut pod = json!({"spec": {"priorityClassName": "nope"}});
        assert_eq!(
            priority(&mut pod, None, None).unwrap_err(),
            "no PriorityClass with name nope was found"
        );
        let mut pod = json!({"spec": {}});
        priority(
            &mut pod,
            None,
            Some(("normal".into(), 10, Some("Never".into()))),
        )
        .unwrap();
        assert_eq!(
            (
                pod["spec"]["priority"].clone(),
                pod["spec"]["priorityClassName"].clone()
            ),
            (json!(10), json!("normal"))
        );
        assert_eq!(pod["spec"]["preemptionPolicy"], "Never");
    }
}

/// Upstream's pod QoS class (`qos.GetPodQOS`), from the cpu and memory of every container
/// and init container: BestEffort with no requests or limits, Guaranteed when each container
/// limits both and every request equals its limit, Burstable otherwise.
pub fn qos_class(pod: &Value) -> &'static str {
    use crate::quantity::Quantity;
    use std::collections::BTreeMap;
    const COMPUTE: [&str; 2] = ["cpu", "memory"];
    let mut requests: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    let containers = ["/spec/containers", "/spec/initContainers"]
        .into_iter()
        .flat_map(|p| {
            pod.pointer(p)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        });
    for c in containers {
        let sum = |kind: &str, into: &mut BTreeMap<&str, Quantity>| {
            let mut found = Vec::new();
            for name in COMPUTE {
                let q = c
                    .pointer(&format!("/resources/{kind}/{name}"))
                    .and_then(Value::as_str)
                    .and_then(Quantity::parse)
                    .filter(|q| *q != Quantity::zero());
                if let Some(q) = q {
                    let total = into.entry(name).or_insert_with(Quantity::zero);
                    *total = *total + q;
                    found.push(name);
                }
            }
            found
        };
        sum("requests", &mut requests);
        if sum("limits", &mut limits).len() < COMPUTE.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed
        && requests.len() == limits.len()
        && requests.iter().all(|(k, q)| limits.get(k) == Some(q))
    {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Upstream's Pod defaulting of resources: a container that limits a resource and does not
/// request it requests its limit (for pods only, not templates).
pub fn requests_from_limits(pod: &mut Value) {
    for p in ["/spec/containers", "/spec/initContainers"] {
        for c in pod
            .pointer_mut(p)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(limits) = c
                .pointer("/resources/limits")
                .and_then(Value::as_object)
                .cloned()
            else {
                continue;
            };
            let resources = &mut c["resources"];
            if !resources.get("requests").is_some_and(Value::is_object) {
                resources["requests"] = json!({});
            }
            if let Some(requests) = resources["requests"].as_object_mut() {
                for (k, v) in limits {
                    requests.entry(k).or_insert(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod qos_tests {
    use super::*;

    fn pod(resources: Value) -> Value {
        json!({"spec": {"containers": [{"name": "c", "resources": resources}]}})
    }

    #[test]
    fn qos_classes_follow_upstream() {
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        let both = json!({"cpu": "100m", "memory": "100Mi"});
        assert_eq!(
            qos_class(&pod(json!({"requests": both, "limits": both}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod(
                json!({"requests": {"cpu": "0.1", "memory": "100Mi"}, "limits": both})
            )),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&pod(json!({"limits": {"cpu": "1"}}))),
            "Burstable"
        );
    }

    #[test]
    fn limits_default_requests() {
        let mut p = pod(json!({"requests": {"memory": "150Mi"}, "limits": {"cpu": "300m"}}));
        requests_from_limits(&mut p);
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"],
            json!({"memory": "150Mi", "cpu": "300m"})
        );
    }
}
