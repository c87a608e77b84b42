//! The matching rules the plugins share: label selectors, node selector terms (nodeSelector
//! and node affinity) and taints against tolerations, with upstream's semantics.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A parsed label selector. `nothing` is a nil selector, which matches no object (an empty
/// one matches every object).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    requirements: Vec<(String, Op)>,
    nothing: bool,
}

impl Selector {
    pub fn nothing() -> Selector {
        Selector {
            requirements: vec![],
            nothing: true,
        }
    }

    /// From the API's form; a selector with an unknown operator matches nothing, as upstream's
    /// conversion error makes it.
    pub fn from_api(selector: Option<&LabelSelector>) -> Selector {
        let Some(s) = selector else {
            return Selector::nothing();
        };
        let mut requirements = vec![];
        for (k, v) in s.match_labels.iter().flatten() {
            requirements.push((k.clone(), Op::In(vec![v.clone()])));
        }
        for e in s.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => return Selector::nothing(),
            };
            requirements.push((e.key.clone(), op));
        }
        Selector {
            requirements,
            nothing: false,
        }
    }

    /// Adds `key in (value)` (or `notin` when `mismatch`) for each key the pod carries:
    /// matchLabelKeys and mismatchLabelKeys.
    pub fn with_label_keys(mut self, keys: &[String], labels: &Labels, mismatch: bool) -> Selector {
        if self.nothing {
            return self;
        }
        for key in keys {
            if let Some(v) = labels.get(key) {
                let op = if mismatch {
                    Op::NotIn(vec![v.clone()])
                } else {
                    Op::In(vec![v.clone()])
                };
                self.requirements.push((key.clone(), op));
            }
        }
        self
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        !self.nothing
            && self.requirements.iter().all(|(key, op)| {
                let v = labels.get(key);
                match op {
                    Op::In(values) => v.is_some_and(|v| values.contains(v)),
                    Op::NotIn(values) => v.is_none_or(|v| !values.contains(v)),
                    Op::Exists => v.is_some(),
                    Op::DoesNotExist => v.is_none(),
                }
            })
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(number),
                values.first().and_then(|s| number(s)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// One node selector term: all its label and field requirements (an empty term matches
/// nothing).
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = match r.key.as_str() {
                "metadata.name" => node.metadata.name.as_deref(),
                _ => None,
            };
            requirement_matches(r, value)
        })
}

/// The pod's nodeSelector and required node affinity (upstream's RequiredNodeAffinity).
pub fn pod_matches_node(pod: &k8s_openapi::api::core::v1::Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    if let Some(selector) = &spec.node_selector {
        let labels = node.metadata.labels.as_ref();
        if !selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(r) => r.node_selector_terms.iter().any(|t| term_matches(t, node)),
        None => true,
    }
}

/// Whether a toleration tolerates a taint (upstream's ToleratesTaint).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration tolerates.
pub fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        effects.contains(&taint.effect.as_str()) && !tolerations.iter().any(|t| tolerates(t, taint))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_as_upstream() {
        let s: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]
        }))
        .expect("selector");
        let s = Selector::from_api(Some(&s));
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!Selector::from_api(None).matches(&labels(&[])));
        assert!(Selector::from_api(Some(&LabelSelector::default())).matches(&labels(&[])));
        let keyed = Selector::from_api(Some(&LabelSelector::default())).with_label_keys(
            &["pod-template-hash".into()],
            &labels(&[("pod-template-hash", "abc")]),
            false,
        );
        assert!(!keyed.matches(&labels(&[("pod-template-hash", "xyz")])));
        assert!(keyed.matches(&labels(&[("pod-template-hash", "abc")])));
    }

    #[test]
    fn node_terms_and_taints() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a", "cores": "8"}}
        }))
        .expect("node");
        let term: NodeSelectorTerm = serde_json::from_value(json!({
            "matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}],
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]
        }))
        .expect("term");
        assert!(term_matches(&term, &node));
        assert!(!term_matches(&NodeSelectorTerm::default(), &node));
        let taint: Taint =
            serde_json::from_value(json!({"key": "k", "value": "v", "effect": "NoSchedule"}))
                .expect("taint");
        let exists: Toleration = serde_json::from_value(json!({"operator": "Exists"})).expect("t");
        let wrong: Toleration =
            serde_json::from_value(json!({"key": "k", "value": "w"})).expect("t");
        assert!(tolerates(&exists, &taint));
        assert!(!tolerates(&wrong, &taint));
        assert!(untolerated(std::slice::from_ref(&taint), &[wrong], &["NoSchedule"]).is_some());
    }
}
