//! The smaller groups: coordination, RBAC, scheduling, policy, networking (ServiceCIDRs' and
//! IPAddresses' rules are in `servicecidrs.rs`), storage and discovery. (events.k8s.io/v1
//! waits for conversion: it shares core Events' storage.)

use k8s_openapi::api::{coordination, discovery, networking, policy, rbac, scheduling, storage};
use serde_json::{Value, json};

use super::cells::{self, AGE, CREATED_AT, col, int, or_none, text, wide};
use super::{Resource, Status, defaults, servicecidrs};
use crate::typed::typed;

const BASE: Resource = Resource {
    namespaced: true,
    ..super::base(typed::<rbac::v1::Role>())
};

fn subjects(o: &Value, kind: &str) -> String {
    let list = o
        .get("subjects")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    list.iter()
        .filter(|s| text(s, "/kind") == kind)
        .map(|s| {
            let ns = text(s, "/namespace");
            if kind == "ServiceAccount" {
                format!("{ns}/{}", text(s, "/name"))
            } else {
                text(s, "/name")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

const BINDING_COLUMNS: [super::Column; 5] = [
    col("Role", "The role the binding grants.", |o| {
        json!(format!(
            "{}/{}",
            text(o, "/roleRef/kind"),
            text(o, "/roleRef/name")
        ))
    }),
    AGE,
    wide("Users", "The users bound.", |o| json!(subjects(o, "User"))),
    wide("Groups", "The groups bound.", |o| {
        json!(subjects(o, "Group"))
    }),
    wide("ServiceAccounts", "The service accounts bound.", |o| {
        json!(subjects(o, "ServiceAccount"))
    }),
];

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "coordination.k8s.io",
        kind: "Lease",
        typed: typed::<coordination::v1::Lease>(),
        plural: "leases",
        singular: "lease",
        columns: &[
            col("Holder", "The holder of the lease.", |o| {
                json!(text(o, "/spec/holderIdentity"))
            }),
            AGE,
        ],
        ..BASE
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        kind: "Role",
        plural: "roles",
        singular: "role",
        columns: &[CREATED_AT],
        ..BASE
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        kind: "ClusterRole",
        typed: typed::<rbac::v1::ClusterRole>(),
        plural: "clusterroles",
        singular: "clusterrole",
        namespaced: false,
        columns: &[CREATED_AT],
        ..BASE
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        kind: "RoleBinding",
        typed: typed::<rbac::v1::RoleBinding>(),
        plural: "rolebindings",
        singular: "rolebinding",
        columns: &BINDING_COLUMNS,
        ..BASE
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        kind: "ClusterRoleBinding",
        typed: typed::<rbac::v1::ClusterRoleBinding>(),
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        namespaced: false,
        columns: &BINDING_COLUMNS,
        ..BASE
    },
    Resource {
        group: "scheduling.k8s.io",
        kind: "PriorityClass",
        typed: typed::<scheduling::v1::PriorityClass>(),
        plural: "priorityclasses",
        singular: "priorityclass",
        namespaced: false,
        short_names: &["pc"],
        columns: &[
            col("Value", "The priority value.", |o| json!(int(o, "/value"))),
            col(
                "Global-Default",
                "Whether this is the default priority class.",
                |o| {
                    json!(
                        o.get("globalDefault")
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                    )
                },
            ),
            AGE,
            col("Preemption-Policy", "The preemption policy.", |o| {
                json!(text(o, "/preemptionPolicy"))
            }),
        ],
        defaults: |o| defaults::set(o, "preemptionPolicy", json!("PreemptLowerPriority")),
        on_update: priority_class_update,
        ..BASE
    },
    Resource {
        group: "policy",
        kind: "PodDisruptionBudget",
        typed: typed::<policy::v1::PodDisruptionBudget>(),
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        short_names: &["pdb"],
        columns: &[
            col(
                "Min Available",
                "The minimum number of pods available.",
                |o| json!(or_na(text(o, "/spec/minAvailable"))),
            ),
            col(
                "Max Unavailable",
                "The maximum number of pods unavailable.",
                |o| json!(or_na(text(o, "/spec/maxUnavailable"))),
            ),
            col(
                "Allowed Disruptions",
                "How many pods may be disrupted now.",
                |o| json!(int(o, "/status/disruptionsAllowed")),
            ),
            AGE,
        ],
        status: Status::Subresource,
        generation: true,
        ..BASE
    },
    Resource {
        group: "networking.k8s.io",
        kind: "Ingress",
        typed: typed::<networking::v1::Ingress>(),
        plural: "ingresses",
        storage: Some("ingress"),
        singular: "ingress",
        short_names: &["ing"],
        columns: &[
            col("Class", "The ingress class.", |o| {
                json!(or_none(text(o, "/spec/ingressClassName")))
            }),
            col("Hosts", "The hosts the ingress serves.", |o| {
                json!(cells::or_default(
                    cells::joined(o, "/spec/rules", "/host"),
                    "*"
                ))
            }),
            col("Address", "The load balancer addresses.", |o| {
                json!(cells::joined(o, "/status/loadBalancer/ingress", "/ip"))
            }),
            col("Ports", "The ports the ingress serves.", |o| {
                json!(if o
                    .pointer("/spec/tls")
                    .and_then(Value::as_array)
                    .is_some_and(|t| !t.is_empty())
                {
                    "80, 443"
                } else {
                    "80"
                })
            }),
            AGE,
        ],
        status: Status::Subresource,
        ..BASE
    },
    Resource {
        group: "networking.k8s.io",
        kind: "NetworkPolicy",
        typed: typed::<networking::v1::NetworkPolicy>(),
        plural: "networkpolicies",
        singular: "networkpolicy",
        short_names: &["netpol"],
        columns: &[
            col("Pod-Selector", "The pods the policy applies to.", |o| {
                json!(cells::selector(o, "/spec/podSelector"))
            }),
            AGE,
        ],
        ..BASE
    },
    Resource {
        group: "networking.k8s.io",
        kind: "IngressClass",
        typed: typed::<networking::v1::IngressClass>(),
        plural: "ingressclasses",
        singular: "ingressclass",
        namespaced: false,
        columns: &[
            col(
                "Controller",
                "The controller that implements the class.",
                |o| json!(text(o, "/spec/controller")),
            ),
            col("Parameters", "The class's parameters.", |o| {
                json!(or_none(text(o, "/spec/parameters/name")))
            }),
            AGE,
        ],
        ..BASE
    },
    Resource {
        group: "networking.k8s.io",
        kind: "IPAddress",
        typed: typed::<networking::v1::IPAddress>(),
        plural: "ipaddresses",
        singular: "ipaddress",
        namespaced: false,
        // printIPAddress declares no Age column (its rows carry an age cell past the
        // columns, which kubectl does not show).
        columns: &[col(
            "ParentRef",
            "ParentRef references the resource that an IPAddress is attached to. An IPAddress must reference a parent object.",
            servicecidrs::parent_ref_cell,
        )],
        validate: servicecidrs::validate_ip_address,
        on_update: servicecidrs::ip_address_update,
        ..BASE
    },
    Resource {
        group: "networking.k8s.io",
        kind: "ServiceCIDR",
        typed: typed::<networking::v1::ServiceCIDR>(),
        plural: "servicecidrs",
        singular: "servicecidr",
        namespaced: false,
        columns: &[
            col(
                "CIDRs",
                "CIDRs defines the IP blocks in CIDR notation (e.g. \"192.168.0.0/24\" or \"2001:db8::/64\") from which to assign service cluster IPs. Max of two CIDRs is allowed, one of each IP family. This field is immutable.",
                servicecidrs::cidrs_cell,
            ),
            AGE,
        ],
        // Upstream's PrepareForCreate keeps the status a ServiceCIDR is created with; later
        // writes of the status go through /status.
        status: Status::SetOnCreate,
        validate: servicecidrs::validate_service_cidr,
        on_update: servicecidrs::service_cidr_update,
        ..BASE
    },
    Resource {
        group: "storage.k8s.io",
        kind: "StorageClass",
        typed: typed::<storage::v1::StorageClass>(),
        plural: "storageclasses",
        singular: "storageclass",
        namespaced: false,
        short_names: &["sc"],
        columns: &[
            col("Provisioner", "The provisioner of the class.", |o| {
                json!(text(o, "/provisioner"))
            }),
            col(
                "ReclaimPolicy",
                "The reclaim policy of provisioned volumes.",
                |o| json!(text(o, "/reclaimPolicy")),
            ),
            col("VolumeBindingMode", "When volumes are bound.", |o| {
                json!(text(o, "/volumeBindingMode"))
            }),
            col("AllowVolumeExpansion", "Whether volumes may grow.", |o| {
                json!(
                    o.get("allowVolumeExpansion")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                )
            }),
            AGE,
        ],
        defaults: |o| {
            defaults::set(o, "reclaimPolicy", json!("Delete"));
            defaults::set(o, "volumeBindingMode", json!("Immediate"));
        },
        ..BASE
    },
    Resource {
        group: "discovery.k8s.io",
        kind: "EndpointSlice",
        typed: typed::<discovery::v1::EndpointSlice>(),
        plural: "endpointslices",
        singular: "endpointslice",
        columns: &[
            col("AddressType", "The type of the addresses.", |o| {
                json!(text(o, "/addressType"))
            }),
            col("Ports", "The ports of the endpoints.", |o| {
                json!(or_none(cells::joined(o, "/ports", "/port")))
            }),
            col("Endpoints", "The addresses of the endpoints.", |o| {
                let eps = o
                    .get("endpoints")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let addrs: Vec<String> = eps
                    .iter()
                    .flat_map(|e| {
                        e.get("addresses")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default()
                    })
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect();
                json!(or_none(addrs.join(",")))
            }),
            AGE,
        ],
        ..BASE
    },
];

fn or_na(s: String) -> String {
    if s.is_empty() { "N/A".into() } else { s }
}

/// Upstream's ValidatePriorityClassUpdate: the value and the preemption policy stay.
fn priority_class_update(current: &Value, new: &mut Value) -> Result<(), crate::error::ApiError> {
    let mut causes = Vec::new();
    for field in ["value", "preemptionPolicy"] {
        if current.get(field) != new.get(field) {
            causes.push((
                field.to_string(),
                "Forbidden: may not be changed in an update.".to_string(),
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(crate::error::ApiError::invalid(
            "scheduling.k8s.io",
            "PriorityClass",
            crate::object::name(new),
            causes,
        ))
    }
}
