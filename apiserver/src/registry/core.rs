//! The core group (`/api/v1`).

use k8s_openapi::api::core::v1 as core;
use serde_json::{Value, json};

use super::cells::{self, AGE, CREATED_AT, col, count, int, or_none, text, wide};
use super::{Resource, Status, defaults};
use crate::typed::typed;

/// What every core entry shares; entries override what differs.
const BASE: Resource = Resource {
    namespaced: true,
    ..super::base(typed::<core::ConfigMap>())
};

pub static RESOURCES: &[Resource] = &[
    Resource {
        kind: "Namespace",
        typed: typed::<core::Namespace>(),
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        columns: &[
            col("Status", "The status of the namespace", |o| {
                json!(text(o, "/status/phase"))
            }),
            AGE,
        ],
        fields: &["status.phase"],
        status: Status::Subresource,
        defaults: |o| {
            if o.pointer("/status/phase").is_none() {
                o["status"]["phase"] = json!("Active");
            }
            if o.pointer("/spec/finalizers").is_none() {
                o["spec"] = json!({"finalizers": ["kubernetes"]});
            }
        },
        ..BASE
    },
    Resource {
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        columns: &[
            col("Data", "Data contains the configuration data.", |o| {
                count(o, &["data", "binaryData"])
            }),
            AGE,
        ],
        validate: super::config::configmap_keys,
        on_update: super::config::configmap_update,
        ..BASE
    },
    Resource {
        kind: "Secret",
        typed: typed::<core::Secret>(),
        plural: "secrets",
        singular: "secret",
        columns: &[
            col(
                "Type",
                "Used to facilitate programmatic handling of secret data.",
                |o| json!(text(o, "/type")),
            ),
            col("Data", "Data contains the secret data.", |o| {
                count(o, &["data"])
            }),
            AGE,
        ],
        fields: &["type"],
        defaults: super::config::secret_defaults,
        validate: super::config::secret_keys,
        on_update: super::config::secret_update,
        ..BASE
    },
    Resource {
        kind: "ServiceAccount",
        typed: typed::<core::ServiceAccount>(),
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        columns: &[
            col(
                "Secrets",
                "Secrets the ServiceAccount's pods may use.",
                |o| {
                    json!(
                        o.get("secrets")
                            .and_then(Value::as_array)
                            .map_or(0, Vec::len)
                    )
                },
            ),
            AGE,
        ],
        ..BASE
    },
    Resource {
        kind: "Pod",
        typed: typed::<core::Pod>(),
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        categories: &["all"],
        columns: &[
            col(
                "Ready",
                "The aggregate readiness state of this pod for accepting traffic.",
                |o| json!(cells::pod_ready(o)),
            ),
            col(
                "Status",
                "The aggregate status of the containers in this pod.",
                |o| json!(cells::pod_status(o)),
            ),
            col(
                "Restarts",
                "The number of times the containers in this pod have been restarted.",
                |o| json!(cells::pod_restarts(o)),
            ),
            AGE,
            wide("IP", "IP address allocated to the pod.", |o| {
                json!(or_none(text(o, "/status/podIP")))
            }),
            wide("Node", "Name of the node the pod is assigned to.", |o| {
                json!(or_none(text(o, "/spec/nodeName")))
            }),
            wide(
                "Nominated Node",
                "Name of the node the pod is nominated for.",
                |o| json!(or_none(text(o, "/status/nominatedNodeName"))),
            ),
            wide("Readiness Gates", "The readiness gates of the pod.", |o| {
                json!(or_none(cells::joined(
                    o,
                    "/spec/readinessGates",
                    "/conditionType"
                )))
            }),
        ],
        fields: &[
            "spec.nodeName",
            "spec.hostNetwork",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        status: Status::Subresource,
        generation: true,
        defaults: |o| {
            defaults::pod(o);
            kelp_admission::pods::requests_from_limits(o);
            defaults::set(o, "status", json!({}));
            defaults::set(&mut o["status"], "phase", json!("Pending"));
        },
        prepare_create: |o| {
            let class = kelp_admission::pods::qos_class(o);
            if let Some(status) = o.get_mut("status").and_then(Value::as_object_mut) {
                status.insert("qosClass".into(), json!(class));
            }
        },
        validate: pod_rules,
        ..BASE
    },
    Resource {
        kind: "Service",
        typed: typed::<core::Service>(),
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        categories: &["all"],
        columns: &[
            col("Type", "The type of the service.", |o| {
                json!(text(o, "/spec/type"))
            }),
            col("Cluster-IP", "The IP address of the service.", |o| {
                json!(or_none(text(o, "/spec/clusterIP")))
            }),
            col("External-IP", "The external IPs of the service.", |o| {
                json!(or_none(
                    o.pointer("/spec/externalIPs")
                        .and_then(Value::as_array)
                        .map(|a| a
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(","))
                        .unwrap_or_default()
                ))
            }),
            col("Port(s)", "The ports of the service.", |o| {
                json!(cells::service_ports(o))
            }),
            AGE,
            wide("Selector", "The label selector of the service.", |o| {
                json!(cells::map(o, "/spec/selector"))
            }),
        ],
        status: Status::Subresource,
        storage: Some("services/specs"),
        allocate: Some(crate::allocator::allocate_service),
        allocations: crate::allocator::service_allocations,
        on_update: crate::allocator::keep_service_allocations,
        defaults: defaults::service,
        ..BASE
    },
    Resource {
        kind: "Node",
        typed: typed::<core::Node>(),
        plural: "nodes",
        storage: Some("minions"),
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        columns: &[
            col("Status", "The status of the node", |o| {
                json!(cells::node_status(o))
            }),
            col("Roles", "The roles of the node", |o| {
                json!(cells::node_roles(o))
            }),
            AGE,
            col("Version", "Kubelet Version reported by the node.", |o| {
                json!(text(o, "/status/nodeInfo/kubeletVersion"))
            }),
            wide("Internal-IP", "List of internal IPs of the node.", |o| {
                json!(cells::node_address(o, "InternalIP"))
            }),
            wide("External-IP", "List of external IPs of the node.", |o| {
                json!(cells::node_address(o, "ExternalIP"))
            }),
            wide("OS-Image", "OS Image reported by the node.", |o| {
                json!(text(o, "/status/nodeInfo/osImage"))
            }),
            wide(
                "Kernel-Version",
                "Kernel Version reported by the node.",
                |o| json!(text(o, "/status/nodeInfo/kernelVersion")),
            ),
            wide(
                "Container-Runtime",
                "Container Runtime Version reported by the node.",
                |o| json!(text(o, "/status/nodeInfo/containerRuntimeVersion")),
            ),
        ],
        fields: &["spec.unschedulable"],
        status: Status::SetOnCreate,
        ..BASE
    },
    Resource {
        kind: "Event",
        typed: typed::<core::Event>(),
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        columns: &[
            col("Last Seen", "Time since the event was last seen.", |o| {
                let mut with_time = o.clone();
                let last = o
                    .pointer("/lastTimestamp")
                    .or_else(|| o.pointer("/eventTime"))
                    .cloned()
                    .unwrap_or(Value::Null);
                with_time["metadata"]["creationTimestamp"] = last;
                json!(crate::object::age(&with_time))
            }),
            col("Type", "Type of the event.", |o| json!(text(o, "/type"))),
            col("Reason", "Why the event was generated.", |o| {
                json!(text(o, "/reason"))
            }),
            col("Object", "The object the event is about.", |o| {
                json!(format!(
                    "{}/{}",
                    text(o, "/involvedObject/kind").to_lowercase(),
                    text(o, "/involvedObject/name")
                ))
            }),
            col(
                "Message",
                "A human-readable description of the event.",
                |o| json!(text(o, "/message")),
            ),
        ],
        fields: &[
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.uid",
            "reason",
            "type",
            "source:/source/component|/reportingComponent",
            "reportingComponent",
        ],
        ..BASE
    },
    Resource {
        kind: "Endpoints",
        typed: typed::<core::Endpoints>(),
        plural: "endpoints",
        deprecation: Some(
            "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice",
        ),
        storage: Some("services/endpoints"),
        singular: "endpoints",
        short_names: &["ep"],
        columns: &[
            col(
                "Endpoints",
                "The addresses and ports of the endpoints.",
                |o| {
                    let mut eps = Vec::new();
                    for subset in o
                        .get("subsets")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        for a in subset
                            .get("addresses")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            for p in subset
                                .get("ports")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                            {
                                eps.push(format!("{}:{}", text(a, "/ip"), int(p, "/port")));
                            }
                        }
                    }
                    json!(or_none(eps.join(",")))
                },
            ),
            AGE,
        ],
        ..BASE
    },
    Resource {
        kind: "PersistentVolumeClaim",
        typed: typed::<core::PersistentVolumeClaim>(),
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        short_names: &["pvc"],
        columns: &[
            col("Status", "The phase of the claim.", |o| {
                json!(text(o, "/status/phase"))
            }),
            col("Volume", "The bound volume.", |o| {
                json!(text(o, "/spec/volumeName"))
            }),
            col("Capacity", "The capacity of the bound volume.", |o| {
                json!(text(o, "/status/capacity/storage"))
            }),
            col("Access Modes", "The access modes.", |o| {
                json!(
                    o.pointer("/status/accessModes")
                        .and_then(Value::as_array)
                        .map(|a| a
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|m| match m {
                                "ReadWriteOnce" => "RWO",
                                "ReadOnlyMany" => "ROX",
                                "ReadWriteMany" => "RWX",
                                "ReadWriteOncePod" => "RWOP",
                                other => other,
                            })
                            .collect::<Vec<_>>()
                            .join(","))
                        .unwrap_or_default()
                )
            }),
            col("StorageClass", "The storage class.", |o| {
                json!(text(o, "/spec/storageClassName"))
            }),
            col(
                "VolumeAttributesClass",
                "The volume attributes class.",
                |o| json!(or_none(text(o, "/spec/volumeAttributesClassName"))),
            ),
            AGE,
        ],
        status: Status::Subresource,
        defaults: |o| {
            defaults::set(o, "status", json!({}));
            defaults::set(&mut o["status"], "phase", json!("Pending"));
            if let Some(spec) = o.get_mut("spec") {
                defaults::set(spec, "volumeMode", json!("Filesystem"));
            }
        },
        ..BASE
    },
    Resource {
        kind: "PersistentVolume",
        typed: typed::<core::PersistentVolume>(),
        plural: "persistentvolumes",
        singular: "persistentvolume",
        namespaced: false,
        short_names: &["pv"],
        columns: &[
            col("Capacity", "The capacity of the volume.", |o| {
                json!(text(o, "/spec/capacity/storage"))
            }),
            col(
                "Reclaim Policy",
                "What happens to the volume when released.",
                |o| json!(text(o, "/spec/persistentVolumeReclaimPolicy")),
            ),
            col("Status", "The phase of the volume.", |o| {
                json!(text(o, "/status/phase"))
            }),
            col("Claim", "The claim bound to the volume.", |o| {
                let ns = text(o, "/spec/claimRef/namespace");
                json!(if ns.is_empty() {
                    String::new()
                } else {
                    format!("{ns}/{}", text(o, "/spec/claimRef/name"))
                })
            }),
            col("StorageClass", "The storage class.", |o| {
                json!(text(o, "/spec/storageClassName"))
            }),
            AGE,
        ],
        status: Status::Subresource,
        defaults: |o| {
            defaults::set(o, "status", json!({}));
            defaults::set(&mut o["status"], "phase", json!("Pending"));
            if let Some(spec) = o.get_mut("spec") {
                defaults::set(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                defaults::set(spec, "volumeMode", json!("Filesystem"));
            }
        },
        ..BASE
    },
    Resource {
        kind: "ResourceQuota",
        typed: typed::<core::ResourceQuota>(),
        plural: "resourcequotas",
        singular: "resourcequota",
        short_names: &["quota"],
        columns: &[
            AGE,
            col("Request", "Used and hard request quotas.", |o| {
                json!(quota(o, false))
            }),
            col("Limit", "Used and hard limit quotas.", |o| {
                json!(quota(o, true))
            }),
        ],
        status: Status::Subresource,
        ..BASE
    },
    Resource {
        kind: "LimitRange",
        typed: typed::<core::LimitRange>(),
        plural: "limitranges",
        singular: "limitrange",
        short_names: &["limits"],
        columns: &[CREATED_AT],
        ..BASE
    },
    Resource {
        kind: "PodTemplate",
        typed: typed::<core::PodTemplate>(),
        plural: "podtemplates",
        singular: "podtemplate",
        columns: &[
            col(
                "Containers",
                "Names of each container in the template.",
                |o| json!(cells::joined(o, "/template/spec/containers", "/name")),
            ),
            col(
                "Images",
                "Images referenced by each container in the template.",
                |o| json!(cells::joined(o, "/template/spec/containers", "/image")),
            ),
            col("Pod Labels", "The labels of the pod template.", |o| {
                json!(cells::map(o, "/template/metadata/labels"))
            }),
        ],
        defaults: |o| {
            if let Some(spec) = o.pointer_mut("/template/spec") {
                defaults::pod_spec(spec);
            }
        },
        ..BASE
    },
    Resource {
        kind: "ReplicationController",
        typed: typed::<core::ReplicationController>(),
        plural: "replicationcontrollers",
        scale: true,
        singular: "replicationcontroller",
        short_names: &["rc"],
        categories: &["all"],
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
            wide(
                "Containers",
                "Names of each container in the template.",
                |o| json!(cells::joined(o, "/spec/template/spec/containers", "/name")),
            ),
            wide(
                "Images",
                "Images referenced by each container in the template.",
                |o| json!(cells::joined(o, "/spec/template/spec/containers", "/image")),
            ),
            wide("Selector", "Label selector for pods.", |o| {
                json!(cells::map(o, "/spec/selector"))
            }),
        ],
        status: Status::Subresource,
        defaults: defaults::replica_set,
        ..BASE
    },
    // Served by their own code, never stored: a Binding binds the pod it names (upstream's
    // LegacyBindingREST, `pods.rs`); component statuses are the control plane's health
    // computed on each read (`components.rs`).
    Resource {
        kind: "Binding",
        typed: typed::<core::Binding>(),
        plural: "bindings",
        singular: "binding",
        verbs: &["create"],
        ..BASE
    },
    Resource {
        kind: "ComponentStatus",
        typed: typed::<core::ComponentStatus>(),
        plural: "componentstatuses",
        singular: "componentstatus",
        namespaced: false,
        short_names: &["cs"],
        columns: &[
            col("Status", "Status of the component conditions", |o| {
                json!(component_health(o).0)
            }),
            col("Message", "Message of the component conditions", |o| {
                json!(component_health(o).1)
            }),
            col("Error", "Error of the component conditions", |o| {
                json!(component_health(o).2)
            }),
        ],
        verbs: &["get", "list"],
        // Upstream tags the type deprecated in 1.19 (prerelease-lifecycle-gen).
        deprecation: Some("v1 ComponentStatus is deprecated in v1.19+"),
        ..BASE
    },
];

/// A component's Healthy condition as upstream's printComponentStatus shows it: (Healthy or
/// Unhealthy, message, error), Unknown without one.
fn component_health(o: &Value) -> (&'static str, String, String) {
    let healthy = o
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Healthy"));
    match healthy {
        Some(c) => (
            if text(c, "/status") == "True" {
                "Healthy"
            } else {
                "Unhealthy"
            },
            text(c, "/message"),
            text(c, "/error"),
        ),
        None => ("Unknown", String::new(), String::new()),
    }
}

/// `requests.cpu: 0/1, pods: 1/10` for the Request column (or the limits).
fn quota(o: &Value, limits: bool) -> String {
    let Some(hard) = o
        .pointer("/status/hard")
        .or_else(|| o.pointer("/spec/hard"))
        .and_then(Value::as_object)
    else {
        return String::new();
    };
    hard.iter()
        .filter(|(k, _)| k.starts_with("limits.") == limits)
        .map(|(k, v)| {
            let used = o
                .pointer(&format!("/status/used/{}", k.replace('/', "~1")))
                .and_then(Value::as_str)
                .unwrap_or("0");
            format!("{k}: {used}/{}", v.as_str().unwrap_or(""))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pod validation rules upstream has and Kelp checks: containers (validateContainers:
/// names, images, requests within limits) and sysctl names (validateSysctls).
fn pod_rules(o: &Value) -> Vec<(String, String)> {
    let mut causes = container_rules(o);
    let mut seen = std::collections::HashSet::new();
    for (i, s) in o
        .pointer("/spec/securityContext/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("spec.securityContext.sysctls[{i}].name");
        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            causes.push((at, "Required value".to_string()));
        } else if !valid_sysctl_name(name) {
            causes.push((
                at,
                format!(
                    "Invalid value: {name:?}: must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$"
                ),
            ));
        } else if !seen.insert(name.to_string()) {
            causes.push((at, format!("Duplicate value: {name:?}")));
        }
    }
    causes
}

/// A sysctl name: segments of lower-case letters, digits, `-` and `_` (starting and ending
/// alphanumeric) joined by `.` or `/`, at most 253 characters.
fn valid_sysctl_name(name: &str) -> bool {
    name.len() <= 253
        && name.split(['.', '/']).all(|seg| {
            let b = seg.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_'
                })
        })
}

/// A pod's containers as upstream validates them: at least one container; each named by a
/// DNS-1123 label unique among the pod's containers (init containers included) and with an
/// image; no request above its limit.
fn container_rules(o: &Value) -> Vec<(String, String)> {
    use kelp_admission::quantity::Quantity;
    let mut causes = Vec::new();
    let list = |name: &str| {
        o.pointer(&format!("/spec/{name}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    if list("containers").is_empty() {
        causes.push(("spec.containers".to_string(), "Required value".to_string()));
    }
    let mut names = std::collections::HashSet::new();
    for field in ["containers", "initContainers"] {
        for (i, c) in list(field).iter().enumerate() {
            let at = |f: &str| format!("spec.{field}[{i}].{f}");
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                causes.push((at("name"), "Required value".to_string()));
            } else if name.len() > 63 {
                causes.push((
                    at("name"),
                    format!("Invalid value: {name:?}: must be no more than 63 characters"),
                ));
            } else if !crate::object::is_dns1123_label(name) {
                causes.push((
                    at("name"),
                    format!(
                        "Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                    ),
                ));
            } else if !names.insert(name.to_string()) {
                causes.push((at("name"), format!("Duplicate value: {name:?}")));
            }
            if c.get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                causes.push((at("image"), "Required value".to_string()));
            }
            let quantity = |kind: &str, r: &str| {
                c.pointer(&format!("/resources/{kind}/{r}"))
                    .and_then(Value::as_str)
                    .and_then(Quantity::parse)
            };
            let requested: Vec<String> = c
                .pointer("/resources/requests")
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for r in requested {
                if let (Some(request), Some(limit)) =
                    (quantity("requests", &r), quantity("limits", &r))
                    && request > limit
                {
                    causes.push((
                        at("resources.requests"),
                        format!(
                            "Invalid value: \"{request}\": must be less than or equal to {r} limit of {limit}"
                        ),
                    ));
                }
            }
        }
    }
    causes
}

#[cfg(test)]
mod pod_tests {
    use super::*;

    #[test]
    fn containers_are_validated_as_upstream_words_it() {
        let pod = json!({"spec": {"containers": [
            {"name": "web", "image": "nginx", "resources": {"requests": {"cpu": "600m"}, "limits": {"cpu": "500m"}}},
            {"name": "web", "image": ""},
            {"name": "Bad_Name", "image": "x"}],
            "initContainers": [{"image": "x"}]}});
        let causes = pod_rules(&pod);
        let text: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        assert_eq!(
            text[..4],
            [
                "spec.containers[0].resources.requests: Invalid value: \"600m\": must be less than or equal to cpu limit of 500m",
                "spec.containers[1].name: Duplicate value: \"web\"",
                "spec.containers[1].image: Required value",
                "spec.containers[2].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ]
        );
        assert_eq!(text[4], "spec.initContainers[0].name: Required value");
        assert_eq!(
            pod_rules(&json!({"spec": {}})),
            [("spec.containers".to_string(), "Required value".to_string())]
        );
        let fine = json!({"spec": {"containers": [{"name": "a", "image": "x",
            "resources": {"requests": {"cpu": "0.5"}, "limits": {"cpu": "500m"}}}]}});
        assert!(pod_rules(&fine).is_empty());
    }
}
