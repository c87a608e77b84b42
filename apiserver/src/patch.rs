//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386), and strategic merge
//! patch for maps (lists are replaced whole; merging lists by key needs the schema's patch
//! strategies, which arrive with OpenAPI).

use serde_json::{Map, Value};

use crate::error::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }
}

/// The object after the patch.
pub fn apply(kind: PatchType, current: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })?;
    let mut doc = current.clone();
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut doc, &ops.0)
                .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        }
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, &patch);
        }
        PatchType::Strategic => match patch {
            Value::Object(p) => strategic_merge(&mut doc, &p),
            _ => {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
        },
    }
    Ok(doc)
}

/// Strategic merge of maps: keys merge recursively, `null` deletes, `$patch: replace` and
/// `$patch: delete` act on the map they stand in, `$retainKeys` drops unlisted keys.
fn strategic_merge(doc: &mut Value, patch: &Map<String, Value>) {
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
    let Value::Object(target) = doc else { return };
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(p) if p.get("$patch").and_then(Value::as_str) == Some("delete") => {
                target.remove(key);
            }
            Value::Object(p) => {
                strategic_merge(target.entry(key.clone()).or_insert(Value::Null), p)
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
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
        apply(kind, &doc, patch.to_string().as_bytes())
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
            PatchType::from_content_type("application/apply-patch+yaml")
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
}
