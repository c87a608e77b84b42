//! The JSONPath of CRD printer columns (`.spec.replicas`, `.status.conditions[?(@.type=="Ready")].status`,
//! `.spec.items[*].name`, `.spec.items[0]`): the subset upstream's columns use.

use serde_json::Value;

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.a.b=="v")]`: items whose field path equals the value.
    Filter(Vec<String>, Value),
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let mut steps = Vec::new();
    let mut rest = path.strip_prefix('$').unwrap_or(path);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = r[..end].trim();
            steps.push(if inner == "*" {
                Step::All
            } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, value) = f.split_once("==")?;
                let value = value.trim();
                let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                    Some(v) => Value::String(v.to_string()),
                    None => serde_json::from_str(value).ok()?,
                };
                Step::Filter(field.trim().split('.').map(str::to_string).collect(), value)
            } else if let Some(name) = inner
                .strip_prefix('\'')
                .and_then(|n| n.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|n| n.strip_suffix('"')))
            {
                Step::Field(name.to_string())
            } else {
                Step::Index(inner.parse().ok()?)
            });
            rest = &r[end + 1..];
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            steps.push(Step::Field(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    Some(steps)
}

/// The values the path finds in the object (none when the path does not parse).
pub fn find<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let Some(steps) = parse(path) else {
        return Vec::new();
    };
    let mut current = vec![obj];
    for step in &steps {
        current = current
            .into_iter()
            .flat_map(|v| -> Vec<&Value> {
                match (step, v) {
                    (Step::Field(f), Value::Object(m)) => m.get(f).into_iter().collect(),
                    (Step::Index(i), Value::Array(a)) => a.get(*i).into_iter().collect(),
                    (Step::All, Value::Array(a)) => a.iter().collect(),
                    (Step::All, Value::Object(m)) => m.values().collect(),
                    (Step::Filter(field, want), Value::Array(a)) => a
                        .iter()
                        .filter(|item| {
                            field
                                .iter()
                                .try_fold(*item, |v, f| v.get(f))
                                .is_some_and(|got| got == want)
                        })
                        .collect(),
                    _ => Vec::new(),
                }
            })
            .collect();
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn printer_column_paths_find_their_values() {
        let o = json!({"spec": {"replicas": 3, "items": [{"name": "a"}, {"name": "b"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]}});
        assert_eq!(find(&o, ".spec.replicas"), [&json!(3)]);
        assert_eq!(
            find(&o, "{.spec.items[*].name}"),
            [&json!("a"), &json!("b")]
        );
        assert_eq!(find(&o, ".spec.items[1].name"), [&json!("b")]);
        assert_eq!(
            find(&o, r#".status.conditions[?(@.type=="Ready")].status"#),
            [&json!("True")]
        );
        assert_eq!(
            find(&o, ".status.conditions[?(@.type=='Synced')].status"),
            [&json!("False")]
        );
        assert!(find(&o, ".spec.missing").is_empty());
        assert!(find(&o, ".spec.items[x").is_empty());
    }
}
