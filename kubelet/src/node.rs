//! Node registration and heartbeats: the Node object with its capacity and Ready
//! condition, and its Lease in `kube-node-lease`, renewed every 10 s (upstream's
//! nodeLeaseDurationSeconds is 40).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_SECONDS: i32 = 40;

/// What a node offers.
#[derive(Clone, Debug)]
pub struct Capacity {
    pub cpu: String,
    pub memory: String,
    pub pods: String,
}

/// The Node a kubelet registers: labels upstream's kubelet sets, capacity and a Ready
/// condition.
pub fn node_object(
    name: &str,
    ip: &str,
    capacity: &Capacity,
    labels: &BTreeMap<String, String>,
) -> Node {
    let now = Time(jiff::Timestamp::now());
    let mut all_labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
    ]);
    all_labels.extend(labels.clone());
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(capacity.cpu.clone())),
        ("memory".to_string(), Quantity(capacity.memory.clone())),
        ("pods".to_string(), Quantity(capacity.pods.clone())),
        ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(all_labels),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.into(),
                },
            ]),
            conditions: Some(conditions(&now)),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                boot_id: String::new(),
                container_runtime_version: "kelp-simulated://1.0".into(),
                kernel_version: "simulated".into(),
                kube_proxy_version: String::new(),
                kubelet_version: "v1.33.0-kelp".into(),
                machine_id: String::new(),
                operating_system: "linux".into(),
                os_image: "Kelp simulated node".into(),
                system_uuid: String::new(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The conditions of a healthy node, as of `now`.
pub fn conditions(now: &Time) -> Vec<NodeCondition> {
    let c = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    vec![
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        c(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]
}

/// Registers the node (or takes over the one registered before), returning it.
pub async fn register(client: &kube::Client, node: &Node) -> anyhow::Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let name = node.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), node).await {
        Ok(n) => Ok(n),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Registered before: bring its status up to date.
            let patch = serde_json::json!({"status": node.status});
            Ok(api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates or renews the node's Lease.
pub async fn renew_lease(client: &kube::Client, node: &Node) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let name = node.metadata.name.clone().unwrap_or_default();
    let now = MicroTime(jiff::Timestamp::now());
    match api.get_opt(&name).await? {
        Some(mut lease) => {
            lease.spec.get_or_insert_default().renew_time = Some(now);
            api.replace(&name, &PostParams::default(), &lease).await?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: name.clone(),
                        uid: node.metadata.uid.clone().unwrap_or_default(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.clone()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
