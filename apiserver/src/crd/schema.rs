//! Structural schemas of custom resources (apiextensions' `openAPIV3Schema`): pruning of fields
//! the schema does not declare, defaulting, and validation with upstream's messages
//! (k8s.io/apiextensions-apiserver/pkg/apiserver/schema and kube-openapi's validate).

use serde_json::{Map, Value};

/// The schema's `properties`, if it declares any.
fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

/// Drops the fields the schema does not declare (unless it preserves unknown fields) and
/// returns their paths (`spec.foo`), as upstream's pruning does for every write and read.
/// `metadata` of the root is left to ObjectMeta's own checks; that of embedded resources is
/// pruned to ObjectMeta here, its unknown fields listed last as upstream lists them.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    let mut embedded_meta = Vec::new();
    prune_at(schema, obj, "", true, &mut unknown, &mut embedded_meta);
    unknown.extend(embedded_meta);
    unknown
}

/// An embedded resource's metadata as ObjectMeta reads it; the unknown fields' paths.
fn prune_meta(meta: &mut Value, path: &str) -> Vec<String> {
    match (crate::typed::OBJECT_META.check)(meta) {
        Ok((normalized, unknown)) => {
            *meta = normalized;
            unknown.into_iter().map(|f| format!("{path}.{f}")).collect()
        }
        // Not ObjectMeta at all: the schema's validation says so.
        Err(_) => Vec::new(),
    }
}

fn prune_at(
    schema: &Value,
    v: &mut Value,
    path: &str,
    root: bool,
    unknown: &mut Vec<String>,
    embedded_meta: &mut Vec<String>,
) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            let embedded = root || flag(schema, "x-kubernetes-embedded-resource");
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let props = properties(schema);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    if !root
                        && k == "metadata"
                        && let Some(meta) = m.get_mut("metadata")
                    {
                        embedded_meta.extend(prune_meta(meta, &join("metadata")));
                    }
                    continue;
                }
                let child_schema = match (props.and_then(|p| p.get(&k)), additional) {
                    (Some(s), _) => Some(s),
                    (None, Some(s)) if s.is_object() => Some(s),
                    (None, Some(Value::Bool(true))) => None,
                    (None, _) if preserve => None,
                    (None, _) => {
                        m.remove(&k);
                        unknown.push(join(&k));
                        continue;
                    }
                };
                if let (Some(s), Some(child)) = (child_schema, m.get_mut(&k)) {
                    prune_at(s, child, &join(&k), false, unknown, embedded_meta);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    let at = format!("{path}[{i}]");
                    prune_at(item_schema, item, &at, false, unknown, embedded_meta);
                }
            }
        }
        _ => {}
    }
}

/// Fills in the schema's `default`s where fields are missing (and where they are null and
/// not nullable), from the root down.
pub fn default(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = properties(schema) {
                for (k, s) in props {
                    let missing = match m.get(k) {
                        None => true,
                        Some(Value::Null) => !flag(s, "nullable"),
                        Some(_) => false,
                    };
                    if missing && let Some(d) = s.get("default") {
                        m.insert(k.clone(), d.clone());
                    }
                }
                for (k, child) in m.iter_mut() {
                    if let Some(s) = props.get(k) {
                        default(s, child);
                    }
                }
            } else if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for child in m.values_mut() {
                    default(s, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for item in items {
                    default(s, item);
                }
            }
        }
        _ => {}
    }
}

/// An invalid field: its path (`spec.replicas`) and the message after it.
pub type Cause = (String, String);

/// Validates a value against the schema; each failure is one cause with upstream's wording.
pub fn validate(schema: &Value, v: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    validate_at(schema, v, "", true, &mut causes);
    causes
}

/// `"x"` for strings, `5` for numbers, as upstream quotes invalid values.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn validate_at(schema: &Value, v: &Value, path: &str, root: bool, causes: &mut Vec<Cause>) {
    let field = if path.is_empty() { "<root>" } else { path };
    let mut fail = |message: String| causes.push((field.to_string(), message));
    if v.is_null() {
        if !flag(schema, "nullable") && schema.get("type").is_some() {
            fail(format!(
                "Invalid value: \"null\": {field} in body must be of type {}: \"null\"",
                schema["type"].as_str().unwrap_or("object")
            ));
        }
        return;
    }
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let got = type_name(v);
        let fits = want == got
            || (want == "number" && got == "integer")
            || (int_or_string && matches!(got, "integer" | "string"));
        if !fits {
            fail(format!(
                "Invalid value: {}: {field} in body must be of type {want}: {:?}",
                shown(v),
                got
            ));
            return;
        }
    } else if int_or_string && !matches!(type_name(v), "integer" | "string") {
        fail(format!(
            "Invalid value: {}: {field} in body must be of type integer,string: {:?}",
            shown(v),
            type_name(v)
        ));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        let supported: Vec<String> = options.iter().map(shown).collect();
        fail(format!(
            "Unsupported value: {}: supported values: {}",
            shown(v),
            supported.join(", ")
        ));
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let bound = |k: &str| schema.get(k).and_then(Value::as_f64);
            if let Some(max) = bound("maximum") {
                if flag(schema, "exclusiveMaximum") && x >= max {
                    fail(format!(
                        "Invalid value: {n}: {field} in body should be less than {max}"
                    ));
                } else if x > max {
                    fail(format!(
                        "Invalid value: {n}: {field} in body should be less than or equal to {max}"
                    ));
                }
            }
            if let Some(min) = bound("minimum") {
                if flag(schema, "exclusiveMinimum") && x <= min {
                    fail(format!(
                        "Invalid value: {n}: {field} in body should be greater than {min}"
                    ));
                } else if x < min {
                    fail(format!(
                        "Invalid value: {n}: {field} in body should be greater than or equal to {min}"
                    ));
                }
            }
            if let Some(m) = bound("multipleOf")
                && m > 0.0
                && (x / m).fract() != 0.0
            {
                fail(format!(
                    "Invalid value: {n}: {field} in body should be a multiple of {m}"
                ));
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            let bound = |k: &str| schema.get(k).and_then(Value::as_u64);
            if let Some(max) = bound("maxLength")
                && len > max
            {
                fail(format!("Too long: may not be more than {max} bytes"));
            }
            if let Some(min) = bound("minLength")
                && len < min
            {
                fail(format!(
                    "Invalid value: {s:?}: {field} in body should be at least {min} chars long"
                ));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(s) => fail(format!(
                        "Invalid value: {s:?}: {field} in body should match '{p}'"
                    )),
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            let bound = |k: &str| schema.get(k).and_then(Value::as_u64);
            let n = items.len() as u64;
            if let Some(max) = bound("maxItems")
                && n > max
            {
                fail(format!("Too many: {n}: must have at most {max} items"));
            }
            if let Some(min) = bound("minItems")
                && n < min
            {
                fail(format!(
                    "Invalid value: {n}: {field} in body should have at least {min} items"
                ));
            }
            if flag(schema, "uniqueItems")
                || schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set")
            {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        causes.push((
                            format!("{path}[{i}]"),
                            format!("Duplicate value: {}", shown(item)),
                        ));
                    }
                }
            }
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_at(s, item, &format!("{path}[{i}]"), false, causes);
                }
            }
        }
        Value::Object(m) => {
            let join = |k: &str| {
                if path.is_empty() {
                    k.to_string()
                } else {
                    format!("{path}.{k}")
                }
            };
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !m.contains_key(r) {
                    causes.push((join(r), "Required value".into()));
                }
            }
            let bound = |k: &str| schema.get(k).and_then(Value::as_u64);
            let n = m.len() as u64;
            if let Some(max) = bound("maxProperties")
                && n > max
            {
                causes.push((
                    field.to_string(),
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
            if let Some(min) = bound("minProperties")
                && n < min
            {
                causes.push((
                    field.to_string(),
                    format!(
                        "Invalid value: {n}: {field} in body should have at least {min} properties"
                    ),
                ));
            }
            let embedded = root || flag(schema, "x-kubernetes-embedded-resource");
            let props = properties(schema);
            let additional = schema.get("additionalProperties").filter(|s| s.is_object());
            for (k, child) in m {
                if embedded && k == "metadata" {
                    continue;
                }
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    validate_at(s, child, &join(k), false, causes);
                }
            }
        }
        _ => {}
    }
    for (key, must) in [
        ("allOf", Must::All),
        ("anyOf", Must::Any),
        ("oneOf", Must::One),
    ] {
        let Some(branches) = schema.get(key).and_then(Value::as_array) else {
            continue;
        };
        let passing = branches
            .iter()
            .filter(|b| {
                let mut inner = Vec::new();
                validate_at(b, v, path, root, &mut inner);
                inner.is_empty()
            })
            .count();
        let ok = match must {
            Must::All => passing == branches.len(),
            Must::Any => passing > 0,
            Must::One => passing == 1,
        };
        if !ok {
            if must == Must::All {
                for b in branches {
                    validate_at(b, v, path, root, causes);
                }
            } else {
                causes.push((
                    field.to_string(),
                    format!(
                        "Invalid value: {}: {field} in body must validate {} schema{}",
                        shown(v),
                        if must == Must::One {
                            "one and only one"
                        } else {
                            "at least one"
                        },
                        if must == Must::One {
                            " (oneOf)"
                        } else {
                            " (anyOf)"
                        }
                    ),
                ));
            }
        }
    }
    if let Some(not) = schema.get("not") {
        let mut inner = Vec::new();
        validate_at(not, v, path, root, &mut inner);
        if inner.is_empty() {
            causes.push((
                field.to_string(),
                format!(
                    "Invalid value: {}: {field} in body must not validate the schema (not)",
                    shown(v)
                ),
            ));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Must {
    All,
    Any,
    One,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crontab() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["cronSpec"], "properties": {
                "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                "image": {"type": "string", "minLength": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "ports": {"type": "array", "items": {"type": "object", "properties": {"port": {"type": "integer", "default": 80}}}}}},
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}})
    }

    #[test]
    fn pruning_drops_undeclared_fields_and_names_them() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "CronTab", "metadata": {"name": "a"},
            "spec": {"cronSpec": "* * * * */5", "bogus": 1, "extra": {"kept": true},
                "labels": {"a": "b"}, "ports": [{"port": 1, "nope": 2}]}, "top": 3});
        let unknown = prune(&crontab(), &mut obj);
        assert_eq!(unknown, ["spec.bogus", "spec.ports[0].nope", "top"]);
        assert_eq!(obj["spec"]["extra"], json!({"kept": true}));
        assert_eq!(obj["metadata"]["name"], "a");
        assert!(obj.get("top").is_none());
    }

    #[test]
    fn defaults_fill_missing_fields_at_every_depth() {
        let mut obj = json!({"spec": {"cronSpec": "x", "ports": [{}, {"port": 8080}]}});
        default(&crontab(), &mut obj);
        assert_eq!(obj["spec"]["replicas"], 1);
        assert_eq!(obj["spec"]["ports"], json!([{"port": 80}, {"port": 8080}]));
    }

    #[test]
    fn validation_speaks_upstreams_language() {
        let obj = json!({"spec": {"cronSpec": "bad", "image": "", "replicas": 20, "mode": "c"}});
        let causes = validate(&crontab(), &obj);
        assert_eq!(
            causes,
            vec![
                (
                    "spec.cronSpec".to_string(),
                    "Invalid value: \"bad\": spec.cronSpec in body should match '^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$'".to_string()
                ),
                (
                    "spec.image".to_string(),
                    "Invalid value: \"\": spec.image in body should be at least 1 chars long".to_string()
                ),
                (
                    "spec.mode".to_string(),
                    "Unsupported value: \"c\": supported values: \"a\", \"b\"".to_string()
                ),
                (
                    "spec.replicas".to_string(),
                    "Invalid value: 20: spec.replicas in body should be less than or equal to 10".to_string()
                ),
            ]
        );
        let causes = validate(&crontab(), &json!({"spec": {"replicas": "two"}}));
        assert_eq!(
            causes,
            vec![
                ("spec.cronSpec".to_string(), "Required value".to_string()),
                (
                    "spec.replicas".to_string(),
                    "Invalid value: \"two\": spec.replicas in body must be of type integer: \"string\"".to_string()
                ),
            ]
        );
        assert!(validate(&crontab(), &json!({"spec": {"cronSpec": "*/5 * * * *"}})).is_empty());
    }
}
