//! The default profile's filter and score plugins, in upstream's order and with upstream's
//! reasons. A `Cycle` is one pod's scheduling attempt: what the PreFilter steps compute once
//! over the whole cluster (inter-pod affinity counts, topology spread counts), kept current
//! when preemption's dry run takes pods off a node or puts them back.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::cache::{Cache, NodeInfo, PodInfo, Term, ports_conflict};
use crate::selectors::{self, Labels, Selector};

pub const MAX_NODE_SCORE: i64 = 100;

pub const UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const TOO_MANY_PODS: &str = "Too many pods";
pub const SPREAD: &str = "node(s) didn't match pod topology spread constraints";
pub const SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub const AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

/// Why a node cannot take the pod. `resolvable`: whether removing pods could change that
/// (upstream's Unschedulable, as against UnschedulableAndUnresolvable), which is where
/// preemption looks.
#[derive(Clone, Debug, PartialEq)]
pub struct Reject {
    pub reasons: Vec<String>,
    pub resolvable: bool,
}

fn reject(reason: impl Into<String>, resolvable: bool) -> Reject {
    Reject {
        reasons: vec![reason.into()],
        resolvable,
    }
}

type Pair = (String, String);

/// One topology spread constraint, with the match counts per domain.
struct Spread {
    key: String,
    max_skew: i64,
    min_domains: i64,
    selector: Selector,
    self_match: bool,
    honor_affinity: bool,
    honor_taints: bool,
    counts: HashMap<String, i64>,
}

impl Spread {
    fn counts_node(
        &self,
        cycle_pod: &PodInfo,
        node: &NodeInfo,
        tolerations: &[Toleration],
    ) -> bool {
        let Some(n) = node.node.as_deref() else {
            return false;
        };
        (!self.honor_affinity || selectors::pod_matches_node(&cycle_pod.pod, n))
            && (!self.honor_taints
                || selectors::untolerated(taints(n), tolerations, &["NoSchedule", "NoExecute"])
                    .is_none())
    }

    fn counts_pod(&self, namespace: &str, p: &PodInfo) -> bool {
        !p.terminating && p.namespace == namespace && self.selector.matches(&p.labels)
    }

    /// The smallest count over the domains (0 while there are fewer than minDomains).
    fn min(&self) -> i64 {
        if (self.counts.len() as i64) < self.min_domains {
            return 0;
        }
        self.counts.values().copied().min().unwrap_or(0)
    }
}

/// Whether a ReplicaSet, ReplicationController or StatefulSet controls the pod (the pods
/// the default spreading applies to).
fn controlled(pod: &PodInfo) -> bool {
    !pod.labels.is_empty()
        && pod.pod.metadata.owner_references.iter().flatten().any(|o| {
            o.controller == Some(true)
                && matches!(
                    o.kind.as_str(),
                    "ReplicaSet" | "ReplicationController" | "StatefulSet"
                )
        })
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// One pod's scheduling attempt.
pub struct Cycle<'a> {
    pub pod: &'a PodInfo,
    tolerations: &'a [Toleration],
    ns_labels: &'a dyn Fn(&str) -> Option<Labels>,
    /// Domains where an existing pod's required anti-affinity selects this pod.
    existing_anti: HashMap<Pair, i64>,
    /// Domains holding pods that match all of this pod's required affinity terms.
    affinity: HashMap<Pair, i64>,
    /// Domains holding pods that one of this pod's anti-affinity terms selects.
    anti_affinity: HashMap<Pair, i64>,
    /// InterPodAffinity's score per domain: preferred terms either way, and existing pods'
    /// required affinity towards this pod (upstream's hardPodAffinityWeight, 1).
    preferred: HashMap<Pair, i64>,
    hard: Vec<Spread>,
    soft: Vec<Spread>,
}

impl<'a> Cycle<'a> {
    pub fn new(
        pod: &'a PodInfo,
        cache: &Cache,
        ns_labels: &'a dyn Fn(&str) -> Option<Labels>,
    ) -> Cycle<'a> {
        let spec = pod.pod.spec.as_ref();
        let tolerations = spec
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default();
        let mut hard = vec![];
        let mut soft = vec![];
        for c in spec
            .and_then(|s| s.topology_spread_constraints.as_deref())
            .unwrap_or_default()
        {
            let selector = Selector::from_api(c.label_selector.as_ref()).with_label_keys(
                c.match_label_keys.as_deref().unwrap_or_default(),
                &pod.labels,
                false,
            );
            let spread = Spread {
                key: c.topology_key.clone(),
                max_skew: i64::from(c.max_skew),
                min_domains: i64::from(c.min_domains.unwrap_or(1)),
                self_match: selector.matches(&pod.labels),
                selector,
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                counts: HashMap::new(),
            };
            if c.when_unsatisfiable == "DoNotSchedule" {
                hard.push(spread);
            } else {
                soft.push(spread);
            }
        }
        // No constraints of its own: upstream's system defaults spread the pods of one
        // controller over hosts and zones, by score only. (Upstream selects by the owners'
        // and services' selectors; the pod's own labels stand in for them here.)
        let system_defaults = hard.is_empty() && soft.is_empty() && controlled(pod);
        if system_defaults {
            let selector = Selector::from_api(Some(&LabelSelector {
                match_labels: Some(pod.labels.clone()),
                match_expressions: None,
            }));
            for (key, max_skew) in [
                ("kubernetes.io/hostname", 3),
                ("topology.kubernetes.io/zone", 5),
            ] {
                soft.push(Spread {
                    key: key.into(),
                    max_skew,
                    min_domains: 1,
                    self_match: true,
                    selector: selector.clone(),
                    honor_affinity: true,
                    honor_taints: false,
                    counts: HashMap::new(),
                });
            }
        }
        let mut cycle = Cycle {
            pod,
            tolerations,
            ns_labels,
            existing_anti: HashMap::new(),
            affinity: HashMap::new(),
            anti_affinity: HashMap::new(),
            preferred: HashMap::new(),
            hard,
            soft,
        };
        // The spread domains: every eligible node that has all the constraints' keys.
        let spreading = !cycle.hard.is_empty() || !cycle.soft.is_empty();
        for node in cache.nodes().filter(|_| spreading) {
            let has_all = cycle
                .hard
                .iter()
                .chain(&cycle.soft)
                .all(|s| node.labels.contains_key(&s.key));
            if !has_all && !system_defaults {
                continue;
            }
            for s in cycle.hard.iter_mut().chain(cycle.soft.iter_mut()) {
                let Some(value) = node.labels.get(&s.key) else {
                    continue;
                };
                if s.counts_node(pod, node, tolerations) {
                    let value = value.clone();
                    let n = node
                        .pods
                        .iter()
                        .filter(|p| s.counts_pod(&pod.namespace, p))
                        .count() as i64;
                    *s.counts.entry(value).or_default() += n;
                }
            }
        }
        for node in cache.nodes() {
            if pod.has_affinity || node.with_affinity > 0 {
                for p in &node.pods {
                    cycle.count_affinity(p, node, 1);
                }
            }
        }
        cycle.drop_empty();
        cycle
    }

    /// Adds (`delta` 1) or removes (-1) an existing pod's part in the inter-pod affinity
    /// counts.
    fn count_affinity(&mut self, p: &PodInfo, node: &NodeInfo, delta: i64) {
        if p.key == self.pod.key || !(p.has_affinity || self.pod.has_affinity) {
            return;
        }
        let ns_labels = self.ns_labels;
        for term in &p.anti_affinity {
            if let Some(v) = node.labels.get(&term.topology_key)
                && term.matches(self.pod, ns_labels)
            {
                *self
                    .existing_anti
                    .entry((term.topology_key.clone(), v.clone()))
                    .or_default() += delta;
            }
        }
        if !self.pod.affinity.is_empty()
            && self.pod.affinity.iter().all(|t| t.matches(p, ns_labels))
        {
            for term in &self.pod.affinity {
                if let Some(v) = node.labels.get(&term.topology_key) {
                    *self
                        .affinity
                        .entry((term.topology_key.clone(), v.clone()))
                        .or_default() += delta;
                }
            }
        }
        for term in &self.pod.anti_affinity {
            if let Some(v) = node.labels.get(&term.topology_key)
                && term.matches(p, ns_labels)
            {
                *self
                    .anti_affinity
                    .entry((term.topology_key.clone(), v.clone()))
                    .or_default() += delta;
            }
        }
        let mut prefer = |t: &Term, weight: i64| {
            if let Some(v) = node.labels.get(&t.topology_key) {
                *self
                    .preferred
                    .entry((t.topology_key.clone(), v.clone()))
                    .or_default() += weight * delta;
            }
        };
        for (w, t) in &self.pod.preferred_affinity {
            if t.matches(p, ns_labels) {
                prefer(t, i64::from(*w));
            }
        }
        for (w, t) in &self.pod.preferred_anti_affinity {
            if t.matches(p, ns_labels) {
                prefer(t, -i64::from(*w));
            }
        }
        for (w, t) in &p.preferred_affinity {
            if t.matches(self.pod, ns_labels) {
                prefer(t, i64::from(*w));
            }
        }
        for (w, t) in &p.preferred_anti_affinity {
            if t.matches(self.pod, ns_labels) {
                prefer(t, -i64::from(*w));
            }
        }
        for t in &p.affinity {
            if t.matches(self.pod, ns_labels) {
                prefer(t, 1);
            }
        }
    }

    /// Forgets domains whose counts fell to zero (presence is what the filters test).
    fn drop_empty(&mut self) {
        for map in [
            &mut self.existing_anti,
            &mut self.affinity,
            &mut self.anti_affinity,
        ] {
            map.retain(|_, n| *n > 0);
        }
    }

    /// Keeps the counts true when preemption's dry run removes (-1) or restores (1) a pod.
    pub fn update(&mut self, p: &PodInfo, node: &NodeInfo, delta: i64) {
        self.count_affinity(p, node, delta);
        self.drop_empty();
        let (pod, tolerations) = (self.pod, self.tolerations);
        for s in self.hard.iter_mut().chain(self.soft.iter_mut()) {
            if let Some(v) = node.labels.get(&s.key)
                && s.counts.contains_key(v)
                && s.counts_node(pod, node, tolerations)
                && s.counts_pod(&pod.namespace, p)
            {
                *s.counts.entry(v.clone()).or_default() += delta;
            }
        }
    }

    /// The filters, in the default profile's order; the first that rejects decides.
    pub fn filter(&self, node: &NodeInfo, cache: &Cache) -> Result<(), Reject> {
        let Some(n) = node.node.as_deref() else {
            return Err(reject("node not found", false));
        };
        let spec = n.spec.as_ref();
        // NodeUnschedulable
        if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
            let taint = Taint {
                key: "node.kubernetes.io/unschedulable".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            };
            if !self
                .tolerations
                .iter()
                .any(|t| selectors::tolerates(t, &taint))
            {
                return Err(reject(UNSCHEDULABLE, false));
            }
        }
        // TaintToleration
        if let Some(t) =
            selectors::untolerated(taints(n), self.tolerations, &["NoSchedule", "NoExecute"])
        {
            return Err(reject(
                format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    t.key,
                    t.value.as_deref().unwrap_or("")
                ),
                false,
            ));
        }
        // NodeAffinity (with the nodeSelector)
        if !selectors::pod_matches_node(&self.pod.pod, n) {
            return Err(reject(NODE_AFFINITY, false));
        }
        // NodePorts
        if self
            .pod
            .ports
            .iter()
            .any(|want| node.used_ports().any(|used| ports_conflict(want, used)))
        {
            return Err(reject(NODE_PORTS, true));
        }
        self.fit(node, cache)?;
        self.spread(node)?;
        self.inter_pod_affinity(node)
    }

    /// NodeResourcesFit: requests against what is left of the allocatable, counting the pods
    /// nominated to the node that outrank this one.
    fn fit(&self, node: &NodeInfo, cache: &Cache) -> Result<(), Reject> {
        let mut requested = node.requested.clone();
        let mut pods = node.pods.len() as i64;
        for p in cache.nominated_for(node.name(), self.pod) {
            requested.add(&p.request);
            pods += 1;
        }
        let mut reasons = vec![];
        if pods + 1 > node.allowed_pods {
            reasons.push(TOO_MANY_PODS.to_string());
        }
        let want = &self.pod.request;
        let free = &node.allocatable;
        if want.milli_cpu > 0 && want.milli_cpu > free.milli_cpu - requested.milli_cpu {
            reasons.push("Insufficient cpu".into());
        }
        if want.memory > 0 && want.memory > free.memory - requested.memory {
            reasons.push("Insufficient memory".into());
        }
        if want.ephemeral_storage > 0
            && want.ephemeral_storage > free.ephemeral_storage - requested.ephemeral_storage
        {
            reasons.push("Insufficient ephemeral-storage".into());
        }
        for (name, v) in &want.scalar {
            let have = free.scalar.get(name).copied().unwrap_or(0)
                - requested.scalar.get(name).copied().unwrap_or(0);
            if *v > 0 && *v > have {
                reasons.push(format!("Insufficient {name}"));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Reject {
                reasons,
                resolvable: true,
            })
        }
    }

    /// PodTopologySpread's DoNotSchedule constraints.
    fn spread(&self, node: &NodeInfo) -> Result<(), Reject> {
        for s in &self.hard {
            let Some(value) = node.labels.get(&s.key) else {
                return Err(reject(SPREAD_LABEL, false));
            };
            let count = s.counts.get(value).copied().unwrap_or(0);
            let skew = count + i64::from(s.self_match) - s.min();
            if skew > s.max_skew {
                return Err(reject(SPREAD, true));
            }
        }
        Ok(())
    }

    /// InterPodAffinity: this pod's affinity and anti-affinity, then the existing pods'
    /// anti-affinity towards it.
    fn inter_pod_affinity(&self, node: &NodeInfo) -> Result<(), Reject> {
        let mut all_present = true;
        for term in &self.pod.affinity {
            let Some(v) = node.labels.get(&term.topology_key) else {
                return Err(reject(AFFINITY, false));
            };
            if !self
                .affinity
                .contains_key(&(term.topology_key.clone(), v.clone()))
            {
                all_present = false;
            }
        }
        // The first pod of a group with affinity to itself may go anywhere.
        let first_of_group = self.affinity.is_empty()
            && self
                .pod
                .affinity
                .iter()
                .all(|t| t.matches(self.pod, self.ns_labels));
        if !all_present && !first_of_group {
            return Err(reject(AFFINITY, false));
        }
        let pair = |t: &Term| {
            node.labels
                .get(&t.topology_key)
                .map(|v| (t.topology_key.clone(), v.clone()))
        };
        if self
            .pod
            .anti_affinity
            .iter()
            .filter_map(pair)
            .any(|p| self.anti_affinity.contains_key(&p))
        {
            return Err(reject(ANTI_AFFINITY, true));
        }
        if node
            .labels
            .iter()
            .any(|(k, v)| self.existing_anti.contains_key(&(k.clone(), v.clone())))
        {
            return Err(reject(EXISTING_ANTI_AFFINITY, true));
        }
        Ok(())
    }

    /// The weighted, normalized sum of the default profile's scores for each feasible node.
    pub fn score(&self, nodes: &[&NodeInfo]) -> Vec<i64> {
        let mut total = vec![0i64; nodes.len()];
        let mut add = |weight: i64, scores: Vec<i64>| {
            for (t, s) in total.iter_mut().zip(scores) {
                *t += weight * s;
            }
        };
        // NodeResourcesFit (LeastAllocated over cpu and memory) and BalancedAllocation.
        add(1, nodes.iter().map(|n| self.least_allocated(n)).collect());
        add(1, nodes.iter().map(|n| self.balanced(n)).collect());
        // TaintToleration: fewer untolerated PreferNoSchedule taints is better.
        let prefer: Vec<&Toleration> = self
            .tolerations
            .iter()
            .filter(|t| {
                t.effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
            })
            .collect();
        let counts = nodes
            .iter()
            .map(|n| {
                n.node.as_deref().map_or(0, |node| {
                    taints(node)
                        .iter()
                        .filter(|t| t.effect == "PreferNoSchedule")
                        .filter(|t| !prefer.iter().any(|tol| selectors::tolerates(tol, t)))
                        .count() as i64
                })
            })
            .collect();
        add(3, normalize(counts, true));
        // NodeAffinity: the weights of the preferred terms each node matches.
        let preferred = self
            .pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default();
        if !preferred.is_empty() {
            let scores = nodes
                .iter()
                .map(|n| {
                    n.node.as_deref().map_or(0, |node| {
                        preferred
                            .iter()
                            .filter(|p| selectors::term_matches(&p.preference, node))
                            .map(|p| i64::from(p.weight))
                            .sum()
                    })
                })
                .collect();
            add(2, normalize(scores, false));
        }
        // PodTopologySpread's ScheduleAnyway constraints: fewer matching pods is better.
        if !self.soft.is_empty() {
            let scores: Vec<i64> = nodes
                .iter()
                .map(|n| {
                    self.soft
                        .iter()
                        .map(|s| {
                            let count = n
                                .labels
                                .get(&s.key)
                                .and_then(|v| s.counts.get(v))
                                .copied()
                                .unwrap_or(0);
                            let weight = ((s.counts.len() + 2) as f64).ln();
                            (count as f64 * weight + (s.max_skew - 1) as f64).round() as i64
                        })
                        .sum()
                })
                .collect();
            add(2, normalize_spread(scores));
        }
        // InterPodAffinity: preferred terms between this pod and the pods in each domain.
        if !self.preferred.is_empty() {
            let scores = nodes
                .iter()
                .map(|n| {
                    n.labels
                        .iter()
                        .filter_map(|(k, v)| self.preferred.get(&(k.clone(), v.clone())))
                        .sum()
                })
                .collect();
            add(2, normalize_min_max(scores));
        }
        total
    }

    fn least_allocated(&self, n: &NodeInfo) -> i64 {
        let score = |requested: i64, capacity: i64| {
            if capacity <= 0 || requested > capacity {
                0
            } else {
                (capacity - requested) * MAX_NODE_SCORE / capacity
            }
        };
        let cpu = score(n.non_zero.0 + self.pod.non_zero.0, n.allocatable.milli_cpu);
        let memory = score(n.non_zero.1 + self.pod.non_zero.1, n.allocatable.memory);
        (cpu + memory) / 2
    }

    fn balanced(&self, n: &NodeInfo) -> i64 {
        let fraction = |requested: i64, capacity: i64| {
            if capacity <= 0 {
                1.0
            } else {
                (requested as f64 / capacity as f64).min(1.0)
            }
        };
        let cpu = fraction(
            n.requested.milli_cpu + self.pod.request.milli_cpu,
            n.allocatable.milli_cpu,
        );
        let memory = fraction(
            n.requested.memory + self.pod.request.memory,
            n.allocatable.memory,
        );
        let std = (cpu - memory).abs() / 2.0;
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

/// Upstream's DefaultNormalizeScore: scaled to 0..100 by the largest (reversed: the
/// smallest count scores highest).
fn normalize(scores: Vec<i64>, reverse: bool) -> Vec<i64> {
    let max = scores.iter().copied().max().unwrap_or(0);
    scores
        .into_iter()
        .map(|s| {
            if max == 0 {
                if reverse { MAX_NODE_SCORE } else { 0 }
            } else {
                let s = s * MAX_NODE_SCORE / max;
                if reverse { MAX_NODE_SCORE - s } else { s }
            }
        })
        .collect()
}

/// InterPodAffinity's normalization: the range from the lowest to the highest onto 0..100.
fn normalize_min_max(scores: Vec<i64>) -> Vec<i64> {
    let max = scores.iter().copied().max().unwrap_or(0);
    let min = scores.iter().copied().min().unwrap_or(0);
    scores
        .into_iter()
        .map(|s| {
            if max > min {
                MAX_NODE_SCORE * (s - min) / (max - min)
            } else {
                0
            }
        })
        .collect()
}

/// PodTopologySpread's normalization: the node with the fewest matching pods scores 100.
fn normalize_spread(scores: Vec<i64>) -> Vec<i64> {
    let max = scores.iter().copied().max().unwrap_or(0);
    let min = scores.iter().copied().min().unwrap_or(0);
    scores
        .into_iter()
        .map(|s| {
            if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - s) / max
            }
        })
        .collect()
}
