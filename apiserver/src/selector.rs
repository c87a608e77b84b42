//! Label and field selectors, as `?labelSelector=` and `?fieldSelector=` carry them
//! (k8s.io/apimachinery/pkg/labels and pkg/fields).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            // As upstream: `!=` also matches objects without the key.
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A conjunction of requirements; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

fn bad(s: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: {why} in selector {s:?}"
    ))
}

fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    name_ok
        && prefix.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 253
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
        })
}

fn valid_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric()))
}

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for term in split_terms(s) {
            let t = term.trim();
            let key_of = |k: &str| {
                let k = k.trim();
                if valid_key(k) {
                    Ok(k.to_string())
                } else {
                    Err(bad(s, &format!("invalid label key {k:?}")))
                }
            };
            let value_of = |v: &str| {
                let v = v.trim();
                if valid_value(v) {
                    Ok(v.to_string())
                } else {
                    Err(bad(s, &format!("invalid label value {v:?}")))
                }
            };
            let set_of = |rest: &str| -> Result<Vec<String>, ApiError> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| bad(s, "expected a parenthesized set"))?;
                inner.split(',').map(value_of).collect()
            };
            let req = if let Some(k) = t.strip_prefix('!') {
                Requirement::DoesNotExist(key_of(k)?)
            } else if let Some((k, v)) = t.split_once("!=") {
                Requirement::NotEquals(key_of(k)?, value_of(v)?)
            } else if let Some((k, v)) = t.split_once("==") {
                Requirement::Equals(key_of(k)?, value_of(v)?)
            } else if let Some((k, v)) = t.split_once('=') {
                Requirement::Equals(key_of(k)?, value_of(v)?)
            } else if let Some((k, rest)) = t.split_once(" notin ") {
                Requirement::NotIn(key_of(k)?, set_of(rest)?)
            } else if let Some((k, rest)) = t.split_once(" in ") {
                Requirement::In(key_of(k)?, set_of(rest)?)
            } else {
                Requirement::Exists(key_of(t)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A `metav1.LabelSelector` object (matchLabels and matchExpressions). An empty one
    /// matches everything; an unknown operator is an error, as upstream's conversion has it.
    pub fn from_object(selector: &Value) -> Result<Self, String> {
        let mut out = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                out.push(Requirement::Equals(
                    k.clone(),
                    v.as_str().unwrap_or("").to_string(),
                ));
            }
        }
        for e in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            out.push(
                match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                    "In" => Requirement::In(key, values),
                    "NotIn" => Requirement::NotIn(key, values),
                    "Exists" => Requirement::Exists(key),
                    "DoesNotExist" => Requirement::DoesNotExist(key),
                    op => return Err(format!("{op:?} is not a valid label selector operator")),
                },
            );
        }
        Ok(LabelSelector(out))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let labels: BTreeMap<String, String> = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        self.0.iter().all(|r| r.matches(&labels))
    }
}

/// `field=value`, `field==value` and `field!=value` terms over the fields a resource offers:
/// (field, the JSON pointers it reads, equal, value).
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, Vec<String>, bool, String)>);

/// The pointers a selectable field reads: its path, or what a `name:/a|/b` entry names (the
/// first non-empty value counts, as upstream's ToSelectableFields computes e.g. an event's
/// `source` from its source component, else its reporting controller).
fn pointers(field: &str, fields: &[&str]) -> Option<Vec<String>> {
    if ["metadata.name", "metadata.namespace"].contains(&field) {
        return Some(vec![format!("/{}", field.replace('.', "/"))]);
    }
    fields.iter().find_map(|entry| match entry.split_once(':') {
        Some((name, ptrs)) if name == field => Some(ptrs.split('|').map(str::to_string).collect()),
        None if *entry == field => Some(vec![format!("/{}", field.replace('.', "/"))]),
        _ => None,
    })
}

/// What an unset field reads as: upstream's field sets print Go's zero values, so an unset
/// boolean is "false" and an unset count "0".
fn unset(field: &str) -> &'static str {
    match field {
        "spec.unschedulable" | "spec.hostNetwork" => "false",
        "status.successful" => "0",
        _ => "",
    }
}

impl FieldSelector {
    /// `fields` are the resource's selectable fields besides metadata.name and
    /// metadata.namespace; others are refused as upstream refuses them.
    pub fn parse(s: &str, fields: &[&str]) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            let Some(ptrs) = pointers(field, fields) else {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            };
            terms.push((field.to_string(), ptrs, equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, ptrs, equal, value)| {
            // Integers and booleans compare as their text (custom resources' selectable
            // fields may be either).
            let actual = ptrs
                .iter()
                .filter_map(|p| match obj.pointer(p)? {
                    Value::String(s) => Some(s.clone()),
                    v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
                    _ => None,
                })
                .find(|v| !v.is_empty())
                .unwrap_or_else(|| unset(field).to_string());
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "dev", "labels": labels}, "type": "Opaque"})
    }

    #[test]
    fn label_selectors_follow_the_documented_cases() {
        // From the Kubernetes "Labels and Selectors" page.
        let prod_fe = obj(json!({"environment": "production", "tier": "frontend"}));
        let qa = obj(json!({"environment": "qa"}));
        let none = obj(json!({}));
        let cases: &[(&str, [bool; 3])] = &[
            ("environment = production", [true, false, false]),
            ("tier != frontend", [false, true, true]),
            ("environment=production,tier=frontend", [true, false, false]),
            ("environment in (production, qa)", [true, true, false]),
            ("tier notin (frontend,backend)", [false, true, true]),
            ("partition", [false, false, false]),
            ("!partition", [true, true, true]),
            ("environment==qa", [false, true, false]),
            ("", [true, true, true]),
        ];
        for (s, want) in cases {
            let sel = LabelSelector::parse(s).unwrap();
            let got = [sel.matches(&prod_fe), sel.matches(&qa), sel.matches(&none)];
            assert_eq!(&got, want, "{s:?}");
        }
    }

    #[test]
    fn malformed_selectors_are_400() {
        for s in ["a in b", "-bad=x", "a=b=c", "a=-x"] {
            assert_eq!(
                LabelSelector::parse(s).unwrap_err().code.as_u16(),
                400,
                "{s:?}"
            );
        }
        assert_eq!(
            FieldSelector::parse("spec.nodeName=x", &[])
                .unwrap_err()
                .message,
            "field label not supported: spec.nodeName"
        );
    }

    #[test]
    fn unset_booleans_and_counts_read_as_go_zero_values() {
        let fields = &["spec.unschedulable", "status.successful"];
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        assert!(
            FieldSelector::parse("spec.unschedulable=false", fields)
                .unwrap()
                .matches(&node)
        );
        assert!(
            !FieldSelector::parse("spec.unschedulable=true", fields)
                .unwrap()
                .matches(&node)
        );
        let cordoned = json!({"spec": {"unschedulable": true}});
        assert!(
            FieldSelector::parse("spec.unschedulable!=false", fields)
                .unwrap()
                .matches(&cordoned)
        );
        assert!(
            FieldSelector::parse("status.successful=0", fields)
                .unwrap()
                .matches(&json!({}))
        );
    }

    #[test]
    fn field_selectors_match_metadata_and_declared_fields() {
        let o = obj(json!({}));
        assert!(
            FieldSelector::parse("metadata.name=web,metadata.namespace!=prod", &[])
                .unwrap()
                .matches(&o)
        );
        assert!(
            !FieldSelector::parse("metadata.name==api", &[])
                .unwrap()
                .matches(&o)
        );
        assert!(
            FieldSelector::parse("type=Opaque", &["type"])
                .unwrap()
                .matches(&o)
        );
    }
}
