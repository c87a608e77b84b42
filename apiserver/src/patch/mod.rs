//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386), and strategic merge patch
//! (k8s.io/apimachinery/pkg/util/strategicpatch): lists merge by their merge key or as sets
//! where the type says so, with the `$patch`, `$retainKeys`, `$setElementOrder` and
//! `$deleteFromPrimitiveList` directives. Patch strategies and merge keys come from
//! `schema.txt`, generated from upstream's OpenAPI description by scripts/gen-patch-schema.py.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::strict::Repeated;

/// What strategic merge and server-side apply know of a field: an object ('o'), list ('a') or
/// map ('m') of the definition `target`, for lists the patch strategy and merge key, and the
/// type structured merge reads.
struct FieldInfo {
    kind: u8,
    target: &'static str,
    /// `merge`, `retainKeys` or both joined by '+', as in the OpenAPI extension.
    strategy: &'static str,
    merge: bool,
    key: &'static str,
    /// Lists: `atomic`, `set` or `map`; maps and objects: `atomic`, `granular` or "".
    shape: &'static str,
    /// A `map` list's keys, joined by '+'.
    keys: &'static str,
}

struct PatchSchema {
    defs: HashMap<&'static str, HashMap<&'static str, FieldInfo>>,
    /// (apiVersion, kind) -> definition
    kinds: HashMap<(&'static str, &'static str), &'static str>,
    /// Definitions whose objects are replaced whole (`x-kubernetes-map-type: atomic`).
    atomic: HashSet<&'static str>,
}

fn patch_schema() -> &'static PatchSchema {
    static SCHEMA: OnceLock<PatchSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let (mut defs, mut kinds, mut atomic) = (HashMap::new(), HashMap::new(), HashSet::new());
        for line in include_str!("schema.txt")
            .lines()
            .filter(|l| !l.starts_with('#'))
        {
            let mut cols = line.split('\t');
            match cols.next() {
                Some("@") => {
                    if let (Some(v), Some(k), Some(d)) = (cols.next(), cols.next(), cols.next()) {
                        kinds.insert((v, k), d);
                    }
                }
                Some("*") => {
                    atomic.extend(cols.next());
                }
                Some(def) => {
                    let fields = cols
                        .filter_map(|f| {
                            let (name, info) = f.split_once('=')?;
                            let mut parts = info.split(',');
                            let kind = parts.next()?.bytes().next()?;
                            let target = parts.next()?;
                            let strategy = parts.next()?;
                            let key = parts.next().unwrap_or("");
                            let shape = parts.next().unwrap_or("");
                            let keys = parts.next().unwrap_or("");
                            let merge = strategy.split('+').any(|s| s == "merge");
                            Some((
                                name,
                                FieldInfo {
                                    kind,
                                    target,
                                    strategy,
                                    merge,
                                    key,
                                    shape,
                                    keys,
                                },
                            ))
                        })
                        .collect();
                    defs.insert(def, fields);
                }
                None => {}
            }
        }
        PatchSchema {
            defs,
            kinds,
            atomic,
        }
    })
}

/// A field as structured merge (server-side apply) sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// An object of the definition (None: an opaque one).
    Struct(Option<&'static str>),
    /// A map whose values are of the definition (None: scalars).
    Map(Option<&'static str>),
    /// A list of items of the definition keyed by these fields ('+'-joined).
    Keyed(&'static str, Option<&'static str>),
    /// A list of distinct scalars.
    Set,
    /// A value replaced whole: scalars, atomic lists, atomic maps and structs.
    Atomic,
}

/// The type of `field` in `definition`, or None when the definition does not name it as an
/// object, map or list (its scalars).
pub fn field_type(definition: &str, field: &str) -> Option<FieldType> {
    let f = patch_schema().defs.get(definition)?.get(field)?;
    let target = Some(f.target).filter(|t| !t.is_empty());
    Some(match (f.kind, f.shape) {
        (_, "atomic") => FieldType::Atomic,
        (b'a', "map") => FieldType::Keyed(f.keys, target),
        (b'a', "set") => FieldType::Set,
        (b'm', _) => FieldType::Map(target),
        (_, "granular") => FieldType::Struct(target),
        _ => struct_type(target),
    })
}

/// An object of `definition`: atomic when the definition says so.
pub fn struct_type(definition: Option<&'static str>) -> FieldType {
    match definition {
        Some(d) if patch_schema().atomic.contains(d) => FieldType::Atomic,
        d => FieldType::Struct(d),
    }
}

/// The patch strategy and merge key of each field of an OpenAPI definition that has one
/// (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`): what OpenAPI publishes so
/// that clients compute the patches the server applies.
pub fn patch_extensions(definition: &str) -> Vec<(&'static str, String, &'static str)> {
    let Some(fields) = patch_schema().defs.get(definition) else {
        return Vec::new();
    };
    fields
        .iter()
        .filter(|(_, f)| !f.strategy.is_empty())
        .map(|(name, f)| (*name, f.strategy.replace('+', ","), f.key))
        .collect()
}

/// The OpenAPI definition of a kind, which strategic merge walks.
pub fn definition(api_version: &str, kind: &str) -> Option<&'static str> {
    patch_schema().kinds.get(&(api_version, kind)).copied()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    /// Server-side apply: the body is a configuration, not a patch (see `fieldmanager`).
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" => Ok(PatchType::Apply),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }
}

/// A patch body, and what strict field validation reports of it: the keys it repeated
/// (`duplicate field "spec.paused"`), and for a JSON patch its operations' unknown and
/// repeated fields (`json patch unknown field "[0].foo"`); upstream drops repetitions inside
/// a JSON patch's values unreported.
pub fn decode(kind: PatchType, body: &[u8]) -> Result<(Value, Repeated), ApiError> {
    let (patch, dups) = crate::strict::json(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })?;
    let messages: Vec<String> = match (kind, &patch) {
        (PatchType::Json, Value::Array(ops)) => {
            let mut messages = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                let Some(op) = op.as_object() else { continue };
                for k in op.keys() {
                    if !matches!(k.as_str(), "op" | "path" | "value" | "from") {
                        messages.push(format!("json patch unknown field \"[{i}].{k}\""));
                    }
                }
                for d in &dups {
                    if d.path == format!("[{i}].{}", d.key) {
                        messages.push(format!("json patch duplicate field \"{}\"", d.path));
                    }
                }
            }
            messages
        }
        (PatchType::Json, _) => Vec::new(),
        _ => dups
            .iter()
            .map(|d| format!("duplicate field \"{}\"", d.path))
            .collect(),
    };
    Ok((patch, Repeated::Patch(messages)))
}

/// The object after the patch. `definition` is the kind's OpenAPI definition (see
/// [`definition`]); without it strategic merge treats every list as atomic.
pub fn apply(
    kind: PatchType,
    current: &Value,
    patch: &Value,
    definition: Option<&str>,
) -> Result<Value, ApiError> {
    let mut doc = current.clone();
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut doc, &ops.0)
                .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        }
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, patch);
        }
        PatchType::Apply => {
            return Err(ApiError::internal(
                "an apply configuration is merged by the field manager, not patched",
            ));
        }
        PatchType::Strategic => match patch {
            Value::Object(p) => strategic_merge(&mut doc, p, definition),
            _ => {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
        },
    }
    Ok(doc)
}

/// Strategic merge of an object: keys merge recursively, `null` deletes, `$patch: replace`
/// and `$patch: delete` act on the object they stand in, `$retainKeys` drops unlisted keys,
/// and lists follow their field's strategy.
fn strategic_merge(doc: &mut Value, patch: &Map<String, Value>, def: Option<&str>) {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *doc = Value::Object(without_directives(patch));
            return;
        }
        Some("delete") => {
            *doc = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let fields = def.and_then(|d| patch_schema().defs.get(d));
    let Value::Object(target) = doc else { return };
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        let field = fields.and_then(|f| f.get(key.as_str()));
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(p) if p.get("$patch").and_then(Value::as_str) == Some("delete") => {
                target.remove(key);
            }
            Value::Object(p) => {
                let slot = target.entry(key.clone()).or_insert(Value::Null);
                match field {
                    // A map: each entry merges with the value type's schema.
                    Some(f) if f.kind == b'm' => {
                        merge_map_entries(slot, p, Some(f.target).filter(|t| !t.is_empty()))
                    }
                    Some(f) => strategic_merge(slot, p, Some(f.target).filter(|t| !t.is_empty())),
                    None => strategic_merge(slot, p, None),
                }
            }
            Value::Array(items) => match field {
                Some(f) if f.kind == b'a' && f.merge => {
                    let slot = target
                        .entry(key.clone())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if !slot.is_array() {
                        *slot = Value::Array(Vec::new());
                    }
                    if let Value::Array(list) = slot {
                        let item_def = Some(f.target).filter(|t| !t.is_empty());
                        if f.key.is_empty() {
                            merge_primitive_list(list, items);
                        } else {
                            merge_keyed_list(list, items, f.key, item_def);
                        }
                    }
                }
                _ => {
                    target.insert(
                        key.clone(),
                        Value::Array(
                            items
                                .iter()
                                .filter(|i| !is_directive_item(i))
                                .cloned()
                                .collect(),
                        ),
                    );
                }
            },
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
    for (directive, value) in patch {
        if let Some(field) = directive.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(list)), Value::Array(gone)) = (target.get_mut(field), value)
        {
            list.retain(|v| !gone.contains(v));
        }
    }
    for (directive, value) in patch {
        if let (Some(field), Value::Array(order)) =
            (directive.strip_prefix("$setElementOrder/"), value)
        {
            let key = fields
                .and_then(|f| f.get(field))
                .map(|f| f.key)
                .unwrap_or("");
            if let Some(Value::Array(list)) = target.get_mut(field) {
                set_element_order(list, order, key);
            }
        }
    }
}

fn is_directive_item(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.len() == 1 && m.contains_key("$patch"))
}

fn merge_map_entries(slot: &mut Value, patch: &Map<String, Value>, value_def: Option<&str>) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        *slot = Value::Object(without_directives(patch));
        return;
    }
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    let Value::Object(target) = slot else { return };
    for (k, v) in patch.iter().filter(|(k, _)| !k.starts_with('$')) {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) if value_def.is_some() => {
                strategic_merge(target.entry(k.clone()).or_insert(Value::Null), p, value_def)
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

/// A list of objects merged by `key`: patch items update the item with the same key or are
/// appended; `$patch: delete` items remove it; a `$patch: replace` item replaces the list.
fn merge_keyed_list(list: &mut Vec<Value>, patch: &[Value], key: &str, item_def: Option<&str>) {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *list = patch
            .iter()
            .filter(|p| !is_directive_item(p))
            .map(|p| fresh(p, item_def))
            .collect();
        return;
    }
    let original = list.clone();
    for p in patch {
        let Some(pm) = p.as_object() else {
            list.push(p.clone());
            continue;
        };
        let id = pm.get(key);
        if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
            list.retain(|d| d.get(key) != id);
            continue;
        }
        match list.iter_mut().find(|d| id.is_some() && d.get(key) == id) {
            Some(existing) => strategic_merge(existing, pm, item_def),
            None => list.push(fresh(p, item_def)),
        }
    }
    let id = |v: &Value| v.get(key).cloned();
    upstream_order(list, &original, patch, id);
}

/// The order upstream's merge leaves a list in (normalizeElementOrder): the items the patch
/// names in the patch's order, the others in the live order, interleaved where the live list
/// orders both, and a patch item the live list lacks ahead of the live items left.
fn upstream_order(
    list: &mut Vec<Value>,
    original: &[Value],
    patch: &[Value],
    id: impl Fn(&Value) -> Option<Value>,
) {
    let in_patch: Vec<Value> = patch
        .iter()
        .filter(|p| p.get("$patch").and_then(Value::as_str) != Some("delete"))
        .filter_map(&id)
        .collect();
    let live: Vec<Option<Value>> = original.iter().map(&id).collect();
    let (mut named, server_only): (Vec<Value>, Vec<Value>) = std::mem::take(list)
        .into_iter()
        .partition(|v| id(v).is_some_and(|i| in_patch.contains(&i)));
    named.sort_by_key(|v| {
        let i = id(v);
        in_patch.iter().position(|p| Some(p) == i.as_ref())
    });
    let live_index = |v: &Value| {
        let i = id(v);
        i.as_ref()
            .and_then(|i| live.iter().position(|l| l.as_ref() == Some(i)))
    };
    let (mut left, mut right) = (
        server_only.into_iter().peekable(),
        named.into_iter().peekable(),
    );
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                matches!((live_index(l), live_index(r)), (Some(a), Some(b)) if a < b)
            }
        };
        list.extend(if take_left { left.next() } else { right.next() });
    }
}

/// A new list item: the patch item merged into nothing, so its own directives apply.
fn fresh(p: &Value, def: Option<&str>) -> Value {
    match p {
        Value::Object(m) => {
            let mut v = Value::Object(Map::new());
            strategic_merge(&mut v, m, def);
            v
        }
        other => other.clone(),
    }
}

/// A list with the merge strategy and no key (e.g. finalizers): a set union in order.
fn merge_primitive_list(list: &mut Vec<Value>, patch: &[Value]) {
    let original = list.clone();
    for p in patch {
        if !list.contains(p) {
            list.push(p.clone());
        }
    }
    upstream_order(list, &original, patch, |v| Some(v.clone()));
}

/// Orders a list as `$setElementOrder` says; items it does not name keep their order after.
fn set_element_order(list: &mut [Value], order: &[Value], key: &str) {
    let id = |v: &Value| {
        if key.is_empty() {
            Some(v.clone())
        } else {
            v.get(key).cloned()
        }
    };
    let position = |v: &Value| {
        let my = id(v);
        order
            .iter()
            .position(|o| my.is_some() && id(o) == my)
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(position);
}

fn without_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(kind: PatchType, doc: Value, patch: Value) -> Result<Value, ApiError> {
        apply(kind, &doc, &patch, None)
    }

    fn smp(api_version: &str, kind: &str, doc: Value, patch: Value) -> Value {
        apply(
            PatchType::Strategic,
            &doc,
            &patch,
            definition(api_version, kind),
        )
        .unwrap()
    }

    fn deployment(containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn containers_merge_by_name_as_kubectl_set_image_expects() {
        let doc = deployment(
            json!([{"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]}, {"name": "side", "image": "busybox"}]),
        );
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}});
        let out = smp("apps/v1", "Deployment", doc, patch);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}]}, {"name": "side", "image": "busybox"}])
        );
    }

    #[test]
    fn merged_lists_take_upstreams_order() {
        let names = |out: &Value| -> Vec<String> {
            out["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        };
        // A container the live list lacks goes ahead of the live ones (the StatefulSet
        // conformance test's patch).
        let doc = deployment(json!([{"name": "webserver", "image": "httpd"}]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "test-ss", "image": "pause"}]}}}});
        let out = smp("apps/v1", "Deployment", doc, patch);
        assert_eq!(names(&out), ["test-ss", "webserver"]);
        // Live items keep their places where the live list orders them against patch items.
        let doc = deployment(
            json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}, {"name": "c", "image": "3"}]),
        );
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "5"}, {"name": "d", "image": "4"}]}}}});
        let out = smp("apps/v1", "Deployment", doc, patch);
        assert_eq!(names(&out), ["a", "b", "d", "c"]);
        // Primitive sets too: finalizers the patch adds come first.
        let out = smp(
            "v1",
            "ConfigMap",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"finalizers": ["x", "y"]}}),
            json!({"metadata": {"finalizers": ["y", "z"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y", "z"]));
        let out = smp(
            "v1",
            "ConfigMap",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"finalizers": ["x", "y"]}}),
            json!({"metadata": {"finalizers": ["z"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["z", "x", "y"]));
    }

    #[test]
    fn list_directives_delete_replace_and_order() {
        let doc = deployment(
            json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}, {"name": "c", "image": "3"}]),
        );
        // kubectl apply's shape: delete one, add one, and fix the order.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "d"}, {"name": "a"}, {"name": "c"}],
            "containers": [{"name": "b", "$patch": "delete"}, {"name": "d", "image": "4"}]}}}});
        let out = smp("apps/v1", "Deployment", doc.clone(), patch);
        let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["d", "a", "c"]);
        let replace = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "z", "image": "9"}]}}}});
        let out = smp("apps/v1", "Deployment", doc, replace);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "z", "image": "9"}])
        );
    }

    #[test]
    fn primitive_lists_merge_as_sets_or_replace_by_strategy() {
        // finalizers: patchStrategy merge, no key.
        let doc = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"finalizers": ["a", "b"]}});
        let out = smp(
            "v1",
            "ConfigMap",
            doc.clone(),
            json!({"metadata": {"finalizers": ["c"]}}),
        );
        // Upstream's order: what the patch adds goes ahead of what only the live list has.
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
        let out = smp(
            "v1",
            "ConfigMap",
            doc,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        // container args: no strategy, replaced.
        let doc = deployment(json!([{"name": "w", "args": ["x", "y"]}]));
        let out = smp(
            "apps/v1",
            "Deployment",
            doc,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "w", "args": ["z"]}]}}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["z"])
        );
    }

    #[test]
    fn resource_maps_merge_entries() {
        let doc = deployment(
            json!([{"name": "w", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]),
        );
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "w", "resources": {"limits": {"cpu": "2", "memory": null}}}]}}}});
        let out = smp("apps/v1", "Deployment", doc, patch);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"],
            json!({"cpu": "2"})
        );
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // RFC 7386, appendix A.
        let doc = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}, "tags": ["example", "sample"], "content": "x"});
        let patch = json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": null}, "tags": ["example"]});
        assert_eq!(
            run(PatchType::Merge, doc, patch).unwrap(),
            json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"], "content": "x", "phoneNumber": "+01-123-456-7890"})
        );
    }

    #[test]
    fn json_patch_applies_operations_and_fails_on_a_failed_test() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}});
        let ops = json!([{"op": "add", "path": "/metadata/labels/b", "value": "2"}, {"op": "remove", "path": "/metadata/labels/a"}]);
        assert_eq!(
            run(PatchType::Json, doc.clone(), ops).unwrap(),
            json!({"metadata": {"labels": {"b": "2"}}})
        );
        let failing = json!([{"op": "test", "path": "/metadata/labels/a", "value": "9"}]);
        assert_eq!(
            run(PatchType::Json, doc, failing)
                .unwrap_err()
                .code
                .as_u16(),
            422
        );
    }

    #[test]
    fn strategic_merge_merges_maps_and_honours_directives() {
        let doc = json!({"data": {"a": "1", "b": "2"}, "metadata": {"labels": {"x": "1"}, "annotations": {"k": "v"}}});
        let patch = json!({"data": {"b": null, "c": "3"}, "metadata": {"labels": {"$patch": "replace", "y": "2"}, "annotations": {"$patch": "delete"}}});
        assert_eq!(
            run(PatchType::Strategic, doc, patch).unwrap(),
            json!({"data": {"a": "1", "c": "3"}, "metadata": {"labels": {"y": "2"}}})
        );
        let retain = json!({"spec": {"$retainKeys": ["type"], "type": "Recreate"}});
        assert_eq!(
            run(
                PatchType::Strategic,
                json!({"spec": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}),
                retain
            )
            .unwrap(),
            json!({"spec": {"type": "Recreate"}})
        );
    }

    #[test]
    fn unknown_patch_media_types_are_415() {
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+cbor")
                .unwrap_err()
                .code
                .as_u16(),
            415
        );
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8").unwrap(),
            PatchType::Merge
        );
    }

    #[test]
    fn strict_decoding_of_patches_names_repeated_and_unknown_op_fields() {
        let (_, repeated) = decode(
            PatchType::Merge,
            br#"{"spec": {"paused": true, "paused": false, "x": {"a": 1, "a": 2}}}"#,
        )
        .unwrap();
        let Repeated::Patch(messages) = repeated else {
            panic!("a patch's messages")
        };
        assert_eq!(
            messages,
            [
                "duplicate field \"spec.paused\"",
                "duplicate field \"spec.x.a\""
            ]
        );
        // Upstream's TestFieldValidation JSON patch: repetitions inside values go unreported.
        let body = br#"[{"op": "add", "path": "/spec/unknown1", "value": "val1", "foo": "bar"},
            {"op": "add", "path": "/spec/unknown2", "path": "/spec/unknown3", "value": "val1"},
            {"op": "add", "path": "/spec/x", "value": {"k": 1, "k": 2}}]"#;
        let (patch, repeated) = decode(PatchType::Json, body).unwrap();
        assert_eq!(patch[1]["path"], "/spec/unknown3");
        let Repeated::Patch(messages) = repeated else {
            panic!("a patch's messages")
        };
        assert_eq!(
            messages,
            [
                "json patch unknown field \"[0].foo\"",
                "json patch duplicate field \"[1].path\""
            ]
        );
    }
}
