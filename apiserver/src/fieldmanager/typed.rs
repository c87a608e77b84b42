//! Objects walked by their schema, as structured-merge-diff's `typed` package walks them: the
//! set of fields an object sets, the comparison of two objects, the merge of an applied
//! configuration into a live object, and the removal of fields.

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::{Map, Value};

use super::set::FieldSet;
use crate::patch::{self, FieldType};

/// The type of a struct field or map value, from the schema table, or deduced from the value
/// where the schema is silent (objects are granular, lists and scalars atomic).
fn child_type(parent: FieldType, key: &str, value: &Value) -> FieldType {
    let deduced = || {
        if value.is_object() {
            FieldType::Struct(None)
        } else {
            FieldType::Atomic
        }
    };
    match parent {
        FieldType::Struct(Some(def)) => patch::field_type(def, key).unwrap_or_else(deduced),
        FieldType::Map(Some(def)) if value.is_object() => patch::struct_type(Some(def)),
        _ => deduced(),
    }
}

fn item_type(list: FieldType, item: &Value) -> FieldType {
    match list {
        FieldType::Keyed(_, Some(def)) if item.is_object() => patch::struct_type(Some(def)),
        FieldType::Keyed(..) if item.is_object() => FieldType::Struct(None),
        _ => FieldType::Atomic,
    }
}

/// Whether a value of this type is compared and owned whole.
fn is_leaf(ty: FieldType, v: &Value) -> bool {
    match ty {
        FieldType::Atomic => true,
        FieldType::Struct(_) | FieldType::Map(_) => !v.is_object(),
        FieldType::Keyed(..) | FieldType::Set => !v.is_array(),
    }
}

/// The path element of a list item: its key fields (`k:`), or its value (`v:`).
fn item_element(list: FieldType, item: &Value) -> String {
    match (list, item) {
        (FieldType::Keyed(keys, _), Value::Object(m)) => {
            // Keys print sorted by name, as upstream's; a missing protocol is the default
            // the server would fill in (ports are keyed by port and protocol).
            let mut names: Vec<&str> = keys.split('+').filter(|k| !k.is_empty()).collect();
            names.sort_unstable();
            let fields: Vec<String> = names
                .into_iter()
                .filter_map(|k| {
                    let v = match m.get(k) {
                        Some(v) => v.clone(),
                        None if k == "protocol" => Value::String("TCP".into()),
                        None => return None,
                    };
                    Some(format!("{}:{v}", Value::String(k.into())))
                })
                .collect();
            format!("k:{{{}}}", fields.join(","))
        }
        (_, v) => format!("v:{v}"),
    }
}

/// Struct and map entries, or list items, each with its path element and type.
fn children(ty: FieldType, v: &Value) -> Vec<(String, &Value, FieldType)> {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, c)| (format!("f:{k}"), c, child_type(ty, k, c)))
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| (item_element(ty, i), i, item_type(ty, i)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The fields a (partial) object sets: its leaves, list items, map entries and empty objects
/// (upstream's `ToFieldSet`).
pub fn field_set(v: &Value, ty: FieldType) -> FieldSet {
    let mut out = FieldSet::default();
    walk_set(v, ty, &mut out);
    out.prune();
    out
}

fn walk_set(v: &Value, ty: FieldType, out: &mut FieldSet) {
    if is_leaf(ty, v) {
        out.member = true;
        return;
    }
    // Entries of maps (and of objects the schema does not describe) are members themselves.
    let entries_are_members = matches!(ty, FieldType::Map(_) | FieldType::Struct(None));
    for (pe, child, cty) in children(ty, v) {
        let node = out.children.entry(pe).or_default();
        walk_set(child, cty, node);
        let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
        if v.is_array() || empty || entries_are_members {
            node.member = true;
        }
    }
}

/// What changed from one object to another, as sets of paths.
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

pub fn compare(l: &Value, r: &Value, ty: FieldType) -> Comparison {
    let mut c = Comparison::default();
    walk_compare(Some(l), Some(r), ty, &mut Vec::new(), &mut c);
    c
}

fn walk_compare(
    l: Option<&Value>,
    r: Option<&Value>,
    ty: FieldType,
    path: &mut Vec<String>,
    c: &mut Comparison,
) {
    let (l, r) = (l.filter(|v| !v.is_null()), r.filter(|v| !v.is_null()));
    let (some_l, some_r) = match (l, r) {
        (None, None) => return,
        (Some(a), None) | (None, Some(a)) => (a, a),
        (Some(a), Some(b)) => (a, b),
    };
    let container =
        !is_leaf(ty, some_l) && !is_leaf(ty, some_r) && some_l.is_array() == some_r.is_array();
    if !container {
        match (l, r) {
            (None, Some(_)) => c.added.insert(path),
            (Some(_), None) => c.removed.insert(path),
            (Some(a), Some(b)) if a != b => c.modified.insert(path),
            _ => {}
        }
        return;
    }
    match (l, r) {
        (None, Some(_)) => c.added.insert(path),
        (Some(_), None) => c.removed.insert(path),
        _ => {}
    }
    // A subtree on one side only (all of a new object's): every field is added or removed,
    // with no other side to match against.
    if l.is_none() || r.is_none() {
        for (pe, v, t) in children(ty, some_l) {
            path.push(pe);
            let (l, r) = if l.is_some() {
                (Some(v), None)
            } else {
                (None, Some(v))
            };
            walk_compare(l, r, t, path, c);
            path.pop();
        }
        return;
    }
    let left = l.map(|v| children(ty, v)).unwrap_or_default();
    let right = r.map(|v| children(ty, v)).unwrap_or_default();
    let right_by: HashMap<&str, (&Value, FieldType)> = right
        .iter()
        .map(|(pe, v, t)| (pe.as_str(), (*v, *t)))
        .collect();
    let left_names: HashSet<&str> = left.iter().map(|(pe, ..)| pe.as_str()).collect();
    for (pe, lv, lt) in &left {
        let rv = right_by.get(pe.as_str()).map(|(v, _)| *v);
        path.push(pe.clone());
        walk_compare(Some(lv), rv, *lt, path, c);
        path.pop();
    }
    for (pe, rv, rt) in &right {
        if !left_names.contains(pe.as_str()) {
            path.push(pe.clone());
            walk_compare(None, Some(rv), *rt, path, c);
            path.pop();
        }
    }
}

/// The live object with the applied configuration merged in: the configuration's values win,
/// objects and maps merge by key, keyed lists and sets by item (upstream's `Merge`).
pub fn merge(l: Option<&Value>, r: &Value, ty: FieldType) -> Value {
    let Some(l) = l.filter(|l| !is_leaf(ty, l) && !is_leaf(ty, r) && l.is_array() == r.is_array())
    else {
        return r.clone();
    };
    match (l, r) {
        (Value::Object(lm), Value::Object(rm)) => {
            let mut out = lm.clone();
            for (k, rv) in rm {
                let merged = merge(lm.get(k), rv, child_type(ty, k, rv));
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(li), Value::Array(ri)) => Value::Array(merge_items(li, ri, ty)),
        _ => r.clone(),
    }
}

/// Merged list items: live items the configuration does not name keep their places, named
/// ones follow the configuration's order (structured-merge-diff's `visitListItems`).
fn merge_items(l: &[Value], r: &[Value], ty: FieldType) -> Vec<Value> {
    let lpe: Vec<String> = l.iter().map(|i| item_element(ty, i)).collect();
    let rpe: Vec<String> = r.iter().map(|i| item_element(ty, i)).collect();
    let mut lidx: HashMap<&str, usize> = HashMap::new();
    for (i, pe) in lpe.iter().enumerate() {
        lidx.entry(pe.as_str()).or_insert(i);
    }
    let ridx: HashSet<&str> = rpe.iter().map(String::as_str).collect();
    let mut shared: VecDeque<&str> = rpe
        .iter()
        .map(String::as_str)
        .filter(|pe| lidx.contains_key(pe))
        .collect();
    let mut merged_r: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(l.len().max(r.len()));
    let merge_one = |ri: usize| {
        let lc = lidx.get(rpe[ri].as_str()).map(|&i| &l[i]);
        merge(lc, &r[ri], item_type(ty, &r[ri]))
    };
    let (mut li, mut ri) = (0, 0);
    while li < l.len() || ri < r.len() {
        if li < l.len() && ri < r.len() {
            if lpe[li] == rpe[ri] {
                out.push(merge_one(ri));
                merged_r.insert(rpe[ri].as_str());
                if shared.front() == Some(&rpe[ri].as_str()) {
                    shared.pop_front();
                }
                li += 1;
                ri += 1;
                continue;
            }
            if ridx.contains(lpe[li].as_str()) && shared.front() != Some(&lpe[li].as_str()) {
                li += 1;
                continue;
            }
        }
        if li < l.len() {
            if !ridx.contains(lpe[li].as_str()) {
                out.push(l[li].clone());
                li += 1;
                continue;
            }
            if merged_r.contains(lpe[li].as_str()) {
                li += 1;
                continue;
            }
        }
        if ri < r.len() {
            out.push(merge_one(ri));
            merged_r.insert(rpe[ri].as_str());
            if shared.front() == Some(&rpe[ri].as_str()) {
                shared.pop_front();
            }
            ri += 1;
        }
    }
    out
}

/// Removes the members of `remove` from the object, except where `keep` (what some manager
/// owns) still holds the path or something under it; objects left empty by the removal go
/// too (upstream's prune of fields an applier stopped applying).
pub fn remove(v: &mut Value, ty: FieldType, gone: &FieldSet, keep: Option<&FieldSet>) {
    let types: HashMap<String, FieldType> = children(ty, v)
        .into_iter()
        .map(|(pe, _, t)| (pe, t))
        .collect();
    for (pe, rset) in &gone.children {
        let kset = keep.and_then(|k| k.children.get(pe));
        let Some(cty) = types.get(pe).copied() else {
            continue;
        };
        if rset.member && kset.is_none() {
            remove_child(v, ty, pe);
            continue;
        }
        if let Some(child) = child_mut(v, ty, pe) {
            let was_empty = child.as_object().is_some_and(Map::is_empty);
            remove(child, cty, rset, kset);
            let now_empty = child.as_object().is_some_and(Map::is_empty);
            if now_empty && !was_empty && kset.is_none_or(|k| !k.member) {
                remove_child(v, ty, pe);
            }
        }
    }
}

fn child_mut<'a>(v: &'a mut Value, ty: FieldType, pe: &str) -> Option<&'a mut Value> {
    match v {
        Value::Object(m) => m.get_mut(pe.strip_prefix("f:")?),
        Value::Array(items) => items.iter_mut().find(|i| item_element(ty, i) == pe),
        _ => None,
    }
}

fn remove_child(v: &mut Value, ty: FieldType, pe: &str) {
    match v {
        Value::Object(m) => {
            if let Some(k) = pe.strip_prefix("f:") {
                m.remove(k);
            }
        }
        Value::Array(items) => items.retain(|i| item_element(ty, i) != pe),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> FieldType {
        patch::struct_type(patch::definition("apps/v1", "Deployment"))
    }

    #[test]
    fn field_sets_name_leaves_items_and_map_entries() {
        let d = json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "web", "image": "nginx",
                    "ports": [{"containerPort": 80}]}]}}}});
        let set = field_set(&d, deployment());
        let v = set.to_fields_v1();
        assert_eq!(v["f:metadata"]["f:labels"], json!({"f:app": {}}));
        // LabelSelector is atomic: owned whole.
        assert_eq!(v["f:spec"]["f:selector"], json!({}));
        let web = &v["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(web["."], json!({}));
        assert_eq!(web["f:image"], json!({}));
        assert_eq!(
            web["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"],
            json!({".": {}, "f:containerPort": {}})
        );
    }

    #[test]
    fn merge_keeps_live_items_and_follows_the_configurations_order() {
        let ty = deployment();
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "side", "image": "s:1"}, {"name": "b", "image": "b:1"}]}}}});
        let config = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "b", "image": "b:2"}, {"name": "a", "image": "a:1"}, {"name": "new", "image": "n"}]}}}});
        let merged = merge(Some(&live), &config, ty);
        let names: Vec<&str> = merged["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["side", "b", "a", "new"]);
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"][1]["image"],
            "b:2"
        );
        // Atomic lists are replaced whole.
        let live = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["x", "y"]}]}}}});
        let config =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["z"]}]}}}});
        assert_eq!(
            merge(Some(&live), &config, ty)["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["z"])
        );
    }

    #[test]
    fn comparisons_report_added_modified_and_removed_paths() {
        let ty = patch::struct_type(patch::definition("v1", "ConfigMap"));
        let c = compare(
            &json!({"data": {"a": "1", "b": "2"}}),
            &json!({"data": {"a": "9", "c": "3"}, "metadata": {"labels": {"x": "y"}}}),
            ty,
        );
        let shown = |s: &FieldSet| {
            s.paths()
                .iter()
                .map(|p| super::super::set::display(p))
                .collect::<Vec<_>>()
        };
        assert_eq!(shown(&c.modified), [".data.a"]);
        assert_eq!(shown(&c.removed), [".data.b"]);
        assert_eq!(
            shown(&c.added),
            [
                ".data.c",
                ".metadata",
                ".metadata.labels",
                ".metadata.labels.x"
            ]
        );
    }

    #[test]
    fn removal_spares_what_others_own() {
        let ty = patch::struct_type(patch::definition("v1", "ConfigMap"));
        let mut obj = json!({"data": {"a": "1", "b": "2"}, "metadata": {"labels": {"x": "y"}}});
        let gone = field_set(
            &json!({"data": {"a": "1", "b": "2"}, "metadata": {"labels": {"x": "y"}}}),
            ty,
        );
        let kept = field_set(&json!({"data": {"b": "2"}}), ty);
        remove(&mut obj, ty, &gone, Some(&kept));
        // Objects the removal empties go with it.
        assert_eq!(obj, json!({"data": {"b": "2"}}));
    }
}
