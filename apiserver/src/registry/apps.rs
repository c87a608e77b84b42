//! `apps/v1`: the workload controllers' kinds.

use k8s_openapi::api::apps::v1 as apps;
use serde_json::{Value, json};

use super::cells::{AGE, WORKLOAD_WIDE, col, int, map, text};
use super::{Resource, Status, defaults};
use crate::selector::LabelSelector;
use crate::typed::typed;

const BASE: Resource = Resource {
    group: "apps",
    namespaced: true,
    categories: &["all"],
    status: Status::Subresource,
    scale: true,
    generation: true,
    validate: selector_rules,
    ..super::base(typed::<apps::Deployment>())
};

/// Upstream's selector rules of the workloads (ValidateDeploymentSpec and its siblings): a
/// selector is required, and the pod template's labels must match it. A missing selector
/// reads as an empty one here, so both are reported as missing.
fn selector_rules(o: &Value) -> Vec<(String, String)> {
    let selector = o.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
    let Ok(s) = LabelSelector::from_object(&selector) else {
        return Vec::new();
    };
    if s.is_empty() {
        return vec![("spec.selector".into(), "Required value".into())];
    }
    let template = o.pointer("/spec/template").cloned().unwrap_or(Value::Null);
    if s.matches(&template) {
        return Vec::new();
    }
    // Go's %#v of the labels: `map[string]string{"app":"web"}`, keys in order.
    let labels = match template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
    {
        Some(m) if !m.is_empty() => {
            let pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{:?}:{:?}", k, v.as_str().unwrap_or("")))
                .collect();
            format!("map[string]string{{{}}}", pairs.join(", "))
        }
        _ => "map[string]string(nil)".to_string(),
    };
    vec![(
        "spec.template.metadata.labels".into(),
        format!("Invalid value: {labels}: `selector` does not match template `labels`"),
    )]
}

pub static RESOURCES: &[Resource] = &[
    Resource {
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        columns: &[
            col("Ready", "Number of the pod with ready state", |o| {
                json!(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    int(o, "/spec/replicas")
                ))
            }),
            col(
                "Up-to-date",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                |o| json!(int(o, "/status/updatedReplicas")),
            ),
            col(
                "Available",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                |o| json!(int(o, "/status/availableReplicas")),
            ),
            AGE,
            WORKLOAD_WIDE[0],
            WORKLOAD_WIDE[1],
            WORKLOAD_WIDE[2],
        ],
        defaults: defaults::deployment,
        ..BASE
    },
    Resource {
        kind: "ReplicaSet",
        typed: typed::<apps::ReplicaSet>(),
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
        columns: &[
            col("Desired", "Number of desired pods.", |o| {
                json!(int(o, "/spec/replicas"))
            }),
            col("Current", "Number of actual replicas.", |o| {
                json!(int(o, "/status/replicas"))
            }),
            col("Ready", "Number of ready replicas.", |o| {
                json!(int(o, "/status/readyReplicas"))
            }),
            AGE,
            WORKLOAD_WIDE[0],
            WORKLOAD_WIDE[1],
            WORKLOAD_WIDE[2],
        ],
        defaults: defaults::replica_set,
        ..BASE
    },
    Resource {
        kind: "StatefulSet",
        typed: typed::<apps::StatefulSet>(),
        plural: "statefulsets",
        singular: "statefulset",
        short_names: &["sts"],
        columns: &[
            col("Ready", "Number of the pod with ready state", |o| {
                json!(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    int(o, "/spec/replicas")
                ))
            }),
            AGE,
            WORKLOAD_WIDE[0],
            WORKLOAD_WIDE[1],
        ],
        defaults: defaults::stateful_set,
        ..BASE
    },
    Resource {
        kind: "DaemonSet",
        typed: typed::<apps::DaemonSet>(),
        plural: "daemonsets",
        scale: false,
        singular: "daemonset",
        short_names: &["ds"],
        columns: &[
            col(
                "Desired",
                "The total number of nodes that should be running the daemon pod.",
                |o| json!(int(o, "/status/desiredNumberScheduled")),
            ),
            col(
                "Current",
                "The number of nodes running at least one daemon pod.",
                |o| json!(int(o, "/status/currentNumberScheduled")),
            ),
            col(
                "Ready",
                "The number of nodes that should be running the daemon pod and have one ready.",
                |o| json!(int(o, "/status/numberReady")),
            ),
            col(
                "Up-to-date",
                "The total number of nodes running the updated daemon pod.",
                |o| json!(int(o, "/status/updatedNumberScheduled")),
            ),
            col(
                "Available",
                "The number of nodes running the daemon pod available.",
                |o| json!(int(o, "/status/numberAvailable")),
            ),
            col(
                "Node Selector",
                "The node selector of the pod template.",
                |o| json!(map(o, "/spec/template/spec/nodeSelector")),
            ),
            AGE,
            WORKLOAD_WIDE[0],
            WORKLOAD_WIDE[1],
            WORKLOAD_WIDE[2],
        ],
        defaults: defaults::daemon_set,
        ..BASE
    },
    Resource {
        kind: "ControllerRevision",
        typed: typed::<apps::ControllerRevision>(),
        validate: super::no_rules,
        plural: "controllerrevisions",
        singular: "controllerrevision",
        categories: &[],
        status: Status::None,
        scale: false,
        generation: false,
        columns: &[
            col(
                "Controller",
                "The controller that owns the revision.",
                |o| {
                    let owner = o.pointer("/metadata/ownerReferences/0");
                    json!(owner.map_or(String::new(), |r| format!(
                        "{}.{}/{}",
                        text(r, "/kind").to_lowercase(),
                        text(r, "/apiVersion").split('/').next().unwrap_or(""),
                        text(r, "/name")
                    )))
                },
            ),
            col("Revision", "The revision number.", |o| {
                json!(int(o, "/revision"))
            }),
            AGE,
        ],
        ..BASE
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_need_a_selector_that_matches_their_template() {
        let d = |selector: Value, labels: Value| json!({"spec": {"selector": selector, "template": {"metadata": {"labels": labels}}}});
        assert_eq!(
            selector_rules(&d(json!({}), json!({"app": "a"}))),
            [("spec.selector".to_string(), "Required value".to_string())]
        );
        assert_eq!(
            selector_rules(&d(json!({"matchLabels": {"app": "a"}}), json!({"app": "b", "tier": "x"}))),
            [(
                "spec.template.metadata.labels".to_string(),
                "Invalid value: map[string]string{\"app\":\"b\", \"tier\":\"x\"}: `selector` does not match template `labels`".to_string()
            )]
        );
        let matching = d(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}),
            json!({"app": "a"}),
        );
        assert!(selector_rules(&matching).is_empty());
    }
}
