//! `autoscaling/v1` HorizontalPodAutoscalers: stored in the v2 form (upstream's storage
//! version) and converted as upstream's conversion does (pkg/apis/autoscaling/v1): the CPU
//! utilization target is v2's Resource metric for cpu; what v1 cannot say (other metrics,
//! behavior, conditions) travels in v1 in upstream's `autoscaling.alpha.kubernetes.io/*`
//! annotations.

use serde_json::{Map, Value, json};

use super::{Conversion, Resource, Status};
use crate::typed::typed;

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["type"] == "Utilization"
}

fn annotations(obj: &mut Value) -> &mut Map<String, Value> {
    let meta = crate::object::metadata_mut(obj);
    if !meta.get("annotations").is_some_and(Value::is_object) {
        meta.insert("annotations".into(), json!({}));
    }
    match meta.get_mut("annotations") {
        Some(Value::Object(a)) => a,
        _ => unreachable!("annotations was just made an object"),
    }
}

fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let a = annotations(obj);
    let v = a
        .remove(key)
        .and_then(|s| serde_json::from_str(s.as_str()?).ok());
    if a.is_empty() {
        crate::object::metadata_mut(obj).remove("annotations");
    }
    v
}

fn put_annotation(obj: &mut Value, key: &str, v: &Value) {
    annotations(obj).insert(key.into(), json!(v.to_string()));
}

/// v1 → v2 (the stored form).
fn to_v2(obj: &mut Value) {
    let mut metrics: Vec<Value> = take_annotation(obj, METRICS)
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    let current: Vec<Value> = take_annotation(obj, CURRENT_METRICS)
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    let behavior = take_annotation(obj, BEHAVIOR);
    let conditions = take_annotation(obj, CONDITIONS);
    if let Some(Value::Object(spec)) = obj.get_mut("spec") {
        if let Some(cpu) = spec.remove("targetCPUUtilizationPercentage") {
            metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": cpu}}}));
        }
        if !metrics.is_empty() {
            spec.insert("metrics".into(), json!(metrics));
        }
        if let Some(b) = behavior {
            spec.insert("behavior".into(), b);
        }
    }
    if let Some(Value::Object(status)) = obj.get_mut("status") {
        let mut current = current;
        if let Some(cpu) = status.remove("currentCPUUtilizationPercentage") {
            current.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": cpu}}}));
        }
        if !current.is_empty() {
            status.insert("currentMetrics".into(), json!(current));
        }
        if let Some(c) = conditions {
            status.insert("conditions".into(), c);
        }
    }
    obj["apiVersion"] = json!("autoscaling/v2");
}

/// v2 (stored) → v1.
fn to_v1(obj: &mut Value) {
    let spec = obj.get_mut("spec").and_then(Value::as_object_mut);
    let (mut others, mut behavior) = (Vec::new(), None);
    if let Some(spec) = spec {
        if let Some(Value::Array(metrics)) = spec.remove("metrics") {
            for m in metrics {
                if is_cpu_utilization(&m) {
                    spec.insert(
                        "targetCPUUtilizationPercentage".into(),
                        m["resource"]["target"]["averageUtilization"].clone(),
                    );
                } else {
                    others.push(m);
                }
            }
        }
        behavior = spec.remove("behavior");
    }
    let (mut current_others, mut conditions) = (Vec::new(), None);
    if let Some(Value::Object(status)) = obj.get_mut("status") {
        if let Some(Value::Array(current)) = status.remove("currentMetrics") {
            for m in current {
                if m["type"] == "Resource" && m["resource"]["name"] == "cpu" {
                    if let Some(u) = m["resource"]["current"].get("averageUtilization") {
                        status.insert("currentCPUUtilizationPercentage".into(), u.clone());
                    }
                } else {
                    current_others.push(m);
                }
            }
        }
        conditions = status.remove("conditions");
    }
    if !others.is_empty() {
        put_annotation(obj, METRICS, &json!(others));
    }
    if !current_others.is_empty() {
        put_annotation(obj, CURRENT_METRICS, &json!(current_others));
    }
    if let Some(b) = behavior {
        put_annotation(obj, BEHAVIOR, &b);
    }
    if let Some(c) = conditions {
        put_annotation(obj, CONDITIONS, &c);
    }
    obj["apiVersion"] = json!("autoscaling/v1");
}

const CONVERSION: Conversion = Conversion {
    to_storage: to_v2,
    from_storage: to_v1,
};

pub static RESOURCES: &[Resource] = &[Resource {
    group: "autoscaling",
    version: "v1",
    kind: "HorizontalPodAutoscaler",
    typed: typed::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>(),
    plural: "horizontalpodautoscalers",
    singular: "horizontalpodautoscaler",
    namespaced: true,
    short_names: &["hpa"],
    categories: &["all"],
    columns: &super::cells::HPA,
    fields: &[],
    status: Status::Subresource,
    scale: false,
    generation: true,
    storage: None,
    allocate: None,
    allocations: super::holds_nothing,
    on_update: super::any_update,
    prepare_update: super::prepare_nothing,
    defaults: |o| super::defaults::set(&mut o["spec"], "minReplicas", json!(1)),
    prepare_create: super::no_defaults,
    validate: super::no_rules,
    delete_finalizers: &[],
    custom: None,
    conversion: Some(&CONVERSION),
    verbs: super::VERBS,
    deprecation: None,
}];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_convert_both_ways() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1,
                "maxReplicas": 5, "targetCPUUtilizationPercentage": 50},
            "status": {"currentReplicas": 2, "desiredReplicas": 2, "currentCPUUtilizationPercentage": 40}});
        let mut v2 = v1.clone();
        to_v2(&mut v2);
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}])
        );
        assert_eq!(
            v2["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            40
        );
        let mut back = v2.clone();
        to_v1(&mut back);
        assert_eq!(back, v1);
        // What v1 cannot say rides in annotations and comes back, ahead of the cpu target
        // (upstream's order).
        let mut memory = v2.clone();
        memory["spec"]["metrics"].as_array_mut().unwrap().insert(0, json!({"type": "Resource",
            "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}));
        let mut as_v1 = memory.clone();
        to_v1(&mut as_v1);
        assert!(as_v1["metadata"]["annotations"][METRICS].is_string());
        to_v2(&mut as_v1);
        assert_eq!(as_v1, memory);
    }
}
