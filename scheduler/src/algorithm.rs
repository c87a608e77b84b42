//! One scheduling attempt (upstream's schedulePod and the DefaultPreemption PostFilter):
//! filter the nodes, score the feasible ones, pick the best; when none fits, find the node
//! where evicting lower-priority pods would make room.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::Rng;

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::plugins::{Cycle, Reject};
use crate::selectors::Labels;

pub const NO_NODES: &str = "no nodes available to schedule pods";

/// Where preemption would place the pod, and whom it evicts for it.
#[derive(Debug)]
pub struct Preemption {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
}

#[derive(Debug)]
pub enum Outcome {
    Fits(String),
    Unschedulable {
        message: String,
        preemption: Option<Preemption>,
    },
}

/// How many feasible nodes are enough (upstream's adaptive percentageOfNodesToScore).
pub fn nodes_to_find(all: usize) -> usize {
    if all < 100 {
        return all;
    }
    let percent = (50 - all as i64 / 125).max(5) as usize;
    (all * percent / 100).max(100)
}

/// "N reason" for each distinct reason, sorted, as upstream's FitError prints them.
fn histogram<'a>(reasons: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    let mut lines: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    lines.sort();
    lines.join(", ")
}

pub struct Algorithm {
    next_start: usize,
}

impl Default for Algorithm {
    fn default() -> Self {
        Algorithm::new()
    }
}

impl Algorithm {
    pub fn new() -> Algorithm {
        Algorithm { next_start: 0 }
    }

    pub fn schedule(
        &mut self,
        cache: &mut Cache,
        pod: &PodInfo,
        ns_labels: &dyn Fn(&str) -> Option<Labels>,
    ) -> Outcome {
        cache.refresh();
        let cache = &*cache;
        let order = cache.order();
        if order.is_empty() {
            return Outcome::Unschedulable {
                message: NO_NODES.into(),
                preemption: None,
            };
        }
        let cycle = Cycle::new(pod, cache, ns_labels);
        // A pod preemption made room for tries that node first.
        let nominated = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty());
        if let Some(node) = nominated.and_then(|n| cache.node(n))
            && cycle.filter(node, cache).is_ok()
        {
            return Outcome::Fits(node.name().to_string());
        }
        let want = nodes_to_find(order.len());
        let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(order.len()));
        let mut rejected: Vec<(&NodeInfo, Reject)> = vec![];
        let start = self.next_start % order.len();
        let mut examined = 0;
        for i in 0..order.len() {
            let Some(node) = cache.node(&order[(start + i) % order.len()]) else {
                continue;
            };
            examined += 1;
            match cycle.filter(node, cache) {
                Ok(()) => feasible.push(node),
                Err(r) => rejected.push((node, r)),
            }
            if feasible.len() >= want {
                break;
            }
        }
        self.next_start = (start + examined) % order.len();
        match feasible.len() {
            0 => {}
            1 => return Outcome::Fits(feasible[0].name().to_string()),
            _ => {
                let scores = cycle.score(&feasible);
                let mut best = 0;
                let mut ties = 0;
                let mut rng = rand::rng();
                for (i, s) in scores.iter().enumerate() {
                    if *s > scores[best] {
                        best = i;
                        ties = 1;
                    } else if *s == scores[best] {
                        ties += 1;
                        if rng.random_range(0..ties) == 0 {
                            best = i;
                        }
                    }
                }
                return Outcome::Fits(feasible[best].name().to_string());
            }
        }
        let all = rejected.len();
        let mut message = format!(
            "0/{all} nodes are available: {}.",
            histogram(
                rejected
                    .iter()
                    .flat_map(|(_, r)| r.reasons.iter().map(String::as_str))
            )
        );
        let preemption = match preempt(cycle, cache, &rejected) {
            Ok(p) => Some(p),
            Err(why) => {
                message.push_str(&format!(" preemption: {why}."));
                None
            }
        };
        Outcome::Unschedulable {
            message,
            preemption,
        }
    }
}

/// DefaultPreemption: on each node where only removable pods stand in the way, the fewest,
/// least important lower-priority pods whose removal lets the pod fit; the node whose
/// victims matter least wins. Err is why no node qualifies.
fn preempt(
    mut cycle: Cycle<'_>,
    cache: &Cache,
    rejected: &[(&NodeInfo, Reject)],
) -> Result<Preemption, String> {
    let pod = cycle.pod;
    let spec = pod.pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err("not eligible due to preemptionPolicy=Never.".into());
    }
    let nominated = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty());
    if let Some(node) = nominated.and_then(|n| cache.node(n))
        && node
            .pods
            .iter()
            .any(|p| p.terminating && p.priority < pod.priority)
    {
        return Err("not eligible due to a terminating pod on the nominated node.".into());
    }
    let mut statuses: Vec<&str> = vec![];
    let mut best: Option<((i32, i64, usize), Preemption)> = None;
    for (node, reject) in rejected {
        if !reject.resolvable {
            statuses.push("Preemption is not helpful for scheduling");
            continue;
        }
        match victims_on(&mut cycle, cache, node) {
            None => statuses.push("No preemption victims found for incoming pod"),
            Some(victims) => {
                let rank = (
                    victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
                    victims.iter().map(|v| i64::from(v.priority)).sum::<i64>(),
                    victims.len(),
                );
                if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                    best = Some((
                        rank,
                        Preemption {
                            node: node.name().to_string(),
                            victims,
                        },
                    ));
                }
            }
        }
    }
    match best {
        Some((_, p)) => Ok(p),
        None => Err(format!(
            "0/{} nodes are available: {}.",
            rejected.len(),
            histogram(statuses.into_iter())
        )),
    }
}

/// The dry run on one node: remove every lower-priority pod; if the pod then fits, put back
/// as many as still let it fit, most important first. None: no eviction makes it fit.
fn victims_on(cycle: &mut Cycle<'_>, cache: &Cache, node: &NodeInfo) -> Option<Vec<Arc<PodInfo>>> {
    let pod = cycle.pod;
    let mut lower: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if lower.is_empty() {
        return None;
    }
    // Most important first: higher priority, then the longer-running.
    lower.sort_by(|a, b| {
        b.priority.cmp(&a.priority).then_with(|| {
            let start = |p: &PodInfo| p.pod.status.as_ref().and_then(|s| s.start_time.clone());
            start(a).cmp(&start(b))
        })
    });
    let mut trial = node.clone();
    for p in &lower {
        trial.remove_pod(&p.key);
        cycle.update(p, &trial, -1);
    }
    let mut victims = vec![];
    if cycle.filter(&trial, cache).is_ok() {
        for p in &lower {
            trial.add_pod(p.clone());
            cycle.update(p, &trial, 1);
            if cycle.filter(&trial, cache).is_err() {
                trial.remove_pod(&p.key);
                cycle.update(p, &trial, -1);
                victims.push(p.clone());
            }
        }
        for p in &victims {
            cycle.update(p, &trial, 1);
        }
        Some(victims)
    } else {
        for p in &lower {
            cycle.update(p, &trial, 1);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(
        name: &str,
        cpu: &str,
        labels: Value,
        spec: Value,
    ) -> Arc<k8s_openapi::api::core::v1::Node> {
        let mut labels = labels;
        labels["kubernetes.io/hostname"] = json!(name);
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "uid": name, "labels": labels},
                "spec": spec,
                "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}
            }))
            .expect("node"),
        )
    }

    fn pod(name: &str, spec: Value, labels: Value) -> Arc<PodInfo> {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c"}]);
        }
        let pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": labels},
            "spec": spec
        }))
        .expect("pod");
        Arc::new(PodInfo::new(Arc::new(pod)))
    }

    fn cpu(m: &str) -> Value {
        json!([{"name": "c", "resources": {"requests": {"cpu": m}}}])
    }

    fn three_zones() -> Cache {
        let mut cache = Cache::default();
        for (i, zone) in ["a", "b", "c"].iter().enumerate() {
            cache.set_node(node(
                &format!("n{i}"),
                "2",
                json!({"zone": zone}),
                json!({}),
            ));
        }
        cache
    }

    fn run(cache: &mut Cache, p: &PodInfo) -> Outcome {
        Algorithm::new().schedule(cache, p, &|_| None)
    }

    fn message(o: Outcome) -> String {
        match o {
            Outcome::Unschedulable { message, .. } => message,
            Outcome::Fits(n) => panic!("fits on {n}"),
        }
    }

    #[test]
    fn resources_taints_and_selectors_give_upstreams_reasons() {
        let mut cache = three_zones();
        cache.set_node(node(
            "tainted",
            "8",
            json!({}),
            json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
        ));
        cache.set_node(node(
            "cordoned",
            "8",
            json!({}),
            json!({"unschedulable": true}),
        ));
        let big = pod("big", json!({"containers": cpu("4")}), json!({}));
        assert_eq!(
            message(run(&mut cache, &big)),
            "0/5 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable, 3 Insufficient cpu. \
             preemption: 0/5 nodes are available: 2 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod.."
        );
        let tolerant = pod(
            "tolerant",
            json!({"containers": cpu("4"), "tolerations": [{"key": "dedicated", "operator": "Exists"}]}),
            json!({}),
        );
        assert!(matches!(run(&mut cache, &tolerant), Outcome::Fits(n) if n == "tainted"));
        let picky = pod("picky", json!({"nodeSelector": {"zone": "b"}}), json!({}));
        assert!(matches!(run(&mut cache, &picky), Outcome::Fits(n) if n == "n1"));
        let never = pod(
            "never",
            json!({"containers": cpu("16"), "preemptionPolicy": "Never"}),
            json!({}),
        );
        assert!(
            message(run(&mut cache, &never))
                .ends_with(" preemption: not eligible due to preemptionPolicy=Never..")
        );
        assert_eq!(message(run(&mut Cache::default(), &picky)), NO_NODES);
    }

    #[test]
    fn bound_pods_count_against_allocatable() {
        let mut cache = three_zones();
        for i in 0..3 {
            cache.place(
                pod(
                    &format!("p{i}"),
                    json!({"containers": cpu("1500m")}),
                    json!({}),
                ),
                &format!("n{i}"),
                false,
            );
        }
        let p = pod("new", json!({"containers": cpu("1")}), json!({}));
        assert!(
            message(run(&mut cache, &p))
                .starts_with("0/3 nodes are available: 3 Insufficient cpu.")
        );
        cache.unplace("default/p2");
        assert!(matches!(run(&mut cache, &p), Outcome::Fits(n) if n == "n2"));
    }

    #[test]
    fn anti_affinity_and_spread_place_one_per_zone() {
        let mut cache = three_zones();
        let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}});
        let mut used = vec![];
        for i in 0..3 {
            let p = pod(&format!("db{i}"), anti.clone(), json!({"app": "db"}));
            let Outcome::Fits(n) = run(&mut cache, &p) else {
                panic!("db{i}")
            };
            assert!(!used.contains(&n));
            used.push(n.clone());
            cache.place(p, &n, false);
        }
        let p = pod("db3", anti, json!({"app": "db"}));
        assert!(message(run(&mut cache, &p)).starts_with(
            "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
        ));
        // Affinity to the db pods: only db1's zone has one now.
        cache.unplace("default/db0");
        cache.unplace("default/db2");
        let near = pod(
            "near",
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}}),
            json!({}),
        );
        assert!(matches!(run(&mut cache, &near), Outcome::Fits(n) if n == used[1]));
        cache.unplace("default/db1");
        assert!(
            message(run(&mut cache, &near))
                .starts_with("0/3 nodes are available: 3 node(s) didn't match pod affinity rules.")
        );
        // Spread: maxSkew 1 over zones puts four pods 2/1/1, never 3 in one zone.
        let mut cache = three_zones();
        let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]});
        let mut per_zone = HashMap::new();
        for i in 0..6 {
            let p = pod(&format!("web{i}"), spread.clone(), json!({"app": "web"}));
            let Outcome::Fits(n) = run(&mut cache, &p) else {
                panic!("web{i}")
            };
            *per_zone.entry(n.clone()).or_insert(0) += 1;
            cache.place(p, &n, false);
        }
        assert_eq!(
            per_zone.values().copied().collect::<Vec<i32>>(),
            vec![2, 2, 2]
        );
        let unlabeled = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "rack",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]});
        assert!(message(run(&mut cache, &pod("rack", unlabeled, json!({"app": "web"})))).starts_with(
            "0/3 nodes are available: 3 node(s) didn't match pod topology spread constraints (missing required label)."
        ));
    }

    use std::collections::HashMap;

    #[test]
    fn a_controllers_pods_spread_over_hosts_by_default() {
        let mut cache = Cache::default();
        for i in 0..3 {
            cache.set_node(node(&format!("n{i}"), "32", json!({}), json!({})));
        }
        let mut nodes = vec![];
        for i in 0..6 {
            let mut p = (*pod(&format!("web-{i}"), json!({}), json!({"app": "web"})).pod).clone();
            p.metadata.owner_references = Some(vec![serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "rs", "controller": true
            })).expect("owner")]);
            let p = Arc::new(PodInfo::new(Arc::new(p)));
            let Outcome::Fits(n) = run(&mut cache, &p) else {
                panic!("web-{i}")
            };
            cache.place(p, &n, false);
            nodes.push(n);
        }
        nodes.sort();
        assert_eq!(nodes, ["n0", "n0", "n1", "n1", "n2", "n2"]);
    }

    #[test]
    fn preemption_evicts_the_fewest_least_important_pods() {
        let mut cache = Cache::default();
        cache.set_node(node("n0", "2", json!({}), json!({})));
        cache.set_node(node("n1", "2", json!({}), json!({})));
        let with = |name: &str, m: &str, priority: i32| {
            pod(
                name,
                json!({"containers": cpu(m), "priority": priority}),
                json!({}),
            )
        };
        cache.place(with("a", "1", 10), "n0", false);
        cache.place(with("b", "1", 10), "n0", false);
        cache.place(with("c", "1", 5), "n1", false);
        cache.place(with("d", "1", 500), "n1", false);
        let urgent = with("urgent", "1", 100);
        match run(&mut cache, &urgent) {
            Outcome::Unschedulable {
                message,
                preemption: Some(p),
            } => {
                assert_eq!(message, "0/2 nodes are available: 2 Insufficient cpu.");
                assert_eq!(p.node, "n1");
                let victims: Vec<&str> = p.victims.iter().map(|v| v.key.as_str()).collect();
                assert_eq!(victims, ["default/c"]);
            }
            o => panic!("{o:?}"),
        }
        // Nothing of lower priority to evict.
        let low = with("low", "1", 1);
        assert!(message(run(&mut cache, &low)).ends_with(
            "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.."
        ));
        // A nominated pod holds its room against pods of lower priority.
        cache.nominate(urgent.clone(), Some("n1"));
        cache.unplace("default/c");
        assert!(matches!(
            run(&mut cache, &with("later", "1", 1)),
            Outcome::Unschedulable { .. }
        ));
        let nominated = urgent.clone();
        assert!(matches!(run(&mut cache, &nominated), Outcome::Fits(n) if n == "n1"));
    }
}
