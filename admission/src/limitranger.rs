//! LimitRanger (upstream's `plugin/pkg/admission/limitranger`): a namespace's LimitRanges
//! default the requests and limits of new pods' containers, and bound what containers, pods
//! and claims may ask for.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::quantity::Quantity;

fn resources(v: Option<&Value>) -> BTreeMap<String, Quantity> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let q = match v {
                        Value::String(s) => Quantity::parse(s),
                        Value::Number(n) => Quantity::parse(&n.to_string()),
                        _ => None,
                    }?;
                    Some((k.clone(), q))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn items<'a>(ranges: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    ranges.iter().flat_map(move |r| {
        r.pointer("/spec/limits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(move |l| l.get("type").and_then(Value::as_str) == Some(kind))
    })
}

/// Sets the resources of `wanted` a container's `field` (requests or limits) lacks; returns
/// their names.
fn fill(c: &mut Value, field: &str, wanted: &BTreeMap<String, Value>) -> Vec<String> {
    let mut names = Vec::new();
    if !c["resources"].get(field).is_some_and(Value::is_object) {
        c["resources"][field] = json!({});
    }
    for (k, v) in wanted {
        if c["resources"][field].get(k).is_none() {
            c["resources"][field][k] = v.clone();
            names.push(k.clone());
        }
    }
    if c["resources"][field]
        .as_object()
        .is_some_and(|m| m.is_empty())
        && let Some(r) = c["resources"].as_object_mut()
    {
        r.remove(field);
    }
    names
}

/// Fills in the default requests and limits of a new pod's containers; records what it set in
/// the `kubernetes.io/limit-ranger` annotation, as upstream does.
pub fn default_pod(pod: &mut Value, ranges: &[Value]) {
    let mut defaults = (BTreeMap::new(), BTreeMap::new());
    for item in items(ranges, "Container") {
        for (k, v) in item
            .get("default")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            defaults.0.insert(k.clone(), v.clone());
        }
        for (k, v) in item
            .get("defaultRequest")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            defaults.1.insert(k.clone(), v.clone());
        }
    }
    if defaults.0.is_empty() && defaults.1.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(containers) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in containers {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !c.get("resources").is_some_and(Value::is_object) {
                c["resources"] = json!({});
            }
            let limits = fill(c, "limits", &defaults.0);
            // A request left out defaults to the default request, else to the limit.
            let mut requests_wanted = defaults.1.clone();
            for (k, v) in c["resources"]
                .get("limits")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                requests_wanted
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
            let requests = fill(c, "requests", &requests_wanted);
            if !requests.is_empty() {
                notes.push(format!(
                    "{} request for {list_kind} {name}",
                    requests.join(", "),
                    list_kind = if list == "containers" {
                        "container"
                    } else {
                        "init container"
                    }
                ));
            }
            if !limits.is_empty() {
                notes.push(format!(
                    "{} limit for {list_kind} {name}",
                    limits.join(", "),
                    list_kind = if list == "containers" {
                        "container"
                    } else {
                        "init container"
                    }
                ));
            }
        }
    }
    if !notes.is_empty() {
        if !pod["metadata"]["annotations"].is_object() {
            pod["metadata"]["annotations"] = json!({});
        }
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] =
            json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

fn check(
    kind: &str,
    item: &Value,
    requests: &BTreeMap<String, Quantity>,
    limits: &BTreeMap<String, Quantity>,
    errors: &mut Vec<String>,
) {
    for (r, min) in resources(item.get("min")) {
        match requests.get(&r) {
            Some(q) if *q < min => errors.push(format!(
                "minimum {r} usage per {kind} is {min}, but request is {q}"
            )),
            Some(_) => {}
            None => errors.push(format!(
                "minimum {r} usage per {kind} is {min}.  No request is specified"
            )),
        }
    }
    for (r, max) in resources(item.get("max")) {
        match limits.get(&r) {
            Some(q) if *q > max => errors.push(format!(
                "maximum {r} usage per {kind} is {max}, but limit is {q}"
            )),
            // Upstream's maxConstraint checks the request too.
            Some(_) => match requests.get(&r) {
                Some(q) if *q > max => errors.push(format!(
                    "maximum {r} usage per {kind} is {max}, but request is {q}"
                )),
                _ => {}
            },
            None => errors.push(format!(
                "maximum {r} usage per {kind} is {max}.  No limit is specified"
            )),
        }
    }
    for (r, ratio) in resources(item.get("maxLimitRequestRatio")) {
        if let (Some(l), Some(q)) = (limits.get(&r), requests.get(&r))
            && q.as_f64() > 0.0
        {
            let provided = l.as_f64() / q.as_f64();
            if provided > ratio.as_f64() {
                errors.push(format!(
                    "{r} max limit to request ratio per {kind} is {ratio}, but provided ratio is {provided:.6}"
                ));
            }
        }
    }
}

/// What a pod (after defaulting) or a claim violates; empty when it fits.
pub fn violations(plural: &str, obj: &Value, ranges: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    match plural {
        "pods" => {
            let containers: Vec<&Value> = ["initContainers", "containers"]
                .iter()
                .flat_map(|k| {
                    obj.pointer(&format!("/spec/{k}"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .collect();
            for item in items(ranges, "Container") {
                for c in &containers {
                    let requests = resources(c.pointer("/resources/requests"));
                    let limits = resources(c.pointer("/resources/limits"));
                    check("Container", item, &requests, &limits, &mut errors);
                }
            }
            let mut pod_requests: BTreeMap<String, Quantity> = BTreeMap::new();
            let mut pod_limits: BTreeMap<String, Quantity> = BTreeMap::new();
            for c in obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for (k, q) in resources(c.pointer("/resources/requests")) {
                    let sum = pod_requests.get(&k).copied().unwrap_or_else(Quantity::zero) + q;
                    pod_requests.insert(k, sum);
                }
                for (k, q) in resources(c.pointer("/resources/limits")) {
                    let sum = pod_limits.get(&k).copied().unwrap_or_else(Quantity::zero) + q;
                    pod_limits.insert(k, sum);
                }
            }
            for item in items(ranges, "Pod") {
                check("Pod", item, &pod_requests, &pod_limits, &mut errors);
            }
        }
        "persistentvolumeclaims" => {
            let requests = resources(obj.pointer("/spec/resources/requests"));
            let limits = resources(obj.pointer("/spec/resources/limits"));
            for item in items(ranges, "PersistentVolumeClaim") {
                let limits = if limits.is_empty() {
                    requests.clone()
                } else {
                    limits.clone()
                };
                check(
                    "PersistentVolumeClaim",
                    item,
                    &requests,
                    &limits,
                    &mut errors,
                );
            }
        }
        _ => {}
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Vec<Value> {
        vec![json!({"spec": {"limits": [{
            "type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m"},
            "max": {"cpu": "1"},
            "min": {"memory": "64Mi"},
        }]}})]
    }

    #[test]
    fn containers_get_defaults_and_are_held_to_min_and_max() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}});
        default_pod(&mut pod, &range());
        let r = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(r["limits"], json!({"cpu": "500m", "memory": "256Mi"}));
        assert_eq!(r["requests"], json!({"cpu": "100m", "memory": "256Mi"}));
        assert_eq!(
            pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
            "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app"
        );
        assert!(violations("pods", &pod, &range()).is_empty());
        let big = json!({"spec": {"containers": [{"name": "app", "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "2", "memory": "32Mi"}}}]}});
        assert_eq!(
            violations("pods", &big, &range()),
            vec![
                "minimum memory usage per Container is 64Mi, but request is 32Mi".to_string(),
                "maximum cpu usage per Container is 1, but limit is 2".to_string(),
            ]
        );
    }
}
