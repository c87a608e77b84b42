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
