//! The scheduler's view of the cluster (upstream's cache): every node with the pods bound or
//! assumed onto it and their summed requests, and the pods nominated to nodes by preemption.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm};

use crate::resources::{self, Resources};
use crate::selectors::{Labels, Selector};

/// Which namespaces an affinity term looks at.
#[derive(Clone, Debug)]
pub enum Namespaces {
    /// The listed ones (by default the pod's own).
    Listed(Vec<String>),
    /// The listed ones and those whose labels match (an empty selector: all).
    Selected(Vec<String>, Selector),
}

/// A pod (anti-)affinity term, parsed.
#[derive(Clone, Debug)]
pub struct Term {
    pub topology_key: String,
    pub selector: Selector,
    pub namespaces: Namespaces,
}

impl Term {
    fn parse(t: &PodAffinityTerm, namespace: &str, labels: &Labels) -> Term {
        let selector = Selector::from_api(t.label_selector.as_ref())
            .with_label_keys(
                t.match_label_keys.as_deref().unwrap_or_default(),
                labels,
                false,
            )
            .with_label_keys(
                t.mismatch_label_keys.as_deref().unwrap_or_default(),
                labels,
                true,
            );
        let listed = t.namespaces.clone().unwrap_or_default();
        let namespaces = match &t.namespace_selector {
            Some(s) => Namespaces::Selected(listed, Selector::from_api(Some(s))),
            None if listed.is_empty() => Namespaces::Listed(vec![namespace.to_string()]),
            None => Namespaces::Listed(listed),
        };
        Term {
            topology_key: t.topology_key.clone(),
            selector,
            namespaces,
        }
    }

    /// Whether the term selects `pod` (`ns_labels`: a namespace's labels).
    pub fn matches(&self, pod: &PodInfo, ns_labels: &dyn Fn(&str) -> Option<Labels>) -> bool {
        let in_namespace = match &self.namespaces {
            Namespaces::Listed(list) => list.contains(&pod.namespace),
            Namespaces::Selected(list, selector) => {
                list.contains(&pod.namespace)
                    || ns_labels(&pod.namespace).is_some_and(|l| selector.matches(&l))
            }
        };
        in_namespace && self.selector.matches(&pod.labels)
    }
}

/// A pod with what the plugins ask of it computed once.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub key: String,
    pub uid: String,
    pub namespace: String,
    pub labels: Labels,
    pub priority: i32,
    pub request: Resources,
    pub non_zero: (i64, i64),
    /// (hostIP, protocol, hostPort) of the ports the pod takes on its node.
    pub ports: Vec<(String, String, i32)>,
    pub affinity: Vec<Term>,
    pub anti_affinity: Vec<Term>,
    pub preferred_affinity: Vec<(i32, Term)>,
    pub preferred_anti_affinity: Vec<(i32, Term)>,
    pub terminating: bool,
    /// Whether the pod has any (anti-)affinity term, required or preferred.
    pub has_affinity: bool,
}

pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let ports = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.unwrap_or(0) > 0)
            .map(|p| {
                (
                    p.host_ip
                        .clone()
                        .filter(|ip| !ip.is_empty())
                        .unwrap_or_else(|| "0.0.0.0".into()),
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    p.host_port.unwrap_or(0),
                )
            })
            .collect();
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<Term> {
            terms
                .into_iter()
                .flatten()
                .map(|t| Term::parse(t, &namespace, &labels))
                .collect()
        };
        let preferred =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        (
                            w.weight,
                            Term::parse(&w.pod_affinity_term, &namespace, &labels),
                        )
                    })
                    .collect::<Vec<_>>()
            };
        let mut info = PodInfo {
            has_affinity: false,
            key: pod_key(&pod),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            request: resources::pod_requests(&pod),
            non_zero: resources::non_zero_requests(&pod),
            affinity: required(pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            anti_affinity: required(paa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: preferred(pa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: preferred(paa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            ports,
            namespace,
            labels,
            pod,
        };
        info.has_affinity = !(info.affinity.is_empty()
            && info.anti_affinity.is_empty()
            && info.preferred_affinity.is_empty()
            && info.preferred_anti_affinity.is_empty());
        info
    }
}

/// Whether two host ports collide: same protocol and port, and the same address or either
/// one the wildcard.
pub fn ports_conflict(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    a.1 == b.1 && a.2 == b.2 && (a.0 == b.0 || a.0 == "0.0.0.0" || b.0 == "0.0.0.0")
}

/// A node and what is placed on it.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub node: Option<Arc<Node>>,
    pub labels: Labels,
    pub allocatable: Resources,
    pub allowed_pods: i64,
    pub requested: Resources,
    pub non_zero: (i64, i64),
    pub pods: Vec<Arc<PodInfo>>,
    /// How many of the pods have affinity terms (the inter-pod counts skip nodes with none).
    pub with_affinity: usize,
}

impl NodeInfo {
    pub fn set_node(&mut self, node: Arc<Node>) {
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        self.allocatable = Resources::from_list(allocatable);
        self.allowed_pods = allocatable
            .and_then(|a| a.get("pods"))
            .and_then(|q| kelp_admission::quantity::Quantity::parse(&q.0))
            .map(|q| q.value_ceil())
            .unwrap_or(0);
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        self.node = Some(node);
    }

    pub fn name(&self) -> &str {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.name.as_deref())
            .unwrap_or("")
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.request);
        self.non_zero.0 += pod.non_zero.0;
        self.non_zero.1 += pod.non_zero.1;
        self.with_affinity += usize::from(pod.has_affinity);
        self.pods.push(pod);
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.key == key)?;
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.request);
        self.non_zero.0 -= pod.non_zero.0;
        self.non_zero.1 -= pod.non_zero.1;
        self.with_affinity -= usize::from(pod.has_affinity);
        Some(pod)
    }

    pub fn used_ports(&self) -> impl Iterator<Item = &(String, String, i32)> {
        self.pods.iter().flat_map(|p| p.ports.iter())
    }
}

/// Where a pod is placed: on a node, either confirmed by the API or assumed by this scheduler
/// (sent for binding, not yet seen bound).
struct Placement {
    node: String,
    uid: String,
    assumed: bool,
}

#[derive(Default)]
pub struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    placements: HashMap<String, Placement>,
    /// Pods preemption nominated to a node: key → (node, pod).
    nominated: HashMap<String, (String, Arc<PodInfo>)>,
    order: Vec<String>,
    order_dirty: bool,
}

impl Cache {
    /// Adds or replaces a node; true when something the filters read changed (labels,
    /// taints, allocatable, unschedulable), which may make pending pods schedulable.
    pub fn set_node(&mut self, node: Arc<Node>) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = self.nodes.entry(name).or_default();
        let relevant = match &info.node {
            None => true,
            Some(old) => {
                old.metadata.labels != node.metadata.labels
                    || old.spec != node.spec
                    || old.status.as_ref().map(|s| &s.allocatable)
                        != node.status.as_ref().map(|s| &s.allocatable)
            }
        };
        if info.node.is_none() {
            self.order_dirty = true;
        }
        info.set_node(node);
        relevant
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
            self.order_dirty = true;
        }
    }

    /// Records a pod as placed on `node` (the API's word, or this scheduler's assumption).
    pub fn place(&mut self, pod: Arc<PodInfo>, node: &str, assumed: bool) {
        self.unplace(&pod.key);
        self.nominated.remove(&pod.key);
        self.placements.insert(
            pod.key.clone(),
            Placement {
                node: node.to_string(),
                uid: pod.uid.clone(),
                assumed,
            },
        );
        self.nodes.entry(node.to_string()).or_default().add_pod(pod);
    }

    /// Removes a pod's placement (deleted, finished, or a failed binding).
    pub fn unplace(&mut self, key: &str) {
        if let Some(p) = self.placements.remove(key)
            && let Some(info) = self.nodes.get_mut(&p.node)
        {
            info.remove_pod(key);
            if info.node.is_none() && info.pods.is_empty() {
                self.nodes.remove(&p.node);
            }
        }
    }

    /// The node a pod is placed on, if its uid is the one placed.
    pub fn placed(&self, key: &str, uid: &str) -> Option<(&str, bool)> {
        self.placements
            .get(key)
            .filter(|p| p.uid == uid)
            .map(|p| (p.node.as_str(), p.assumed))
    }

    pub fn nominate(&mut self, pod: Arc<PodInfo>, node: Option<&str>) {
        match node.filter(|n| !n.is_empty()) {
            Some(n) => {
                self.nominated.insert(pod.key.clone(), (n.to_string(), pod));
            }
            None => {
                self.nominated.remove(&pod.key);
            }
        }
    }

    pub fn forget_nominated(&mut self, key: &str) {
        self.nominated.remove(key);
    }

    /// Pods nominated to `node` that weigh on `pod`: those of its priority or higher.
    pub fn nominated_for<'a>(
        &'a self,
        node: &'a str,
        pod: &'a PodInfo,
    ) -> impl Iterator<Item = &'a Arc<PodInfo>> + 'a {
        self.nominated
            .values()
            .filter(move |(n, p)| n == node && p.key != pod.key && p.priority >= pod.priority)
            .map(|(_, p)| p)
    }

    /// Brings the node order up to date (after nodes came or went).
    pub fn refresh(&mut self) {
        if self.order_dirty {
            self.order = self
                .nodes
                .iter()
                .filter(|(_, n)| n.node.is_some())
                .map(|(k, _)| k.clone())
                .collect();
            self.order_dirty = false;
        }
    }

    /// The nodes (with a Node object) in a stable order, as of the last `refresh`.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name).filter(|n| n.node.is_some())
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|n| n.node.is_some())
    }
}
