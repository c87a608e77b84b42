//! Sets of field paths in the shape `metadata.managedFields[].fieldsV1` stores them
//! (structured-merge-diff's `fieldpath.Set` and its FieldsV1 encoding).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A set of paths as a tree of path elements: `f:<field>`, `k:<key fields as JSON>` (an item
/// of a keyed list), `v:<value as JSON>` (an item of a set) and `i:<index>`. A node is a
/// `member` when its own path is in the set; nodes that are neither members nor lead to one
/// are never kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    pub member: bool,
    pub children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    pub fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            // The key is copied only for a child that is new.
            Some((first, rest)) => match self.children.get_mut(first) {
                Some(child) => child.insert(rest),
                None => self.children.entry(first.clone()).or_default().insert(rest),
            },
        }
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        if self.is_empty() {
            return other.clone();
        }
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// Adds `other`'s members in place.
    fn merge(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, child) in &other.children {
            match self.children.get_mut(pe) {
                Some(mine) => mine.merge(child),
                None => {
                    self.children.insert(pe.clone(), child.clone());
                }
            }
        }
    }

    /// The members of `self` that are not members of `other` (paths, not subtrees).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            let rest = match other.children.get(pe) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(pe.clone(), rest);
            }
        }
        out
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            if let Some(theirs) = other.children.get(pe) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(pe.clone(), both);
                }
            }
        }
        out
    }

    /// The member paths, in order.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// Drops the children that hold no member.
    pub fn prune(&mut self) {
        for child in self.children.values_mut() {
            child.prune();
        }
        self.children.retain(|_, c| !c.is_empty());
    }

    /// Reads a `fieldsV1` value: `{}` is a member leaf, `.` marks a member with children.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let Value::Object(m) = v else {
            return Err(format!("expected an object in fieldsV1, got {v}"));
        };
        let mut out = FieldSet {
            member: m.is_empty(),
            children: BTreeMap::new(),
        };
        for (pe, child) in m {
            if pe == "." {
                out.member = true;
                continue;
            }
            if !matches!(pe.get(..2), Some("f:" | "k:" | "v:" | "i:")) {
                return Err(format!("unknown path element {pe:?} in fieldsV1"));
            }
            out.children
                .insert(pe.clone(), FieldSet::from_fields_v1(child)?);
        }
        Ok(out)
    }

    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (pe, child) in &self.children {
            m.insert(pe.clone(), child.to_fields_v1());
        }
        Value::Object(m)
    }
}

/// A path as conflicts print it: `.spec.containers[name="web"].image`, `.finalizers[="x"]`.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for pe in path {
        let (kind, rest) = pe.split_at(pe.len().min(2));
        match kind {
            "f:" => {
                out.push('.');
                out.push_str(rest);
            }
            "k:" => {
                let fields: Vec<String> = match serde_json::from_str::<Value>(rest) {
                    Ok(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    _ => vec![rest.to_string()],
                };
                out.push_str(&format!("[{}]", fields.join(",")));
            }
            "v:" => out.push_str(&format!("[={rest}]")),
            _ => out.push_str(&format!("[{rest}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fields_v1_round_trips_members_with_children() {
        let v = json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:data": {"f:a": {}}});
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert_eq!(set.to_fields_v1(), v);
        assert_eq!(
            set.paths(),
            vec![
                path(&["f:data", "f:a"]),
                path(&["f:metadata", "f:labels"]),
                path(&["f:metadata", "f:labels", "f:app"]),
            ]
        );
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
    }

    #[test]
    fn set_algebra_works_on_paths() {
        let mut a = FieldSet::default();
        a.insert(&path(&["f:data", "f:a"]));
        a.insert(&path(&["f:data", "f:b"]));
        let mut b = FieldSet::default();
        b.insert(&path(&["f:data", "f:b"]));
        b.insert(&path(&["f:data"]));
        assert_eq!(a.difference(&b).paths(), vec![path(&["f:data", "f:a"])]);
        assert_eq!(a.intersection(&b).paths(), vec![path(&["f:data", "f:b"])]);
        assert_eq!(a.union(&b).paths().len(), 3);
        assert!(a.difference(&a).is_empty());
    }

    #[test]
    fn paths_print_as_upstream() {
        assert_eq!(
            display(&path(&[
                "f:spec",
                "f:containers",
                "k:{\"name\":\"web\"}",
                "f:image"
            ])),
            ".spec.containers[name=\"web\"].image"
        );
        assert_eq!(
            display(&path(&["f:metadata", "f:finalizers", "v:\"x\""])),
            ".metadata.finalizers[=\"x\"]"
        );
    }
}
