//! The remaining GA groups: autoscaling, certificates, node, storage drivers and attachments,
//! admission registration, API extensions (the definitions; `crd` serves what they define),
//! flow control, and API registration (the APIServices of the groups served here).

use k8s_openapi::api::{
    admissionregistration, autoscaling, certificates, flowcontrol, node, storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;
use serde_json::{Value, json};

use super::cells::{self, AGE, CREATED_AT, col, int, or_none, text};
use super::{Resource, Status};
use crate::typed::typed;

const BASE: Resource = Resource {
    ..super::base(typed::<node::v1::RuntimeClass>())
};

/// apiregistration.k8s.io, listed first among the groups as upstream's aggregator lists it.
pub const APIREGISTRATION: &[Resource] = &[Resource {
    group: "apiregistration.k8s.io",
    kind: "APIService",
    typed: typed::<apiregistration::APIService>(),
    plural: "apiservices",
    singular: "apiservice",
    columns: &[
        col(
            "Service",
            "The service that serves the group version (Local: this server).",
            |o| {
                json!(match o.pointer("/spec/service") {
                    Some(svc) if !svc.is_null() =>
                        format!("{}/{}", text(svc, "/namespace"), text(svc, "/name")),
                    _ => "Local".to_string(),
                })
            },
        ),
        col(
            "Available",
            "Whether the group version can be reached.",
            |o| {
                let available = o
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|c| text(c, "/type") == "Available");
                json!(match available {
                    Some(c) if text(c, "/status") == "True" => "True".to_string(),
                    Some(c) => format!("{} ({})", text(c, "/status"), text(c, "/reason")),
                    None => "Unknown".to_string(),
                })
            },
        ),
        AGE,
    ],
    status: Status::Subresource,
    validate: validate_api_service,
    defaults: api_service_defaults,
    ..BASE
}];

/// Upstream's ValidateAPIService: named for what it serves (`<version>.<group>`), a group
/// (only the legacy `v1` may have none) and version of valid names, priorities in range, and
/// TLS settings that fit: a local APIService has none, a remote one names its service and
/// not both a caBundle and insecureSkipTLSVerify.
fn validate_api_service(o: &Value) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let (group, version) = (text(o, "/spec/group"), text(o, "/spec/version"));
    let required = format!("{version}.{group}");
    let name = text(o, "/metadata/name");
    if name != required {
        errors.push((
            "metadata.name".into(),
            format!(
                "Invalid value: {name:?}: must be `spec.version+\".\"+spec.group`: {required:?}"
            ),
        ));
    }
    if group.is_empty() && version != "v1" {
        errors.push((
            "spec.group".into(),
            "Required value: only v1 may have an empty group and it better be legacy kube".into(),
        ));
    }
    if !group.is_empty() && !crate::object::is_dns1123_subdomain(&group) {
        errors.push((
            "spec.group".into(),
            format!("Invalid value: {group:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        ));
    }
    if !crate::object::is_dns1123_label(&version)
        || !version.starts_with(|c: char| c.is_ascii_lowercase())
    {
        errors.push((
            "spec.version".into(),
            format!("Invalid value: {version:?}: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"),
        ));
    }
    let int = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let group_priority = int("/spec/groupPriorityMinimum");
    if !(1..=20000).contains(&group_priority) {
        errors.push((
            "spec.groupPriorityMinimum".into(),
            format!("Invalid value: {group_priority}: must be positive and less than 20000"),
        ));
    }
    let version_priority = int("/spec/versionPriority");
    if !(1..=1000).contains(&version_priority) {
        errors.push((
            "spec.versionPriority".into(),
            format!("Invalid value: {version_priority}: must be positive and less than 1000"),
        ));
    }
    let ca_bundle = text(o, "/spec/caBundle");
    let insecure = o.pointer("/spec/insecureSkipTLSVerify") == Some(&Value::Bool(true));
    match o.pointer("/spec/service").filter(|s| s.is_object()) {
        None => {
            if !ca_bundle.is_empty() {
                // Upstream counts the decoded bytes.
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&ca_bundle)
                    .map_or(ca_bundle.len(), |b| b.len());
                errors.push((
                    "spec.caBundle".into(),
                    format!("Invalid value: \"{bytes} bytes\": local APIServices may not have a caBundle"),
                ));
            }
            if insecure {
                errors.push((
                    "spec.insecureSkipTLSVerify".into(),
                    "Invalid value: true: local APIServices may not have insecureSkipTLSVerify"
                        .into(),
                ));
            }
        }
        Some(service) => {
            for field in ["namespace", "name"] {
                if text(service, &format!("/{field}")).is_empty() {
                    errors.push((format!("spec.service.{field}"), "Required value".into()));
                }
            }
            if let Some(port) = service.get("port").and_then(Value::as_i64)
                && !(1..=65535).contains(&port)
            {
                errors.push((
                    "spec.service.port".into(),
                    format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
                ));
            }
            if insecure && !ca_bundle.is_empty() {
                errors.push((
                    "spec.insecureSkipTLSVerify".into(),
                    "Invalid value: true: may not be true if caBundle is present".into(),
                ));
            }
        }
    }
    errors
}

/// Upstream's SetDefaults_ServiceReference: a service is reached at port 443 unless it says.
fn api_service_defaults(o: &mut Value) {
    if let Some(service) = o
        .pointer_mut("/spec/service")
        .and_then(Value::as_object_mut)
        && service.get("port").is_none_or(Value::is_null)
    {
        service.insert("port".into(), json!(443));
    }
}

/// The APIServices upstream registers for its own group versions (name `<version>.<group>`),
/// with its discovery priorities: (group, version, groupPriorityMinimum, versionPriority).
/// Group versions not listed get none, as upstream's makeAPIService skips them.
pub const LOCAL_API_SERVICES: &[(&str, &str, i64, i64)] = &[
    ("", "v1", 18000, 1),
    ("apiregistration.k8s.io", "v1", 18000, 15),
    ("apps", "v1", 17800, 15),
    ("events.k8s.io", "v1", 17750, 15),
    ("authentication.k8s.io", "v1", 17700, 15),
    ("authorization.k8s.io", "v1", 17600, 15),
    ("autoscaling", "v2", 17500, 30),
    ("autoscaling", "v1", 17500, 15),
    ("batch", "v1", 17400, 15),
    ("certificates.k8s.io", "v1", 17300, 15),
    ("networking.k8s.io", "v1", 17200, 15),
    ("policy", "v1", 17100, 15),
    ("rbac.authorization.k8s.io", "v1", 17000, 15),
    ("storage.k8s.io", "v1", 16800, 15),
    ("apiextensions.k8s.io", "v1", 16700, 15),
    ("admissionregistration.k8s.io", "v1", 16700, 15),
    ("scheduling.k8s.io", "v1", 16600, 15),
    ("coordination.k8s.io", "v1", 16500, 15),
    ("node.k8s.io", "v1", 16300, 15),
    ("discovery.k8s.io", "v1", 16200, 15),
    ("flowcontrol.apiserver.k8s.io", "v1", 16100, 21),
];

/// autoscaling/v2's SetDefaults_HorizontalPodAutoscaler: one replica at least, cpu at 80%
/// when no metric is named, and each direction of a given behavior completed with upstream's
/// rules (scale up: no window, 4 pods or 100% per 15 s, the larger; scale down: 100% per 15 s,
/// its window left to the controller).
fn hpa_defaults(o: &mut Value) {
    let spec = &mut o["spec"];
    super::defaults::set(spec, "minReplicas", json!(1));
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    }
    let Some(behavior) = spec.get_mut("behavior").filter(|b| b.is_object()) else {
        return;
    };
    let up = &mut behavior["scaleUp"];
    if !up.is_object() {
        *up = json!({});
    }
    super::defaults::set(up, "stabilizationWindowSeconds", json!(0));
    super::defaults::set(up, "selectPolicy", json!("Max"));
    super::defaults::set(
        up,
        "policies",
        json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15}]),
    );
    let down = &mut behavior["scaleDown"];
    if !down.is_object() {
        *down = json!({});
    }
    super::defaults::set(down, "selectPolicy", json!("Max"));
    super::defaults::set(
        down,
        "policies",
        json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
    );
}

fn count(o: &Value, pointer: &str) -> Value {
    json!(
        o.pointer(pointer)
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    )
}

/// Both webhook configuration kinds print the number of their webhooks.
/// Upstream's SetDefaults for admission webhooks (v1): failurePolicy Fail, matchPolicy
/// Equivalent, empty namespace and object selectors, a 10 s timeout, rules of every scope,
/// and for mutating webhooks reinvocationPolicy Never.
fn mutating_webhook_defaults(o: &mut Value) {
    webhook_defaults(o, true);
}

fn validating_webhook_defaults(o: &mut Value) {
    webhook_defaults(o, false);
}

fn webhook_defaults(o: &mut Value, mutating: bool) {
    let Some(hooks) = o.get_mut("webhooks").and_then(Value::as_array_mut) else {
        return;
    };
    for hook in hooks.iter_mut().filter_map(Value::as_object_mut) {
        let mut default = |k: &str, v: Value| {
            if hook.get(k).is_none_or(Value::is_null) {
                hook.insert(k.into(), v);
            }
        };
        default("failurePolicy", json!("Fail"));
        default("matchPolicy", json!("Equivalent"));
        default("namespaceSelector", json!({}));
        default("objectSelector", json!({}));
        default("timeoutSeconds", json!(10));
        if mutating {
            default("reinvocationPolicy", json!("Never"));
        }
        if let Some(service) = hook
            .get_mut("clientConfig")
            .and_then(|c| c.get_mut("service"))
            .and_then(Value::as_object_mut)
            && service.get("port").is_none_or(Value::is_null)
        {
            service.insert("port".into(), json!(443));
        }
        for rule in hook
            .get_mut("rules")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            if rule.get("scope").is_none_or(Value::is_null) {
                rule.insert("scope".into(), json!("*"));
            }
        }
    }
}

/// Upstream's webhook configuration validation, the parts users meet: each webhook named
/// (a fully qualified name, unique), reached by exactly one of url and service, with
/// sideEffects and admissionReviewVersions it supports, a timeout of 1 to 30 seconds, and
/// match conditions that are named, unique, at most 64, and compile.
fn validate_webhooks(o: &Value) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    let hooks = o.get("webhooks").and_then(Value::as_array);
    for (i, hook) in hooks.into_iter().flatten().enumerate() {
        let at = |f: &str| format!("webhooks[{i}].{f}");
        let name = text(hook, "/name");
        if name.is_empty() {
            errors.push((at("name"), "Required value".into()));
        } else if name.split('.').count() < 3 || !crate::object::is_dns1123_subdomain(&name) {
            errors.push((
                at("name"),
                format!("Invalid value: {name:?}: should be a domain with at least three segments separated by dots"),
            ));
        } else if !names.insert(name.clone()) {
            errors.push((at("name"), format!("Duplicate value: {name:?}")));
        }
        let client = hook.get("clientConfig");
        let url = client.and_then(|c| c.get("url")).filter(|u| !u.is_null());
        let service = client
            .and_then(|c| c.get("service"))
            .filter(|s| !s.is_null());
        if url.is_some() == service.is_some() {
            errors.push((
                at("clientConfig"),
                "Required value: exactly one of url or service is required".into(),
            ));
        }
        let side_effects = text(hook, "/sideEffects");
        if !matches!(side_effects.as_str(), "None" | "NoneOnDryRun") {
            errors.push((
                at("sideEffects"),
                if side_effects.is_empty() {
                    "Required value: must specify one of \"None\", \"NoneOnDryRun\"".into()
                } else {
                    format!("Unsupported value: {side_effects:?}: supported values: \"None\", \"NoneOnDryRun\"")
                },
            ));
        }
        let versions: Vec<&str> = hook
            .get("admissionReviewVersions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !versions.iter().any(|v| matches!(*v, "v1" | "v1beta1")) {
            errors.push((
                at("admissionReviewVersions"),
                "Required value: must specify one of v1, v1beta1".into(),
            ));
        }
        if let Some(t) = hook.get("timeoutSeconds").and_then(Value::as_i64)
            && !(1..=30).contains(&t)
        {
            errors.push((
                at("timeoutSeconds"),
                format!("Invalid value: {t}: the timeout value must be between 1 and 30 seconds"),
            ));
        }
        errors.extend(
            validate_match_conditions(hook.get("matchConditions"))
                .into_iter()
                .map(|(f, m)| (at(&f), m)),
        );
    }
    errors
}

/// Upstream's validateMatchConditions: at most 64, each named (a qualified name, unique) with
/// an expression that compiles. Fields are relative (`matchConditions[0].expression`).
fn validate_match_conditions(conditions: Option<&Value>) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let list = conditions
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if list.len() > 64 {
        errors.push((
            "matchConditions".into(),
            format!("Too many: {}: must have at most 64 items", list.len()),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, c) in list.iter().enumerate() {
        let at = |f: &str| format!("matchConditions[{i}].{f}");
        let expression = text(c, "/expression");
        let expression = expression.trim();
        if expression.is_empty() {
            errors.push((at("expression"), "Required value".into()));
        } else if let Err(e) = kube_cel::cel::Program::compile(expression) {
            errors.push((
                at("expression"),
                format!("Invalid value: {expression:?}: compilation failed: {e}"),
            ));
        }
        let name = text(c, "/name");
        if name.is_empty() {
            errors.push((at("name"), "Required value".into()));
        } else if !names.insert(name.clone()) {
            errors.push((at("name"), format!("Duplicate value: {name:?}")));
        }
    }
    errors
}

const WEBHOOK_COLUMNS: [super::Column; 2] = [
    col("Webhooks", "The number of webhooks.", |o| {
        count(o, "/webhooks")
    }),
    AGE,
];

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "autoscaling",
        version: "v2",
        kind: "HorizontalPodAutoscaler",
        typed: typed::<autoscaling::v2::HorizontalPodAutoscaler>(),
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        namespaced: true,
        short_names: &["hpa"],
        categories: &["all"],
        columns: &cells::HPA,
        status: Status::Subresource,
        generation: true,
        defaults: hpa_defaults,
        ..BASE
    },
    Resource {
        group: "certificates.k8s.io",
        kind: "CertificateSigningRequest",
        typed: typed::<certificates::v1::CertificateSigningRequest>(),
        plural: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        short_names: &["csr"],
        columns: &[
            AGE,
            col("SignerName", "The signer asked to sign.", |o| {
                json!(text(o, "/spec/signerName"))
            }),
            col("Requestor", "Who asked.", |o| {
                json!(text(o, "/spec/username"))
            }),
            col("RequestedDuration", "The validity asked for.", |o| {
                json!(
                    o.pointer("/spec/expirationSeconds")
                        .and_then(Value::as_i64)
                        .map_or("<none>".to_string(), crate::object::human_duration)
                )
            }),
            col("Condition", "The approval state.", |o| {
                let conditions: Vec<String> = o
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|c| text(c, "/type"))
                    .collect();
                let mut s = if conditions.is_empty() {
                    "Pending".to_string()
                } else {
                    conditions.join(",")
                };
                if o.pointer("/status/certificate").is_some() {
                    s.push_str(",Issued");
                }
                json!(s)
            }),
        ],
        status: Status::Subresource,
        fields: &["spec.signerName"],
        validate: csr_conditions,
        prepare_update: csr_prepare_update,
        ..BASE
    },
    Resource {
        group: "node.k8s.io",
        kind: "RuntimeClass",
        plural: "runtimeclasses",
        singular: "runtimeclass",
        columns: &[
            col("Handler", "The CRI handler.", |o| {
                json!(text(o, "/handler"))
            }),
            AGE,
        ],
        ..BASE
    },
    Resource {
        group: "storage.k8s.io",
        kind: "CSIDriver",
        typed: typed::<storage::v1::CSIDriver>(),
        plural: "csidrivers",
        singular: "csidriver",
        columns: &[
            col("AttachRequired", "Whether volumes are attached.", |o| {
                json!(
                    o.pointer("/spec/attachRequired")
                        .and_then(Value::as_bool)
                        .unwrap_or(true)
                )
            }),
            col(
                "PodInfoOnMount",
                "Whether pod information is passed at mount.",
                |o| {
                    json!(
                        o.pointer("/spec/podInfoOnMount")
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                    )
                },
            ),
            col("StorageCapacity", "Whether capacity is tracked.", |o| {
                json!(
                    o.pointer("/spec/storageCapacity")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                )
            }),
            col("Modes", "Volume lifecycle modes.", |o| {
                json!(or_none(
                    o.pointer("/spec/volumeLifecycleModes")
                        .and_then(Value::as_array)
                        .map(|a| a
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(","))
                        .unwrap_or_default()
                ))
            }),
            AGE,
        ],
        ..BASE
    },
    Resource {
        group: "storage.k8s.io",
        kind: "CSIStorageCapacity",
        typed: typed::<storage::v1::CSIStorageCapacity>(),
        plural: "csistoragecapacities",
        singular: "csistoragecapacity",
        namespaced: true,
        columns: &[
            col(
                "StorageClassName",
                "The storage class the capacity is for.",
                |o| json!(text(o, "/storageClassName")),
            ),
            col("Capacity", "The capacity available.", |o| {
                json!(or_none(text(o, "/capacity")))
            }),
            AGE,
        ],
        ..BASE
    },
    Resource {
        group: "storage.k8s.io",
        kind: "CSINode",
        typed: typed::<storage::v1::CSINode>(),
        plural: "csinodes",
        singular: "csinode",
        columns: &[
            col("Drivers", "The node's CSI drivers.", |o| {
                count(o, "/spec/drivers")
            }),
            AGE,
        ],
        ..BASE
    },
    Resource {
        group: "storage.k8s.io",
        kind: "VolumeAttachment",
        typed: typed::<storage::v1::VolumeAttachment>(),
        plural: "volumeattachments",
        singular: "volumeattachment",
        columns: &[
            col("Attacher", "The attaching driver.", |o| {
                json!(text(o, "/spec/attacher"))
            }),
            col("PV", "The attached volume.", |o| {
                json!(text(o, "/spec/source/persistentVolumeName"))
            }),
            col("Node", "The node attached to.", |o| {
                json!(text(o, "/spec/nodeName"))
            }),
            col("Attached", "Whether the attachment is done.", |o| {
                json!(
                    o.pointer("/status/attached")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                )
            }),
            AGE,
        ],
        status: Status::Subresource,
        ..BASE
    },
    Resource {
        group: "admissionregistration.k8s.io",
        kind: "MutatingWebhookConfiguration",
        typed: typed::<admissionregistration::v1::MutatingWebhookConfiguration>(),
        plural: "mutatingwebhookconfigurations",
        singular: "mutatingwebhookconfiguration",
        columns: &WEBHOOK_COLUMNS,
        defaults: mutating_webhook_defaults,
        validate: validate_webhooks,
        ..BASE
    },
    Resource {
        group: "admissionregistration.k8s.io",
        kind: "ValidatingWebhookConfiguration",
        typed: typed::<admissionregistration::v1::ValidatingWebhookConfiguration>(),
        plural: "validatingwebhookconfigurations",
        singular: "validatingwebhookconfiguration",
        columns: &WEBHOOK_COLUMNS,
        defaults: validating_webhook_defaults,
        validate: validate_webhooks,
        ..BASE
    },
    Resource {
        group: "admissionregistration.k8s.io",
        kind: "ValidatingAdmissionPolicy",
        typed: typed::<admissionregistration::v1::ValidatingAdmissionPolicy>(),
        plural: "validatingadmissionpolicies",
        singular: "validatingadmissionpolicy",
        columns: &[
            col("Validations", "The number of validations.", |o| {
                count(o, "/spec/validations")
            }),
            col("ParamKind", "The kind of the policy's parameters.", |o| {
                let kind = text(o, "/spec/paramKind/kind");
                json!(if kind.is_empty() {
                    "<unset>".to_string()
                } else {
                    format!("{}/{kind}", text(o, "/spec/paramKind/apiVersion"))
                })
            }),
            AGE,
        ],
        status: Status::Subresource,
        generation: true,
        ..BASE
    },
    Resource {
        group: "admissionregistration.k8s.io",
        kind: "ValidatingAdmissionPolicyBinding",
        typed: typed::<admissionregistration::v1::ValidatingAdmissionPolicyBinding>(),
        plural: "validatingadmissionpolicybindings",
        singular: "validatingadmissionpolicybinding",
        columns: &[
            col("PolicyName", "The bound policy.", |o| {
                json!(text(o, "/spec/policyName"))
            }),
            col("ParamRef", "The parameters.", |o| {
                json!(or_none(text(o, "/spec/paramRef/name")))
            }),
            AGE,
        ],
        ..BASE
    },
    Resource {
        group: "apiextensions.k8s.io",
        kind: "CustomResourceDefinition",
        typed: typed::<apiextensions::CustomResourceDefinition>(),
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition",
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        columns: &[CREATED_AT],
        status: Status::Subresource,
        generation: true,
        defaults: crate::crd::definition_defaults,
        validate: crate::crd::definition_rules,
        delete_finalizers: &[crate::crd::CLEANUP_FINALIZER],
        // Upstream's apiextensions server keeps them under its group.
        storage: Some("apiextensions.k8s.io/customresourcedefinitions"),
        ..BASE
    },
    Resource {
        group: "flowcontrol.apiserver.k8s.io",
        kind: "FlowSchema",
        typed: typed::<flowcontrol::v1::FlowSchema>(),
        plural: "flowschemas",
        singular: "flowschema",
        columns: &[
            col("PriorityLevel", "The priority level of the flows.", |o| {
                json!(text(o, "/spec/priorityLevelConfiguration/name"))
            }),
            col("MatchingPrecedence", "Lower matches first.", |o| {
                json!(int(o, "/spec/matchingPrecedence"))
            }),
            col("DistinguisherMethod", "How flows are told apart.", |o| {
                json!(or_none(text(o, "/spec/distinguisherMethod/type")))
            }),
            AGE,
        ],
        status: Status::Subresource,
        ..BASE
    },
    Resource {
        group: "flowcontrol.apiserver.k8s.io",
        kind: "PriorityLevelConfiguration",
        typed: typed::<flowcontrol::v1::PriorityLevelConfiguration>(),
        plural: "prioritylevelconfigurations",
        singular: "prioritylevelconfiguration",
        columns: &[
            col("Type", "Limited or Exempt.", |o| {
                json!(text(o, "/spec/type"))
            }),
            col(
                "NominalConcurrencyShares",
                "The level's share of concurrency.",
                |o| {
                    json!(
                        o.pointer("/spec/limited/nominalConcurrencyShares")
                            .map_or("<none>".to_string(), |v| v.to_string())
                    )
                },
            ),
            AGE,
        ],
        status: Status::Subresource,
        ..BASE
    },
];

/// A CertificateSigningRequest's conditions as upstream validates them (validateConditions):
/// a type and a True/False/Unknown status each, no type twice, Approved and Denied never
/// together and only True.
fn csr_conditions(o: &Value) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let (mut approved, mut denied) = (false, false);
    let conditions = o.pointer("/status/conditions").and_then(Value::as_array);
    for (i, c) in conditions.into_iter().flatten().enumerate() {
        let at = |field: &str| format!("status.conditions[{i}].{field}");
        let (kind, status) = (text(c, "/type"), text(c, "/status"));
        let (kind, status) = (kind.as_str(), status.as_str());
        if kind.is_empty() {
            causes.push((at("type"), "Required value".into()));
        }
        match status {
            "" => causes.push((at("status"), "Required value".into())),
            "True" | "False" | "Unknown" => {}
            other => causes.push((
                at("status"),
                format!("Unsupported value: {other:?}: supported values: \"False\", \"True\", \"Unknown\""),
            )),
        }
        let other = match kind {
            "Approved" => {
                approved = true;
                Some(denied)
            }
            "Denied" => {
                denied = true;
                Some(approved)
            }
            _ => None,
        };
        if let Some(other_seen) = other {
            if other_seen {
                causes.push((
                    at("type"),
                    format!("Invalid value: {kind:?}: Approved and Denied conditions are mutually exclusive"),
                ));
            }
            if status != "True" {
                causes.push((
                    at("status"),
                    format!(
                        "Invalid value: {status:?}: {kind} condition may only have status=True"
                    ),
                ));
            }
        }
        if !kind.is_empty() && !seen.insert(kind.to_string()) {
            causes.push((at("type"), format!("Duplicate value: {kind:?}")));
        }
    }
    causes
}

/// What an update through each of a CSR's endpoints may change (upstream's strategies): the
/// spec never; `/approval` the conditions alone (the certificate stays); `/status` anything
/// but the Approved and Denied conditions, which stay as they were. Condition times are
/// stamped when a condition is new or changes.
fn csr_prepare_update(subresource: &str, current: &Value, new: &mut Value) {
    if subresource.is_empty() {
        return;
    }
    if let Some(spec) = current.get("spec") {
        new["spec"] = spec.clone();
    }
    let old_conditions: Vec<Value> = current
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match subresource {
        "approval" => match current.pointer("/status/certificate") {
            Some(c) => new["status"]["certificate"] = c.clone(),
            None => {
                if let Some(status) = new.get_mut("status").and_then(Value::as_object_mut) {
                    status.remove("certificate");
                }
            }
        },
        "status" => {
            let kept = |c: &Value| matches!(text(c, "/type").as_str(), "Approved" | "Denied");
            let mut conditions: Vec<Value> = new
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            conditions.retain(|c| !kept(c));
            let mut preserved: Vec<Value> =
                old_conditions.iter().filter(|c| kept(c)).cloned().collect();
            preserved.extend(conditions);
            if !preserved.is_empty() || new.pointer("/status/conditions").is_some() {
                new["status"]["conditions"] = Value::Array(preserved);
            }
        }
        _ => {}
    }
    let now = crate::object::now();
    if let Some(conditions) = new
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        for c in conditions {
            let before = old_conditions
                .iter()
                .find(|o| text(o, "/type") == text(c, "/type"));
            if c.get("lastUpdateTime").is_none_or(Value::is_null) {
                c["lastUpdateTime"] = json!(now);
            }
            let transition = match before {
                Some(b) if text(b, "/status") == text(c, "/status") => {
                    b.get("lastTransitionTime").cloned()
                }
                _ => None,
            };
            if c.get("lastTransitionTime").is_none_or(Value::is_null) {
                c["lastTransitionTime"] = transition.unwrap_or_else(|| json!(now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_configurations_validate_and_default_as_upstream() {
        let mut config = json!({"webhooks": [
            {"name": "a.example.com", "clientConfig": {"service": {"namespace": "ns", "name": "svc"}},
                "sideEffects": "None", "admissionReviewVersions": ["v1"],
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                "matchConditions": [{"name": "ok", "expression": "true"}]},
        ]});
        assert!(validate_webhooks(&config).is_empty());
        mutating_webhook_defaults(&mut config);
        let hook = &config["webhooks"][0];
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["matchPolicy"], "Equivalent");
        assert_eq!(hook["timeoutSeconds"], 10);
        assert_eq!(hook["reinvocationPolicy"], "Never");
        assert_eq!(hook["clientConfig"]["service"]["port"], 443);
        assert_eq!(hook["rules"][0]["scope"], "*");
        let bad = json!({"webhooks": [
            {"name": "short", "clientConfig": {}, "timeoutSeconds": 31,
                "matchConditions": [{"name": "x", "expression": "'a' in [] bad expression"}, {"name": "x", "expression": " "}]},
        ]});
        let fields: Vec<String> = validate_webhooks(&bad)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "webhooks[0].name",
                "webhooks[0].clientConfig",
                "webhooks[0].sideEffects",
                "webhooks[0].admissionReviewVersions",
                "webhooks[0].timeoutSeconds",
                "webhooks[0].matchConditions[0].expression",
                "webhooks[0].matchConditions[1].expression",
                "webhooks[0].matchConditions[1].name",
            ]
        );
        let compile = validate_webhooks(&bad)
            .into_iter()
            .find(|(f, _)| f.ends_with("[0].expression"))
            .unwrap();
        assert!(compile.1.contains("compilation failed"), "{}", compile.1);
    }

    #[test]
    fn api_services_validate_as_upstream() {
        let fields = |o: Value| -> Vec<String> {
            validate_api_service(&o)
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        let remote = json!({
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                "versionPriority": 100, "service": {"namespace": "kube-system", "name": "metrics-server"},
                "insecureSkipTLSVerify": true},
        });
        assert!(fields(remote.clone()).is_empty());
        let mut both = remote.clone();
        both["spec"]["caBundle"] = json!("Zm9v");
        assert_eq!(fields(both), ["spec.insecureSkipTLSVerify"]);
        let mut nameless = remote.clone();
        nameless["spec"]["service"] = json!({"port": 0});
        assert_eq!(
            fields(nameless),
            [
                "spec.service.namespace",
                "spec.service.name",
                "spec.service.port"
            ]
        );
        let mut local = remote.clone();
        local["spec"]["service"] = Value::Null;
        local["spec"]["caBundle"] = json!("Zm9v");
        local["spec"]["groupPriorityMinimum"] = json!(0);
        local["spec"]["versionPriority"] = json!(1001);
        assert_eq!(
            validate_api_service(&local)
                .into_iter()
                .map(|(f, m)| format!("{f}: {m}"))
                .collect::<Vec<_>>(),
            [
                "spec.groupPriorityMinimum: Invalid value: 0: must be positive and less than 20000",
                "spec.versionPriority: Invalid value: 1001: must be positive and less than 1000",
                "spec.caBundle: Invalid value: \"3 bytes\": local APIServices may not have a caBundle",
                "spec.insecureSkipTLSVerify: Invalid value: true: local APIServices may not have insecureSkipTLSVerify",
            ]
        );
        let mut unnamed = remote.clone();
        unnamed["spec"]["group"] = json!("");
        unnamed["spec"]["version"] = json!("1beta");
        unnamed["metadata"]["name"] = json!("1beta.");
        assert_eq!(fields(unnamed), ["spec.group", "spec.version"]);
        let mut core = json!({"metadata": {"name": "v1."}, "spec": {"group": "", "version": "v1",
            "groupPriorityMinimum": 18000, "versionPriority": 1}});
        assert!(fields(core.clone()).is_empty());
        api_service_defaults(&mut core);
        assert!(core["spec"].get("service").is_none());
        let mut defaulted = remote;
        api_service_defaults(&mut defaulted);
        assert_eq!(defaulted["spec"]["service"]["port"], 443);
    }

    #[test]
    fn autoscalers_default_as_upstreams_v2() {
        let mut o = json!({"spec": {"maxReplicas": 3, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}});
        hpa_defaults(&mut o);
        assert_eq!(o["spec"]["minReplicas"], 1);
        assert_eq!(
            o["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert_eq!(
            o["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"],
            0
        );
        assert_eq!(o["spec"]["behavior"]["scaleUp"]["policies"][0]["value"], 4);
        assert_eq!(
            o["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            60
        );
        assert_eq!(o["spec"]["behavior"]["scaleDown"]["selectPolicy"], "Max");
        // Named metrics and no behavior stay as they are.
        let mut o = json!({"spec": {"minReplicas": 2, "metrics": [{"type": "Resource",
            "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}]}});
        let before = o.clone();
        hpa_defaults(&mut o);
        assert_eq!(o, before);
    }
}
